"""Silhouettes in metres, seen from the front or side: x centred, y up from the ground."""

from __future__ import annotations

import numpy as np

from cityseg.synthetic.geometry import arc

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
