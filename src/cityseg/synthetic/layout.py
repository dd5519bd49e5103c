"""The street the drawers share: camera, where road, sidewalks and facades lie, and how to place things on them.
Things standing in the street are collected with their depth and listed in the scene once all are drawn, far to near.
"""

from __future__ import annotations

import numpy as np

from cityseg.synthetic.geometry import Camera, Polygon
from cityseg.synthetic.scene import DecalList, Scene

Part = tuple[str, Polygon, DecalList]  # one labelled polygon of a thing, with its decals


class Street:
    """One street being drawn: camera, lateral layout in metres, the scene so far and the things in it."""

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
        """A flat rectangle on the ground between two lateral positions and two depths."""
        return self.cam.project([x0, x1, x1, x0], 0.0, [z0, z0, z1, z1])

    def side_plane(self, x: float, z0: float, z1: float, y0: float, y1: float) -> Polygon:
        """A vertical plane along the street at lateral position x (facades, walls, vehicle sides)."""
        return self.cam.project(x, [y0, y0, y1, y1], [z0, z1, z1, z0])

    def board(self, shape: np.ndarray, x: float, z: float, mirror: bool = False) -> Polygon:
        """A silhouette (metres) facing the camera, standing at (x, z)."""
        return self.cam.project(x + (-shape[:, 0] if mirror else shape[:, 0]), shape[:, 1], z)

    # -- sampling helpers -------------------------------------------------------------------------
    def side(self) -> int:
        """A random side of the street: 0 left, 1 right."""
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
        """A random lateral position on that side's sidewalk."""
        return float(self.rng.uniform(*sorted((self.sidewalk[side], self.road[side]))))

    def thing(self, z: float, parts: list[Part]) -> None:
        """Keep a thing standing at depth z until all are drawn, so it can be sorted far to near."""
        self.things.append((z, parts))

    def list_things_far_to_near(self) -> None:
        """Add the collected things to the scene, farthest first, so nearer ones occlude them."""
        for _, parts in sorted(self.things, key=lambda item: -item[0]):
            for label, polygon, decals in parts:
                self.scene.add(label, polygon, decals)
