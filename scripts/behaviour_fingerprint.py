"""Fingerprint of what the pipeline computes, to prove a refactoring changed no behaviour.

Runs the public CLI only (subprocesses), so the same script works on any layout of the package:
synth -> prepare -> cv (2 folds, 2 epochs, loader workers > 0) -> predict val with the full model
-> evaluate (fast engine) -> report, in a temporary folder, and prints JSON with the sha256 of every
tensor in each run's last.pt/best.pt, the numbers of summary.json and of the evaluation, and the sha256 of
each prediction PNG. Run it before and after a change and `diff` the two outputs: they must be identical.

    python scripts/behaviour_fingerprint.py > before.json
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SIZE = "128x64"
# Keys whose values depend on the clock, the machine or the temp folder, not on what was computed.
VOLATILE = (
    "time",
    "timing",
    "second",
    "elapsed",
    "date",
    "path",
    "root",
    "dir",
    "host",
    "version",
    "eta",
    "started",
    "checkpoint_sha256",  # the checkpoint file stores its last log row, timings included
    "written_by",
)  # written_by: the sha256 of the JSON file itself, which holds its timings


def cityseg(*args: str, cwd: Path) -> None:
    """Run one `cityseg` command, stopping the fingerprint with its output if it fails."""
    command = [sys.executable, "-m", "cityseg", *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def tensor_hashes(value: Any, prefix: str, out: dict[str, str]) -> None:
    """sha256 of every tensor reachable from `value`, keyed by its path in the checkpoint dict."""
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest = hashlib.sha256(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        out[prefix] = f"{tensor.dtype} {tuple(tensor.shape)} {digest.hexdigest()}"
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            tensor_hashes(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            tensor_hashes(item, f"{prefix}[{index}]", out)


def numbers(value: Any) -> Any:
    """The numbers (and short labels) of a JSON document, without clock-, machine- or path-dependent keys."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in sorted(value.items()) if not any(word in k.lower() for word in VOLATILE)}
    if isinstance(value, list):
        return [numbers(item) for item in value]
    if isinstance(value, str) and ("/" in value or len(value) > 80):
        return "<text>"
    return value


def main() -> None:
    """Run the tiny pipeline in a temporary folder and print its fingerprint as JSON."""
    import torch

    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        cityseg(
            "synth",
            "data",
            "--size",
            SIZE,
            "--train-cities",
            "4",
            "--val-cities",
            "1",
            "--test-cities",
            "1",
            "--per-city",
            "2",
            "--workers",
            "2",
            "--no-progress",
            cwd=work,
        )
        cityseg("prepare", "data", "--workers", "2", cwd=work)
        cityseg(
            "cv",
            "data",
            "--out",
            "runs",
            "--folds",
            "2",
            "--epochs",
            "2",
            "--size",
            SIZE,
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--encoder-weights",
            "none",
            "--workers",
            "2",
            "--cache",
            "none",
            cwd=work,
        )
        cityseg(
            "predict",
            "runs/full/best.pt",
            "data",
            "--split",
            "val",
            "--out",
            "pred",
            "--device",
            "cpu",
            "--workers",
            "2",
            "--no-progress",
            cwd=work,
        )
        cityseg(
            "evaluate",
            "pred",
            "data",
            "--split",
            "val",
            "--engine",
            "fast",
            "--json",
            "val.json",
            cwd=work,
        )
        cityseg("report", "runs", "--eval", "val.json", "--out", "report.pdf", cwd=work)

        checkpoints: dict[str, dict[str, str]] = {}
        for path in sorted((work / "runs").glob("*/*.pt")):
            hashes: dict[str, str] = {}
            tensor_hashes(torch.load(path, map_location="cpu", weights_only=True), "", hashes)
            checkpoints[str(path.relative_to(work / "runs"))] = hashes
        fingerprint = {
            "checkpoints": checkpoints,
            "summary": numbers(json.loads((work / "runs" / "summary.json").read_text())),
            "evaluation": numbers(json.loads((work / "val.json").read_text())),
            "predictions": {
                str(path.relative_to(work / "pred")): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted((work / "pred").rglob("*.png"))
            },
            "report_pdf_pages": (work / "report.pdf").read_bytes().count(b"/Type /Page\n"),
        }
    print(json.dumps(fingerprint, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
