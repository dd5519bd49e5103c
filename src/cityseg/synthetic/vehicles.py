"""Vehicles: traffic in the lanes, a row of parked cars, a vehicle crossing in the side street."""

from __future__ import annotations

import numpy as np

from cityseg.synthetic.geometry import Polygon, box_corners, convex_hull, disc, rect
from cityseg.synthetic.layout import Street
from cityseg.synthetic.scene import Decal, DecalList

# (count range, nearest front, farthest front) of the vehicles driving in the lanes
_TRAFFIC = {
    "car": ((1, 5), 7.0, 70.0),
    "truck": ((1, 3), 12.0, 70.0),
    "bus": ((1, 3), 14.0, 80.0),
    "train": ((1, 2), 15.0, 60.0),  # trams share the street in German cities
}

Dimensions = tuple[float, float, float, float]  # length, width, height, belt line (metres)


def add_vehicles(street: Street) -> None:
    """Every kind of traffic at least once, then parked cars and maybe crossing traffic."""
    rng, (left, right) = street.rng, street.road
    for label, (count, near, far) in _TRAFFIC.items():
        for _ in range(rng.integers(*count)):
            x = rng.uniform(left + 1.3, right - 1.3)
            add_vehicle(street, label, x, street.depth(x, near, far), yaw=rng.normal(0, 0.04))
    add_parked_cars(street)
    if street.cross is not None and rng.random() < 0.7:  # traffic crossing in the side street
        label = str(rng.choice(["car", "car", "truck", "bus"]))
        add_vehicle(street, label, rng.uniform(-8, 8), street.cross[0] + 1.5, yaw=np.pi / 2)


def box_silhouette(
    street: Street, x: float, z: float, parts: list[tuple[float, float, float, float]], yaw: float
) -> Polygon:
    """Silhouette of stacked boxes (length, width, y0, y1) sharing a centre."""
    corners = np.concatenate([box_corners(x, z, ln, w, y0, y1, yaw) for ln, w, y0, y1 in parts])
    return convex_hull(street.cam.project(corners[:, 0], corners[:, 1], corners[:, 2]))


def add_vehicle(street: Street, label: str, x: float, front: float, yaw: float) -> None:
    """A vehicle whose nearest face is at depth `front`, sorted by that depth."""
    rng = street.rng
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
    decals = decals_crossing(street, label, x, centre, dims) if across else decals_along(street, label, x, centre, dims)
    street.thing(front, [(label, box_silhouette(street, x, centre, parts, yaw), decals)])


def decals_along(street: Street, label: str, x: float, z: float, dims: Dimensions) -> DecalList:
    """Rear window, tail lights and tyres on the back; windows and wheels on the visible side."""
    length, width, height, belt = dims
    rear, decals = z - length / 2, []
    if label == "car":
        cab = length * 0.25  # half the glass house's length
        window = rect(-0.35 * width, 0.35 * width, belt + 0.05, height - 0.07)
        decals.append((Decal.GLASS, street.board(window, x, z - cab)))
    elif label in ("bus", "train"):
        window = rect(-0.42 * width, 0.42 * width, belt + 0.5, height - 0.35)
        decals.append((Decal.GLASS, street.board(window, x, rear)))
    if label != "train":
        for s in (-1, 1):
            x0, x1 = sorted((s * (width / 2 - 0.35), s * (width / 2 - 0.08)))
            lamp_y = max(belt, 1.0) - 0.25
            decals.append((Decal.TAIL_LIGHT, street.board(rect(x0, x1, lamp_y, lamp_y + 0.15), x, rear)))
            decals.append((Decal.TYRE, street.board(rect(x0, x1, 0.0, 0.3), x, rear)))
    if abs(x) > width / 2:  # one long side is in view
        side_x = x - np.sign(x) * width / 2
        if label == "car":
            cab_x, cab = x - np.sign(x) * width * 0.425, length * 0.25
            window = street.side_plane(cab_x, z - cab + 0.15, z + cab - 0.15, belt + 0.05, height - 0.07)
            decals.append((Decal.GLASS, window))
        elif label in ("bus", "train"):
            window = street.side_plane(side_x, rear + 0.6, rear + length - 0.6, belt + 0.3, height - 0.4)
            decals.append((Decal.GLASS, window))
        if label != "train":
            for wz in (rear + 0.6, rear + length - 1.4):
                decals.append((Decal.TYRE, street.side_plane(side_x, wz, wz + 0.8, 0, 0.6)))
    return decals


def decals_crossing(street: Street, label: str, x: float, z: float, dims: Dimensions) -> DecalList:
    """A vehicle crossing in the side street shows its side: window band and wheels."""
    length, width, height, belt = dims
    face, decals = z - width / 2, []
    if label == "car":
        window = rect(-length * 0.25 + 0.15, length * 0.25 - 0.15, belt + 0.05, height - 0.07)
        decals.append((Decal.GLASS, street.board(window, x, z - width * 0.425)))
    elif label in ("bus", "train"):
        window = rect(-length / 2 + 0.6, length / 2 - 0.6, belt + 0.3, height - 0.4)
        decals.append((Decal.GLASS, street.board(window, x, face)))
    for wx in (-length / 2 + 0.9, length / 2 - 0.9):
        decals.append((Decal.TYRE, street.board(disc(wx, 0.34, 0.34), x, face)))
    return decals


def add_parked_cars(street: Street) -> None:
    """A row of parked cars at the kerb: overlapping instances of one class."""
    rng = street.rng
    side = street.side()
    x = street.road[side] - street.outward(side) * 1.1
    z = street.depth(x, 8, 30, half_width=1.0)
    for _ in range(rng.integers(1, 5)):
        add_vehicle(street, "car", x, z, yaw=rng.normal(0, 0.06))
        z += rng.uniform(3.5, 6.0)  # closer than a car length: neighbours overlap on screen
