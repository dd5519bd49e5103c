"""`--deterministic` checked and priced: two runs and one killed+resumed run give identical checkpoints.

Runs `cityseg train --full` as child processes on a small synthetic set (the strong recipe's augmentations, the
plain defaults otherwise: on CUDA gpu-aug, cache, bf16, channels-last): run A and run B with --deterministic,
run C with --deterministic SIGKILLed once its first epoch is logged and continued with --resume, and run D
without the flag. last.pt and best.pt of B and C must equal A's tensor for tensor (model, optimizer, scheduler,
scaler, random streams) and their log rows must match without the timings, which the checkpoints also carry (so
the files differ in those bytes). The slowdown is A's training images/s against D's, epochs after the first.
Exits 1 when a comparison fails (after writing the row).

    python bench/deterministic.py --data /tmp/bench-data     # CUDA: 128 2048x1024 frames, 768x768 crops, batch 8
    python bench/deterministic.py --device cpu --size 128x64 --crop 64x32 --frames 8 --batch 2 --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import Recorder, add_common_args, add_data_args, run_until_logged, synthetic_root

from cityseg.cli.common import size_type

STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng")
TIMINGS = ("seconds", "images_per_s", "data_wait_share", "peak_memory_gb")


def train_command(root: Path, out: Path, args, deterministic: bool, resume: bool = False) -> list[str]:
    crop = f"{args.crop[0]}x{args.crop[1]}"
    command = [sys.executable, "-m", "cityseg", "train", str(root), "--out", str(out), "--full", "--recipe", "strong"]
    command += ["--epochs", str(args.epochs), "--crop", crop, "--batch-size", str(args.batch), "--device", args.device]
    command += ["--encoder-weights", "none", "--deterministic" if deterministic else "--no-compile"]
    return command + (["--resume"] if resume else [])


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def tensors(value, prefix: str = "") -> dict:
    """Every tensor in a nested checkpoint entry, by path."""
    import torch

    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return {path: t for key, item in items for path, t in tensors(item, f"{prefix}/{key}").items()}


def differences(run_dir: Path, reference: Path) -> list[str]:
    """What differs between two run folders' checkpoints (tensors, epoch) and logs (timings left out)."""
    import torch

    from cityseg.training.checkpoint import load_checkpoint
    from cityseg.training.runfolder import load_log

    found = []
    for name in ("last.pt", "best.pt"):
        got, expected = load_checkpoint(run_dir / name), load_checkpoint(reference / name)
        got_t, expected_t = (tensors({k: state[k] for k in STATE_KEYS}) for state in (got, expected))
        if got["epoch"] != expected["epoch"] or got_t.keys() != expected_t.keys():
            found.append(f"{name}: epoch or entries differ")
        found += [f"{name}{key}" for key, t in expected_t.items() if key in got_t and not torch.equal(got_t[key], t)]
    rows = [[{k: v for k, v in row.items() if k not in TIMINGS} for row in load_log(d)] for d in (run_dir, reference)]
    return found + (["log.jsonl rows"] if rows[0] != rows[1] else [])


def images_per_s(run_dir: Path) -> float:
    """Median training images/s of the epochs after the first (the first pays for start-up)."""
    from cityseg.training.runfolder import load_log

    rows = load_log(run_dir)
    return statistics.median(row["images_per_s"] for row in (rows[1:] or rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda or cpu (a dry run)")
    parser.add_argument("--size", type=size_type, default=(2048, 1024), help="synthetic frame size WxH")
    parser.add_argument("--crop", type=size_type, default=(768, 768), help="training crop WxH (the strong recipe's)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    add_data_args(parser, frames=128, per_city=16)
    add_common_args(parser)
    args = parser.parse_args()

    root = synthetic_root(args.data, args.frames, size=args.size, prepared=True, per_city=args.per_city)
    rec = Recorder("deterministic", args)
    work = args.data / f"deterministic-{os.getpid()}"
    a, b, c, d = (work / name for name in ("a", "b", "c", "d"))
    run(train_command(root, a, args, deterministic=True))
    run(train_command(root, b, args, deterministic=True))
    work.mkdir(parents=True, exist_ok=True)
    ended = run_until_logged(train_command(root, c, args, deterministic=True), c / "log.jsonl", 1, work / "c.out", 600)
    if ended is not None:
        raise SystemExit(f"run c ended ({ended}) before it could be killed after its first epoch: see {work / 'c.out'}")
    run(train_command(root, c, args, deterministic=True, resume=True))
    run(train_command(root, d, args, deterministic=False))
    repeat, resumed = differences(b, a), differences(c, a)
    fast, slow = images_per_s(d), images_per_s(a)
    slowdown = 100 * (fast / slow - 1)
    runtime = json.loads((a / "config.json").read_text())["runtime"]
    ran = ", ".join(f"{key} {runtime[key]}" for key in ("device", "amp_dtype", "gpu_aug", "cache", "workers"))
    verdict = lambda found: "identical" if not found else f"DIFFER ({', '.join(found[:3])})"  # noqa: E731
    rec.finish(
        results={"repeat": repeat, "resumed": resumed, "images_per_s": {"deterministic": slow, "default": fast}},
        figure=f"checkpoints (last.pt, best.pt tensors; log rows without timings): second run {verdict(repeat)}, "
        f"killed+resumed run {verdict(resumed)}; img/s deterministic {slow:.4g}, default {fast:.4g}",
        ratio=f"--deterministic costs {slowdown:.0f}% (wall time, training img/s after epoch 1, same loader workers)",
        notes=f"{args.device}, strong recipe, {len(list((root / 'leftImg8bit' / 'train').glob('*/*.png')))} "
        f"synthetic {args.size[0]}x{args.size[1]} frames, crop {args.crop[0]}x{args.crop[1]}, batch {args.batch}, "
        f"{args.epochs} epochs, `cityseg train --full` children; ran with {ran}",
    )
    if repeat or resumed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
