"""Evaluation: the fast confusion-count engine vs the official cityscapesscripts script, same files, same run.

Both score the same noisy labelIds predictions of a synthetic 2048x1024 split (the train split of the
shared benchmark tree, so ground truth and instances exist; generated once, then reused) through
`cityseg.evaluation.evaluate`: the official figure is `evaluateImgLists` alone, the fast figure is the
whole fast engine (PNG decoding in threads, counting, scores). Input checks run before either and are
timed in neither. Every file is read once beforehand so both start with a warm page cache. The two
results are then compared field by field ("identical": no field differs by 1e-9 or more, NaNs alike).

The fast engine is timed twice: cold (`gt_cache=False`: every frame's three PNGs decoded, the figure
before the ground-truth cache existed) and warm (the split's decoded ground truth read from the gt_cache
memmaps, built beforehand in a temporary folder beside the data; the one-off build is reported on its
own and kept out of the warm figure, as it is paid once per split, not per evaluation).

Decoding bounds the fast engine, so the same threads also decode every frame's three PNGs with
nothing else to do: `official / decode-only` is the best ratio any cold run could reach with this
decoder on this machine (the "ceiling" in the row).

    python bench/evaluate.py                    # 64 frames: ~12 s on 2 cores once the data exists
    python bench/evaluate.py --frames 12 --no-record
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import Recorder, add_common_args, add_data_args, synthetic_root, usable_cores

SPLIT = "train"  # the benchmark tree's big split; its ground truth is as complete as val's


def noisy_predictions(root: Path) -> Path:
    """Stand-in model outputs for every frame of the split, written once beside the data and reused."""
    from cityseg.data import list_frames
    from cityseg.evaluation.noisy import write_noisy_predictions

    out = root.with_name(root.name + "_noisy_predictions")
    if not out.is_dir():
        partial = out.with_name(out.name + ".partial")
        write_noisy_predictions(list_frames(root, SPLIT, label_source="ids"), partial, seed=0, error_rate=0.2, block=16)
        os.rename(partial, out)
    return out


def warm_page_cache(*folders: Path) -> None:
    """Read every PNG once so neither engine pays for the disk and the other for the cache."""
    for folder in folders:
        for path in folder.rglob("*.png"):
            path.read_bytes()


def decode_only_seconds(pred: Path, root: Path, workers: int) -> float:
    """Seconds the fast engine's threads take just to decode every frame's prediction, labelIds and instanceIds."""
    from cityseg.evaluation.fast import map_frames, read_frame
    from cityseg.evaluation.runner import ground_truth_frames, prediction_pairs

    pairs = prediction_pairs(pred, ground_truth_frames(root, SPLIT))
    started = time.perf_counter()
    map_frames(read_frame, pairs, workers)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=usable_cores(), help="threads of the fast engine")
    add_data_args(parser, frames=64)  # 64: the tree bench/prepare.py and bench/loader.py already built
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.evaluation import compare_exports, evaluate

    root = synthetic_root(args.data, args.frames)
    pred = noisy_predictions(root)
    warm_page_cache(pred, root / "gtFine" / SPLIT)
    rec = Recorder("evaluate", args)
    official = evaluate(pred, root, SPLIT, engine="official", workers=args.workers)
    fast = evaluate(pred, root, SPLIT, engine="fast", workers=args.workers, gt_cache=False)
    fast_single = evaluate(pred, root, SPLIT, engine="fast", workers=1, gt_cache=False)
    decode_s = decode_only_seconds(pred, root, args.workers)
    with tempfile.TemporaryDirectory(prefix=".bench-eval-gt-", dir=root.parent) as cache:
        first = evaluate(pred, root, SPLIT, engine="fast", workers=args.workers, gt_cache=Path(cache))
        warm = evaluate(pred, root, SPLIT, engine="fast", workers=args.workers, gt_cache=Path(cache))
        warm_single = evaluate(pred, root, SPLIT, engine="fast", workers=1, gt_cache=Path(cache))
    assert first["cityseg"]["gt_cache"]["status"] == "built" and warm["cityseg"]["gt_cache"]["status"] == "fresh"
    diffs, worst = compare_exports(official, fast)
    warm_diffs, warm_worst = compare_exports(official, warm)
    official_s = official["cityseg"]["timings"]["official_s"]
    fast_s = fast["cityseg"]["timings"]["fast_s"]
    fast_single_s = fast_single["cityseg"]["timings"]["fast_s"]
    build_s = first["cityseg"]["gt_cache"]["build_s"]
    warm_s = warm["cityseg"]["timings"]["fast_s"]
    warm_single_s = warm_single["cityseg"]["timings"]["fast_s"]
    n = official["cityseg"]["n_frames"]
    ratio, warm_ratio = official_s / fast_s, official_s / warm_s
    ceiling = official_s / decode_s
    rec.finish(
        results={
            "n_frames": n,
            "official_s": round(official_s, 3),
            "fast_s": round(fast_s, 3),
            "fast_1_worker_s": round(fast_single_s, 3),
            "fast_warm_s": round(warm_s, 3),
            "fast_warm_1_worker_s": round(warm_single_s, 3),
            "gt_cache_build_s": round(build_s, 3),
            "decode_only_s": round(decode_s, 3),
            "ratio": round(ratio, 2),
            "warm_ratio": round(warm_ratio, 2),
            "ceiling_ratio": round(ceiling, 2),
            "identical": not diffs,
            "identical_warm": not warm_diffs,
            "max_abs_diff": max(worst, warm_worst),
            "workers": args.workers,
            "miou": official["averageScoreClasses"],
        },
        figure=f"{n} pairs 2048x1024: official {official_s:.2f} s; fast cold (PNG ground truth) {fast_s:.2f} s "
        f"({args.workers} threads; {fast_single_s:.2f} s with 1); fast warm (gt cache) {warm_s:.2f} s "
        f"({warm_single_s:.2f} s with 1), cache built once in {build_s:.2f} s; decoding the 3 PNGs alone "
        f"{decode_s:.2f} s ({args.workers} threads)",
        ratio=f"warm {warm_ratio:.1f}x, cold {ratio:.1f}x (target 5x); 1 thread warm {official_s / warm_single_s:.1f}x, "
        f"cold {official_s / fast_single_s:.1f}x; cold ceiling {ceiling:.1f}x",
        notes=_identical_note("cold", diffs, worst) + "; " + _identical_note("warm", warm_diffs, warm_worst)
        + "; cold ceiling = official / decode-only; warm excludes the one-off cache build (paid once per split)",
    )


def _identical_note(name: str, diffs: list[str], worst: float) -> str:
    """Whether one fast run matched the official numbers, for the row's notes."""
    verdict = "numbers identical" if not diffs else f"NUMBERS DIFFER: {'; '.join(diffs[:3])}"
    return f"{name}: {verdict} (max |diff| {worst:.1e})"


if __name__ == "__main__":
    main()
