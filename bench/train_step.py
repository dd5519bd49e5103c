"""Model throughput: training steps and full-resolution inference, fp32 eager vs faster settings.

Every variant runs in this one process on the same weights and inputs, and is reported as a ratio to
the fp32 eager (contiguous) baseline measured here:

  training   forward + cross-entropy + backward + Adam step; CPU: batch 2 at 512x256 (and 1024x512 with
             --train-sizes), CUDA: batch 8 at 1024x512
  inference  2048x1024, batch 1, under torch.inference_mode

Variants: fp32 (baseline), channels_last, channels_last+bf16 (autocast), and with --compile
channels_last+bf16+compile. FLOPs come from torch.utils.flop_counter.FlopCounterMode on the meta device
(no compute); on CUDA the model FLOP utilisation (MFU) divides achieved FLOP/s by the GPU's dense bf16
peak from a small table (unknown GPUs get none).

    python bench/train_step.py                  # ~2 minutes on 2 CPU cores
    python bench/train_step.py --iters 1 --warmup 1 --no-infer --no-record    # smoke run
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from common import Recorder, add_common_args, timed
from torch.utils.flop_counter import FlopCounterMode

from cityseg.cli.common import size_type

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; matched by substring.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (reported as "H100 80GB HBM3")
    ("H200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
)


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak in FLOP/s, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def count_flops(model: torch.nn.Module, batch: int, size: tuple[int, int], train: bool) -> int:
    """FLOPs of one step (forward, plus backward when training), counted on meta tensors: nothing is computed."""
    meta = copy.deepcopy(model).to("meta")
    x = torch.randn(batch, 3, size[1], size[0], device="meta")  # (B, 3, H, W)
    with FlopCounterMode(display=False) as counter:
        if train:
            logits = meta(x)
            logits.sum().backward()
        else:
            with torch.no_grad():
                meta(x)
    return counter.get_total_flops()


def variants(device: torch.device, compile_too: bool) -> list[tuple[str, bool, bool, bool]]:
    """(name, channels_last, bf16, compile) for each setting measured; the first is the baseline."""
    out = [("fp32", False, False, False), ("channels_last", True, False, False), ("channels_last+bf16", True, True, False)]
    if compile_too:
        out.append(("channels_last+bf16+compile", True, True, True))
    return out


def prepare(base: torch.nn.Module, device, channels_last: bool, compiled: bool, train: bool):
    """A copy of the model on `device` in the variant's memory format, optionally compiled."""
    model = copy.deepcopy(base).to(device).train(train)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compiled else model


def train_rate(base, device, batch, size, variant, args) -> float:
    """Images/s of full training steps for one variant."""
    _, channels_last, bf16, compiled = variant
    model = prepare(base, device, channels_last, compiled, train=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, size[1], size[0], generator=generator).to(device)  # (B, 3, H, W)
    y = torch.randint(0, 19, (batch, size[1], size[0]), generator=generator).to(device)  # (B, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y, ignore_index=255)
        loss.backward()
        optimizer.step()

    seconds = timed(step, args.warmup, args.iters, sync=_sync(device))
    return batch / seconds


def infer_rate(base, device, size, variant, args) -> float:
    """Images/s of batch-1 inference for one variant."""
    _, channels_last, bf16, compiled = variant
    model = prepare(base, device, channels_last, compiled, train=False)
    x = torch.randn(1, 3, size[1], size[0], generator=torch.Generator().manual_seed(0)).to(device)  # (1, 3, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return 1 / timed(run, args.warmup, args.iters, sync=_sync(device))


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--train-sizes", type=lambda t: [size_type(s) for s in t.split(",")], default=None,
                        help="comma-separated WxH training sizes (default: 512x256 on CPU, 1024x512 on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: 2 on CPU, 8 on CUDA)")
    parser.add_argument("--infer-size", type=size_type, default=(2048, 1024))
    parser.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant first")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile on CPU)")
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.model import build_model

    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    train_sizes = args.train_sizes or ([(1024, 512)] if cuda else [(512, 256)])
    batch = args.batch or (8 if cuda else 2)
    rec = Recorder("train_step", args)
    torch.manual_seed(0)
    base = build_model(encoder_weights=None)
    peak = peak_flops(device)
    settings = variants(device, args.compile)
    jobs = [(f"train {w}x{h} b{batch}", batch, (w, h), True) for w, h in train_sizes]
    if not args.no_infer:
        jobs.append((f"infer {args.infer_size[0]}x{args.infer_size[1]} b1", 1, args.infer_size, False))
    results: dict[str, dict] = {}
    for label, n, size, train in jobs:
        flops = count_flops(base, n, size, train)
        rates = {}
        for variant in settings:
            rate = train_rate(base, device, n, size, variant, args) if train else infer_rate(base, device, size, variant, args)
            rates[variant[0]] = {"images_per_s": round(rate, 3), "tflops_per_s": round(rate / n * flops / 1e12, 3),
                                 "mfu": round(rate / n * flops / peak, 4) if peak else None,
                                 "ratio": None}
        baseline = rates["fp32"]["images_per_s"]
        for r in rates.values():
            r["ratio"] = round(r["images_per_s"] / baseline, 2)
        results[label] = {"gflop_per_step": round(flops / 1e9, 1), "variants": rates}
        print(label, rates, flush=True)
    figure = "; ".join(
        f"{label}: " + ", ".join(f"{name} {r['images_per_s']:.3g} img/s" + (f" (MFU {100 * r['mfu']:.1f}%)" if r["mfu"] else "")
                                 for name, r in res["variants"].items())
        for label, res in results.items()
    )
    ratio = "; ".join(
        f"{label}: " + ", ".join(f"{name} {r['ratio']:.2f}x" for name, r in res["variants"].items() if name != "fp32")
        + " vs fp32 eager"
        for label, res in results.items()
    )
    rec.finish(
        results={"device": str(device), "threads": torch.get_num_threads(), "peak_bf16_flops": peak, **results},
        figure=figure, ratio=ratio,
        notes=f"{device.type}, {torch.get_num_threads()} threads, warmup {args.warmup}, iters {args.iters}; "
        "FLOPs from FlopCounterMode: " + ", ".join(f"{k} {v['gflop_per_step']} GFLOP/step" for k, v in results.items()),
    )


if __name__ == "__main__":
    main()
