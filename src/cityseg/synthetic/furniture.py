"""Street furniture: poles at the kerb with traffic signs and lights, and void clutter on the sidewalk."""

from __future__ import annotations

import numpy as np

from cityseg.synthetic.geometry import disc, rect, scale_about_centre
from cityseg.synthetic.layout import Part, Street
from cityseg.synthetic.scene import Decal


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
