"""Write a synthetic dataset in the exact Cityscapes layout, naming and file formats.

Each frame's polygons are written as the official JSON, then rasterised by cityscapesscripts' `createLabelImage` /
`createInstanceImage` (what `json2labelImg` and `json2instanceImg` call), so every PNG equals what the official
scripts render from that JSON. The camera image is painted from those rasters afterwards.
"""

from __future__ import annotations

import io
import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
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
from cityseg.synthetic.render import render_image
from cityseg.synthetic.scene import decal_mask, scene_objects
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


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file + rename, so an interrupted run never leaves a truncated PNG behind."""
    atomic_write_bytes(path, lambda handle: handle.write(data))


def write_frame(root: Path, spec: FrameSpec) -> None:
    """Render and write the image and the four gtFine files of one frame."""
    scene_rng, render_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(spec.key).spawn(2))
    scene, text, annotation, label_ids = _labelled_scene(spec, scene_rng)
    instance_ids = np.asarray(createInstanceImage(annotation, "ids")).astype(np.uint16)  # (H, W)
    color = createLabelImage(annotation, "color")
    rgb = render_image(label_ids, instance_ids, decal_mask(scene), scene.camera.horizon, render_rng)

    _write_atomic(spec.gt_path(root, "polygons.json"), text.encode())
    # default PNG options: byte-identical to what json2labelImg / json2instanceImg save
    _write_atomic(spec.gt_path(root, "labelIds.png"), _png_bytes(Image.fromarray(label_ids)))
    _write_atomic(spec.gt_path(root, "instanceIds.png"), _png_bytes(Image.fromarray(instance_ids)))
    _write_atomic(spec.gt_path(root, "color.png"), _png_bytes(color))
    # noisy photos barely compress; a fast level keeps 2048x1024 generation quick
    _write_atomic(spec.image_path(root), _png_bytes(Image.fromarray(rgb), compress_level=1))


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
    _write_atomic(out / MARKER, (json.dumps(record, indent=2) + "\n").encode())


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
    """Write a synthetic Cityscapes-format dataset; returns the number of images per split. The output depends on the
    parameters alone (not on `workers`): each frame's generator is seeded from (seed, split, city, index)."""
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
