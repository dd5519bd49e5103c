"""The ground: sky and terrain behind everything, then sidewalks, the road with its paint, a side street."""

from __future__ import annotations

import numpy as np

from cityseg.synthetic.layout import Street
from cityseg.synthetic.scene import Decal, DecalList


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
