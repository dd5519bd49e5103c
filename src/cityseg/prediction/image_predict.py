"""`cityseg predict MODEL --images ...`: labelIds, colour and overlay PNGs for anyone's photos through the split
writer's ledger; a bad photo is reported by name and the others go on; big inputs use sliding windows."""

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cityseg.errors import UserError
from cityseg.prediction.image_files import ImageInput, find_images, read_user_image
from cityseg.prediction.ledger import COMPARED, OutputLedger, open_ledgers
from cityseg.prediction.options import (
    DEFAULT_MAX_PIXELS,
    MS_SCALES,
    PredictOptions,
    Size,
    as_size,
    check_window,
    default_stride,
)
from cityseg.prediction.overlay import color_image, overlay_image
from cityseg.prediction.predict import Decoded, PredictResult, claimed_batches, labels_for_batch, load_for_prediction

OUTPUT_KINDS = ("labelIds", "color", "overlay")
CITYSCAPES_SIZE: Size = (2048, 1024)  # the frames a model's training size is relative to
# Image settings that change the pixels, compared on top of the split writer's (mode, tta, checkpoint, ...).
_IMAGE_COMPARED = (*COMPARED, "scale", "whole_limit")


def output_names(key: str) -> dict[str, str]:
    """`a/b/x` -> {"labelIds": "a/b/x_labelIds.png", "color": ..., "overlay": ...}."""
    return {kind: f"{key}_{kind}.png" for kind in OUTPUT_KINDS}


@dataclass(frozen=True)
class ImagePredictResult(PredictResult):
    """What an image run did; `failed` maps each image that could not be predicted to the reason."""

    failed: dict[str, str] = field(default_factory=dict)
    outputs: list[dict[str, Path]] = field(default_factory=list, repr=False)  # per image: image, labelIds, color, ...

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
        return "\n".join(lines + [f"  failed: {reason}" for reason in self.failed.values()])


def image_options(height: int, width: int, run: dict[str, Any]) -> dict[str, Any]:
    """predict_logits options for one photo: its network size, and windows over `whole_limit`."""
    factor = run["scale"] or (run["training_size"][0] / width if run["training_size"] else 1.0)
    net_w, net_h = max(1, round(width * factor)), max(1, round(height * factor))
    largest = max(MS_SCALES) if run["tta"] == "ms-flip" else 1.0  # the TTA's largest input, per side
    if net_w * net_h * largest**2 > run["max_pixels"]:
        raise UserError(
            f"its network input would be {net_w}x{net_h} ({width}x{height} resized by {factor:.3g})"
            + (f", {largest}x that per side for --tta ms-flip" if largest > 1 else "")
            + f", more than --max-pixels {run['max_pixels']:,}; pass a smaller --scale, or raise --max-pixels."
        )
    options = {key: run[key] for key in ("mode", "tta", "crop", "stride", "amp")}
    options["scale_size"] = None if (net_w, net_h) == (width, height) else (net_w, net_h)
    limit_w, limit_h = run["whole_limit"]
    if run["mode"] == "whole" and net_w * net_h > limit_w * limit_h:
        window = (min(limit_w, net_w), min(limit_h, net_h))
        options.update(mode="slide", crop=window, stride=default_stride(window))
    return options


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
    amp: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImagePredictResult:
    """Predict photos (files, folders searched recursively, globs) into OUT, mirroring their folders. `checkpoint`: a
    run's best.pt/last.pt or a `cityseg export` folder; `crop`/`stride`: (width, height) in the network's input, as
    for splits; `limit`: only the first N photos."""
    runtime = {"batch_size": batch_size, "device": device, "amp": amp, "workers": workers, "progress": progress}
    options = PredictOptions(mode=mode, tta=tta, crop=crop, stride=stride, overwrite=overwrite, **runtime).checked()
    whole_limit = as_size(whole_limit)
    check_window(whole_limit, "--whole-limit")
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        raise UserError(f"--scale must be a positive finite factor (1 = the photo's own size), got {scale}.")
    if not max_pixels >= 1:
        raise UserError(f"--max-pixels must be a positive number of pixels, got {max_pixels}.")
    out_dir = Path(out_dir)
    inputs = find_images(images, limit=limit, out_dir=out_dir)
    model, torch_device, settings, inference = load_for_prediction(checkpoint, options, "images")
    training_size = as_size(settings["scale_size"])
    whole_limit = whole_limit or training_size or CITYSCAPES_SIZE
    settings.update(kind="images", scale=scale, whole_limit=list(whole_limit))
    inference.update(scale=scale, training_size=training_size, whole_limit=whole_limit, max_pixels=max_pixels)
    names = {item.key: list(output_names(item.key).values()) for item in inputs}
    ledger = OutputLedger(out_dir, settings, names, "image predictions", _IMAGE_COMPARED, keep_others=True)
    failed: dict[str, str] = {}
    with open_ledgers([ledger], overwrite) as (done,):
        todo = [item for item in inputs if item.key not in done]
        start = time.perf_counter()
        read = functools.partial(read_user_image, max_pixels=max_pixels)
        photos = Decoded([item.path for item in todo], read, keep_going=True)
        for batch in claimed_batches(photos, [item.key for item in todo], [ledger], torch_device, options):
            decoded = [(todo[position], image, error) for position, image, error in batch]
            _predict_photos(model, torch_device, ledger, inference, decoded, failed)
    seconds = time.perf_counter() - start
    outputs = [
        {"image": item.path, **{kind: out_dir / name for kind, name in output_names(item.key).items()}}
        for item in inputs
        if str(item.path) not in failed
    ]
    written, skipped = len(todo) - len(failed), len(inputs) - len(todo)
    return ImagePredictResult(
        out_dir, written, skipped, seconds, model=settings["model"], failed=failed, outputs=outputs
    )


def _predict_photos(
    model: torch.nn.Module,
    device: torch.device,
    ledger: OutputLedger,
    run: dict[str, Any],
    batch: list[tuple[ImageInput, torch.Tensor | None, str | None]],
    failed: dict[str, str],
) -> None:
    """Write the outputs of a batch of decoded photos (equal settings share forwards, and at equal size a batch);
    each photo that cannot be predicted goes into `failed` (path -> reason) instead."""

    def fail(item: ImageInput, reason: str) -> None:
        failed[str(item.path)] = reason
        ledger.entries.pop(item.key, None)  # nothing was written for it

    for item, _, error in batch:
        if error is not None:
            fail(item, error)
    groups: dict[tuple, list[tuple[ImageInput, torch.Tensor]]] = {}
    for item, image, error in batch:
        if error is not None:
            continue
        try:
            options = image_options(*image.shape[:2], run)
        except UserError as exc:
            fail(item, f"{item.path}: {exc}")
            continue
        groups.setdefault(tuple(sorted(options.items())), []).append((item, image))
    for key, members in groups.items():
        try:
            label_maps = labels_for_batch(model, [image for _, image in members], device, **dict(key))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            for item, image in members:
                height, width = image.shape[:2]
                fail(
                    item,
                    f"{item.path} ({width}x{height}) ran out of GPU memory; predict it with a smaller --scale, "
                    "--whole-limit or --max-pixels, or with --device cpu.",
                )
            continue
        for (item, image), label_ids in zip(members, label_maps, strict=True):
            names = output_names(item.key)
            pixels = {"labelIds": label_ids, "color": color_image(label_ids)}
            pixels["overlay"] = overlay_image(image.numpy(), label_ids)
            files = {names[kind]: ledger.write_png(names[kind], pixels[kind]) for kind in OUTPUT_KINDS}
            ledger.mark_done(item.key, files)
