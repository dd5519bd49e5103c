"""Random street scenes: a camera looking down a street with buildings, traffic and people, placed in metres and
projected. Each drawer module (road, roadside, furniture, vehicles, people) adds one kind of thing to a shared
`Street` (layout.py); they all draw from one random generator, so the order in `sample_scene` is part of what a
seed means: changing it changes every dataset.
"""

from __future__ import annotations

import numpy as np

from cityseg.synthetic import furniture, people, road, roadside, vehicles
from cityseg.synthetic.geometry import rect
from cityseg.synthetic.layout import Street
from cityseg.synthetic.scene import Scene


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
    road.add_ground(street)
    roadside.add_buildings(street)
    roadside.add_hedges_and_grass(street)
    roadside.add_walls_and_fences(street)
    roadside.add_trees(street)
    furniture.add_poles(street)
    vehicles.add_vehicles(street)
    people.add_pedestrians(street)
    people.add_two_wheelers(street)
    furniture.add_clutter(street)
    street.list_things_far_to_near()
    add_ego_and_borders(street)
    return street.scene
