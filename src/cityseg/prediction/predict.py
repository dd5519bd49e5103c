"""Predict a whole split into a folder of labelIds PNGs the official evaluation and server accept.

The folder's safety rules (what may be overwritten, how a killed run resumes) are its ledger:
`cityseg.prediction.ledger`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cityseg.data.frames import Frame, list_frames, read_image
from cityseg.data.transforms import normalize
from cityseg.errors import UserError
from cityseg.labels import ID_COLORS, train_ids_to_ids
from cityseg.prediction.deployed import load_network
from cityseg.prediction.inference import predict_logits
from cityseg.prediction.ledger import (
    OutputLedger,
    check_color_folder,
    color_names,
    flush_all,
    open_ledgers,
    output_locks,
    prediction_name,
    storage_errors,
    write_png,
)
from cityseg.prediction.options import PredictOptions, Size, as_size, check_options, default_stride
from cityseg.training.model import resolve_device
from cityseg.training.model_names import model_title_of

# Frames reserved ("pending") per manifest write: bounds both the rewrite cost and the work
# redone after a kill.
MANIFEST_EVERY = 8
DEFAULT_OUT = {
    "val": Path("predictions"),
    "test": Path("test_predictions"),
    "train": Path("predictions_train"),
}


@dataclass(frozen=True)
class PredictResult:
    """What a prediction run did, for the CLI summary and notebooks."""

    out_dir: Path
    written: int
    skipped: int
    seconds: float
    images_per_s: float
    scores: dict[str, Any] | None = field(
        default=None, repr=False
    )  # score=True: the fast engine's export (as `evaluate`)
    model: str = ""  # the architecture and encoder that ran, e.g. "U-Net / resnet34"


class _Images(Dataset):
    """uint8 images (H, W, 3) by index; normalising happens on the device, where it is cheaper."""

    def __init__(self, frames: Sequence[Frame]) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, torch.from_numpy(read_image(self.frames[index].image))


def _as_list(batch: list) -> list:
    # Images may differ in size, so they are stacked later, per shape.
    return batch


def _settings(
    checkpoint: Path, state: dict, split: str, mode: str, tta: str, crop: Size | None, stride: Size | None
) -> dict[str, Any]:
    config = state.get("config") or {}
    size = config.get("size")
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": state["sha256"],  # from the one read that loaded it
        "model": model_title_of(config),
        "epoch": state.get("epoch"),
        "split": split,
        "mode": mode,
        "tta": tta,
        "crop": list(crop) if crop else None,
        "stride": list(stride) if stride else None,
        "scale_size": list(size) if size else None,
    }


def _write_colors(frame: Frame, label_ids: np.ndarray, image: np.ndarray, folder: Path) -> dict[str, str]:
    """Cityscapes colours of a labelIds map, and a 50% blend over the photo for eyeballing."""
    color = ID_COLORS[label_ids]  # (H, W, 3)
    overlay = ((image.astype(np.uint16) + color) // 2).astype(np.uint8)
    color_name, overlay_name = color_names(frame.id)
    return {
        color_name: write_png(folder / color_name, color),
        overlay_name: write_png(folder / overlay_name, overlay),
    }


def _labels_for_batch(model, images: list[torch.Tensor], device: torch.device, **options) -> list[np.ndarray]:
    """labelIds (H, W) uint8 for uint8 images (H, W, 3); same-size images share one forward."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(position)
    results: list[np.ndarray | None] = [None] * len(images)
    for positions in by_shape.values():
        batch = torch.stack([images[p] for p in positions]).to(device, non_blocking=True)  # (B, H, W, 3)
        # Channels-last, the layout the permuted batch already has: CPU convolutions take their faster
        # channels-last path and predictions stay bit-identical to earlier versions.
        batch = normalize(batch.permute(0, 3, 1, 2), memory_format=torch.channels_last)  # (B, 3, H, W)
        probs = predict_logits(model, batch, **options)  # (B, 19, H, W)
        train_ids = probs.argmax(dim=1).to(torch.uint8).cpu().numpy()  # (B, H, W)
        for position, train_id_map in zip(positions, train_ids, strict=True):
            results[position] = train_ids_to_ids(train_id_map)
    return results


def predict_split(
    checkpoint: Path,
    root: Path,
    split: str = "val",
    out_dir: Path | None = None,
    options: PredictOptions | None = None,
    **fields: Any,
) -> PredictResult:
    """Write one full-size labelIds PNG per frame of `split`, resuming and refusing stale files safely.

    How to predict is `options` (a `PredictOptions`), or its fields given as keywords
    (`predict_split(ckpt, root, "val", mode="slide", crop=(1024, 512))`), which override `options`.
    """
    options = dataclasses.replace(options or PredictOptions(), **fields)
    mode, tta, color_out = options.mode, options.tta, options.color_out
    crop, stride = as_size(options.crop), as_size(options.stride)
    check_options(mode, tta, crop, stride)
    if split not in DEFAULT_OUT:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(DEFAULT_OUT)}.")
    if mode == "slide" and stride is None:
        stride = default_stride(crop)
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_OUT[split]
    color_out = Path(color_out) if color_out is not None else None
    check_color_folder(out_dir, color_out)
    frames = list_frames(Path(root), split, label_source=None)
    scorer = _scorer(root, split, frames) if options.score else None  # ground-truth problems surface before any forward
    torch_device = resolve_device(options.device)
    model, state = load_network(Path(checkpoint), torch_device)
    model.eval()
    if torch_device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    settings = _settings(Path(checkpoint), state, split, mode, tta, crop, stride)
    settings["root"] = str(Path(root).resolve())  # recorded for people; not compared (datasets move)
    inference = {"mode": mode, "tta": tta, "crop": crop, "stride": stride, "scale_size": settings["scale_size"]}
    try:
        with output_locks([out_dir] if color_out is None else [out_dir, color_out]):
            return _predict_into(
                model,
                frames,
                out_dir,
                color_out,
                settings,
                inference,
                torch_device,
                options.overwrite,
                options.batch_size,
                options.workers,
                options.progress,
                scorer,
            )
    except BaseException:
        if scorer is not None:
            scorer.close()
        raise


def _predict_into(
    model,
    frames: list[Frame],
    out_dir: Path,
    color_out: Path | None,
    settings: dict[str, Any],
    options: dict[str, Any],
    torch_device: torch.device,
    overwrite: bool,
    batch_size: int,
    workers: int,
    progress: bool,
    scorer,
) -> PredictResult:
    """Check and claim the output folders, then predict every frame not yet done (folders locked by the caller)."""
    ledger, color_ledger = open_ledgers(out_dir, color_out, settings, frames)
    ledgers = [each for each in (ledger, color_ledger) if each is not None]
    for each in ledgers:  # every folder is checked before any is changed
        with storage_errors(each.folder, each.what):
            each.check(overwrite)
    done_by_folder = []
    for each in ledgers:
        with storage_errors(each.folder, each.what):
            done_by_folder.append(each.commit())
    done = done_by_folder[0]
    color_done = done_by_folder[1] if color_ledger is not None else set()

    todo = [f for f in frames if f.id not in done]
    if color_ledger is not None:
        _color_from_saved(
            [f for f in frames if f.id in done and f.id not in color_done], out_dir, color_ledger, progress
        )

    start = time.perf_counter()
    _predict_frames(model, todo, torch_device, options, ledger, color_ledger, batch_size, workers, progress, scorer)
    seconds = time.perf_counter() - start
    if scorer is not None:
        for frame in frames:
            if frame.id in done:
                scorer.add_file(frame.id, out_dir / prediction_name(frame.id))
    return PredictResult(
        out_dir=out_dir,
        written=len(todo),
        skipped=len(frames) - len(todo),
        seconds=seconds,
        images_per_s=len(todo) / seconds if seconds > 0 else 0.0,
        scores=scorer.result() if scorer is not None else None,
        model=settings["model"],
    )


def _scorer(root: Path, split: str, frames: list[Frame]):
    from cityseg.evaluation.inmemory import PredictionScorer
    from cityseg.system import default_workers

    return PredictionScorer(Path(root), split, [f.id for f in frames], workers=default_workers())


def _predict_frames(
    model,
    todo: list[Frame],
    device: torch.device,
    options: dict[str, Any],
    ledger: OutputLedger,
    color_ledger: OutputLedger | None,
    batch_size: int,
    workers: int,
    progress: bool,
    scorer=None,
) -> None:
    """The prediction loop: reserve frames in the manifests, predict a batch, write it, record it (and score it)."""
    ledgers = [ledger] + ([color_ledger] if color_ledger is not None else [])
    loader = DataLoader(
        _Images(todo),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        pin_memory=device.type == "cuda",
    )
    reserved_until = 0  # todo[:reserved_until] are recorded as pending (or done) on disk
    failed = True
    with tqdm(total=len(todo), unit="img", desc="predict", disable=not progress, dynamic_ncols=True) as bar:
        try:
            for batch in loader:
                indices = [index for index, _ in batch]
                if max(indices) >= reserved_until:
                    reserved_until = min(len(todo), max(indices) + MANIFEST_EVERY)
                    reserve = [f.id for f in todo[min(indices) : reserved_until]]
                    for each in ledgers:
                        each.mark_pending(reserve)
                    flush_all(ledgers, after_error=False)
                label_maps = _labels_for_batch(model, [image for _, image in batch], device, **options)
                for (index, image), label_ids in zip(batch, label_maps, strict=True):
                    _write_frame(todo[index], label_ids, image.numpy(), ledger, color_ledger)
                    if scorer is not None:
                        scorer.add(todo[index].id, label_ids, ledger.folder / prediction_name(todo[index].id))
                bar.update(len(batch))
            failed = False
        finally:
            flush_all(ledgers, after_error=failed)


def _write_frame(
    frame: Frame,
    label_ids: np.ndarray,
    image: np.ndarray,
    ledger: OutputLedger,
    color_ledger: OutputLedger | None,
) -> None:
    name = prediction_name(frame.id)
    with storage_errors(ledger.folder, ledger.what):
        ledger.mark_done(frame.id, {name: write_png(ledger.folder / name, label_ids)})
    if color_ledger is not None:
        with storage_errors(color_ledger.folder, color_ledger.what):
            color_ledger.mark_done(frame.id, _write_colors(frame, label_ids, image, color_ledger.folder))


def _color_from_saved(frames: list[Frame], out_dir: Path, color_ledger: OutputLedger, progress: bool) -> None:
    """Colour frames whose prediction is already done, from the PNG on disk (no forward pass needed)."""
    if not frames:
        return
    color_ledger.mark_pending(f.id for f in frames)
    with storage_errors(color_ledger.folder, color_ledger.what):
        color_ledger.flush()
        for frame in tqdm(frames, unit="img", desc="colour", disable=not progress):
            label_ids = np.asarray(Image.open(out_dir / prediction_name(frame.id)))
            color_ledger.mark_done(
                frame.id, _write_colors(frame, label_ids, read_image(frame.image), color_ledger.folder)
            )
        color_ledger.flush()
