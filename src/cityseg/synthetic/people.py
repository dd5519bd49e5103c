"""People: pedestrians (sometimes in pairs), riders on bicycles and motorcycles, parked two-wheelers."""

from __future__ import annotations

import numpy as np

from cityseg.synthetic import shapes
from cityseg.synthetic.geometry import band, disc, rect
from cityseg.synthetic.layout import Part, Street
from cityseg.synthetic.scene import Decal

# (neck height, hip height) of each body outline at scale 1, metres: skin above, trousers below
_BODY_BANDS = {"person": (shapes.PERSON_NECK, shapes.PERSON_HIP), "rider": (shapes.RIDER_NECK, shapes.RIDER_HIP)}


def human(
    street: Street, label: str, shape: np.ndarray, scale: float, x: float, z: float, mirror: bool = False
) -> Part:
    """A person or rider (outline already scaled) whose face and legs get other colours than their top."""
    neck, hip = (height * scale for height in _BODY_BANDS[label])
    decals = []
    for kind, lo, hi in ((Decal.SKIN, neck, 99.0), (Decal.TROUSERS, -1.0, hip)):
        part = band(shape, lo, hi)
        if part is not None:
            decals.append((kind, street.board(part, x, z, mirror)))
    return (label, street.board(shape, x, z, mirror), decals)


def add_pedestrians(street: Street) -> None:
    """Persons mostly on the sidewalks, a few crossing the road."""
    rng = street.rng
    for _ in range(rng.integers(2, 9)):
        side = street.side()
        x = rng.uniform(*street.road) if rng.random() < 0.15 else street.on_sidewalk(side)
        z = street.depth(x, 5, 45)
        parts = []
        if rng.random() < 0.3:  # a companion half a step behind: overlapping persons
            size = rng.uniform(1.5, 1.95)
            parts.append(human(street, "person", shapes.PERSON * size, size, x + rng.uniform(-0.5, 0.5), z + 0.3))
        size = rng.uniform(1.5, 1.95)
        shape = shapes.PERSON * size + rng.normal(0, 0.015, size=shapes.PERSON.shape) * np.array([1.0, 0.0])
        parts.append(human(street, "person", shape, size, x, z))
        street.thing(z, parts)


def add_two_wheelers(street: Street) -> None:
    """Riders on bicycles and motorcycles, plus parked ones; at least one of each kind, ridden."""
    rng = street.rng
    kinds = ["bicycle", "motorcycle"] + [str(k) for k in rng.choice(["bicycle", "motorcycle"], size=rng.integers(0, 3))]
    for i, kind in enumerate(kinds):
        ridden = i < 2 or rng.random() < 0.6
        x = rng.uniform(street.road[0] + 0.5, street.road[1] - 0.5) if ridden else street.on_sidewalk(street.side())
        z = street.depth(x, 6, 35)
        side_view, mirror = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        parts = [two_wheeler(street, kind, side_view, x, z, mirror)]
        if ridden:
            scale = rng.uniform(0.95, 1.1)
            rider = (shapes.RIDER_SIDE if side_view else shapes.RIDER_BACK) * scale
            parts.append(human(street, "rider", rider, scale, x, z - 0.05, mirror))
        street.thing(z, parts)


def two_wheeler(street: Street, kind: str, side_view: bool, x: float, z: float, mirror: bool) -> Part:
    """A bicycle or motorcycle seen from the side or from behind, with its tyres as decals."""
    radius = shapes.WHEEL_RADIUS[kind]
    if side_view:
        body = shapes.BICYCLE_SIDE if kind == "bicycle" else shapes.MOTORCYCLE_SIDE
        wheels = shapes.BICYCLE_WHEELS if kind == "bicycle" else shapes.MOTORCYCLE_WHEELS
        tyres = [disc(cx, cy, radius) for cx, cy in wheels]
    else:
        body = shapes.BICYCLE_BACK if kind == "bicycle" else shapes.MOTORCYCLE_BACK
        half = 0.035 if kind == "bicycle" else 0.12
        tyres = [rect(-half, half, 0.0, 2 * radius)]
    return (kind, street.board(body, x, z, mirror), [(Decal.TYRE, street.board(t, x, z, mirror)) for t in tyres])
