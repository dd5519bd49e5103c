"""Cityscapes on disk (`layout`): find image/label pairs (id `<city>_<seq>_<frame>`), read PNGs safely, and turn
each common layout mistake (wrong folder level, half-extracted zip, labels not prepared) into one UserError."""

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cityseg.data.layout import (
    FINE_DIR,
    IMAGE_DIR,
    IMAGE_SUFFIX,
    INSTANCE_IDS_SUFFIX,
    LABEL_IDS_SUFFIX,
    LABEL_SOURCES,
    POLYGONS_SUFFIX,
    SPLITS,
    TRAIN_IDS_SUFFIX,
)
from cityseg.errors import UserError, describe_error, format_paths
from cityseg.labels import IGNORE_INDEX, NUM_CLASSES, VALID_LABEL_IDS, ids_to_train_ids

# Which gtFine file each label source reads; "polygons" is what `prepare` needs.
_LABEL_SUFFIX = {"trainIds": TRAIN_IDS_SUFFIX, "ids": LABEL_IDS_SUFFIX, "polygons": POLYGONS_SUFFIX}
_DATASET_DIRS = (IMAGE_DIR, FINE_DIR, "gtCoarse")

_FRAME_PART = r"\d{6}_\d{6}"
_GT_NAME = re.compile(r"^(?P<stem>.+_" + _FRAME_PART + r")_gtFine_[A-Za-z]+\.(png|json)$")

# The values a label PNG may hold, as (256,) tables: trainIds (the 19 classes and ignore), or labelIds.
_VALID_TRAIN_IDS = np.isin(np.arange(256), [*range(NUM_CLASSES), IGNORE_INDEX])
_VALID_IDS = np.isin(np.arange(256), sorted(VALID_LABEL_IDS))


@dataclass(frozen=True)
class Frame:
    """One Cityscapes frame: where its image and labels live, and its city (cross-validation groups by city)."""

    id: str
    city: str
    split: str
    image: Path
    label: Path | None
    label_ids: Path | None
    instance_ids: Path | None


@dataclass(frozen=True)
class ListedSplit:
    """One split listed once, for everything a run does with it (folds, runtime choices, datasets, cache)."""

    root: Path
    frames: tuple[Frame, ...]  # sorted by id, never empty

    @functools.cached_property
    def by_id(self) -> dict[str, Frame]:
        return {frame.id: frame for frame in self.frames}

    @functools.cached_property
    def image_size(self) -> tuple[int, int]:
        """(W, H) of the first image, from its header, read once."""
        with Image.open(self.frames[0].image) as image:
            return image.size


def listed_split(root: Path | ListedSplit, split: str = "train", label_source: str = "trainIds") -> ListedSplit:
    """`root`'s split listed (`list_frames`), or `root` itself when it is a listing already."""
    if isinstance(root, ListedSplit):
        return root
    return ListedSplit(Path(root), tuple(list_frames(root, split, label_source)))


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    """Entries of a folder without hidden ones (.DS_Store, our own temp files)."""
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _check_root_location(root: Path) -> None:
    """Fail with the path the user probably meant when ROOT is missing, empty or one level off."""
    if not root.exists():
        raise UserError(
            f"dataset folder {root} does not exist. Pass the folder that holds leftImg8bit/ and gtFine/ "
            "(see cityscapes/README.md; `cityseg download --extract ROOT` or `cityseg synth ROOT` create one)."
        )
    if not root.is_dir():
        raise UserError(
            f"{root} is a file, not a folder; pass the Cityscapes folder that holds leftImg8bit/ and gtFine/."
        )
    entries = _visible_entries(root)
    if not entries:
        raise UserError(
            f"dataset folder {root} is empty. Unzip gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip "
            "into it (see cityscapes/README.md), then run `cityseg prepare "
            f"{root}`."
        )
    if (root / IMAGE_DIR).is_dir():
        return
    # One or two levels too deep: ROOT is leftImg8bit/, gtFine/ or one of their split folders.
    for ancestor in list(root.resolve().parents)[:3]:
        holds_dataset = (ancestor / IMAGE_DIR).is_dir() or (ancestor / FINE_DIR).is_dir()
        if holds_dataset and ancestor.name not in _DATASET_DIRS:
            raise UserError(
                f"{root} is a folder inside the dataset, not its root; you probably meant {ancestor} "
                "(the folder that holds leftImg8bit/ and gtFine/)."
            )
    if root.name in _DATASET_DIRS or {e.name for e in entries} & set(SPLITS):
        raise UserError(
            f"{root} looks like the {root.name}/ folder itself, not the dataset root; pass its parent "
            f"{root.resolve().parent}, which should hold both leftImg8bit/ and gtFine/."
        )
    if (root / FINE_DIR).is_dir():
        raise UserError(
            f"{root} has gtFine/ but no leftImg8bit/: unzip leftImg8bit_trainvaltest.zip into {root} so that "
            f"{root / IMAGE_DIR} exists."
        )
    # Too shallow: the dataset is one level down (the parent of the cityscapes folder was passed).
    image_holders = [Path(e.path) for e in entries if e.is_dir() and (Path(e.path) / IMAGE_DIR).is_dir()]
    label_holders = [Path(e.path) for e in entries if e.is_dir() and (Path(e.path) / FINE_DIR).is_dir()]
    if image_holders and label_holders and image_holders[0] != label_holders[0]:
        raise UserError(
            f"leftImg8bit/ is in {image_holders[0]} but gtFine/ is in {label_holders[0]}; move both into one "
            "folder and pass that folder."
        )
    if image_holders:
        raise UserError(
            f"{root} is the folder above the dataset; you probably meant {image_holders[0]} "
            "(the folder that holds leftImg8bit/ and gtFine/)."
        )
    names = format_paths([e.name for e in entries])
    raise UserError(
        f"{root} is not a Cityscapes folder: it has no leftImg8bit/ or gtFine/ inside (it holds {names}). "
        "Pass the folder the Cityscapes zips were unpacked into (see cityscapes/README.md)."
    )


def _scan(split_dir: Path, name_of, pattern: str) -> dict:
    """{key: (city, path)} of split_dir/<city>/ files `name_of` keys; off-pattern names refused."""
    found: dict[str, tuple[str, Path]] = {}
    bad, dangling = [], []
    for city in (e for e in _visible_entries(split_dir) if e.is_dir()):
        for entry in _visible_entries(Path(city.path)):
            key = name_of(city.name, entry.name) if entry.is_file() else None
            if key is not None:
                found[key] = (city.name, Path(entry.path))
            else:  # a symbolic link whose target is gone (an unmounted drive, a moved download), or a stray file
                (dangling if entry.is_symlink() and not os.path.exists(entry.path) else bad).append(Path(entry.path))
    if dangling:
        raise UserError(
            f"{len(dangling)} file(s) of the dataset are symbolic links to files that do not exist: "
            f"{format_paths(f'{p} -> {os.readlink(p)}' for p in dangling)}. Mount or restore what they point to, or "
            "remove the links."
        )
    if bad:
        raise UserError(
            f"{len(bad)} file(s) in {split_dir} do not follow the Cityscapes name pattern {pattern}: "
            f"{format_paths(bad)}. Rename or move them out of the dataset folder."
        )
    return found


def _image_id(city: str, name: str) -> str | None:
    match = re.fullmatch(re.escape(city) + "_" + _FRAME_PART, name.removesuffix(IMAGE_SUFFIX))
    return match[0] if match and name.endswith(IMAGE_SUFFIX) else None


def _gt_name(city: str, name: str) -> tuple[str, str] | None:
    match = _GT_NAME.match(name)
    return (match["stem"], name[len(match["stem"]) :]) if match and match["stem"].startswith(city + "_") else None


def _check_labels(
    root: Path, split: str, images: dict[str, tuple[str, Path]], gt: dict[str, dict[str, Path]], kind: str
) -> dict[str, Path]:
    """Return id -> label path of `kind`, or explain exactly which labels are missing and how to get them."""
    labels = gt.get(_LABEL_SUFFIX[kind], {})
    polygons = gt.get(POLYGONS_SUFFIX, {})
    gt_split = root / FINE_DIR / split
    prepare_hint = f"run `cityseg prepare {root}` to write the *{TRAIN_IDS_SUFFIX} files from the polygons"
    if not gt_split.is_dir():
        raise UserError(
            f"split folder {gt_split} is missing, so the {split} images have no labels. Unzip "
            f"gtFine_trainvaltest.zip into {root}."
        )
    if kind == "trainIds" and not labels and polygons:
        raise UserError(
            f"the trainIds labels of split '{split}' are not prepared: {gt_split} has polygon JSON files but no "
            f"*{TRAIN_IDS_SUFFIX}; {prepare_hint} (or read the shipped labelIds with label_source 'ids', --labels ids)."
        )
    label_cities = {images[i][0] for i in labels if i in images}
    for city in sorted({c for c, _ in images.values()} - label_cities):
        n_images = sum(1 for c, _ in images.values() if c == city)
        fix = "unzip gtFine_trainvaltest.zip into the dataset folder"
        if kind == "trainIds" and any(i.startswith(city + "_") for i in polygons):
            fix = prepare_hint
        raise UserError(
            f"city '{city}' has {n_images} images in {root / IMAGE_DIR / split / city} but no *{_LABEL_SUFFIX[kind]} "
            f"labels in {gt_split / city}; {fix}."
        )
    unlabeled = sorted(set(images) - set(labels))
    if unlabeled:
        fix = "restore their label files from gtFine_trainvaltest.zip or remove those images"
        if kind == "trainIds" and set(unlabeled) <= set(polygons):
            fix = prepare_hint
        raise UserError(
            f"{len(unlabeled)} image(s) of split '{split}' have no *{_LABEL_SUFFIX[kind]} label, e.g. "
            f"{format_paths([images[i][1] for i in unlabeled], limit=3)}; {fix}."
        )
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise UserError(
            f"{len(orphans)} label file(s) of split '{split}' have no image, e.g. "
            f"{format_paths([labels[i] for i in orphans], limit=3)}; restore the images from "
            "leftImg8bit_trainvaltest.zip or remove those labels."
        )
    return labels


def check_label_source(label_source: str | None) -> None:
    if label_source is not None and label_source not in LABEL_SOURCES:
        raise UserError(f"unknown label source {label_source!r}; use one of {', '.join(LABEL_SOURCES)}.")


def _scan_split(root: Path, split: str, kind: str | None) -> list[Frame]:
    """Check ROOT, then scan and check one split; `kind` is a label source, "polygons", or None for images only."""
    _check_root_location(root)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; Cityscapes has {', '.join(SPLITS)}.")
    image_dir, gt_dir = root / IMAGE_DIR / split, root / FINE_DIR / split
    if not image_dir.is_dir():
        raise UserError(
            f"split folder {image_dir} is missing; the Cityscapes download has train, val and test folders "
            f"under {root / IMAGE_DIR}. Re-extract leftImg8bit_trainvaltest.zip into {root}."
        )
    images = _scan(image_dir, _image_id, f"<city>/<city>_<seq:6 digits>_<frame:6 digits>{IMAGE_SUFFIX}")
    if not images:
        raise UserError(
            f"split '{split}' has no images: {image_dir} holds no <city>/*{IMAGE_SUFFIX} files. "
            "Re-extract leftImg8bit_trainvaltest.zip into the dataset folder."
        )
    gt_files = _scan(gt_dir, _gt_name, "<city>/<city>_<seq>_<frame>_gtFine_<kind>.png|json") if gt_dir.is_dir() else {}
    gt: dict[str, dict[str, Path]] = {}  # gtFine file suffix -> {image id -> path}
    for (stem, suffix), (_, path) in gt_files.items():
        gt.setdefault(suffix, {})[stem] = path
    labels = _check_labels(root, split, images, gt, kind) if kind else {}
    label_ids = gt.get(LABEL_IDS_SUFFIX, {})
    instance_ids = gt.get(INSTANCE_IDS_SUFFIX, {})
    return [
        Frame(
            id=image_id,
            city=city,
            split=split,
            image=path,
            label=labels.get(image_id) if kind in LABEL_SOURCES else None,
            label_ids=label_ids.get(image_id),
            instance_ids=instance_ids.get(image_id),
        )
        for image_id, (city, path) in sorted(images.items())
    ]


def list_frames(root: Path, split: str, label_source: str | None = "trainIds") -> list[Frame]:
    """All frames of a split sorted by id, after checking the layout so training never starts on a broken tree."""
    check_label_source(label_source)
    return _scan_split(Path(root), split, label_source)


def validate_root(root: Path, splits: Sequence[str] = ("train", "val"), label_source: str | None = "trainIds") -> None:
    """Check a dataset folder up front, raising one clear `UserError` for the first problem found."""
    for split in splits:
        list_frames(root, split, label_source)


def check_polygons(root: Path, splits: Sequence[str] = ("train", "val")) -> None:
    """Check the layout `prepare` needs: images paired with gtFine polygon JSON files."""
    for split in splits:
        _scan_split(Path(root), split, "polygons")


def _decode(path: Path, what: str, fix: str) -> Image.Image:
    """Fully decode a PNG so truncation surfaces here, as a UserError naming the file."""
    image = None
    try:
        image = Image.open(path)
        # A damaged header can claim a huge size; refuse before decoding allocates it (Cityscapes: 2 Mpx).
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            raise ValueError(f"its header claims {image.width}x{image.height} pixels, over PIL's MAX_IMAGE_PIXELS")
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        if image is not None:
            image.close()
        raise UserError(
            f"cannot read {what} {path} ({describe_error(exc)}); the file is missing, truncated or corrupt. {fix}"
        ) from None
    return image


# Camera image modes whose conversion to 8-bit RGB keeps what the camera saw: PIL clips 16/32-bit and thresholds
# 1-bit images instead of scaling them, and CMYK/YCbCr/LAB need a colour profile it does not apply.
CAMERA_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA")


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a camera image; damaged files and unusable pixel formats name themselves."""
    with _decode(Path(path), "image", "Re-extract it from leftImg8bit_trainvaltest.zip.") as image:
        if image.mode not in CAMERA_MODES:
            raise UserError(
                f"image {path} is a {image.mode} image ({_MODE_NAMES.get(image.mode, 'not 8-bit colour or grey')}), "
                "but camera images must be 8-bit RGB, RGBA, grey or palette PNGs like the Cityscapes "
                "*_leftImg8bit.png; converting it would change its pixels silently. Re-extract it from "
                "leftImg8bit_trainvaltest.zip, or convert it to 8-bit RGB yourself."
            )
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.array(image)  # a writable copy: torch warns on (and may not) share read-only buffers


_MODE_NAMES = {"I;16": "16-bit grey", "I;16B": "16-bit grey", "I;16L": "16-bit grey", "I": "32-bit integer"}
_MODE_NAMES |= {"F": "32-bit float", "1": "1-bit black and white", "CMYK": "CMYK colour", "YCbCr": "YCbCr colour"}
_MODE_NAMES |= {"LAB": "Lab colour", "HSV": "HSV colour"}


def read_train_ids(path: Path, label_source: str = "trainIds") -> np.ndarray:
    """(H, W) uint8 trainIds (255 = ignore) from a labelTrainIds PNG, or from a labelIds PNG via the official LUT."""
    check_label_source(label_source)
    path = Path(path)
    fix = (
        f"If it is a *{TRAIN_IDS_SUFFIX} file, delete it and run `cityseg prepare ROOT` to rewrite it; "
        "otherwise re-extract it from gtFine_trainvaltest.zip."
    )
    with _decode(path, "label", fix) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise UserError(
                f"label {path} is a {image.mode} image, but labels are single-channel PNGs of class ids "
                f"(*{TRAIN_IDS_SUFFIX} or *{LABEL_IDS_SUFFIX}); a *_color.png cannot be used as a label."
            )
        array = np.array(image)
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            _raise_bad_values(path, array, label_source)
        array = array.astype(np.uint8)
    valid = _VALID_IDS if label_source == "ids" else _VALID_TRAIN_IDS
    # max() is far cheaper than a table lookup and settles the common all-valid case.
    limit = max(VALID_LABEL_IDS) if label_source == "ids" else NUM_CLASSES - 1
    if array.size and array.max() > limit and not valid[array].all():
        _raise_bad_values(path, array, label_source)
    return ids_to_train_ids(array) if label_source == "ids" else array


def _raise_bad_values(path: Path, array: np.ndarray, label_source: str) -> None:
    valid = _VALID_IDS if label_source == "ids" else _VALID_TRAIN_IDS
    bad = [int(v) for v in np.unique(array) if not (0 <= v < 256 and valid[v])]
    if label_source == "ids":
        raise UserError(
            f"label {path} holds values {bad[:10]} that are not Cityscapes labelIds (0..33). If it holds "
            "trainIds (0..18, 255), use label_source 'trainIds'."
        )
    raise UserError(
        f"label {path} holds values {bad[:10]} outside the trainIds 0..18 and 255 (ignore); it is probably a "
        f"labelIds image. Read shipped labelIds with label_source 'ids' (--labels ids), or run "
        f"`cityseg prepare ROOT` to write proper *{TRAIN_IDS_SUFFIX} files."
    )


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, label_path: Path) -> None:
    """An (H, W, 3) image and its (H, W) label as decoded, before any resize could make them agree."""
    if mask.shape != image.shape[:2]:
        raise UserError(
            f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its label {label_path} is "
            f"{mask.shape[1]}x{mask.shape[0]}; they must be the same size (re-extract the pair)."
        )
