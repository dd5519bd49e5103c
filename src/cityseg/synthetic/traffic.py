"""Traffic: vehicles in the lanes, parked and crossing in the side street; pedestrians (sometimes in pairs), riders
and parked two-wheelers, from silhouettes in metres (x centred, y up from the ground)."""

import numpy as np

from cityseg.synthetic.geometry import Polygon, arc, band, box_corners, convex_hull, disc, rect
from cityseg.synthetic.scene import Decal, DecalList, Part, Street

# fmt: off
PERSON = np.array([
    (-0.13, 0.0), (-0.05, 0.0), (0.0, 0.40), (0.05, 0.0), (0.13, 0.0), (0.10, 0.48),
    (0.15, 0.52), (0.17, 0.78), (0.11, 0.82), (0.05, 0.85), (0.06, 0.93), (0.0, 0.99),
    (-0.06, 0.93), (-0.05, 0.85), (-0.11, 0.82), (-0.17, 0.78), (-0.15, 0.52), (-0.10, 0.48),
])  # fractions of body height
PERSON_NECK, PERSON_HIP = 0.85, 0.47  # fractions of body height

RIDER_SIDE = np.array([
    (-0.30, 0.90), (0.05, 0.90), (0.15, 0.35), (0.27, 0.35), (0.20, 1.00), (0.30, 1.25),
    (0.42, 1.20), (0.20, 1.36), (0.02, 1.45), (0.05, 1.58), (-0.03, 1.68), (-0.13, 1.62),
    (-0.12, 1.48), (-0.28, 1.30),
])
RIDER_BACK = np.array([
    (-0.22, 0.35), (-0.12, 0.35), (-0.10, 0.85), (0.10, 0.85), (0.12, 0.35), (0.22, 0.35),
    (0.20, 0.95), (0.24, 1.35), (0.10, 1.45), (0.07, 1.55), (0.0, 1.66), (-0.07, 1.55),
    (-0.10, 1.45), (-0.24, 1.35), (-0.20, 0.95),
])
RIDER_NECK, RIDER_HIP = 1.45, 0.95  # metres above the ground, before scaling

BICYCLE_BACK = np.array([
    (-0.32, 1.0), (0.32, 1.0), (0.32, 0.92), (0.05, 0.88), (0.04, 0.0), (-0.04, 0.0), (-0.05, 0.88), (-0.32, 0.92),
])
MOTORCYCLE_BACK = np.array([(-0.42, 1.1), (0.42, 1.1), (0.30, 0.75), (0.14, 0.0), (-0.14, 0.0), (-0.30, 0.75)])
# fmt: on


def _two_wheeler_side(length: float, radius: float, top: list, bottom: list) -> tuple[np.ndarray, list]:
    """Side silhouette (rear wheel, top line, front wheel, raised bottom) and its wheel centres."""
    half = length / 2 - radius
    rear = arc(-half, radius, radius, 270, 90, 7)  # back half, bottom to top through the rear
    front = arc(half, radius, radius, 90, -90, 7)  # front half, top to bottom through the front
    return np.concatenate([rear, np.array(top), front, np.array(bottom)]), [(-half, radius), (half, radius)]


BICYCLE_SIDE, BICYCLE_WHEELS = _two_wheeler_side(
    1.75,
    0.34,
    top=[(-0.25, 0.95), (-0.08, 0.95), (0.0, 0.78), (0.38, 1.02), (0.50, 1.02)],
    bottom=[(0.25, 0.22), (0.0, 0.30), (-0.25, 0.22)],
)
MOTORCYCLE_SIDE, MOTORCYCLE_WHEELS = _two_wheeler_side(
    2.1,
    0.32,
    top=[(-0.85, 0.85), (-0.3, 0.88), (0.05, 1.05), (0.5, 1.05), (0.62, 1.25), (0.75, 0.75)],
    bottom=[(0.35, 0.18), (-0.35, 0.18)],
)
WHEEL_RADIUS = {"bicycle": 0.34, "motorcycle": 0.32}


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


# (neck height, hip height) of each body outline at scale 1, metres: skin above, trousers below
_BODY_BANDS = {"person": (PERSON_NECK, PERSON_HIP), "rider": (RIDER_NECK, RIDER_HIP)}


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
            parts.append(human(street, "person", PERSON * size, size, x + rng.uniform(-0.5, 0.5), z + 0.3))
        size = rng.uniform(1.5, 1.95)
        shape = PERSON * size + rng.normal(0, 0.015, size=PERSON.shape) * np.array([1.0, 0.0])
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
            rider = (RIDER_SIDE if side_view else RIDER_BACK) * scale
            parts.append(human(street, "rider", rider, scale, x, z - 0.05, mirror))
        street.thing(z, parts)


def two_wheeler(street: Street, kind: str, side_view: bool, x: float, z: float, mirror: bool) -> Part:
    """A bicycle or motorcycle seen from the side or from behind, with its tyres as decals."""
    radius = WHEEL_RADIUS[kind]
    if side_view:
        body = BICYCLE_SIDE if kind == "bicycle" else MOTORCYCLE_SIDE
        wheels = BICYCLE_WHEELS if kind == "bicycle" else MOTORCYCLE_WHEELS
        tyres = [disc(cx, cy, radius) for cx, cy in wheels]
    else:
        body = BICYCLE_BACK if kind == "bicycle" else MOTORCYCLE_BACK
        half = 0.035 if kind == "bicycle" else 0.12
        tyres = [rect(-half, half, 0.0, 2 * radius)]
    return (kind, street.board(body, x, z, mirror), [(Decal.TYRE, street.board(t, x, z, mirror)) for t in tyres])
