"""Write a synthetic dataset in the exact Cityscapes layout: polygons as the official JSON, rasterised by
cityscapesscripts (each PNG equals the official rendering), then the camera image painted from those rasters."""

import io
import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image
from tqdm import tqdm

from cityseg import __version__
from cityseg.data.layout import SPLITS
from cityseg.errors import UserError
from cityseg.fileio import atomic_write_bytes
from cityseg.labels import EVAL_LABEL_IDS
from cityseg.locks import die_with_parent
from cityseg.synthetic.scene import Decal, decal_mask, scene_objects
from cityseg.synthetic.street import sample_scene

GENERATOR = "cityseg.synthetic"
GENERATOR_VERSION = 1  # bump whenever the same parameters would give different files
MARKER = "SYNTHETIC.json"
MIN_SIZE = (64, 32)  # below this the small classes (poles, signs) no longer survive rasterisation
MAX_SIDE = 16384
FRAME_NUMBER = 19  # the annotated frame of every real Cityscapes snippet is _000019
_MAX_SCENE_TRIES = 200
_EVAL_IDS = np.array(sorted(EVAL_LABEL_IDS))

# Real city names per split, so paths look like the real dataset's and splits never share a city.
CITY_NAMES: dict[str, tuple[str, ...]] = {
    "train": (
        "aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
        "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich",
    ),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}  # fmt: skip


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


def city_names(split: str, count: int) -> list[str]:
    """`count` city names for a split: the real ones first, then the same with a number appended."""
    names = CITY_NAMES[split]
    return [names[i % len(names)] + (str(i // len(names) + 1) if i >= len(names) else "") for i in range(count)]


@dataclass(frozen=True)
class FrameSpec:
    """Everything needed to write one frame, picklable for worker processes."""

    split: str
    city: str
    seq: int
    size: tuple[int, int]  # (W, H)
    key: tuple[int, ...]  # seeds the frame's generator: (seed, split index, city index, seq)

    @property
    def stem(self) -> str:
        return f"{self.city}_{self.seq:06d}_{FRAME_NUMBER:06d}"

    def image_path(self, root: Path) -> Path:
        return root / "leftImg8bit" / self.split / self.city / f"{self.stem}_leftImg8bit.png"

    def gt_path(self, root: Path, suffix: str) -> Path:
        return root / "gtFine" / self.split / self.city / f"{self.stem}_gtFine_{suffix}"


def _labelled_scene(spec: FrameSpec, rng: np.random.Generator):
    """Draw scenes until every evaluation class is visible: each frame then holds all 19."""
    width, height = spec.size
    for _ in range(_MAX_SCENE_TRIES):
        scene = sample_scene(rng, width, height)
        text = json.dumps({"imgHeight": height, "imgWidth": width, "objects": scene_objects(scene)}, indent=4)
        annotation = Annotation()
        annotation.fromJsonText(text)
        label_ids = np.asarray(createLabelImage(annotation, "ids"))  # (H, W) uint8
        if np.all(np.bincount(label_ids.ravel(), minlength=256)[_EVAL_IDS] > 0):
            return scene, text, annotation, label_ids
    raise UserError(
        f"could not fit all 19 classes into a {width}x{height} frame ({spec.stem}) in {_MAX_SCENE_TRIES} "
        "scenes; use a street-camera shape such as --size 512x256 or 2048x1024."
    )


def _png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def write_frame(root: Path, spec: FrameSpec) -> None:
    """Render and write the image and the four gtFine files of one frame."""
    scene_rng, render_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(spec.key).spawn(2))
    scene, text, annotation, label_ids = _labelled_scene(spec, scene_rng)
    instance_ids = np.asarray(createInstanceImage(annotation, "ids")).astype(np.uint16)  # (H, W)
    color = createLabelImage(annotation, "color")
    rgb = render_image(label_ids, instance_ids, decal_mask(scene), scene.camera.horizon, render_rng)

    atomic_write_bytes(spec.gt_path(root, "polygons.json"), text.encode())
    # default PNG options: byte-identical to what json2labelImg / json2instanceImg save
    atomic_write_bytes(spec.gt_path(root, "labelIds.png"), _png_bytes(Image.fromarray(label_ids)))
    atomic_write_bytes(spec.gt_path(root, "instanceIds.png"), _png_bytes(Image.fromarray(instance_ids)))
    atomic_write_bytes(spec.gt_path(root, "color.png"), _png_bytes(color))
    # noisy photos barely compress; a fast level keeps 2048x1024 generation quick
    atomic_write_bytes(spec.image_path(root), _png_bytes(Image.fromarray(rgb), compress_level=1))


def _write_frame_task(args: tuple[Path, FrameSpec]) -> str:
    write_frame(*args)
    return args[1].split


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"size {size!r} is not a (width, height) pair; pass e.g. (512, 256).") from None
    if width < MIN_SIZE[0] or height < MIN_SIZE[1] or width > MAX_SIDE or height > MAX_SIDE:
        raise UserError(
            f"size {width}x{height} is outside what the generator supports: use at least "
            f"{MIN_SIZE[0]}x{MIN_SIZE[1]} (smaller frames lose poles and signs) and at most "
            f"{MAX_SIDE} pixels a side, e.g. --size 512x256 or 2048x1024 (Cityscapes' own size)."
        )
    return width, height


def _check_counts(cities: dict[str, int], per_city: int, workers: int) -> None:
    named = {**{f"{s}_cities": n for s, n in cities.items()}, "per_city": per_city, "workers": workers}
    for name, value in named.items():
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{name}={value!r} must be a whole number of 0 or more.")
    if per_city < 1 or sum(cities.values()) < 1:
        raise UserError(
            f"nothing to write: {sum(cities.values())} cities with {per_city} images each; "
            "ask for at least one city and one image per city."
        )
    if workers < 1:
        raise UserError(f"workers={workers} must be at least 1.")


def _check_output(out: Path, parameters: dict) -> None:
    """Refuse folders holding anything but an earlier synthetic dataset with the same parameters."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder; choose a new or empty folder for the synthetic dataset.")
    if not out.exists() or not any(out.iterdir()):
        return
    marker = out / MARKER
    if not marker.is_file():
        raise UserError(
            f"{out} is not empty and holds no {MARKER}, so it is not a dataset written by `cityseg synth`; "
            "nothing was written. Choose a new or empty folder (files there are never overwritten)."
        )
    try:
        previous = json.loads(marker.read_text())
        previous_parameters = previous["parameters"]
        generator = previous["generator"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{marker} is not a readable {MARKER}; choose a new or empty folder instead of {out}."
        ) from None
    if generator != GENERATOR:
        raise UserError(f"{marker} was not written by {GENERATOR}; choose a new or empty folder instead of {out}.")
    if previous_parameters != parameters:
        changed = sorted(
            k for k in set(parameters) | set(previous_parameters) if parameters.get(k) != previous_parameters.get(k)
        )
        diff = "; ".join(f"{k} {previous_parameters.get(k)} there, {parameters.get(k)} now" for k in changed)
        raise UserError(
            f"{out} holds a synthetic dataset written with other parameters ({diff}); "
            "mixing the two would leave stray frames. Delete that folder first or choose another one."
        )


def _write_marker(
    out: Path, parameters: dict, images: dict[str, int], cities: dict[str, list[str]], complete: bool
) -> None:
    record = {
        "generator": GENERATOR,
        "cityseg_version": __version__,
        "parameters": parameters,
        "complete": complete,
        "images": images,
        "cities": cities,
    }
    atomic_write_bytes(out / MARKER, (json.dumps(record, indent=2) + "\n").encode())


def _run(root: Path, frames: list[FrameSpec], workers: int) -> Iterator[str]:
    tasks = [(root, spec) for spec in frames]
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_write_frame_task, tasks)
        return
    # spawn: workers start clean even when the parent has torch threads running
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=die_with_parent
    ) as pool:
        yield from pool.map(_write_frame_task, tasks, chunksize=1)


def write_dataset(
    out: Path,
    size: tuple[int, int] = (512, 256),
    train_cities: int = 10,
    val_cities: int = 3,
    test_cities: int = 2,
    per_city: int = 3,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Write a synthetic Cityscapes-format dataset (bytes depend on the parameters only); images per split."""
    out = Path(out)
    size = _check_size(size)
    counts = {"train": train_cities, "val": val_cities, "test": test_cities}
    _check_counts(counts, per_city, workers)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed={seed!r} must be a whole number of 0 or more.")
    parameters = {"version": GENERATOR_VERSION, "size": list(size)} | {f"{s}_cities": int(n) for s, n in counts.items()}
    parameters |= {"per_city": int(per_city), "seed": int(seed)}
    _check_output(out, parameters)
    frames = [  # in path order
        FrameSpec(split, city, seq, size, (int(seed), s, c, seq))
        for s, split in enumerate(SPLITS)
        for c, city in enumerate(city_names(split, counts[split]))
        for seq in range(per_city)
    ]
    images = {split: sum(f.split == split for f in frames) for split in SPLITS}
    cities = {split: city_names(split, counts[split]) for split in SPLITS}
    out.mkdir(parents=True, exist_ok=True)
    # the marker goes first so an interrupted run can be resumed into the same folder
    _write_marker(out, parameters, images, cities, complete=False)
    with tqdm(total=len(frames), desc="synth", unit="img", disable=not progress) as bar:
        for _ in _run(out, frames, workers):
            bar.update()
    _write_marker(out, parameters, images, cities, complete=True)
    return images
