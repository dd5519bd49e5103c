"""Score predictions while `cityseg predict --score` writes them: the fast engine's numbers from the label maps
in memory, so a val prediction ends with its mIoU without decoding the PNGs it has just written.

The gtFine PNGs are decoded in the worker threads that count; frames an earlier run already wrote are read
back from their PNGs. The counts are those `evaluate` computes (fast.count_prediction either way), so the
numbers are the fast engine's: identical to the official script on frames in sorted order.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cityseg.errors import UserError, format_paths
from cityseg.evaluation.checks import PredictionProblem, read_prediction
from cityseg.evaluation.fast import FrameCounts, Pair, accumulate, count_prediction, export_dict
from cityseg.evaluation.official import average_class_sizes
from cityseg.evaluation.output import UNITS, plain
from cityseg.evaluation.runner import ground_truth_frames


class PredictionScorer:
    """Counts frames as they are predicted (in worker threads, so the model never waits), then the export dict."""

    def __init__(self, root: Path, split: str, frame_ids: list[str], workers: int = 2) -> None:
        if split == "test":
            raise UserError(
                "the test split's ground truth is withheld, so test predictions cannot be scored; drop "
                "--score, or score --split val."
            )
        frames = {f.id: f for f in ground_truth_frames(Path(root), split)}
        missing = [i for i in frame_ids if i not in frames]
        if missing:
            raise UserError(
                f"{len(missing)} frame(s) of split '{split}' have no labelIds/instanceIds ground truth in "
                f"{root} ({format_paths(missing)}), so they cannot be scored; drop --score."
            )
        self.pairs = {i: Pair(i, Path(i), frames[i].label_ids, frames[i].instance_ids) for i in frame_ids}
        self.order = list(frame_ids)
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.counts: dict[str, Future] = {}
        self.in_flight: deque[Future] = deque()
        self.started = time.perf_counter()

    def add(self, frame_id: str, label_ids: np.ndarray, path: Path) -> None:
        """Count one frame's (H, W) uint8 labelIds (written to `path`); waits when too many frames are queued."""
        while len(self.in_flight) >= 2 * self.workers:  # bound the label maps held in memory
            self.in_flight.popleft().result()
        future = self.pool.submit(self._count, replace(self.pairs[frame_id], prediction=Path(path)), label_ids)
        self.counts[frame_id] = future
        self.in_flight.append(future)

    def add_file(self, frame_id: str, path: Path) -> None:
        """Count a frame predicted by an earlier run, from its PNG."""
        self.add(frame_id, None, path)

    def _count(self, pair: Pair, label_ids: np.ndarray | None) -> FrameCounts:
        try:
            pred = read_prediction(pair.prediction) if label_ids is None else label_ids
            return count_prediction(pair, pred)
        except PredictionProblem as problem:
            raise UserError(f"cannot score prediction {problem}; rerun `cityseg predict` with --overwrite.") from None

    def result(self) -> dict[str, Any]:
        """The official export dict (same keys and numbers as `evaluate`) plus a small "cityseg" section."""
        try:
            frames = [self.counts[i].result() for i in self.order]
        finally:
            self.pool.shutdown(wait=True)
        export = plain(export_dict(accumulate(frames, average_class_sizes())))
        export["cityseg"] = {
            "engine": "fast (in memory, cityseg predict --score)",
            "units": UNITS,
            "n_frames": len(frames),
            "timings": {"predict_and_score_s": time.perf_counter() - self.started},
        }
        return export

    def close(self) -> None:
        """Stop the workers after an error (results are dropped)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
