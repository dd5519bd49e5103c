"""Optimizer step: torch's default implementation against the fused one `build_optimizer` picks.

One step over the U-Net's real parameter groups (decoder/encoder, decayed/never-decayed; 24.4M parameters in
140 tensors) with fixed gradients, timed for Adam, AdamW and SGD in this one process, each as a ratio to
torch's default for that optimizer on the device (per-tensor loop on CPU, foreach on CUDA). After the timed
steps, the two implementations' parameters are compared: they run the same update, so they may differ
only by float32 rounding (the largest difference is reported as a share of the decoder's lr, the size of one
Adam step).

    python bench/optimizer.py                  # ~30 s on 2 CPU cores
    python bench/optimizer.py --iters 2 --no-record
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import Recorder, add_common_args, timed

OPTIMIZERS = ("adam", "adamw", "sgd")


def step_seconds(
    model: torch.nn.Module, name: str, fused: bool | None, device: torch.device, args
) -> tuple[float, list]:
    """(seconds per optimizer step, the parameters after warm-up + timed steps) for one implementation."""
    from cityseg.training.config import resolve_config
    from cityseg.training.optim import parameter_groups

    model = copy.deepcopy(model).to(device)
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator).to(device) * 1e-3  # the same gradients each run
    config = resolve_config("strong", optimizer=name, workers=0)  # weight decay on, encoder's lr and decay scaled
    groups = parameter_groups(model, config)
    if name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, fused=fused)
    else:
        adam = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        optimizer = adam(groups, lr=config.lr, betas=config.betas, fused=fused)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    seconds = timed(optimizer.step, args.warmup, args.iters, sync=sync)
    return seconds, [param.detach().cpu() for param in model.parameters()]


def largest_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max |a - b| over every element of the two parameter lists."""
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per implementation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (state allocation)")
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.training.config import resolve_config
    from cityseg.training.model import build_model

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    rec = Recorder("optimizer", args)
    torch.manual_seed(0)
    model = build_model(encoder_weights=None)
    lr = resolve_config("strong").lr  # the decoder's lr in step_seconds' groups
    results: dict[str, dict] = {}
    for name in OPTIMIZERS:
        default_s, default_params = step_seconds(model, name, None, device, args)
        fused_s, fused_params = step_seconds(model, name, True, device, args)
        results[name] = {
            "default_ms": round(1e3 * default_s, 2),
            "fused_ms": round(1e3 * fused_s, 2),
            "ratio": round(default_s / fused_s, 2),
            "max_diff_in_lr": round(largest_difference(default_params, fused_params) / lr, 6),
        }
        print(name, results[name], flush=True)
    rec.finish(
        results={"device": str(device), "threads": torch.get_num_threads(), **results},
        figure="; ".join(
            f"{name}: default {r['default_ms']:.1f} ms/step, fused {r['fused_ms']:.1f} ms/step"
            for name, r in results.items()
        ),
        ratio="; ".join(f"{name} fused {r['ratio']:.2f}x" for name, r in results.items())
        + f" vs torch's default (wall time, {torch.get_num_threads()} threads each)",
        notes=f"{device}, {torch.get_num_threads()} threads; after {args.warmup + args.iters} steps the fused and the "
        "default parameters differ by at most "
        + ", ".join(f"{r['max_diff_in_lr']:.1e} lr ({name})" for name, r in results.items())
        + f" (lr {lr:g}: one Adam step moves a weight by up to ~lr)",
    )


if __name__ == "__main__":
    main()
