"""The model card of an export: what the model is, how it was trained and measured, read from the run's files.

Everything comes from files a run wrote (the checkpoint, config.json beside it, summary.json of
its runs folder, an evaluation JSON from `cityseg evaluate`), read defensively: a file that is
missing or older leaves its part of the card empty with a note, never a guessed number.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from torch import nn

from cityseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cityseg.errors import UserError
from cityseg.labels import CLASS_NAMES, NUM_CLASSES, TRAIN_ID_COLORS, TRAIN_ID_TO_ID
from cityseg.prediction.deployed import EXPORT_FORMAT, EXPORT_VERSION
from cityseg.training import runinfo
from cityseg.training.runfolder import CONFIG_FILE, SUMMARY_FILE

# How `cityseg predict` sizes photos for a model trained on resized frames (image_predict.photo_scale).
_PHOTO_RULE = "each photo resized to the training width, aspect ratio kept (as split frames are)"
PREDICT_MANIFEST = ".cityseg-predict.json"
# What `miou_mean` meant before summary.json recorded its protocol.
_LEGACY_CV_PROTOCOL = (
    "not recorded in summary.json (written by an older cityseg): miou_mean is the mean over folds of each fold's "
    "selected epoch, selected on that same held-out fold, so it is optimistic"
)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _classes() -> list[dict[str, Any]]:
    from cityscapesscripts.helpers.labels import trainId2label

    return [
        {
            "train_id": train_id,
            "label_id": int(TRAIN_ID_TO_ID[train_id]),
            "name": CLASS_NAMES[train_id],
            "category": trainId2label[train_id].category,
            "color": [int(v) for v in TRAIN_ID_COLORS[train_id]],
        }
        for train_id in range(NUM_CLASSES)
    ]


def read_evaluation(path: Path) -> dict[str, Any]:
    """The headline of a `cityseg evaluate --json` file, with the protocol it was measured under."""
    data = _read_json(path)
    if data is None or "averageScoreClasses" not in data:
        raise UserError(
            f"{path} is not an evaluation JSON written by `cityseg evaluate --json` (missing or not JSON, or no "
            "averageScoreClasses); pass the file `cityseg evaluate PRED_DIR ROOT --json FILE` wrote."
        )
    section = data.get("cityseg") if isinstance(data.get("cityseg"), dict) else {}
    pred_dir = section.get("pred_dir")
    manifest = _read_json(Path(pred_dir) / PREDICT_MANIFEST) if pred_dir else None
    settings = (manifest or {}).get("settings") or {}
    split = section.get("split") or "unknown split"
    return {
        "file": str(Path(path).resolve()),
        "split": split,
        "miou": data.get("averageScoreClasses"),
        "iiou": data.get("averageScoreInstClasses"),
        "category_miou": data.get("averageScoreCategories"),
        "n_frames": section.get("n_frames"),
        "synthetic": section.get("synthetic"),
        "protocol": f"official cityscapesscripts pixel-level evaluation (mIoU over {NUM_CLASSES} classes) of "
        f"{section.get('n_frames', '?')} {split} frames at full resolution, engine {section.get('engine', '?')}; "
        f"inference mode {settings.get('mode', '?')}, TTA {settings.get('tta', '?')}",
        "predicted_with_sha256": settings.get("checkpoint_sha256"),
    }


def _cross_validation(runs_dir: Path) -> dict[str, Any] | None:
    summary_path = runs_dir / SUMMARY_FILE
    summary = _read_json(summary_path)
    if summary is None:
        return None
    keys = ("k", "split", "seed", "complete", "miou_mean", "miou_std", "chosen_epochs", "std")
    return {
        "file": str(summary_path.resolve()),
        **{key: summary.get(key) for key in keys},
        "protocol": summary.get("protocol") or _LEGACY_CV_PROTOCOL,
        "class_iou_mean": dict(zip(CLASS_NAMES, summary.get("class_iou_mean") or [], strict=False)) or None,
    }


def _versions() -> dict[str, Any]:
    found = dict(runinfo.versions())
    for package in ("onnx", "onnxruntime", "onnxscript", "safetensors"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def build_card(
    checkpoint: Path,
    state: dict[str, Any],
    network: nn.Module,
    files: dict[str, Any],
    parity: dict[str, Any],
    evaluation: dict[str, Any] | None,
) -> dict[str, Any]:
    """card.json's content for a checkpoint of a run folder (RUNS/<run>/best.pt beside config.json)."""
    from cityseg.prediction.ledger import file_sha256

    run_dir = Path(checkpoint).resolve().parent
    run_info = _read_json(run_dir / CONFIG_FILE) or {}
    config = state.get("config") or run_info.get("config") or {}
    sha = file_sha256(Path(checkpoint))
    cv = _cross_validation(run_dir) or _cross_validation(run_dir.parent)
    if evaluation is not None:
        evaluation = {
            **evaluation,
            "same_checkpoint": evaluation.get("predicted_with_sha256") == sha
            if evaluation.get("predicted_with_sha256")
            else None,
        }
    size = config.get("size")
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "architecture": "U-Net (segmentation_models_pytorch)",
            "encoder": "resnet34",
            "num_classes": NUM_CLASSES,
            "parameters": sum(p.numel() for p in network.parameters()),
        },
        "files": files,
        "onnx_io": {
            "input": {
                "name": "image",
                "dtype": "uint8",
                "shape": ["batch", "height", "width", 3],
                "layout": "RGB, rows top to bottom (as PIL/numpy decode it)",
                "min_side": 33,
            },
            "output": {
                "name": "logits",
                "dtype": "float32",
                "shape": ["batch", NUM_CLASSES, "height", "width"],
                "meaning": "class scores in trainId order (classes below); argmax over axis 1",
            },
        },
        "classes": _classes(),
        "normalisation": {
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "formula": "(pixel / 255 - mean) / std per RGB channel (ImageNet statistics)",
            "onnx": "inside the graph: feed uint8",
            "safetensors": "apply it yourself",
        },
        "inference": {"training_size": size, "photo_scale": _PHOTO_RULE if size else "none: photos at their own size"},
        "config": config,
        "training": {
            "recipe": config.get("recipe"),
            "run": run_info.get("run_name") or run_dir.name,
            "epochs": config.get("epochs"),
            "data_root": run_info.get("data_root"),
            "synthetic": run_info.get("synthetic"),
            "n_train": run_info.get("n_train"),
            "n_val": run_info.get("n_val"),
            "config_json": str(run_dir / CONFIG_FILE) if run_info else None,
        },
        "source": {
            "checkpoint": str(Path(checkpoint).resolve()),
            "sha256": sha,
            "epoch": state.get("epoch"),
            "best_epoch": state.get("best_epoch"),
        },
        "git": run_info.get("git") or {"sha": None, "dirty": None},
        "results": {"cross_validation": cv, "evaluation": evaluation},
        "parity": parity,
        "versions": _versions(),
    }


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "n/a"


def _results_lines(card: dict[str, Any]) -> list[str]:
    cv, evaluation = card["results"]["cross_validation"], card["results"]["evaluation"]
    lines = ["## Results", ""]
    if cv is None:
        lines.append("- Cross-validation: no summary.json beside the checkpoint's run folder.")
    else:
        lines.append(
            f"- Cross-validation ({cv['k']} folds, {cv['split']} split): mIoU {_percent(cv['miou_mean'])} ± "
            f"{_percent(cv['miou_std'])} %. Protocol: {cv['protocol']}."
        )
    if evaluation is None:
        lines.append("- Evaluation: none given (`cityseg export ... --eval evaluation/val.json`).")
    else:
        same = {
            True: "made with this checkpoint",
            False: "made with ANOTHER checkpoint",
            None: "checkpoint of the predictions unknown",
        }[evaluation["same_checkpoint"]]
        lines.append(
            f"- {evaluation['split']}: mIoU {_percent(evaluation['miou'])} %, iIoU {_percent(evaluation['iiou'])} % "
            f"({same}). Protocol: {evaluation['protocol']}."
        )
    if card["training"]["synthetic"] or (evaluation or {}).get("synthetic"):
        lines.append("- **Trained or measured on SYNTHETIC data**: these numbers say nothing about real streets.")
    return lines + [""]


def card_markdown(card: dict[str, Any]) -> str:
    """card.md: the same facts as card.json, for people."""
    training, source, onnx_io = card["training"], card["source"], card["onnx_io"]
    git = card["git"]
    lines = [
        f"# cityseg model: U-Net / ResNet-34, {NUM_CLASSES} Cityscapes classes",
        "",
        f"Exported {card['created']} from `{source['checkpoint']}` (epoch {source['epoch']}, sha256 "
        f"`{source['sha256'][:16]}…`), code at git `{git.get('sha')}`{' (uncommitted changes)' if git.get('dirty') else ''}.",
        "",
        "## Files",
        "",
        f"- `{card['files']['weights']['file']}`: the network's tensors (no optimizer); `cityseg predict FOLDER` loads it.",
        f"- `{card['files']['onnx']['file']}` (opset {card['files']['onnx']['opset']}): input `{onnx_io['input']['name']}` "
        f"uint8 RGB (batch, height, width, 3), sides >= {onnx_io['input']['min_side']} px; output "
        f"`{onnx_io['output']['name']}` float32 (batch, {NUM_CLASSES}, height, width), trainId order. Normalisation "
        "and padding are inside the graph.",
        "",
        "## Input",
        "",
        f"- Normalisation: {card['normalisation']['formula']}, mean {card['normalisation']['mean']}, std "
        f"{card['normalisation']['std']} (inside the ONNX graph; apply it yourself with the safetensors weights).",
        f"- Scale: trained at {card['inference']['training_size'] or 'full resolution (Cityscapes: 2048x1024)'}; "
        f"resize: {card['inference']['photo_scale']}.",
        "",
        "## Training",
        "",
        f"- Recipe `{training['recipe']}`, {training['epochs']} epochs, run `{training['run']}`, "
        f"{training['n_train']} training images from `{training['data_root']}`.",
        f"- Full config: `config` in card.json{' (from ' + training['config_json'] + ')' if training['config_json'] else ''}.",
        "",
        *_results_lines(card),
        "## ONNX parity check",
        "",
        f"{'Passed' if card['parity']['passed'] else 'FAILED'}: {card['parity']['rule']} "
        f"({card['parity']['runtime']}).",
        "",
        "| image | size | argmax agreement | max abs logit diff | tolerance |",
        "|---|---|---|---|---|",
        *[
            f"| {r['name']} | {r['size']} | {100 * r['agreement']:.4f} % | {r['max_abs_diff']:.2e} | {r['tolerance']:.2e} |"
            for r in card["parity"]["images"]
        ],
        "",
        "## Classes",
        "",
        "| trainId | labelId | name | category | colour (RGB) |",
        "|---|---|---|---|---|",
        *[
            f"| {c['train_id']} | {c['label_id']} | {c['name']} | {c['category']} | {tuple(c['color'])} |"
            for c in card["classes"]
        ],
        "",
    ]
    return "\n".join(lines)
