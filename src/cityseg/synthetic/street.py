"""Random street scenes: a camera looking down a street with buildings, traffic and people.

Everything is placed in metres and projected, so sizes shrink towards the horizon, the road
is a trapezoid ending at the vanishing point and facades converge on it. Objects standing in
the street are sorted far to near before they are listed, so nearer ones occlude farther ones.
"""

from __future__ import annotations

import numpy as np

from cityseg.synthetic import shapes
from cityseg.synthetic.geometry import (
    Camera,
    Polygon,
    band,
    box_corners,
    convex_hull,
    disc,
    rect,
    scale_about_centre,
)
from cityseg.synthetic.scene import Decal, DecalList, Scene

Part = tuple[str, Polygon, DecalList]  # one labelled polygon of a thing, with its decals

# (count range, nearest front, farthest front) of the vehicles driving in the lanes
_TRAFFIC = {
    "car": ((1, 5), 7.0, 70.0),
    "truck": ((1, 3), 12.0, 70.0),
    "bus": ((1, 3), 14.0, 80.0),
    "train": ((1, 2), 15.0, 60.0),  # trams share the street in German cities
}


class StreetBuilder:
    """Builds one scene; each method adds one kind of thing."""

    def __init__(self, rng: np.random.Generator, width: int, height: int):
        self.rng = rng
        self.cam = Camera(
            width=width,
            height=height,
            focal=width * rng.uniform(0.9, 1.2),
            cx=width * rng.uniform(0.4, 0.6),
            horizon=height * rng.uniform(0.36, 0.5),
            cam_height=rng.uniform(1.1, 1.5),
        )
        self.scene = Scene(camera=self.cam)
        self.z_near = self.cam.z_bottom * 1.15  # nearest depth whose ground contact is on screen
        self.things: list[tuple[float, list[Part]]] = []  # (depth, parts), sorted when building
        road_left, road_right = -rng.uniform(4.5, 9.0), rng.uniform(2.5, 6.0)
        self.road = (road_left, road_right)
        sidewalks = rng.uniform(2.5, 5.0, size=2)
        verges = rng.uniform(1.0, 4.0, size=2) * (rng.random(2) < 0.85)
        self.sidewalk = (road_left - sidewalks[0], road_right + sidewalks[1])
        self.facade = (self.sidewalk[0] - verges[0], self.sidewalk[1] + verges[1])
        self.cross = None
        if rng.random() < 0.4:  # a side street: a gap in the facades, crossing traffic
            start = rng.uniform(15, 45)
            self.cross = (start, start + rng.uniform(8, 14))

    # -- projection helpers ---------------------------------------------------------------------
    def ground_strip(self, x0: float, x1: float, z0: float, z1: float) -> Polygon:
        return self.cam.project([x0, x1, x1, x0], 0.0, [z0, z0, z1, z1])

    def side_plane(self, x: float, z0: float, z1: float, y0: float, y1: float) -> Polygon:
        """A vertical plane along the street at lateral position x (facades, walls, vehicle sides)."""
        return self.cam.project(x, [y0, y0, y1, y1], [z0, z1, z1, z0])

    def board(self, shape: np.ndarray, x: float, z: float, mirror: bool = False) -> Polygon:
        """A silhouette (metres) facing the camera, standing at (x, z)."""
        return self.cam.project(x + (-shape[:, 0] if mirror else shape[:, 0]), shape[:, 1], z)

    def box(self, x: float, z: float, parts: list[tuple[float, float, float, float]], yaw: float) -> Polygon:
        """Silhouette of stacked boxes (length, width, y0, y1) sharing a centre."""
        corners = np.concatenate([box_corners(x, z, ln, w, y0, y1, yaw) for ln, w, y0, y1 in parts])
        return convex_hull(self.cam.project(corners[:, 0], corners[:, 1], corners[:, 2]))

    # -- sampling helpers -------------------------------------------------------------------------
    def side(self) -> int:
        return int(self.rng.integers(0, 2))

    @staticmethod
    def outward(side: int) -> float:
        """Direction from the road towards that side's facades: -1 on the left, +1 on the right."""
        return -1.0 if side == 0 else 1.0

    def visible_from(self, x: float, half_width: float = 0.0) -> float:
        """Smallest depth at which something at lateral x (metres) comes well into the frame."""
        cam = self.cam
        if x < 0:
            inner, room = x + half_width, cam.cx
        else:
            inner, room = -(x - half_width), cam.width - cam.cx
        if inner >= 0:
            return 0.0
        return 1.25 * cam.focal * -inner / room

    def depth(self, x: float, lo: float, hi: float, half_width: float = 0.0) -> float:
        """A depth on screen for something at lateral x, not nearer than `lo`; log-uniform."""
        lo = max(lo, self.z_near, self.visible_from(x, half_width))
        hi = max(hi, lo * 1.5)
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))

    def on_sidewalk(self, side: int) -> float:
        return float(self.rng.uniform(*sorted((self.sidewalk[side], self.road[side]))))

    def segments(
        self, z0: float, z1: float, length: tuple[float, float], gap_p: float, gap: tuple[float, float]
    ):
        """Consecutive depth intervals (buildings in a row), skipping the side street."""
        z = z0
        while z < z1:
            seg = self.rng.uniform(*length)
            if self.cross is not None and z < self.cross[1] and z + seg > self.cross[0]:
                if z < self.cross[0]:
                    yield z, self.cross[0]
                z = self.cross[1]
                continue
            yield z, min(z + seg, z1)
            z += seg
            if self.rng.random() < gap_p:
                z += self.rng.uniform(*gap)

    def blob(self, r: float, cy: float | None = None) -> np.ndarray:
        """An irregular round outline: a tree crown."""
        n = 14
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + self.rng.uniform(0, 1)
        radius = r * (1 + 0.18 * self.rng.standard_normal(n)).clip(0.6, 1.4)
        cy = r if cy is None else cy
        return np.stack([radius * np.cos(angles), cy + radius * 0.8 * np.sin(angles)], axis=1)

    def thing(self, z: float, parts: list[Part]) -> None:
        self.things.append((z, parts))

    # -- ground and buildings -----------------------------------------------------------------------
    def ground(self) -> None:
        cam, far = self.cam, 5000.0
        w, h = cam.width, cam.height
        self.scene.add(
            "sky", np.array([(0, 0), (w, 0), (w, cam.horizon + 2), (0, cam.horizon + 2)], dtype=float)
        )
        self.scene.add("terrain", np.array([(0, cam.horizon), (w, cam.horizon), (w, h), (0, h)], dtype=float))
        near = cam.z_bottom * 0.5
        for side in (0, 1):
            self.scene.add("sidewalk", self.ground_strip(self.sidewalk[side], self.road[side], near, far))
        self.scene.add(
            "road", self.ground_strip(self.road[0], self.road[1], near, far), self.lane_marks(near)
        )
        if self.cross is not None:
            self.scene.add("road", self.ground_strip(-300, 300, *self.cross))

    def lane_marks(self, near: float) -> DecalList:
        """A dashed centre line and sometimes solid edge lines: paint, still labelled road."""
        rng, (left, right) = self.rng, self.road
        centre = rng.uniform(left + 2.5, min(right, 0.0) - 0.5) if right - left > 5 else (left + right) / 2
        period, dash = rng.uniform(8, 14), rng.uniform(2.5, 4.5)
        marks = [
            (Decal.LANE, self.ground_strip(centre - 0.08, centre + 0.08, z, z + dash))
            for z in np.arange(near + rng.uniform(0, period), 150, period)
        ]
        for edge in (left + 0.35, right - 0.35):
            if rng.random() < 0.6:
                marks.append((Decal.LANE, self.ground_strip(edge - 0.07, edge + 0.07, near, 300)))
        return marks

    def facade_windows(self, x: float, z0: float, z1: float, top: float) -> DecalList:
        """A perspective grid of windows on a side facade, skipping those smaller than a pixel."""
        rng = self.rng
        pitch_z, pitch_y = rng.uniform(2.5, 4.0), rng.uniform(2.8, 3.5)
        fill_z, fill_y = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)
        zs = np.arange(z0 + pitch_z * 0.3, z1 - pitch_z * fill_z, pitch_z)
        ys = np.arange(rng.uniform(1.0, 2.5), top - pitch_y * fill_y, pitch_y)
        if len(zs) == 0 or len(ys) == 0:
            return []
        za, ya = (a.ravel() for a in np.meshgrid(zs, ys))
        zq = np.stack([za, za + pitch_z * fill_z, za + pitch_z * fill_z, za], axis=1)  # (N, 4)
        yq = np.stack([ya, ya, ya + pitch_y * fill_y, ya + pitch_y * fill_y], axis=1)
        quads = self.cam.project(x, yq, zq).reshape(-1, 4, 2)
        extent = quads.max(axis=1) - quads.min(axis=1)
        return [(Decal.GLASS, q) for q in quads[(extent >= 1.0).all(axis=1)]]

    def front_windows(self, x0: float, x1: float, top: float, z: float) -> DecalList:
        """Windows on a facade facing the camera."""
        pitch_x, pitch_y = self.rng.uniform(2.5, 4.0), self.rng.uniform(2.8, 3.5)
        decals = []
        for wx in np.arange(x0 + 0.8, x1 - 1.5, pitch_x):
            for wy in np.arange(1.5, top - 1.8, pitch_y):
                decals.append((Decal.GLASS, self.board(rect(wx, wx + 1.2, wy, wy + 1.6), 0.0, z)))
        return decals

    def buildings(self) -> None:
        """Facades on both sides; what stands behind them is listed first so they cover it."""
        rng = self.rng
        if rng.random() < 0.6:  # buildings closing the street far away
            z, x = rng.uniform(120, 300), -80.0
            while x < 80:
                w, top = rng.uniform(10, 30), rng.uniform(8, 30)
                self.scene.add(
                    "building",
                    self.cam.project([x, x + w, x + w, x], [0, 0, top, top], z),
                    self.front_windows(x, x + w, top, z),
                )
                x += w
        for _ in range(rng.integers(1, 4)):  # treetops behind the facades, seen through gaps
            side = self.side()
            x = self.facade[side] + self.outward(side) * rng.uniform(2, 10)
            self.scene.add("vegetation", self.board(self.blob(rng.uniform(3, 8)), x, rng.uniform(20, 120)))
        for side in (0, 1):
            x = self.facade[side]
            for z0, z1 in self.segments(0.5, rng.uniform(60, 200), (6, 25), gap_p=0.25, gap=(2, 10)):
                top = rng.uniform(6, 28)
                windows = self.facade_windows(x, max(z0, 1.0), z1, top) if rng.random() < 0.85 else []
                self.scene.add("building", self.side_plane(x, z0, z1, 0, top), windows)

    def walls_and_fences(self) -> None:
        """Walls and fences along the sidewalk's outer edge, sometimes one facing the camera."""
        rng = self.rng
        for label, height in (("wall", (0.8, 2.6)), ("fence", (0.9, 2.0))):
            for _ in range(rng.integers(1, 4)):
                side = self.side()
                x = self.sidewalk[side] + self.outward(side) * rng.uniform(0.0, 0.4)
                z0 = self.depth(x, 4, 40)
                self.scene.add(
                    label, self.side_plane(x, z0, z0 + rng.uniform(5, 30), 0, rng.uniform(*height))
                )
            if rng.random() < 0.5:  # one across the far end of a front yard
                side = self.side()
                x0 = self.sidewalk[side]
                x1 = x0 + self.outward(side) * rng.uniform(3, 8)
                h = rng.uniform(*height)
                self.scene.add(
                    label, self.cam.project([x0, x1, x1, x0], [0, 0, h, h], self.depth(x0, 10, 40))
                )

    def hedges_and_grass(self) -> None:
        rng = self.rng
        for _ in range(rng.integers(1, 3)):  # grass along the sidewalk's outer part
            side = self.side()
            inner = self.sidewalk[side] - self.outward(side) * rng.uniform(0.8, 1.8)
            z0 = self.depth(inner, 4, 30)
            self.scene.add(
                "terrain", self.ground_strip(self.sidewalk[side], inner, z0, z0 + rng.uniform(5, 30))
            )
        for _ in range(rng.integers(0, 3)):
            side = self.side()
            x = self.sidewalk[side] + self.outward(side) * rng.uniform(0.2, 0.8)
            z0 = self.depth(x, 5, 60)
            self.scene.add(
                "vegetation", self.side_plane(x, z0, z0 + rng.uniform(3, 15), 0, rng.uniform(0.7, 1.6))
            )

    # -- things in the street -------------------------------------------------------------------------
    def trees(self) -> None:
        rng = self.rng
        for _ in range(rng.integers(1, 5)):
            side = self.side()
            x = self.sidewalk[side] - self.outward(side) * rng.uniform(0.4, 1.2)
            trunk_h, r = rng.uniform(1.5, 3.0), rng.uniform(1.2, 3.5)
            z = self.depth(x, 6, 60, half_width=r)
            trunk = rect(-0.15, 0.15, 0, trunk_h + r * 0.5)
            crown = self.blob(r, cy=trunk_h + r * 0.8)
            self.thing(
                z, [("vegetation", self.board(trunk, x, z), []), ("vegetation", self.board(crown, x, z), [])]
            )

    def poles(self) -> None:
        """Poles at the kerb carrying signs and lights; the first two always carry one of each."""
        rng = self.rng
        for i in range(rng.integers(2, 7)):
            side = self.side()
            x = self.road[side] + self.outward(side) * rng.uniform(0.3, 1.0)
            z = self.depth(x, 8, 30) if i < 2 else self.depth(x, 6, 90)
            height, width = rng.uniform(3.5, 8.0), rng.uniform(0.12, 0.3)
            parts: list[Part] = [("pole", self.board(rect(-width / 2, width / 2, 0, height), x, z), [])]
            if i == 0 or (i > 1 and rng.random() < 0.6):
                sign = self.sign_shape()
                face = scale_about_centre(sign, rng.uniform(0.55, 0.8))
                parts.append(
                    ("traffic sign", self.board(sign, x, z), [(Decal.SIGN_FACE, self.board(face, x, z))])
                )
            if i == 1 or (i > 1 and rng.random() < 0.4):
                housing, lamps = self.traffic_light(height)
                parts.append(
                    ("traffic light", self.board(housing, x, z), [(k, self.board(s, x, z)) for k, s in lamps])
                )
            self.thing(z, parts)

    def sign_shape(self) -> np.ndarray:
        rng = self.rng
        size, y = rng.uniform(0.5, 1.0), rng.uniform(2.0, 3.0)
        kind = rng.integers(0, 4)
        if kind == 0:  # round
            return disc(0.0, y, size / 2, n=12)
        if kind == 1:  # triangle, point up
            return np.array([(-size / 2, y - size / 3), (size / 2, y - size / 3), (0, y + size * 0.55)])
        if kind == 2:  # diamond
            return np.array([(0, y - size / 2), (size / 2, y), (0, y + size / 2), (-size / 2, y)])
        w = size * rng.uniform(1.0, 2.2)  # rectangular board, often off the pole's centre
        off = rng.uniform(-w / 2, w / 2)
        return rect(off - w / 2, off + w / 2, y - size / 2, y + size / 2)

    def traffic_light(self, pole_height: float) -> tuple[np.ndarray, list[tuple[Decal, np.ndarray]]]:
        """A housing at the pole's top (or at head height) with three lamps, one of them lit."""
        rng = self.rng
        w, h = rng.uniform(0.3, 0.45), rng.uniform(0.8, 1.1)
        top = pole_height - rng.uniform(0.0, 0.5) if rng.random() < 0.6 else rng.uniform(2.6, 3.5)
        off = rng.uniform(-0.3, 0.3)
        lit = int(rng.integers(0, 3))
        lamps = []
        for i, colour in enumerate((Decal.LAMP_RED, Decal.LAMP_AMBER, Decal.LAMP_GREEN)):
            centre = top - h * (2 * i + 1) / 6
            lamps.append(
                (colour if i == lit else Decal.LAMP_OFF, disc(off, centre, min(w * 0.33, h * 0.13), n=8))
            )
        return rect(off - w / 2, off + w / 2, top - h, top), lamps

    def vehicles(self) -> None:
        rng, (left, right) = self.rng, self.road
        for label, (count, near, far) in _TRAFFIC.items():
            for _ in range(rng.integers(*count)):
                x = rng.uniform(left + 1.3, right - 1.3)
                self.vehicle(label, x, self.depth(x, near, far), yaw=rng.normal(0, 0.04))
        self.parked_cars()
        if self.cross is not None and rng.random() < 0.7:  # traffic crossing in the side street
            label = str(rng.choice(["car", "car", "truck", "bus"]))
            self.vehicle(label, rng.uniform(-8, 8), self.cross[0] + 1.5, yaw=np.pi / 2)

    def vehicle(self, label: str, x: float, front: float, yaw: float) -> None:
        """A vehicle whose nearest face is at depth `front`, sorted by that depth."""
        rng = self.rng
        if label == "car":
            length, width, height = rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.35, 1.6)
            belt = rng.uniform(0.8, 1.0)  # where the body ends and the glass house starts
            parts = [(length, width, 0.0, belt), (length * 0.5, width * 0.85, 0.5, height)]
        elif label == "truck":
            length, width, height, belt = rng.uniform(6, 10), 2.5, rng.uniform(2.8, 3.8), 0.0
            parts = [(length, width, 0.0, height)]
        elif label == "bus":
            length, width, height, belt = rng.uniform(10, 13), 2.55, rng.uniform(2.9, 3.3), 1.2
            parts = [(length, width, 0.0, height)]
        else:  # tram, with its pantograph
            length, width, height, belt = rng.uniform(20, 32), 2.65, rng.uniform(3.3, 3.7), 1.3
            parts = [(length, width, 0.0, height), (3.0, 1.2, 3.0, 4.3)]
        across = abs(np.sin(yaw)) > 0.7
        reach = width / 2 if across else length / 2  # centre to the face towards the camera
        centre = front + reach
        dims = (length, width, height, belt)
        decals = (
            self.vehicle_decals_across(label, x, centre, dims)
            if across
            else self.vehicle_decals(label, x, centre, dims)
        )
        self.thing(front, [(label, self.box(x, centre, parts, yaw), decals)])

    def vehicle_decals(
        self, label: str, x: float, z: float, dims: tuple[float, float, float, float]
    ) -> DecalList:
        """Rear window, tail lights and tyres on the back; windows and wheels on the visible side."""
        length, width, height, belt = dims
        rear, decals = z - length / 2, []
        if label == "car":
            cab = length * 0.25  # half the glass house's length
            decals.append(
                (
                    Decal.GLASS,
                    self.board(rect(-0.35 * width, 0.35 * width, belt + 0.05, height - 0.07), x, z - cab),
                )
            )
        elif label in ("bus", "train"):
            decals.append(
                (
                    Decal.GLASS,
                    self.board(rect(-0.42 * width, 0.42 * width, belt + 0.5, height - 0.35), x, rear),
                )
            )
        if label != "train":
            for s in (-1, 1):
                x0, x1 = sorted((s * (width / 2 - 0.35), s * (width / 2 - 0.08)))
                lamp_y = max(belt, 1.0) - 0.25
                decals.append((Decal.TAIL_LIGHT, self.board(rect(x0, x1, lamp_y, lamp_y + 0.15), x, rear)))
                decals.append((Decal.TYRE, self.board(rect(x0, x1, 0.0, 0.3), x, rear)))
        if abs(x) > width / 2:  # one long side is in view
            side_x = x - np.sign(x) * width / 2
            if label == "car":
                cab_x = x - np.sign(x) * width * 0.425
                decals.append(
                    (
                        Decal.GLASS,
                        self.side_plane(
                            cab_x,
                            z - length * 0.25 + 0.15,
                            z + length * 0.25 - 0.15,
                            belt + 0.05,
                            height - 0.07,
                        ),
                    )
                )
            elif label in ("bus", "train"):
                decals.append(
                    (
                        Decal.GLASS,
                        self.side_plane(side_x, rear + 0.6, rear + length - 0.6, belt + 0.3, height - 0.4),
                    )
                )
            if label != "train":
                for wz in (rear + 0.6, rear + length - 1.4):
                    decals.append((Decal.TYRE, self.side_plane(side_x, wz, wz + 0.8, 0, 0.6)))
        return decals

    def vehicle_decals_across(
        self, label: str, x: float, z: float, dims: tuple[float, float, float, float]
    ) -> DecalList:
        """A vehicle crossing in the side street shows its side: window band and wheels."""
        length, width, height, belt = dims
        face, decals = z - width / 2, []
        if label == "car":
            decals.append(
                (
                    Decal.GLASS,
                    self.board(
                        rect(-length * 0.25 + 0.15, length * 0.25 - 0.15, belt + 0.05, height - 0.07),
                        x,
                        z - width * 0.425,
                    ),
                )
            )
        elif label in ("bus", "train"):
            decals.append(
                (
                    Decal.GLASS,
                    self.board(rect(-length / 2 + 0.6, length / 2 - 0.6, belt + 0.3, height - 0.4), x, face),
                )
            )
        for wx in (-length / 2 + 0.9, length / 2 - 0.9):
            decals.append((Decal.TYRE, self.board(disc(wx, 0.34, 0.34), x, face)))
        return decals

    def parked_cars(self) -> None:
        """A row of parked cars at the kerb: overlapping instances of one class."""
        rng = self.rng
        side = self.side()
        x = self.road[side] - self.outward(side) * 1.1
        z = self.depth(x, 8, 30, half_width=1.0)
        for _ in range(rng.integers(1, 5)):
            self.vehicle("car", x, z, yaw=rng.normal(0, 0.06))
            z += rng.uniform(3.5, 6.0)  # closer than a car length: neighbours overlap on screen

    def human(
        self, label: str, shape: np.ndarray, neck: float, hip: float, x: float, z: float, mirror: bool = False
    ) -> Part:
        """A person or rider with a face and legs in other colours than their top."""
        decals = []
        for kind, lo, hi in ((Decal.SKIN, neck, 99.0), (Decal.TROUSERS, -1.0, hip)):
            part = band(shape, lo, hi)
            if part is not None:
                decals.append((kind, self.board(part, x, z, mirror)))
        return (label, self.board(shape, x, z, mirror), decals)

    def people(self) -> None:
        rng = self.rng
        for _ in range(rng.integers(2, 9)):
            side = self.side()
            x = rng.uniform(*self.road) if rng.random() < 0.15 else self.on_sidewalk(side)
            z = self.depth(x, 5, 45)
            parts = []
            if rng.random() < 0.3:  # a companion half a step behind: overlapping persons
                size = rng.uniform(1.5, 1.95)
                parts.append(
                    self.human(
                        "person",
                        shapes.PERSON * size,
                        shapes.PERSON_NECK * size,
                        shapes.PERSON_HIP * size,
                        x + rng.uniform(-0.5, 0.5),
                        z + 0.3,
                    )
                )
            size = rng.uniform(1.5, 1.95)
            shape = shapes.PERSON * size + rng.normal(0, 0.015, size=shapes.PERSON.shape) * np.array(
                [1.0, 0.0]
            )
            parts.append(
                self.human("person", shape, shapes.PERSON_NECK * size, shapes.PERSON_HIP * size, x, z)
            )
            self.thing(z, parts)

    def two_wheelers(self) -> None:
        """Riders on bicycles and motorcycles, plus parked ones; at least one of each kind, ridden."""
        rng = self.rng
        kinds = ["bicycle", "motorcycle"] + [
            str(k) for k in rng.choice(["bicycle", "motorcycle"], size=rng.integers(0, 3))
        ]
        for i, kind in enumerate(kinds):
            ridden = i < 2 or rng.random() < 0.6
            x = (
                rng.uniform(self.road[0] + 0.5, self.road[1] - 0.5)
                if ridden
                else self.on_sidewalk(self.side())
            )
            z = self.depth(x, 6, 35)
            side_view, mirror = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            parts = [self.two_wheeler(kind, side_view, x, z, mirror)]
            if ridden:
                scale = rng.uniform(0.95, 1.1)
                rider = (shapes.RIDER_SIDE if side_view else shapes.RIDER_BACK) * scale
                parts.append(
                    self.human(
                        "rider",
                        rider,
                        shapes.RIDER_NECK * scale,
                        shapes.RIDER_HIP * scale,
                        x,
                        z - 0.05,
                        mirror,
                    )
                )
            self.thing(z, parts)

    def two_wheeler(self, kind: str, side_view: bool, x: float, z: float, mirror: bool) -> Part:
        radius = shapes.WHEEL_RADIUS[kind]
        if side_view:
            body = shapes.BICYCLE_SIDE if kind == "bicycle" else shapes.MOTORCYCLE_SIDE
            wheels = shapes.BICYCLE_WHEELS if kind == "bicycle" else shapes.MOTORCYCLE_WHEELS
            tyres = [disc(cx, cy, radius) for cx, cy in wheels]
        else:
            body = shapes.BICYCLE_BACK if kind == "bicycle" else shapes.MOTORCYCLE_BACK
            half = 0.035 if kind == "bicycle" else 0.12
            tyres = [rect(-half, half, 0.0, 2 * radius)]
        return (
            kind,
            self.board(body, x, z, mirror),
            [(Decal.TYRE, self.board(t, x, z, mirror)) for t in tyres],
        )

    def clutter(self) -> None:
        """Void objects: bins, benches, boxes ('static') and prams, carts ('dynamic')."""
        rng = self.rng
        for label in ("static", "dynamic"):
            for _ in range(rng.integers(1, 4)):
                x = self.on_sidewalk(self.side())
                z = self.depth(x, 5, 40)
                w, h = rng.uniform(0.4, 1.6), rng.uniform(0.5, 1.3)
                self.thing(z, [(label, self.board(rect(-w / 2, w / 2, 0, h), x, z), [])])

    # -- the frame ----------------------------------------------------------------------------------------
    def ego_and_borders(self) -> None:
        """Void regions every Cityscapes frame has: the car's hood, rectification and roi borders."""
        cam, rng = self.cam, self.rng
        w, h = cam.width, cam.height
        top = h * (1 - rng.uniform(0.07, 0.15))
        xs = np.linspace(0, w, 17)
        ys = top + (h - top) * 0.45 * ((xs - w / 2) / (w / 2)) ** 2
        self.scene.add("ego vehicle", np.concatenate([np.stack([xs, ys], axis=1), [(w, h), (0, h)]]))
        corner = rng.uniform(0.03, 0.08) * w
        self.scene.add("rectification border", np.array([(0, h - corner * 0.6), (corner, h), (0, h)]))
        self.scene.add("rectification border", np.array([(w, h - corner * 0.5), (w, h), (w - corner, h)]))
        edge = max(1.0, round(0.004 * h))
        for x0, x1, y0, y1 in ((0, w, 0, edge), (0, edge, 0, h), (w - edge, w, 0, h)):
            self.scene.add("out of roi", rect(x0, x1, y0, y1))

    def build(self) -> Scene:
        self.ground()
        self.buildings()
        self.hedges_and_grass()
        self.walls_and_fences()
        self.trees()
        self.poles()
        self.vehicles()
        self.people()
        self.two_wheelers()
        self.clutter()
        for _, parts in sorted(self.things, key=lambda item: -item[0]):  # far first: near ones occlude
            for label, polygon, decals in parts:
                self.scene.add(label, polygon, decals)
        self.ego_and_borders()
        return self.scene


def sample_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    """Draw one street scene; polygons are in pixels, unclipped, in drawing order."""
    return StreetBuilder(rng, width, height).build()
