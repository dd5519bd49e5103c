"""Predict a whole split into a folder of labelIds PNGs the official evaluation and server accept; the folder's
safety rules (what may be overwritten, how a killed run resumes) are its ledger, `cityseg.prediction.ledger`."""

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cityseg.data.frames import Frame, list_frames, read_image
from cityseg.data.transforms import normalize
from cityseg.errors import UserError
from cityseg.labels import train_ids_to_ids
from cityseg.prediction.deployed import load_network
from cityseg.prediction.inference import inference_dtype, precision_name, predict_logits, wants_amp
from cityseg.prediction.ledger import OutputLedger, check_color_folder, color_names, open_ledgers, prediction_name
from cityseg.prediction.options import PredictOptions
from cityseg.prediction.overlay import blend, color_image
from cityseg.system import default_workers
from cityseg.training.model import resolve_device
from cityseg.training.model_names import model_title_of

DEFAULT_OUT = {"val": Path("predictions"), "test": Path("test_predictions"), "train": Path("predictions_train")}


@dataclass(frozen=True)
class PredictResult:
    """What a prediction run did; prints as its `summary()` in the CLI, with print() and as a notebook cell's output."""

    out_dir: Path
    written: int
    skipped: int
    seconds: float
    scores: dict[str, Any] | None = field(default=None, repr=False)  # score=True: the fast engine's export
    model: str = ""  # the architecture and encoder that ran, e.g. "U-Net / resnet34"

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        score = "" if self.scores is None else f"; mIoU {100 * self.scores['averageScoreClasses']:.2f}%"
        return (
            f"{self.model}: wrote {self.written} and kept {self.skipped} finished prediction(s) in {self.out_dir} "
            f"({self.images_per_s:.2f} images/s over {self.seconds:.1f} s){score}"
        )

    def __str__(self) -> str:
        return self.summary()

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's display hook
        printer.text(self.summary())


class Decoded(Dataset):
    """(index, uint8 (H, W, 3) tensor or None, error message or None) of `read(paths[index])`; with `keep_going`, a
    file `read` refuses (a UserError) is returned as the message, so a bad file never stops the loader."""

    def __init__(self, paths: Sequence[Path], read: Callable[[Path], np.ndarray], keep_going: bool = False) -> None:
        self.paths, self.read, self.keep_going = paths, read, keep_going

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, torch.from_numpy(self.read(self.paths[index])), None
        except UserError as exc:
            if not self.keep_going:
                raise
            return index, None, str(exc)


def claimed_batches(
    dataset: Dataset, keys: Sequence[str], ledgers: list[OutputLedger], device: torch.device, options: PredictOptions
) -> Iterator[list]:
    """Lists of `dataset` items (images may differ in size: stacked later, per shape), each claimed in every ledger
    before it is handed out (item i is `keys[i]`), with a progress bar."""
    pin = device.type == "cuda"
    loader = DataLoader(dataset, options.batch_size, num_workers=options.workers, collate_fn=list, pin_memory=pin)
    with tqdm(total=len(dataset), unit="img", desc="predict", disable=not options.progress, dynamic_ncols=True) as bar:
        for batch in loader:
            for ledger in ledgers:
                ledger.mark_pending(keys[item[0]] for item in batch)
            yield batch
            bar.update(len(batch))


def load_for_prediction(
    checkpoint: Path, options: PredictOptions, split: str
) -> tuple[torch.nn.Module, torch.device, dict[str, Any], dict[str, Any]]:
    """The model on its device, the settings its outputs are recorded with (precision included), and the
    `predict_logits` options of `options` (checked)."""
    torch_device = resolve_device(options.device)
    model, state = load_network(Path(checkpoint), torch_device)
    if torch_device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    amp = wants_amp(state, options.amp)
    size = (state.get("config") or {}).get("size")
    inference = {"mode": options.mode, "tta": options.tta, "crop": options.crop, "stride": options.stride}
    inference.update(scale_size=list(size) if size else None, amp=amp)
    settings = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": state["sha256"],  # from the one read that loaded it
        "model": model_title_of(state.get("config") or {}),
        "epoch": state.get("epoch"),
        "split": split,
        **{key: list(value) if isinstance(value, tuple) else value for key, value in inference.items()},  # as JSON
        "precision": precision_name(inference_dtype(torch_device, amp)),
    }
    return model, torch_device, settings, inference


def _write_colors(frame: Frame, label_ids: np.ndarray, image: np.ndarray, ledger: OutputLedger) -> dict[str, str]:
    """Cityscapes colours of a labelIds map, and a 50% blend over the photo for eyeballing."""
    color = color_image(label_ids)  # (H, W, 3)
    color_name, overlay_name = color_names(frame.id)
    pixels = {color_name: color, overlay_name: blend(image, color)}
    return {name: ledger.write_png(name, array) for name, array in pixels.items()}


def labels_for_batch(model, images: list[torch.Tensor], device: torch.device, **options) -> list[np.ndarray]:
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
        del probs
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
    """Write one full-size labelIds PNG per frame of `split`, resuming and refusing stale files safely. How to predict
    is `options` (a `PredictOptions`), its fields given as keywords overriding it (`mode="slide", crop=(1024, 512)`)."""
    options = dataclasses.replace(options or PredictOptions(), **fields).checked()
    if split not in DEFAULT_OUT:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(DEFAULT_OUT)}.")
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_OUT[split]
    color_out = Path(options.color_out) if options.color_out is not None else None
    check_color_folder(out_dir, color_out)
    frames = list_frames(Path(root), split, label_source=None)
    scorer = None
    if options.score:  # ground-truth problems surface before any forward
        from cityseg.evaluation.runner import PredictionScorer

        scorer = PredictionScorer(Path(root), split, [f.id for f in frames], workers=default_workers())
    try:
        model, device, settings, inference = load_for_prediction(checkpoint, options, split)
        settings["root"] = str(Path(root).resolve())  # recorded for people; not compared (datasets move)
        ledger = OutputLedger(
            out_dir, {**settings, "kind": "labelIds"}, {f.id: [prediction_name(f.id)] for f in frames}
        )
        color_ledger = color_out and OutputLedger(
            color_out, {**settings, "kind": "color"}, {f.id: color_names(f.id) for f in frames}, "colour images"
        )
        ledgers = [each for each in (ledger, color_ledger) if each is not None]
        with open_ledgers(ledgers, options.overwrite) as (done, *color_done):
            todo = [f for f in frames if f.id not in done]
            start = time.perf_counter()
            if color_ledger is not None:
                saved = [f for f in frames if f.id in done and f.id not in color_done[0]]
                _color_from_saved(saved, ledger.folder, color_ledger, options.progress)
            images = Decoded([f.image for f in todo], read_image)
            for batch in claimed_batches(images, [f.id for f in todo], ledgers, device, options):
                label_maps = labels_for_batch(model, [image for _, image, _ in batch], device, **inference)
                for (index, image, _), label_ids in zip(batch, label_maps, strict=True):
                    frame, name = todo[index], prediction_name(todo[index].id)
                    ledger.mark_done(frame.id, {name: ledger.write_png(name, label_ids)})
                    if color_ledger is not None:
                        color_ledger.mark_done(frame.id, _write_colors(frame, label_ids, image.numpy(), color_ledger))
                    if scorer is not None:
                        scorer.add(frame.id, label_ids, ledger.folder / name)
        seconds = time.perf_counter() - start
        for frame in frames if scorer is not None else ():
            if frame.id in done:
                scorer.add(frame.id, None, ledger.folder / prediction_name(frame.id))  # read back from its PNG
        scores = scorer.result() if scorer is not None else None
    except BaseException:
        if scorer is not None:
            scorer.close()
        raise
    return PredictResult(out_dir, len(todo), len(frames) - len(todo), seconds, scores, settings["model"])


def _color_from_saved(frames: list[Frame], out_dir: Path, color_ledger: OutputLedger, progress: bool) -> None:
    """Colour frames whose prediction is already done, from the PNG on disk (no forward pass needed)."""
    if frames:
        color_ledger.mark_pending(f.id for f in frames)
    for frame in tqdm(frames, unit="img", desc="colour", disable=not progress or not frames):
        label_ids = np.asarray(Image.open(out_dir / prediction_name(frame.id)))
        color_ledger.mark_done(frame.id, _write_colors(frame, label_ids, read_image(frame.image), color_ledger))
