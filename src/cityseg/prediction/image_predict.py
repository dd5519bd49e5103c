"""`cityseg predict MODEL --images ...`: labelIds, colour and overlay PNGs for anyone's photos.

The same guarantees as the split writer (`cityseg.prediction.predict`), through the same manifest: files
are claimed before they are written and written atomically, so a killed run resumes; PNGs the
command did not write are never touched; outputs of other settings are refused unless
`overwrite`; an output someone edited is refused (named) rather than replaced. A photo that
cannot be decoded is reported by name and the others go on; the caller gets the list.

Scale, as for split frames: a model trained at full resolution sees each photo at its own size; a
model trained on resized frames (`--size WxH`) sees each photo resized to the training width W,
keeping its aspect ratio; `scale` overrides both with a fixed factor. A photo whose network input
has more pixels than `whole_limit` (default: the training frame, which predicting a split already
fits in memory) is predicted with sliding windows of that size instead of in one piece.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cityseg.errors import UserError
from cityseg.prediction.deployed import load_network
from cityseg.prediction.image_files import ImageInput, find_images, read_user_image
from cityseg.prediction.ledger import OutputLedger, output_locks, storage_errors, write_png
from cityseg.prediction.options import Size, as_size, check_options, default_stride
from cityseg.prediction.overlay import color_image, overlay_image
from cityseg.prediction.predict import MANIFEST_EVERY, _labels_for_batch, _settings
from cityseg.training.model import resolve_device

OUTPUT_KINDS = ("labelIds", "color", "overlay")
CITYSCAPES_SIZE: Size = (2048, 1024)  # the frames a model's training size is relative to
# Image settings that change the pixels, compared on top of the split writer's (mode, tta, checkpoint, ...).
_IMAGE_COMPARED = ("scale", "whole_limit")


def photo_scale(width: int, training_size: Size | None, scale: float | None = None) -> float:
    """Photo -> network resize factor: `scale` if given, else the photo's width to the training width
    (the resize a split frame gets), else 1 for a model trained at full resolution."""
    if scale is not None:
        return scale
    return training_size[0] / width if training_size else 1.0


def output_names(key: str) -> dict[str, str]:
    """`a/b/x` -> {"labelIds": "a/b/x_labelIds.png", "color": ..., "overlay": ...}."""
    return {kind: f"{key}_{kind}.png" for kind in OUTPUT_KINDS}


@dataclass(frozen=True)
class ImagePredictResult:
    """What an image run did; `failed` maps each image that could not be predicted to the reason."""

    out_dir: Path
    written: int
    skipped: int
    failed: dict[str, str]
    outputs: list[dict[str, Path]] = field(repr=False)  # per finished image: image, labelIds, color, overlay
    seconds: float = 0.0
    images_per_s: float = 0.0
    model: str = ""  # the architecture and encoder that ran, e.g. "U-Net / resnet34"

    @property
    def overlays(self) -> list[Path]:
        """The overlay PNGs of this run's images, in input order."""
        return [entry["overlay"] for entry in self.outputs]

    def summary(self) -> str:
        """A few lines for the end of the command: counts, then every failed image and why."""
        lines = [
            f"{self.model}: wrote {self.written} and kept {self.skipped} finished image(s) in {self.out_dir}; "
            f"{len(self.failed)} failed ({self.images_per_s:.2f} images/s over {self.seconds:.1f} s)"
        ]
        lines += [f"  failed: {reason}" for reason in self.failed.values()]
        return "\n".join(lines)


class ImageLedger(OutputLedger):
    """The split writer's manifest, for photos: outputs in mirrored subfolders, extra settings compared,
    outputs of images not in this run kept (a folder grows), edited outputs refused."""

    def _stale_reasons(self, manifest: dict[str, Any] | None, entries: dict[str, dict[str, Any]]) -> list[str]:
        in_run = {key: entry for key, entry in entries.items() if key in self.names}
        reasons = super()._stale_reasons(manifest, in_run)
        before = (manifest or {}).get("settings", {})
        changed = [key for key in _IMAGE_COMPARED if manifest is not None and before.get(key) != self.settings.get(key)]
        return reasons + [f"{key} was {before.get(key)!r}, now {self.settings.get(key)!r}" for key in changed]

    def forget(self, key: str) -> None:
        """Drop the claim on an image that failed: nothing was written for it."""
        self.entries.pop(key, None)


class _Photos(Dataset):
    """(position, uint8 (H, W, 3) tensor or None, error message or None): a bad file never stops the loader."""

    def __init__(self, inputs: list[ImageInput]) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, torch.from_numpy(read_user_image(self.inputs[index].path)), None
        except UserError as exc:
            return index, None, str(exc)


def _as_list(batch: list) -> list:
    return batch  # photos differ in size: grouped later, per shape and settings


def image_options(
    height: int,
    width: int,
    mode: str,
    tta: str,
    crop: Size | None,
    stride: Size | None,
    scale: float | None,
    training_size: Size | None,
    whole_limit: Size,
) -> dict[str, Any]:
    """predict_logits options for one photo: its network size, and the sliding window when it is too large."""
    factor = photo_scale(width, training_size, scale)
    net_w, net_h = max(1, round(width * factor)), max(1, round(height * factor))
    scale_size = None if (net_w, net_h) == (width, height) else (net_w, net_h)
    if mode == "whole" and net_w * net_h > whole_limit[0] * whole_limit[1]:
        window = (min(whole_limit[0], net_w), min(whole_limit[1], net_h))
        return {"mode": "slide", "tta": tta, "crop": window, "stride": default_stride(window), "scale_size": scale_size}
    return {"mode": mode, "tta": tta, "crop": crop, "stride": stride, "scale_size": scale_size}


def _write_outputs(folder: Path, key: str, image: np.ndarray, label_ids: np.ndarray) -> dict[str, str]:
    """The three PNGs of one photo, atomically; returns {name: sha256} for the manifest."""
    names = output_names(key)
    pixels = {"labelIds": label_ids, "color": color_image(label_ids), "overlay": overlay_image(image, label_ids)}
    return {names[kind]: write_png(folder / names[kind], pixels[kind]) for kind in OUTPUT_KINDS}


def predict_images(
    checkpoint: Path,
    images: list[str | Path] | str | Path,
    out_dir: Path,
    mode: str = "whole",
    tta: str = "none",
    crop: Size | int | None = None,
    stride: Size | int | None = None,
    scale: float | None = None,
    whole_limit: Size | int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 0,
    limit: int | None = None,
) -> ImagePredictResult:
    """Predict photos (files, folders searched recursively, globs) into OUT, mirroring their folders.

    `checkpoint` is a run's best.pt/last.pt or a `cityseg export` folder. `crop`/`stride` are
    (width, height) in the network's input, as for splits. `limit` predicts only the first N photos.
    """
    crop, stride, whole_limit = as_size(crop), as_size(stride), as_size(whole_limit)
    check_options(mode, tta, crop, stride)
    if mode == "slide" and stride is None:
        stride = default_stride(crop)
    if scale is not None and not scale > 0:
        raise UserError(f"--scale must be a positive factor (1 = the photo's own size), got {scale}.")
    out_dir = Path(out_dir)
    inputs = find_images(images, limit=limit, out_dir=out_dir)
    torch_device = resolve_device(device)
    model, state = load_network(Path(checkpoint), torch_device)
    if torch_device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    settings = _settings(Path(checkpoint), state, "images", mode, tta, crop, stride)
    training_size = as_size(settings["scale_size"])
    whole_limit = whole_limit or training_size or CITYSCAPES_SIZE
    settings.update(kind="images", scale=scale, whole_limit=list(whole_limit))

    names = {item.key: list(output_names(item.key).values()) for item in inputs}
    options = {
        "mode": mode,
        "tta": tta,
        "crop": crop,
        "stride": stride,
        "scale": scale,
        "training_size": training_size,
        "whole_limit": whole_limit,
    }
    with output_locks([out_dir]):  # one predict per folder, as for splits
        ledger = ImageLedger(out_dir, settings, names, "image predictions")
        with storage_errors(out_dir, ledger.what):
            ledger.check(overwrite)
            done = ledger.commit()
        todo = [item for item in inputs if item.key not in done]
        failed: dict[str, str] = {}
        start = time.perf_counter()
        _PhotoRun(model, torch_device, ledger, options, failed).predict(todo, batch_size, workers, progress)
        seconds = time.perf_counter() - start
    written = len(todo) - len(failed)
    finished = [item for item in inputs if str(item.path) not in failed]
    outputs = [
        {"image": item.path, **{kind: out_dir / name for kind, name in output_names(item.key).items()}}
        for item in finished
    ]
    return ImagePredictResult(
        out_dir=out_dir,
        written=written,
        skipped=len(inputs) - len(todo),
        failed=failed,
        outputs=outputs,
        seconds=seconds,
        images_per_s=written / seconds if seconds > 0 else 0.0,
        model=settings["model"],
    )


@dataclass
class _PhotoRun:
    """The prediction loop over photos: claim a stretch in the manifest, decode, predict, write, record."""

    model: torch.nn.Module
    device: torch.device
    ledger: ImageLedger
    options: dict[str, Any]
    failed: dict[str, str]

    def predict(self, todo: list[ImageInput], batch_size: int, workers: int, progress: bool) -> None:
        loader = DataLoader(
            _Photos(todo),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_as_list,
            pin_memory=self.device.type == "cuda",
        )
        claimed_until = 0  # todo[:claimed_until] are recorded as pending (or done) on disk
        finished = False
        with tqdm(total=len(todo), unit="img", desc="predict", disable=not progress, dynamic_ncols=True) as bar:
            try:
                for batch in loader:
                    positions = [position for position, _, _ in batch]
                    if max(positions) >= claimed_until:
                        claimed_until = min(len(todo), max(positions) + MANIFEST_EVERY)
                        self.ledger.mark_pending(item.key for item in todo[min(positions) : claimed_until])
                        self._flush()
                    for position, _, error in batch:
                        if error is not None:
                            self._fail(todo[position], error)
                    self._predict_batch([(todo[p], image) for p, image, error in batch if error is None])
                    bar.update(len(batch))
                finished = True
            finally:
                try:
                    self._flush()
                except UserError:
                    if finished:
                        raise  # after another error, pending entries make a rerun redo those photos

    def _flush(self) -> None:
        with storage_errors(self.ledger.folder, "the manifest"):
            self.ledger.flush()

    def _fail(self, item: ImageInput, reason: str) -> None:
        self.failed[str(item.path)] = reason
        self.ledger.forget(item.key)

    def _predict_batch(self, decoded: list[tuple[ImageInput, torch.Tensor]]) -> None:
        """Photos with equal settings share forwards (and, at equal size, a batch)."""
        groups: dict[tuple, list[tuple[ImageInput, torch.Tensor]]] = {}
        for item, image in decoded:
            options = image_options(*image.shape[:2], **self.options)
            groups.setdefault(tuple(sorted(options.items())), []).append((item, image))
        for key, members in groups.items():
            try:
                label_maps = _labels_for_batch(self.model, [image for _, image in members], self.device, **dict(key))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                for item, image in members:
                    height, width = image.shape[:2]
                    self._fail(
                        item,
                        f"{item.path} ({width}x{height}) ran out of GPU memory; predict it with a smaller "
                        "--scale or --whole-limit, or with --device cpu.",
                    )
                continue
            for (item, image), label_ids in zip(members, label_maps, strict=True):
                with storage_errors(self.ledger.folder, self.ledger.what):
                    files = _write_outputs(self.ledger.folder, item.key, image.numpy(), label_ids)
                self.ledger.mark_done(item.key, files)
