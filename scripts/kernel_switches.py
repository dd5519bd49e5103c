"""Which CPU kernel switches change what a training run computes (README, "Same numbers?").

Trains the U-Net for a few Adam steps on fixed random data under each switch, every variant in a fresh
process (the switches are read at start-up), and compares the final state (weights and BatchNorm
buffers) with the first variant's: bit-identical, or the largest difference. The switches are the ones
that pick a machine's kernels:

  ATEN_CPU_CAPABILITY   PyTorch's own vectorised kernels: default (no SIMD), avx2, avx512
  ONEDNN_MAX_CPU_ISA    oneDNN's convolutions: the widest instruction set it may use (SSE41, AVX2, AVX512_CORE, ...)
  mkldnn off            convolutions through PyTorch's native (im2col + BLAS) path instead of oneDNN
  threads               torch.set_num_threads (OMP_NUM_THREADS): how reductions are split

    python scripts/kernel_switches.py            # ~1 minute on 2 cores
    python scripts/kernel_switches.py --json OUT.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS: dict[str, dict[str, str]] = {
    "as installed": {},
    "again (same settings)": {},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "ONEDNN_MAX_CPU_ISA=SSE41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "mkldnn off": {"CITYSEG_MKLDNN": "0"},
    "2 threads": {"OMP_NUM_THREADS": "2"},
    "ATEN avx2 + oneDNN AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def train_and_save(out: Path, steps: int) -> None:
    """A few deterministic Adam steps of the U-Net from seed 0; saves the weights and what ran."""
    import torch

    from cityseg.training.model import build_model

    torch.backends.mkldnn.enabled = os.environ.get("CITYSEG_MKLDNN", "1") == "1"
    torch.manual_seed(0)
    model = build_model(encoder_weights=None)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 128, generator=generator)  # (B, 3, H, W)
    targets = torch.randint(0, 19, (2, 64, 128), generator=generator)  # (B, H, W)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(
        {
            "weights": model.state_dict(),
            "loss": loss.item(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.enabled,
        },
        out,
    )


def compare(results: dict[str, Path]) -> list[dict]:
    """Each variant against the first: identical, or the largest absolute weight difference."""
    import torch

    first_name = next(iter(results))
    first = torch.load(results[first_name], weights_only=True)
    rows = []
    for name, path in results.items():
        run = torch.load(path, weights_only=True)
        diffs = [
            float((run["weights"][k].double() - v.double()).abs().max())
            for k, v in first["weights"].items()
            if v.is_floating_point()
        ]
        digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in run["weights"].values())).hexdigest()[:12]
        rows.append(
            {
                "variant": name,
                "capability": run["capability"],
                "threads": run["threads"],
                "mkldnn": run["mkldnn"],
                "loss": run["loss"],
                "weights_sha": digest,
                "identical": max(diffs) == 0.0,
                "max_abs_diff": max(diffs),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train_and_save(args.child, args.steps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, Path] = {}
        unsupported: list[str] = []
        for name, env in VARIANTS.items():
            out = Path(tmp) / f"{len(results)}.pt"
            done = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--child", str(out)],
                env={**os.environ, "OMP_NUM_THREADS": "1", **env},
            )
            if done.returncode == 0:
                results[name] = out
            else:  # e.g. SIGILL: the switch asks for instructions this CPU lacks
                unsupported.append(f"{name} (exit {done.returncode})")
        rows = compare(results)
    for row in rows:
        same = "identical" if row["identical"] else f"differs (max |dw| {row['max_abs_diff']:.2e})"
        print(
            f"{row['variant']:28s} {row['capability']:8s} threads {row['threads']}  mkldnn {row['mkldnn']!s:5s}  "
            f"loss {row['loss']:.10f}  {row['weights_sha']}  {same}"
        )
    for name in unsupported:
        print(f"{name:28s} not supported on this CPU")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "unsupported": unsupported}, indent=1) + "\n")


if __name__ == "__main__":
    main()
