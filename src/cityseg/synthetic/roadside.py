"""What lines the street: facades with windows, buildings closing it, walls, fences, hedges, grass, trees."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cityseg.synthetic.geometry import rect
from cityseg.synthetic.layout import Street
from cityseg.synthetic.scene import Decal, DecalList


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
