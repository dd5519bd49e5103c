"""The run files a report or comparison reads, checked against each other (errors name each file and its fix), and
what they state in plain words: the headline CV numbers with their `protocol`, the optimistic `selected` ones apart.
Imports no plotting: `cityseg cv` prints its summary through `summary_text`."""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.errors import UserError
from cityseg.fileio import file_sha256
from cityseg.labels import CLASS_NAMES
from cityseg.report.tables import Table, count, mean_std_text
from cityseg.training.model_names import model_title_of
from cityseg.training.runfolder import BEST_FILE, CONFIG_FILE, FOLDS_FILE, FULL_RUN, SUMMARY_FILE, load_log, run_names

CV_COMMAND = "`cityseg cv DATA_ROOT --out RUNS`"
EVAL_COMMAND = "`cityseg evaluate PRED_DIR DATA_ROOT --json EVAL_JSON`"
SUMMARY_KEYS = (
    *("k", "folds", "miou_mean", "miou_std", "class_iou_mean", "class_iou_std", "chosen_epochs", "protocol"),
    "selected",
)
EVAL_KEYS = (
    *("confMatrix", "labels", "classScores", "classInstScores", "categoryScores", "categoryInstScores"),
    *("averageScoreClasses", "averageScoreInstClasses", "averageScoreCategories", "averageScoreInstCategories"),
)


def read_json(path: Path, producer: str, keys: tuple[str, ...] = ()) -> Any:
    """Parse one JSON file holding `keys`; a missing, damaged or foreign file names itself and `producer`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; it is written by {producer}. Run that command, then this one again.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}); it may be truncated. Re-create it with {producer}."
        ) from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}; it was not written by this version of cityseg. "
            f"Re-create it with {producer}."
        )
    return data


@dataclass
class RunFiles:
    """Everything read from one runs folder: `config` is the first run's config.json, `configs` every run's."""

    runs_dir: Path
    config: dict
    folds: dict
    summary: dict
    histories: dict[str, list[dict]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Whether any run trained on synthetic data (config.json "synthetic")."""
        return any(bool(c.get("synthetic")) for c in self.configs.values())


def load_runs(runs_dir: Path, command: str = "cityseg report") -> RunFiles:
    """Config, logs, folds and summary of a runs folder, checked against each other (`command` words the errors)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs folder {runs_dir} does not exist; train with {CV_COMMAND} first.")
    folds = read_json(runs_dir / FOLDS_FILE, CV_COMMAND, ("k", "split", "folds"))
    if not (runs_dir / SUMMARY_FILE).is_file():
        raise UserError(
            f"{runs_dir / SUMMARY_FILE} is missing: {CV_COMMAND} writes it when a fold finishes, so {runs_dir} is "
            f"probably still training its first fold. Run `{command}` once a fold (better: all) has finished."
        )
    summary = read_json(runs_dir / SUMMARY_FILE, CV_COMMAND, SUMMARY_KEYS)
    names = run_names(runs_dir)
    expected = {f.get("run_dir", f"fold_{n}"): f.get("epochs_done") for n, f in enumerate(summary["folds"])}
    expected |= {FULL_RUN: summary["full"].get("epochs_done")} if isinstance(summary.get("full"), dict) else {}
    lost = [name for name in expected if name not in names]
    if lost:
        raise UserError(
            f"{runs_dir / lost[0]} is missing, but {runs_dir / SUMMARY_FILE} records it: a run folder was deleted or "
            f"moved, and `{command}` would understate the training and leave out its numbers. Put it back, or "
            f"train it again with {CV_COMMAND} --resume."
        )
    if not names:
        raise UserError(f"{runs_dir} holds no fold_<k> or full run folders; train with {CV_COMMAND}.")
    configs = {name: read_json(runs_dir / name / CONFIG_FILE, CV_COMMAND) for name in names}
    histories = {name: load_log(runs_dir / name, CV_COMMAND) for name in names}
    for name, done in expected.items():
        if isinstance(done, int) and len(histories[name]) < done:
            raise UserError(
                f"{runs_dir / name / 'log.jsonl'} holds {len(histories[name])} epoch rows but {SUMMARY_FILE} "
                f"records {done}: the log was truncated, emptied or overwritten, and `{command}` would understate the "
                f"training. Restore it from a copy of the run, or train the run again with {CV_COMMAND} in a new --out."
            )
    return RunFiles(runs_dir, configs[names[0]], folds, summary, histories, configs)


def load_evaluation(path: Path, split: str | None = "val") -> dict:
    """The official evaluation JSON plus cityseg's section; one of another split than `split` is refused (None: any)."""
    data = read_json(Path(path), EVAL_COMMAND, EVAL_KEYS)
    section = data.get("cityseg")
    scored = section.get("split") if isinstance(section, dict) else None
    if split is not None and scored is not None and scored != split:
        raise UserError(
            f"{path} scores the {scored!r} split, but the report presents its numbers as the official {split} "
            f"mIoU. Pass the evaluation of the {split} split: `cityseg predict RUNS/full/best.pt ROOT --split "
            f"{split}`, then `cityseg evaluate PRED_DIR ROOT --split {split} --json EVAL_JSON`."
        )
    return data


def predictions_checkpoint_warning(runs_dir: Path, evaluation: dict) -> str | None:
    """A warning when the evaluated predictions came from another checkpoint than RUNS/full/best.pt."""
    section = evaluation.get("cityseg")
    try:
        settings = section["predictions"]["settings"]
        used = settings["checkpoint_sha256"]
    except (KeyError, TypeError):
        return None
    final = Path(runs_dir) / FULL_RUN / BEST_FILE
    if final.is_file() and file_sha256(final) == used:
        return None
    return (
        f"the evaluated predictions in {section.get('pred_dir')} were made by {settings.get('checkpoint')} (epoch "
        f"{settings.get('epoch')}), not by {final}; the report's official numbers are that checkpoint's."
    )


# The reference write-up's number (docs/reference.md): U-Net/ResNet-34, 10 epochs, batch 4, Adam 1e-4.
REFERENCE_MIOU = 66.79
REFERENCE_TEXT = "the write-up's U-Net / resnet34 (10 epochs, batch 4, Adam 1e-4)"
REFERENCE_CAVEAT = (
    "It is not a controlled baseline: the write-up calls 66.79 both a val and a test result and chose its "
    "checkpoint by validation loss (docs/reference.md)."
)


@dataclass(frozen=True)
class CvResult:
    """Cross-validation numbers as summary.json states them (`selected`: best-epoch ones or None)."""

    k: int
    split: str
    miou_mean: float | None
    miou_std: float | None
    class_iou_mean: Sequence[float | None]
    class_iou_std: Sequence[float | None]
    protocol: str
    selected: dict | None
    folds: list[dict]


def cv_result(summary: Mapping[str, Any]) -> CvResult:
    """Read summary.json (keys `load_runs` requires); a missing optional value becomes None."""
    nothing = [None] * len(CLASS_NAMES)
    folds = [{"fold": n, **f} for n, f in enumerate(summary.get("folds") or [])]
    return CvResult(
        k=int(summary.get("k") or len(folds)),
        split=str(summary.get("split") or "?"),
        miou_mean=summary.get("miou_mean"),
        miou_std=summary.get("miou_std"),
        class_iou_mean=summary.get("class_iou_mean") or nothing,
        class_iou_std=summary.get("class_iou_std") or nothing,
        protocol=str(summary.get("protocol") or "not recorded in summary.json"),
        selected=summary.get("selected"),
        folds=folds,
    )


def summary_text(summary: Mapping[str, Any]) -> str:
    """The CV numbers as `cityseg cv`, the notebook and the report print them: headline, protocol, selected."""
    selected = summary["selected"]
    return "\n".join(
        [
            f"CV mIoU ({summary['k']} folds, mean ± std, no selection on the scored fold): "
            f"{mean_std_text(summary['miou_mean'], summary['miou_std'])} %",
            f"  {summary['protocol']}",
            f"At each fold's own best epoch (chosen on the fold it scores, so optimistic): "
            f"{mean_std_text(selected['miou_mean'], selected['miou_std'])} %",
        ]
    )


def finite(value: float | None) -> bool:
    """A number that can be printed (JSON null and NaN cannot)."""
    return value is not None and math.isfinite(value)


def val_class_iou(evaluation: Mapping[str, Any]) -> list[float]:
    """Official per-class IoU in trainId order."""
    return [float(evaluation["classScores"][name]) for name in CLASS_NAMES]


def val_confusion(evaluation: Mapping[str, Any]) -> np.ndarray:
    """(19, 19) counts from the official 34x34 confMatrix, rows = ground truth, in trainId order."""
    from cityseg.evaluation.output import summary

    return np.asarray(summary(dict(evaluation))["confusion_train_ids"], dtype=np.int64)


def total_seconds(histories: Mapping[str, Sequence[Mapping]]) -> float:
    """Training time summed over every epoch of every run (folds and the full fit)."""
    return sum(float(row.get("seconds") or 0.0) for rows in histories.values() for row in rows)


def median_logged(histories: Mapping[str, Sequence[Mapping]], key: str) -> float | None:
    """Median of one log.jsonl field over all epochs of all runs (None when never logged)."""
    values = [float(row[key]) for rows in histories.values() for row in rows if row.get(key) is not None]
    return float(np.median(values)) if values else None


def duration_text(seconds: float) -> str:
    """`1 h 05 min` or `3 min 07 s`."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def recipe_differences(runs: RunFiles) -> list[tuple[str, str, str]] | None:
    """(field, recipe, run) for each field the run changed; None for another version's config."""
    from cityseg.training.config import TrainConfig, value_text
    from cityseg.training.config import recipe_differences as differences_of

    saved = runs.config.get("config")
    try:
        changes = differences_of(TrainConfig.from_dict(saved))
    except UserError:  # written by another cityseg version, or its recipe file is gone
        return None
    return [(name, value_text(recipe), value_text(value)) for name, recipe, value in changes]


LOSS_WORDS = {"ce": "cross-entropy", "ohem": "OHEM cross-entropy", "lovasz": "Lovász", "dice": "Dice"}
AUG_WORDS = {"flip": "horizontal flip", "scale-crop": "random scale and crop", "color-jitter": "colour jitter"}


def loss_text(config: Mapping[str, Any]) -> str:
    """'cross-entropy + 0.5 × Dice, ignoring label 255' from a loss expression such as 'ce+0.5*dice'."""
    terms = []
    for term in str(config.get("loss") or "ce").replace(" ", "").split("+"):
        weight, _, name = term.rpartition("*")
        terms.append((f"{weight} × " if weight else "") + LOSS_WORDS.get(name.lower(), name.replace("_", " ")))
    ohem = f" (pixels below p = {config.get('ohem_thresh')}, at least {config.get('ohem_min_kept'):,} per image)"
    return " + ".join(terms) + (ohem if "ohem" in str(config.get("loss")) else "") + ", ignoring label 255"


def _size(value: Any) -> str:
    return "x".join(map(str, value))


def setup_table(runs: RunFiles, synthetic: bool) -> Table:
    """What was trained and on what, in words: enough to reproduce or question the numbers."""
    cfg = runs.config.get("config") or {}
    weights = cfg.get("encoder_weights")
    weights = {None: "random init (from scratch)", "imagenet": "ImageNet-pretrained encoder"}.get(weights, weights)
    size = f"resized to {_size(cfg['size'])}" if cfg.get("size") else "full resolution"
    crop = f"random {_size(cfg['crop'])} crops" if cfg.get("crop") else "no crop"
    scale = f", random scale {cfg['scale_range'][0]}–{cfg['scale_range'][1]}" if cfg.get("scale_range") else ""
    aug = ", ".join(AUG_WORDS.get(a, a.replace("-", " ")) for a in cfg.get("aug") or ()) or "none"
    decay = f"weight decay {cfg['weight_decay']:g}" if cfg.get("weight_decay") else "no weight decay"
    betas = ", ".join(map(str, cfg.get("betas") or (0.9, 0.999)))
    momentum = f"momentum {cfg.get('momentum')}" if cfg.get("optimizer") == "sgd" else f"betas {betas}"
    optimiser = f"{str(cfg.get('optimizer')).title()} ({momentum}), lr {cfg.get('lr'):g} (encoder × "
    optimiser += f"{cfg.get('encoder_lr_mult', 1):g}), batch {cfg.get('batch_size')}, {decay}"
    schedule = {"constant": "constant lr", "cosine": f"cosine to {cfg.get('min_lr', 0):g}"}.get(
        cfg.get("schedule"), f"poly (power {cfg.get('poly_power')})"
    )
    warmup = f"linear warm-up over {count(cfg['warmup_epochs'], 'epoch')}" if cfg.get("warmup_epochs") else "no warm-up"
    select = {"last": "the last epoch (fixed budget)", "miou": "best val mIoU"}.get(cfg.get("select"), "best val loss")
    full = (runs.summary.get("full") or {}).get("epochs")
    data = "synthetic street scenes (cityseg synth)" if synthetic else f"Cityscapes at {runs.config.get('data_root')}"
    folds = f"{runs.folds['k']} folds of the train split by {runs.folds['split']} (seed {runs.folds.get('seed')})"
    rows = [
        ("model", f"{model_title_of(cfg)}; {weights}"),
        ("recipe", str(cfg.get("recipe"))),
        ("input", f"{size}, {crop}{scale}"),
        ("augmentation", aug),
        ("optimiser", optimiser),
        ("schedule", f"{schedule}, {warmup}"),
        ("loss", loss_text(cfg)),
        ("precision", "mixed (bf16 or fp16 on CUDA)" if cfg.get("amp") else "fp32"),
        ("epochs", f"{cfg.get('epochs')} per fold; best.pt by {select}"),
        ("full fit", f"{count(full, 'epoch')} on all train images" if full is not None else "not trained yet"),
        ("data", data),
        ("folds", folds),
    ]
    return Table.build(("setting", "value"), rows)


def machine_table(runs: RunFiles) -> Table:
    """Hardware, time, throughput and code version: real runs only (a demo report must not depend on them)."""
    record = runs.config
    hardware, versions = record.get("hardware") or {}, record.get("versions") or {}
    speed, wait = median_logged(runs.histories, "images_per_s"), median_logged(runs.histories, "data_wait_share")
    peak = median_logged(runs.histories, "peak_memory_gb")
    throughput = [f"{speed:.1f} img/s" if speed is not None else "not logged"]
    throughput += [f"{100 * wait:.0f}% of it waiting for data"] if wait is not None else []
    throughput += [f"peak GPU memory {peak:.1f} GiB"] if peak is not None else []
    machine = f"{record.get('world_size') or 1} × {hardware.get('gpu') or hardware.get('device')}, "
    machine += f"{hardware.get('cpu_count')} CPU cores"
    library_versions = f"torch {versions.get('torch')}, smp {versions.get('segmentation-models-pytorch')}, "
    library_versions += f"cityscapesscripts {versions.get('cityscapesscripts')}"
    rows = [
        ("run folder", str(runs.runs_dir.resolve())),
        ("hardware", machine),
        ("training time", f"{duration_text(total_seconds(runs.histories))} (all folds and the full fit)"),
        ("throughput", ", ".join(throughput) + " (medians over all epochs)"),
        ("code", git_text(record)),
        ("versions", library_versions),
        ("started", str(record.get("started") or "unknown")),
    ]
    return Table.build(("item", "value"), rows)


def git_text(record: Mapping[str, Any]) -> str:
    git = record.get("git") or {}
    return f"git {(git.get('sha') or 'unknown')[:12]}" + (" (uncommitted changes)" if git.get("dirty") else "")
