"""Random street scenes placed in metres and projected (ground, roadside, furniture, traffic), all from one random
generator, so the order in `sample_scene` is part of what a seed means."""

from collections.abc import Iterator

import numpy as np

from cityseg.synthetic import traffic
from cityseg.synthetic.geometry import disc, rect, scale_about_centre
from cityseg.synthetic.scene import Decal, DecalList, Part, Scene, Street


def add_ground(street: Street) -> None:
    """Listed first, so everything standing on the ground covers it."""
    cam, far = street.cam, 5000.0
    w, h = cam.width, cam.height
    street.scene.add("sky", np.array([(0, 0), (w, 0), (w, cam.horizon + 2), (0, cam.horizon + 2)], dtype=float))
    street.scene.add("terrain", np.array([(0, cam.horizon), (w, cam.horizon), (w, h), (0, h)], dtype=float))
    near = cam.z_bottom * 0.5
    for side in (0, 1):
        street.scene.add("sidewalk", street.ground_strip(street.sidewalk[side], street.road[side], near, far))
    street.scene.add("road", street.ground_strip(street.road[0], street.road[1], near, far), lane_marks(street, near))
    if street.cross is not None:
        street.scene.add("road", street.ground_strip(-300, 300, *street.cross))


def lane_marks(street: Street, near: float) -> DecalList:
    """A dashed centre line and sometimes solid edge lines: paint, still labelled road."""
    rng, (left, right) = street.rng, street.road
    centre = rng.uniform(left + 2.5, min(right, 0.0) - 0.5) if right - left > 5 else (left + right) / 2
    period, dash = rng.uniform(8, 14), rng.uniform(2.5, 4.5)
    marks = [
        (Decal.LANE, street.ground_strip(centre - 0.08, centre + 0.08, z, z + dash))
        for z in np.arange(near + rng.uniform(0, period), 150, period)
    ]
    for edge in (left + 0.35, right - 0.35):
        if rng.random() < 0.6:
            marks.append((Decal.LANE, street.ground_strip(edge - 0.07, edge + 0.07, near, 300)))
    return marks


def crown(rng: np.random.Generator, r: float, cy: float | None = None) -> np.ndarray:
    """An irregular round outline (metres) of radius about r: a tree crown."""
    n = 14
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
    radius = r * (1 + 0.18 * rng.standard_normal(n)).clip(0.6, 1.4)
    cy = r if cy is None else cy
    return np.stack([radius * np.cos(angles), cy + radius * 0.8 * np.sin(angles)], axis=1)


def facade_segments(
    street: Street, z0: float, z1: float, length: tuple[float, float], gap_p: float, gap: tuple[float, float]
) -> Iterator[tuple[float, float]]:
    """Consecutive depth intervals (buildings in a row), skipping the side street."""
    rng, cross = street.rng, street.cross
    z = z0
    while z < z1:
        seg = rng.uniform(*length)
        if cross is not None and z < cross[1] and z + seg > cross[0]:
            if z < cross[0]:
                yield z, cross[0]
            z = cross[1]
            continue
        yield z, min(z + seg, z1)
        z += seg
        if rng.random() < gap_p:
            z += rng.uniform(*gap)


def facade_windows(street: Street, x: float, z0: float, z1: float, top: float) -> DecalList:
    """A perspective grid of windows on a side facade, skipping those smaller than a pixel."""
    rng = street.rng
    pitch_z, pitch_y = rng.uniform(2.5, 4.0), rng.uniform(2.8, 3.5)
    fill_z, fill_y = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)
    zs = np.arange(z0 + pitch_z * 0.3, z1 - pitch_z * fill_z, pitch_z)
    ys = np.arange(rng.uniform(1.0, 2.5), top - pitch_y * fill_y, pitch_y)
    if len(zs) == 0 or len(ys) == 0:
        return []
    za, ya = (a.ravel() for a in np.meshgrid(zs, ys))
    zq = np.stack([za, za + pitch_z * fill_z, za + pitch_z * fill_z, za], axis=1)  # (N, 4)
    yq = np.stack([ya, ya, ya + pitch_y * fill_y, ya + pitch_y * fill_y], axis=1)
    quads = street.cam.project(x, yq, zq).reshape(-1, 4, 2)
    extent = quads.max(axis=1) - quads.min(axis=1)
    return [(Decal.GLASS, q) for q in quads[(extent >= 1.0).all(axis=1)]]


def front_windows(street: Street, x0: float, x1: float, top: float, z: float) -> DecalList:
    """Windows on a facade facing the camera."""
    pitch_x, pitch_y = street.rng.uniform(2.5, 4.0), street.rng.uniform(2.8, 3.5)
    decals = []
    for wx in np.arange(x0 + 0.8, x1 - 1.5, pitch_x):
        for wy in np.arange(1.5, top - 1.8, pitch_y):
            decals.append((Decal.GLASS, street.board(rect(wx, wx + 1.2, wy, wy + 1.6), 0.0, z)))
    return decals


def add_buildings(street: Street) -> None:
    """Facades on both sides; what stands behind them is listed first so they cover it."""
    rng = street.rng
    if rng.random() < 0.6:  # buildings closing the street far away
        z, x = rng.uniform(120, 300), -80.0
        while x < 80:
            w, top = rng.uniform(10, 30), rng.uniform(8, 30)
            street.scene.add(
                "building",
                street.cam.project([x, x + w, x + w, x], [0, 0, top, top], z),
                front_windows(street, x, x + w, top, z),
            )
            x += w
    for _ in range(rng.integers(1, 4)):  # treetops behind the facades, seen through gaps
        side = street.side()
        x = street.facade[side] + street.outward(side) * rng.uniform(2, 10)
        street.scene.add("vegetation", street.board(crown(rng, rng.uniform(3, 8)), x, rng.uniform(20, 120)))
    for side in (0, 1):
        x = street.facade[side]
        for z0, z1 in facade_segments(street, 0.5, rng.uniform(60, 200), (6, 25), gap_p=0.25, gap=(2, 10)):
            top = rng.uniform(6, 28)
            windows = facade_windows(street, x, max(z0, 1.0), z1, top) if rng.random() < 0.85 else []
            street.scene.add("building", street.side_plane(x, z0, z1, 0, top), windows)


def add_walls_and_fences(street: Street) -> None:
    """Walls and fences along the sidewalk's outer edge, sometimes one facing the camera."""
    rng = street.rng
    for label, height in (("wall", (0.8, 2.6)), ("fence", (0.9, 2.0))):
        for _ in range(rng.integers(1, 4)):
            side = street.side()
            x = street.sidewalk[side] + street.outward(side) * rng.uniform(0.0, 0.4)
            z0 = street.depth(x, 4, 40)
            street.scene.add(label, street.side_plane(x, z0, z0 + rng.uniform(5, 30), 0, rng.uniform(*height)))
        if rng.random() < 0.5:  # one across the far end of a front yard
            side = street.side()
            x0 = street.sidewalk[side]
            x1 = x0 + street.outward(side) * rng.uniform(3, 8)
            h = rng.uniform(*height)
            street.scene.add(label, street.cam.project([x0, x1, x1, x0], [0, 0, h, h], street.depth(x0, 10, 40)))


def add_hedges_and_grass(street: Street) -> None:
    """Grass strips on the sidewalk's outer part and low hedges along it."""
    rng = street.rng
    for _ in range(rng.integers(1, 3)):  # grass along the sidewalk's outer part
        side = street.side()
        inner = street.sidewalk[side] - street.outward(side) * rng.uniform(0.8, 1.8)
        z0 = street.depth(inner, 4, 30)
        street.scene.add("terrain", street.ground_strip(street.sidewalk[side], inner, z0, z0 + rng.uniform(5, 30)))
    for _ in range(rng.integers(0, 3)):
        side = street.side()
        x = street.sidewalk[side] + street.outward(side) * rng.uniform(0.2, 0.8)
        z0 = street.depth(x, 5, 60)
        street.scene.add("vegetation", street.side_plane(x, z0, z0 + rng.uniform(3, 15), 0, rng.uniform(0.7, 1.6)))


def add_trees(street: Street) -> None:
    """Trees on the sidewalk: things in the street, sorted by depth with traffic and people."""
    rng = street.rng
    for _ in range(rng.integers(1, 5)):
        side = street.side()
        x = street.sidewalk[side] - street.outward(side) * rng.uniform(0.4, 1.2)
        trunk_h, r = rng.uniform(1.5, 3.0), rng.uniform(1.2, 3.5)
        z = street.depth(x, 6, 60, half_width=r)
        trunk = rect(-0.15, 0.15, 0, trunk_h + r * 0.5)
        outline = crown(rng, r, cy=trunk_h + r * 0.8)
        street.thing(
            z, [("vegetation", street.board(trunk, x, z), []), ("vegetation", street.board(outline, x, z), [])]
        )


def add_poles(street: Street) -> None:
    """Poles at the kerb carrying signs and lights; the first two always carry one of each."""
    rng = street.rng
    for i in range(rng.integers(2, 7)):
        side = street.side()
        x = street.road[side] + street.outward(side) * rng.uniform(0.3, 1.0)
        z = street.depth(x, 8, 30) if i < 2 else street.depth(x, 6, 90)
        height, width = rng.uniform(3.5, 8.0), rng.uniform(0.12, 0.3)
        parts: list[Part] = [("pole", street.board(rect(-width / 2, width / 2, 0, height), x, z), [])]
        if i == 0 or (i > 1 and rng.random() < 0.6):
            sign = sign_shape(rng)
            face = scale_about_centre(sign, rng.uniform(0.55, 0.8))
            parts.append(("traffic sign", street.board(sign, x, z), [(Decal.SIGN_FACE, street.board(face, x, z))]))
        if i == 1 or (i > 1 and rng.random() < 0.4):
            housing, lamps = traffic_light(rng, height)
            parts.append(("traffic light", street.board(housing, x, z), [(k, street.board(s, x, z)) for k, s in lamps]))
        street.thing(z, parts)


def sign_shape(rng: np.random.Generator) -> np.ndarray:
    """Outline (metres, pole at x=0) of a round, triangular, diamond or rectangular sign."""
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


def traffic_light(rng: np.random.Generator, pole_height: float) -> tuple[np.ndarray, list[tuple[Decal, np.ndarray]]]:
    """A housing at the pole's top (or at head height) with three lamps, one of them lit."""
    w, h = rng.uniform(0.3, 0.45), rng.uniform(0.8, 1.1)
    top = pole_height - rng.uniform(0.0, 0.5) if rng.random() < 0.6 else rng.uniform(2.6, 3.5)
    off = rng.uniform(-0.3, 0.3)
    lit = int(rng.integers(0, 3))
    lamps = []
    for i, colour in enumerate((Decal.LAMP_RED, Decal.LAMP_AMBER, Decal.LAMP_GREEN)):
        centre = top - h * (2 * i + 1) / 6
        lamps.append((colour if i == lit else Decal.LAMP_OFF, disc(off, centre, min(w * 0.33, h * 0.13), n=8)))
    return rect(off - w / 2, off + w / 2, top - h, top), lamps


def add_clutter(street: Street) -> None:
    """Void objects: bins, benches, boxes ('static') and prams, carts ('dynamic')."""
    rng = street.rng
    for label in ("static", "dynamic"):
        for _ in range(rng.integers(1, 4)):
            x = street.on_sidewalk(street.side())
            z = street.depth(x, 5, 40)
            w, h = rng.uniform(0.4, 1.6), rng.uniform(0.5, 1.3)
            street.thing(z, [(label, street.board(rect(-w / 2, w / 2, 0, h), x, z), [])])


def add_ego_and_borders(street: Street) -> None:
    """Void regions every Cityscapes frame has: the car's hood, rectification and roi borders."""
    cam, rng = street.cam, street.rng
    w, h = cam.width, cam.height
    top = h * (1 - rng.uniform(0.07, 0.15))
    xs = np.linspace(0, w, 17)
    ys = top + (h - top) * 0.45 * ((xs - w / 2) / (w / 2)) ** 2
    street.scene.add("ego vehicle", np.concatenate([np.stack([xs, ys], axis=1), [(w, h), (0, h)]]))
    corner = rng.uniform(0.03, 0.08) * w
    street.scene.add("rectification border", np.array([(0, h - corner * 0.6), (corner, h), (0, h)]))
    street.scene.add("rectification border", np.array([(w, h - corner * 0.5), (w, h), (w - corner, h)]))
    edge = max(1.0, round(0.004 * h))
    for x0, x1, y0, y1 in ((0, w, 0, edge), (0, edge, 0, h), (w - edge, w, 0, h)):
        street.scene.add("out of roi", rect(x0, x1, y0, y1))


def sample_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    """Draw one street scene; polygons are in pixels, unclipped, in drawing order."""
    street = Street(rng, width, height)
    add_ground(street)
    add_buildings(street)
    add_hedges_and_grass(street)
    add_walls_and_fences(street)
    add_trees(street)
    add_poles(street)
    traffic.add_vehicles(street)
    traffic.add_pedestrians(street)
    traffic.add_two_wheelers(street)
    add_clutter(street)
    street.list_things_far_to_near()
    add_ego_and_borders(street)
    return street.scene
