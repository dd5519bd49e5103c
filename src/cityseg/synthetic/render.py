"""The camera image of a synthetic frame, painted from its rasterised labels.

Each class gets a base colour drawn per image (per instance for things), a texture, then surface details (windows,
tyres, lamps, faces, lane marks) blended over their owners, and the frame a colour cast and noise. The colour
distributions overlap, so a model must use texture and context, yet a small network learns them in a few epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cityscapesscripts.helpers.labels import name2label
from PIL import Image

from cityseg.synthetic.scene import Decal


@dataclass(frozen=True)
class Look:
    """Colour distribution and texture of one class."""

    mean: tuple[float, float, float]  # RGB
    image_std: float = 14.0  # spread of the class colour between images
    instance_std: float = 0.0  # spread between instances of a thing class in one image
    blotch: float = 0.0  # large-scale luminance variation (foliage, stains)
    grain: float = 0.04  # small-scale luminance variation


LOOKS: dict[str, Look] = {
    "road": Look((84, 82, 88), grain=0.10, blotch=0.06),
    "sidewalk": Look((150, 134, 140), grain=0.08),
    "building": Look((128, 110, 96), image_std=22, blotch=0.10),
    "wall": Look((168, 158, 132), image_std=18, grain=0.06),
    "fence": Look((128, 108, 78), image_std=18),
    "pole": Look((148, 148, 160), image_std=16, grain=0.02),
    "traffic light": Look((196, 150, 40), image_std=18),
    "traffic sign": Look((48, 86, 186), image_std=20, grain=0.03),
    "vegetation": Look((70, 118, 46), image_std=14, blotch=0.25, grain=0.18),
    "terrain": Look((140, 148, 86), image_std=16, blotch=0.12, grain=0.12),
    "sky": Look((146, 182, 226), image_std=16, blotch=0.05, grain=0.01),
    "person": Look((150, 72, 82), image_std=12, instance_std=34, grain=0.06),
    "rider": Look((172, 98, 52), image_std=12, instance_std=26, grain=0.06),
    "car": Look((72, 78, 132), image_std=12, instance_std=40, grain=0.03),
    "truck": Look((190, 190, 184), image_std=14, instance_std=22, grain=0.04),
    "bus": Look((62, 140, 150), image_std=14, instance_std=18, grain=0.03),
    "train": Look((176, 48, 48), image_std=14, instance_std=14, grain=0.03),
    "motorcycle": Look((46, 46, 56), image_std=10, instance_std=14, grain=0.05),
    "bicycle": Look((112, 50, 112), image_std=14, instance_std=20, grain=0.05),
    # void classes: ignored in evaluation but still pixels of the image
    "unlabeled": Look((0, 0, 0), image_std=4),
    "ego vehicle": Look((36, 36, 42), image_std=8, grain=0.03),
    "rectification border": Look((4, 4, 4), image_std=2, grain=0.0),
    "out of roi": Look((24, 24, 24), image_std=6),
    "static": Look((118, 108, 98), image_std=30, grain=0.06),
    "dynamic": Look((150, 100, 62), image_std=30, grain=0.06),
}


@dataclass(frozen=True)
class DecalLook:
    """Colour of a surface detail and the classes it may appear on (it never leaks onto others)."""

    mean: tuple[float, float, float]
    std: float  # spread between images
    alpha: float  # how much of the owner's colour it replaces
    owners: tuple[str, ...]


_WHEELED = ("car", "truck", "bus", "train", "motorcycle", "bicycle")
DECAL_LOOKS: dict[Decal, DecalLook] = {
    Decal.LANE: DecalLook((222, 222, 214), 10, 0.9, ("road",)),
    Decal.GLASS: DecalLook((52, 62, 82), 14, 0.8, ("building", "car", "truck", "bus", "train")),
    Decal.TYRE: DecalLook((26, 26, 28), 6, 0.9, _WHEELED),
    Decal.TAIL_LIGHT: DecalLook((190, 30, 30), 15, 0.9, ("car", "truck", "bus")),
    Decal.LAMP_OFF: DecalLook((30, 30, 28), 6, 0.9, ("traffic light",)),
    Decal.LAMP_RED: DecalLook((240, 40, 30), 10, 1.0, ("traffic light",)),
    Decal.LAMP_AMBER: DecalLook((250, 170, 20), 10, 1.0, ("traffic light",)),
    Decal.LAMP_GREEN: DecalLook((40, 220, 120), 10, 1.0, ("traffic light",)),
    Decal.SIGN_FACE: DecalLook((232, 232, 228), 14, 0.85, ("traffic sign",)),
    Decal.SKIN: DecalLook((205, 160, 130), 22, 0.85, ("person", "rider")),
    Decal.TROUSERS: DecalLook((52, 56, 76), 20, 0.85, ("person", "rider")),
}
_N_DECALS = max(DECAL_LOOKS) + 1
_DECAL_MEAN = np.zeros((_N_DECALS, 3), dtype=np.float32)
_DECAL_STD = np.zeros((_N_DECALS, 1), dtype=np.float32)
_DECAL_ALPHA = np.zeros(_N_DECALS, dtype=np.float32)
_DECAL_ALLOWED = np.zeros((_N_DECALS, 256), dtype=bool)  # [decal, labelId]
for _kind, _look in DECAL_LOOKS.items():
    _DECAL_MEAN[_kind], _DECAL_STD[_kind], _DECAL_ALPHA[_kind] = _look.mean, _look.std, _look.alpha
    _DECAL_ALLOWED[_kind, [name2label[n].id for n in _look.owners]] = True

_MAX_INSTANCES = 256  # per class; more instances reuse colours, which is harmless


def _lut(values: dict[str, float | tuple], width: int = 1) -> np.ndarray:
    """A (256, width) float32 table indexed by labelId from per-class-name values."""
    table = np.zeros((256, width), dtype=np.float32)
    for name, value in values.items():
        table[name2label[name].id] = value
    return table


_MEAN = _lut({n: look.mean for n, look in LOOKS.items()}, 3)
_IMAGE_STD = _lut({n: look.image_std for n, look in LOOKS.items()})
_INSTANCE_STD = _lut({n: look.instance_std for n, look in LOOKS.items()})[:, 0]
_BLOTCH = _lut({n: look.blotch for n, look in LOOKS.items()})[:, 0]
_GRAIN = _lut({n: look.grain for n, look in LOOKS.items()})[:, 0]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """(H, W) float32 unit-variance-ish noise that varies over about `cell` pixels."""
    cell = max(cell, 1.5)
    gh, gw = int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2
    coarse = Image.fromarray(rng.standard_normal((gh, gw)).astype(np.float32))  # mode "F"
    big = coarse.resize((int(gw * cell), int(gh * cell)), Image.Resampling.BILINEAR)
    ox, oy = int(rng.integers(0, max(1, int(cell)))), int(rng.integers(0, max(1, int(cell))))
    return np.asarray(big, dtype=np.float32)[oy : oy + height, ox : ox + width]


def _periodic(coords: np.ndarray, period: float, duty: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean stripes: True on the first `duty` fraction of every `period` (random phase)."""
    return ((coords + rng.uniform(0, period)) % period) < period * duty


class _Painter:
    """Holds one frame's arrays while the texture steps modify the colour and luminance."""

    def __init__(self, label_ids: np.ndarray, instance_ids: np.ndarray, rng: np.random.Generator):
        self.labels, self.rng = label_ids, rng
        height, width = label_ids.shape
        self.ys = np.arange(height, dtype=np.float32)[:, None]  # (H, 1)
        self.xs = np.arange(width, dtype=np.float32)[None, :]  # (1, W)
        # between images a class mostly changes brightness and only a little hue: grass stays green
        shade = rng.normal(0.0, 1.0, size=(256, 1)) + rng.normal(0.0, 0.4, size=(256, 3))
        base = _MEAN + shade.astype(np.float32) * _IMAGE_STD  # (256, 3)
        offsets = rng.normal(0.0, 1.0, size=(256, _MAX_INSTANCES, 3)).astype(np.float32)
        offsets *= _INSTANCE_STD[:, None, None]  # zero for stuff and void classes
        cls, k = np.divmod(instance_ids.astype(np.int32), 1000)  # stuff pixels: cls 0, whose offsets are zero
        self.rgb = base[label_ids] + offsets[cls, np.minimum(k, _MAX_INSTANCES - 1)]  # (H, W, 3)
        self.luma = np.ones((height, width), dtype=np.float32)  # (H, W) multiplicative shading

    def mask(self, name: str) -> np.ndarray:
        return self.labels == name2label[name].id

    def textures(self) -> None:
        rng, (height, width) = self.rng, self.labels.shape
        blotch = smooth_noise(rng, height, width, cell=height / 6)
        grain = smooth_noise(rng, height, width, cell=max(2.0, height / 64))
        self.luma += _BLOTCH[self.labels] * blotch + _GRAIN[self.labels] * grain
        # foliage shifts hue (yellow-green to blue-green) as well as brightness
        veg = self.mask("vegetation")
        self.rgb[veg] += grain[veg, None] * np.array([14, 6, -10], dtype=np.float32)

    def lines(self, name: str, along_x: bool, along_y: bool, period: float, duty: float, factor: float) -> None:
        rng = self.rng
        stripes = np.zeros(self.labels.shape, dtype=bool)
        if along_x:
            stripes |= _periodic(self.xs, period, duty, rng)
        if along_y:
            stripes |= _periodic(self.ys, period * rng.uniform(0.6, 1.0), duty, rng)
        self.luma[stripes & self.mask(name)] *= factor

    def sky_gradient(self, horizon: float) -> None:
        """Sky brightens towards the horizon, as on a real overcast or clear day."""
        ramp = 0.82 + 0.3 * np.clip(self.ys / max(horizon, 1.0), 0.0, 1.0)  # (H, 1)
        sky = self.mask("sky")
        self.luma = np.where(sky, self.luma * ramp, self.luma)

    def decals(self, decals: np.ndarray) -> None:
        """Blend each decal over its owner's colour; where it spills onto another class, ignore it."""
        colour = _DECAL_MEAN + self.rng.normal(0.0, 1.0, size=(_N_DECALS, 3)).astype(np.float32) * _DECAL_STD
        on = _DECAL_ALLOWED[decals, self.labels]  # (H, W)
        kinds = decals[on]
        alpha = _DECAL_ALPHA[kinds][:, None]
        self.rgb[on] = self.rgb[on] * (1 - alpha) + colour[kinds] * alpha

    def finish(self) -> np.ndarray:
        """Colour cast, brightness and sensor noise, then quantise."""
        rng = self.rng
        gain = (rng.uniform(0.92, 1.08, 3) * rng.uniform(0.75, 1.2)).astype(np.float32)
        out = self.rgb * self.luma[..., None] * gain
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(3.0, 8.0))
        return np.clip(out, 0, 255).astype(np.uint8)


def render_image(
    label_ids: np.ndarray, instance_ids: np.ndarray, decals: np.ndarray, horizon: float, rng: np.random.Generator
) -> np.ndarray:
    """(H, W) labelIds, instanceIds and decals -> (H, W, 3) uint8 RGB camera image."""
    width = label_ids.shape[1]
    painter = _Painter(label_ids, instance_ids, rng)
    painter.textures()
    painter.lines("sidewalk", True, True, period=max(3.0, width * rng.uniform(0.01, 0.02)), duty=0.15, factor=0.8)
    painter.lines("fence", True, False, period=max(2.0, width * rng.uniform(0.004, 0.008)), duty=0.5, factor=0.7)
    painter.lines("wall", False, True, period=max(3.0, width * rng.uniform(0.006, 0.012)), duty=0.2, factor=0.82)
    painter.sky_gradient(horizon)
    painter.decals(decals)
    return painter.finish()
