"""The model card of an export: what the model is, how to run it without cityseg, how it was trained and measured,
from the files a run wrote, read defensively (a missing or older file leaves its part empty, never a guess)."""

import datetime
import json
import re
from pathlib import Path
from typing import Any

from torch import nn

from cityseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cityseg.errors import UserError
from cityseg.fileio import read_json_dict
from cityseg.labels import CLASS_NAMES, NUM_CLASSES, TRAIN_ID_COLORS, TRAIN_ID_TO_ID
from cityseg.prediction.deployed import EXPORT_FORMAT, EXPORT_VERSION, weights_metadata
from cityseg.prediction.image_predict import CITYSCAPES_SIZE
from cityseg.system import package_versions
from cityseg.training import runinfo
from cityseg.training.config import SIDE_MULTIPLE
from cityseg.training.model_names import model_title_of, size_multiple
from cityseg.training.runfolder import CONFIG_FILE, SUMMARY_FILE

TEMPLATE = Path(__file__).with_name("card_template.md")  # card.md's text, with card.json's values to fill in


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
    data = read_json_dict(path)
    if data is None or "averageScoreClasses" not in data:
        raise UserError(
            f"{path} is not an evaluation JSON written by `cityseg evaluate --json` (missing or not JSON, or no "
            "averageScoreClasses); pass the file `cityseg evaluate PRED_DIR ROOT --json FILE` wrote."
        )
    section = data.get("cityseg") if isinstance(data.get("cityseg"), dict) else {}
    predictions = section.get("predictions")  # what the predictions' manifest recorded
    settings = predictions.get("settings") if isinstance(predictions, dict) else None
    settings = settings if isinstance(settings, dict) else {}
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
    summary = read_json_dict(summary_path)
    if summary is None:
        return None
    keys = ("k", "split", "seed", "complete", "miou_mean", "miou_std", "chosen_epochs", "std")
    class_iou = summary.get("class_iou_mean")
    return {
        "file": str(summary_path.resolve()),
        **{key: summary.get(key) for key in keys},
        "protocol": summary.get("protocol") or "not recorded (summary.json of an older cityseg)",
        "class_iou_mean": dict(zip(CLASS_NAMES, class_iou, strict=False)) if isinstance(class_iou, list) else None,
    }


def _inference(size: list[int] | None) -> dict[str, Any]:
    """What `cityseg predict --images` does with a photo (image_predict, inference), as card.md's recipe cites it."""
    return {
        "training_size": size,
        "resize": {"mode": "bilinear", "align_corners": False, "antialias": "when either side shrinks"},
        "pad": {"multiple": SIDE_MULTIPLE, "mode": "reflect", "sides": "bottom and right"},
        "whole_limit": list(size or CITYSCAPES_SIZE),
        "stride_of_window": [2, 3],  # options.default_stride: two thirds of the window, rounded up
        "upsample": {"mode": "bilinear", "align_corners": False, "antialias": False},
    }


def build_card(
    checkpoint: Path,
    state: dict[str, Any],
    network: nn.Module,
    files: dict[str, Any],
    parity: dict[str, Any] | None,
    evaluation: dict[str, Any] | None,
) -> dict[str, Any]:
    """card.json's content for a run's checkpoint; `state` is `load_model`'s (with its sha256)."""
    run_dir = Path(checkpoint).resolve().parent
    run_info = read_json_dict(run_dir / CONFIG_FILE) or {}
    config = state.get("config") or run_info.get("config") or {}
    cv = _cross_validation(run_dir) or _cross_validation(run_dir.parent)
    if evaluation is not None:
        recorded = evaluation.get("predicted_with_sha256")
        evaluation = {**evaluation, "same_checkpoint": recorded == state["sha256"] if recorded else None}
    model = weights_metadata(network)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "title": model_title_of(config),
            "library": "segmentation_models_pytorch",
            "architecture": model["arch"],
            "encoder": model["encoder"],
            "num_classes": NUM_CLASSES,
            "parameters": sum(p.numel() for p in network.parameters()),
            "size_multiple": size_multiple(model["arch"], model["encoder"]),
        },
        "files": files,
        "onnx_io": None  # no model.onnx: `files.onnx` says why
        if "refused" in files["onnx"]
        else {
            "input": {"name": "image", "dtype": "uint8", "shape": ["batch", "height", "width", 3], "layout": "RGB"},
            "output": {"name": "logits", "dtype": "float32", "shape": ["batch", NUM_CLASSES, "height", "width"]},
        },
        "classes": _classes(),
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "inference": _inference(config.get("size")),
        "config": config,
        "training": {
            "recipe": config.get("recipe"),
            "run": run_info.get("run_name") or run_dir.name,
            "epochs": config.get("epochs"),
            **{key: run_info.get(key) for key in ("data_root", "synthetic", "n_train", "n_val")},
            "config_json": str(run_dir / CONFIG_FILE) if run_info else None,
        },
        "source": {
            "checkpoint": str(Path(checkpoint).resolve()),
            "sha256": state["sha256"],
            "epoch": state.get("epoch"),
            "best_epoch": state.get("best_epoch"),
        },
        "git": run_info.get("git") or {"sha": None, "dirty": None},
        "results": {"cross_validation": cv, "evaluation": evaluation},
        "parity": parity,
        "versions": runinfo.versions() | package_versions(("onnx", "onnxruntime", "onnxscript", "safetensors")),
    }


def card_json_text(card: dict[str, Any]) -> str:
    """card.json's text: strict JSON that any parser reads (a NaN or infinity, e.g. a one-fold std, becomes null)."""
    strict = json.loads(json.dumps(card), parse_constant=lambda _token: None)
    return json.dumps(strict, indent=1, allow_nan=False) + "\n"


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "n/a"


def _results_lines(card: dict[str, Any]) -> list[str]:
    cv, evaluation = card["results"]["cross_validation"], card["results"]["evaluation"]
    lines = []
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
        same = {True: "made with this checkpoint", False: "made with ANOTHER checkpoint", None: "checkpoint unknown"}
        lines.append(
            f"- {evaluation['split']}: mIoU {_percent(evaluation['miou'])} %, iIoU {_percent(evaluation['iiou'])} % "
            f"(predictions {same[evaluation['same_checkpoint']]}). Protocol: {evaluation['protocol']}."
        )
    if card["training"]["synthetic"] or (evaluation or {}).get("synthetic"):
        lines.append("- **Trained or measured on SYNTHETIC data**: these numbers say nothing about real streets.")
    return lines


def _resize_step(size: list[int] | None) -> str:
    if not size:
        return "No resize: the model was trained at full resolution and sees each photo at its own size."
    return (
        f"Resize to the network size: width {size[0]} (the training width), height round(H x {size[0]} / W) (Python's "
        "round: halves to even). Resize the normalised image (float): bilinear, align_corners=False, antialias=True "
        "when either side shrinks (torch.nn.functional.interpolate; PIL's Image.resize(BILINEAR) is the same filter "
        "on uint8)."
    )


def card_markdown(card: dict[str, Any]) -> str:
    """card.md (card_template.md filled in): card.json's facts for people, and the recipe `cityseg predict` follows."""
    git, config_json = card["git"], card["training"]["config_json"]
    parity = card["parity"] or {"passed": False, "images": []}  # None: no model.onnx, its blocks are dropped
    drop, keep = ("onnx", "no-onnx") if "refused" in card["files"]["onnx"] else ("no-onnx", "onnx")
    template = re.sub(rf"<!--{drop}-->\n.*?<!--/{drop}-->\n", "", TEMPLATE.read_text(), flags=re.DOTALL)
    return re.sub(rf"<!--/?{keep}-->\n", "", template).format(
        **card,
        source_sha=card["source"]["sha256"][:16],
        git_sha=git.get("sha"),
        dirty=" (uncommitted changes)" if git.get("dirty") else "",
        resize=_resize_step(card["inference"]["training_size"]),
        config_source=f" (from {config_json})" if config_json else "",
        result_lines="\n".join(_results_lines(card)),
        verdict="Passed" if parity["passed"] else "FAILED",
        parity_rows="\n".join(
            f"| {r['name']} | {r['size']} | {100 * r['agreement']:.4f} % | {r['max_abs_diff']:.2e} | "
            f"{r['tolerance']:.2e} |"
            for r in parity["images"]
        ),
        class_rows="\n".join(
            f"| {c['train_id']} | {c['label_id']} | {c['name']} | {c['category']} | {tuple(c['color'])} |"
            for c in card["classes"]
        ),
    )
