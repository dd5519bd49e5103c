"""`cityseg cv` end to end as the notebook runs it: the plain defaults against the best flags, and the compile rule.

Three runs of `cityseg cv ROOT --recipe strong --folds F --only-folds 0 --encoder-weights none`, the notebook's
call with every machine field left at auto and the recipe's own epochs (so the compile rule sees a run of the
recipe's length), each stopped once --epochs-logged epochs are in its log.jsonl:
  defaults   nothing more; what `runtime:` chose is its printed line and config.json's runtime record
  eager      --no-compile, otherwise the same: the compile time and saving come from the pair
  best       --cache DIR (the defaults' cache folder) --gpu-aug --compile --workers cores-2
on a synthetic 2048x1024 set of --frames rendered frames, --per-city a city, each hard-linked --copies times;
fold 0 trains on the other cities and validates on its own every epoch, as every fold does.

Per run, from its run folder: images/s and data-wait share of the epochs after the first (log.jsonl), the peak
GPU memory of its epochs, the runtime record (config.json). The first epoch's time beyond the steady rate,
compiled run minus eager run, is the compile time: cold for `defaults` when inductor's cache starts empty (the
GPU check gives it a new TORCHINDUCTOR_CACHE_DIR), warm for `best` (the same graphs). The saving per megapixel is
1/eager - 1/defaults img/s over one crop's megapixels; compile time over saving is the COMPILE_MIN_MEGAPIXELS
that cityseg.training.runtime should hold, printed beside the constants it holds and what each threshold decides
for a Cityscapes fold of each recipe. Goals: defaults >= 0.9x best, and >= 300 img/s at 1024x512-equivalent
work (img/s x crop pixels / 1024x512 pixels). Exits 1 when a run failed (after writing the row).

    python bench/cli_cv.py --data /tmp/bench-data            # CUDA: ~3.5 minutes with a cold compile
    python bench/cli_cv.py --size 256x128 --frames 8 --per-city 1 --copies 2 --crop 64x32 --batch 1 --no-record  # CPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import Recorder, add_common_args, add_data_args, run_until_logged, synthetic_root, usable_cores

from cityseg.cli.common import size_type

TARGET_RATIO = 0.9  # defaults / best
TARGET_IMAGES_PER_S = 300  # at 1024x512-equivalent pixels
REFERENCE_PIXELS = 1024 * 512
CITYSCAPES_FOLD_FRAMES = 2975 * 4 // 5  # train frames of one of 5 folds
RESERVE_S = 40  # kept for each later run (an eager or warm-compiled run takes ~35 s on an H100)


def cv_command(root: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "cityseg", "cv", str(root), "--out", str(out), "--recipe", args.recipe]
    command += ["--folds", str(args.folds), "--only-folds", "0", "--encoder-weights", "none"]
    command += ["--epochs", str(args.epochs)] if args.epochs else []
    command += ["--crop", f"{args.crop[0]}x{args.crop[1]}"] if args.crop else []
    command += ["--batch-size", str(args.batch)] if args.batch else []
    return command + extra


def run_cv(name: str, command: list[str], work: Path, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """One stopped `cityseg cv` run and what its folder says; {"error": ...} when it failed, with "signal" when
    this process was told to stop (the later runs are then skipped, and the row written at once)."""
    out, output = work / name, work / f"{name}.out"
    shutil.rmtree(out, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{name}: {' '.join(command)}", file=sys.stderr, flush=True)
    run_dir = out / "fold_0"
    try:
        ended = run_until_logged(command, run_dir / "log.jsonl", args.epochs_logged, output, timeout)
    except SystemExit as exc:
        if isinstance(exc.code, int):
            return {"error": f"stopped by signal {exc.code - 128} (the step's time limit)", "signal": exc.code}
        return {"error": str(exc)}
    log = run_dir / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    if ended not in (None, 0) or len(rows) < 2:
        return {"error": f"ended ({ended}) with {len(rows)} epochs logged: {output.read_text()[-1500:]}"}
    record = json.loads((run_dir / "config.json").read_text())
    lines = output.read_text(errors="replace").replace("\r", "\n").splitlines()
    runtime_line = next((line[line.index("runtime:") :] for line in lines if "runtime:" in line), "(none printed)")
    config = record["config"]
    images = record["n_train"] // config["batch_size"] * config["batch_size"]  # drop_last
    seconds = [images / row["images_per_s"] for row in rows]  # training time of each epoch
    rate = images * (len(rows) - 1) / sum(seconds[1:])
    crop = config["crop"] or config["size"] or [2048, 1024]
    peaks = [row["peak_memory_gb"] for row in rows if row.get("peak_memory_gb") is not None]
    figures = {
        "images_per_s": round(rate, 2),
        "equivalent_images_per_s": round(rate * crop[0] * crop[1] / REFERENCE_PIXELS, 2),
        "data_wait_share": round(statistics.mean(row["data_wait_share"] for row in rows[1:]), 4),
        "peak_memory_gib": max(peaks) if peaks else None,
        "first_epoch_extra_s": round(seconds[0] - images / rate, 2),
        "steps_per_epoch": images // config["batch_size"],
        "epochs_logged": len(rows),
        "crop_megapixels": crop[0] * crop[1] / 1e6,
        "runtime": record["runtime"],
        "runtime_line": runtime_line,
    }
    print(f"{name}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def compile_rule(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Compile time (cold, warm), saving per megapixel and the threshold they imply, beside the code's constants
    and what each threshold decides for a Cityscapes fold of each recipe."""
    from cityseg.training.config import resolve_config
    from cityseg.training.runtime import (
        COMPILE_MIN_MEGAPIXELS,
        COMPILE_SAVING_S_PER_MEGAPIXEL,
        COMPILE_SECONDS,
        training_megapixels,
    )

    eager, defaults, best = (runs.get(name, {}) for name in ("eager", "defaults", "best"))
    compiled = lambda run: "images_per_s" in run and run["runtime"]["compile"]  # noqa: E731
    rule: dict[str, Any] = {
        "code": {
            "COMPILE_SECONDS": COMPILE_SECONDS,
            "COMPILE_SAVING_S_PER_MEGAPIXEL": COMPILE_SAVING_S_PER_MEGAPIXEL,
            "COMPILE_MIN_MEGAPIXELS": round(COMPILE_MIN_MEGAPIXELS),
        }
    }
    if "images_per_s" not in eager:
        return rule
    # best compiles after defaults, from the same graphs in inductor's cache: warm, unless defaults failed
    kinds = (("cold", defaults), ("warm", best)) if compiled(defaults) else (("cold", best),)
    for kind, run in kinds:
        if compiled(run):
            rule[f"compile_{kind}_s"] = round(run["first_epoch_extra_s"] - eager["first_epoch_extra_s"], 1)
    source = defaults if compiled(defaults) else best if compiled(best) else None
    if source is None:
        return rule
    saving = (1 / eager["images_per_s"] - 1 / source["images_per_s"]) / source["crop_megapixels"]
    rule["saving_s_per_megapixel"] = saving
    rule["saving_from"] = "defaults vs eager" if source is defaults else "best vs eager (other workers too)"
    compile_s = rule.get("compile_cold_s")
    measured = compile_s / saving if saving > 0 and compile_s and compile_s > 0 else None
    rule["min_megapixels"] = None if measured is None else round(measured)
    rule["cityscapes_fold"] = {}
    for recipe in ("seed", "strong"):
        megapixels = training_megapixels(resolve_config(recipe), CITYSCAPES_FOLD_FRAMES, 1, (2048, 1024))
        rule["cityscapes_fold"][recipe] = {
            "megapixels": round(megapixels),
            "code_compiles": megapixels >= COMPILE_MIN_MEGAPIXELS,
            "measured_compiles": None if measured is None else megapixels >= measured,
        }
    return rule


def describe(name: str, run: dict[str, Any]) -> str:
    if "error" in run:
        return f"{name}: FAILED ({' '.join(run['error'].split())[:160]})"
    peak = "" if run["peak_memory_gib"] is None else f", peak {run['peak_memory_gib']:.1f} GiB"
    return (
        f"{name}: {run['images_per_s']:.4g} img/s ({run['equivalent_images_per_s']:.4g} at 1024x512-equivalent), "
        f"data wait {100 * run['data_wait_share']:.0f}%{peak}, first epoch {run['first_epoch_extra_s']:+.0f} s"
    )


def describe_rule(rule: dict[str, Any]) -> str:
    code = rule["code"]
    text = (
        f"code: COMPILE_SECONDS {code['COMPILE_SECONDS']:.0f}, COMPILE_SAVING_S_PER_MEGAPIXEL "
        f"{code['COMPILE_SAVING_S_PER_MEGAPIXEL']:.3g}, COMPILE_MIN_MEGAPIXELS {code['COMPILE_MIN_MEGAPIXELS']:,}"
    )
    if "saving_s_per_megapixel" not in rule:
        return "compile: not measured (no compiled run beside the eager one); " + text
    times = ", ".join(
        f"{kind} {rule[f'compile_{kind}_s']:.0f} s" for kind in ("cold", "warm") if f"compile_{kind}_s" in rule
    )
    text = (
        f"compile time (first epoch's extra over the eager run's) {times}; saving {rule['saving_s_per_megapixel']:.3g} "
        f"s/megapixel ({rule['saving_from']}); measured COMPILE_MIN_MEGAPIXELS "
        f"{'n/a' if rule['min_megapixels'] is None else format(rule['min_megapixels'], ',')} against " + text
    )
    for recipe, fold in rule["cityscapes_fold"].items():
        verdict = lambda on: "n/a" if on is None else "on" if on else "off"  # noqa: E731
        text += (
            f"; a {recipe} Cityscapes fold ({fold['megapixels']:,} MP): compile {verdict(fold['measured_compiles'])} "
            f"measured, {verdict(fold['code_compiles'])} by the code"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="strong")
    parser.add_argument("--size", type=size_type, default=(2048, 1024), help="synthetic frame size WxH")
    parser.add_argument("--copies", type=int, default=8, help="hard-linked copies of each rendered train frame")
    parser.add_argument("--folds", type=int, default=None, help="folds (default: one per city, one city held out)")
    parser.add_argument("--epochs", type=int, default=None, help="--epochs of the runs (default: the recipe's)")
    parser.add_argument("--crop", type=size_type, default=None, help="--crop of the runs (default: the recipe's)")
    parser.add_argument("--batch", type=int, default=None, help="--batch-size of the runs (default: the recipe's)")
    parser.add_argument("--epochs-logged", type=int, default=3, help="stop each run once this many epochs are logged")
    parser.add_argument("--run-timeout", type=float, default=180, help="seconds one run may take")
    parser.add_argument("--budget", type=float, default=250, help="seconds for all three runs (the row comes after)")
    parser.add_argument("--prepare-only", action="store_true", help="build the synthetic set, then stop")
    add_data_args(parser, frames=128, per_city=16)
    add_common_args(parser)
    args = parser.parse_args()
    cities = -(-args.frames // args.per_city)
    args.folds = args.folds or cities
    import torch

    cuda = torch.cuda.is_available()
    root = synthetic_root(args.data, args.frames, args.size, prepared=True, per_city=args.per_city, copies=args.copies)
    if args.prepare_only:
        print(f"{root}: {len(list((root / 'leftImg8bit' / 'train').glob('*/*.png')))} train frames")
        return
    rec = Recorder("cli_cv", args)
    work = args.data / "cli_cv"
    from cityseg.data.cache import default_cache_dir

    workers = max(1, usable_cores() - 2)
    best = ["--cache", str(default_cache_dir(root)), "--gpu-aug", "--compile" if cuda else "--no-compile"]
    extras = {"defaults": [], "eager": ["--no-compile"], "best": [*best, "--workers", str(workers)]}
    runs: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    for number, (name, extra) in enumerate(extras.items()):
        # what is left of --budget, less RESERVE_S for each later run, so every run gets its turn and the row is
        # written before the step's time limit
        left = args.budget - (time.monotonic() - started) - RESERVE_S * (len(extras) - 1 - number)
        if any("signal" in run for run in runs.values()) or left < RESERVE_S / 2:
            stopped = any("signal" in run for run in runs.values())
            runs[name] = {"error": "skipped: " + ("stopped" if stopped else f"{left:.0f} s of --budget left")}
            continue
        runs[name] = run_cv(name, cv_command(root, work / name, args, extra), work, args, min(args.run_timeout, left))
    rule = compile_rule(runs)
    defaults, best_run = runs["defaults"], runs["best"]
    ratio, goals = "defaults/best n/a (a run failed)", []
    if "images_per_s" in defaults and "images_per_s" in best_run:
        share = defaults["images_per_s"] / best_run["images_per_s"]
        equivalent = defaults["equivalent_images_per_s"]
        goals = [share >= TARGET_RATIO, equivalent >= TARGET_IMAGES_PER_S]
        ratio = (
            f"defaults/best {share:.2f}x (goal >= {TARGET_RATIO}: {'met' if goals[0] else 'MISSED'}); defaults "
            f"{equivalent:.4g} img/s at 1024x512-equivalent / goal {TARGET_IMAGES_PER_S}: "
            f"{equivalent / TARGET_IMAGES_PER_S:.2f}x ({'met' if goals[1] else 'MISSED'}); eager/defaults "
            + (
                f"{runs['eager']['images_per_s'] / defaults['images_per_s']:.2f}x"
                if "images_per_s" in runs["eager"]
                else "n/a"
            )
        )
    where = ""
    if goals and not all(goals):
        where = (
            f"where the time goes: data wait {100 * defaults['data_wait_share']:.0f}% of the defaults' epochs (the "
            "loader), the rest is the step itself (the profile_step row and profile_top_kernels.md)"
        )
    chosen = defaults.get("runtime_line", "n/a")
    any_run = next((run for run in runs.values() if "images_per_s" in run), None)
    sizes = (
        f"{any_run['steps_per_epoch']} steps/epoch, {any_run['epochs_logged']} epochs logged (epoch 1 untimed)"
        if any_run
        else ""
    )
    rec.finish(
        results={"runs": runs, "compile_rule": rule, "workers_best": workers, "root": str(root)},
        figure="; ".join(describe(name, run) for name, run in runs.items())
        + f"; defaults chose: {chosen}; "
        + describe_rule(rule),
        ratio=ratio,
        notes="; ".join(
            part
            for part in (
                f"{'cuda' if cuda else 'cpu'}, `cityseg cv --recipe {args.recipe} --folds {args.folds} --only-folds 0 "
                f"--encoder-weights none` children stopped after {args.epochs_logged} epochs, recipe's epochs "
                f"{args.epochs or 'kept'}, crop {args.crop or 'as the recipe'}, batch {args.batch or 'as the recipe'}",
                f"{cities} cities x {args.per_city} synthetic {args.size[0]}x{args.size[1]} frames x {args.copies} "
                f"hard-linked copies; {sizes}",
                f"best: --workers {workers}",
                where,
            )
            if part
        ),
    )
    if any("error" in run for run in runs.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
