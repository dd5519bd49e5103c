"""Model throughput: training steps and full-resolution inference, fp32 eager vs faster settings.

Every variant runs in this one process on the same weights and inputs, and is reported as a ratio to
the fp32 eager (contiguous) baseline measured here:

  training   forward + cross-entropy + backward + Adam step (fused, as training runs); CPU: batch 2 at 512x256 (and 1024x512 with
             --train-sizes), CUDA: batch 8 at 1024x512
  inference  2048x1024, batch 1 (--infer-batch N, or several: 1,8), under torch.inference_mode; with
             --infer-path predict through `cityseg.prediction.inference.predict_logits` (what `cityseg predict` runs per
             batch: autocast as configured for the device, softmax at full resolution) and the argmax, instead
             of the bare forward

Each variant also reports the CUDA memory allocated at its peak (weights, optimizer state, activations).

Variants: fp32 (baseline), channels_last, channels_last+bf16 (autocast; CUDA only by default, as cityseg runs
float32 on CPU), and with --compile channels_last+bf16+compile; --variants picks some of them (the first listed
is the baseline of the ratios). All run with the same thread count. FLOPs come from FlopCounterMode on the meta device
(no compute); on CUDA the model FLOP utilisation (MFU) divides achieved FLOP/s by the GPU's dense bf16
peak from a small table (unknown GPUs get none).

    python bench/train_step.py                  # ~2 minutes on 2 CPU cores
    python bench/train_step.py --iters 1 --warmup 1 --no-infer --no-record    # smoke run
    python bench/train_step.py --infer-batch 4 --no-record     # batched inference (e.g. sliding windows)
    python bench/train_step.py --no-train --infer-path predict --infer-batch 1,8 --compile \
        --variants channels_last+bf16,channels_last+bf16+compile   # the project's inference path
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import Recorder, add_common_args, count_flops, peak_flops, timed

from cityseg.cli.common import size_type


def variants(
    compile_too: bool, names: list[str] | None = None, cuda: bool = True
) -> list[tuple[str, bool, bool, bool]]:
    """(name, channels_last, bf16, compile) for each setting measured (`names`: these, in this order); the first
    is the baseline. On CPU the default leaves bf16 out: cityseg trains and predicts in float32 there."""
    out = [
        ("fp32", False, False, False),
        ("channels_last", True, False, False),
        ("channels_last+bf16", True, True, False),
    ]
    if compile_too:
        out.append(("channels_last+bf16+compile", True, True, True))
    if names is None:
        return out if cuda else [variant for variant in out if not variant[2]]
    known = {variant[0]: variant for variant in out}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(
            f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)} (+compile needs --compile)"
        )
    return [known[name] for name in names]


def prepare(base: torch.nn.Module, device, channels_last: bool, compiled: bool, train: bool):
    """A copy of the model on `device` in the variant's memory format, optionally compiled."""
    model = copy.deepcopy(base).to(device).train(train)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compiled:
        torch._dynamo.reset()  # each compiled variant gets its own static graph, not a recompiled dynamic one
    return torch.compile(model) if compiled else model


def train_rate(base, device, batch, size, variant, args) -> float:
    """Images/s of full training steps for one variant."""
    _, channels_last, bf16, compiled = variant
    model = prepare(base, device, channels_last, compiled, train=True)
    from cityseg.training.optim import fused_where_supported

    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=fused_where_supported([{"params": params}]))  # as training runs
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

    seconds = timed(step, args.warmup, args.iters, sync=_sync(device), after_warmup=_reset_peak(device))
    return batch / seconds


def infer_rate(base, device, batch, size, variant, args) -> float:
    """Images/s of inference on `batch` images per call for one variant."""
    _, channels_last, bf16, compiled = variant
    model = prepare(base, device, channels_last, compiled, train=False)
    x = torch.randn(batch, 3, size[1], size[0], generator=torch.Generator().manual_seed(0)).to(device)  # (N, 3, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run() -> None:
        if args.infer_path == "predict":
            from cityseg.prediction.inference import predict_logits

            predict_logits(model, x, amp=bf16).argmax(dim=1)  # (N, H, W): the labels predict writes
            return
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return batch / timed(run, args.warmup, args.iters, sync=_sync(device), after_warmup=_reset_peak(device))


def with_peak_memory(device: torch.device, measure: Callable[[], float]) -> tuple[float | None, float | None]:
    """`measure()` (None when it ran out of GPU memory) and the CUDA memory allocated at the peak of its timed calls,
    past cuDNN's algorithm search, in GiB (None on CPU): what a batch size costs."""
    if device.type != "cuda":
        return measure(), None
    gc.collect()  # the previous variant's model (compiled ones hold cycles) must not count here
    torch.cuda.empty_cache()
    try:
        result = measure()
    except torch.cuda.OutOfMemoryError:
        return None, None
    finally:
        gc.collect()
        torch.cuda.empty_cache()
    return result, torch.cuda.max_memory_allocated(device) / 2**30


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else None


def _reset_peak(device: torch.device):
    return (lambda: torch.cuda.reset_peak_memory_stats(device)) if device.type == "cuda" else None


def predict_batch(results: dict[str, dict], tolerance: float = 0.95) -> dict[str, int]:
    """Per variant, the smallest inference batch within `tolerance` of its best images/s: `predict`'s default
    should be the largest of these (more only costs memory)."""
    chosen = {}
    for name in next(iter(results.values()))["variants"]:
        rates = {res["batch"]: res["variants"][name]["images_per_s"] for res in results.values() if not res["train"]}
        rates = {batch: rate for batch, rate in rates.items() if rate is not None}
        if rates:
            chosen[name] = min(batch for batch, rate in rates.items() if rate >= tolerance * max(rates.values()))
    return chosen


def _extras(rate: dict) -> str:
    """' (MFU 41.2%, 12.3 GiB)' for the figure; empty on CPU, where neither is known."""
    parts = ([f"MFU {100 * rate['mfu']:.1f}%"] if rate["mfu"] else []) + (
        [f"{rate['peak_memory_gib']:.1f} GiB"] if rate["peak_memory_gib"] is not None else []
    )
    return f" ({', '.join(parts)})" if parts else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--train-sizes",
        type=lambda t: [size_type(s) for s in t.split(",")],
        default=None,
        help="comma-separated WxH training sizes (default: 512x256 on CPU, 1024x512 on CUDA)",
    )
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: 2 on CPU, 8 on CUDA)")
    parser.add_argument("--infer-size", type=size_type, default=(2048, 1024))
    parser.add_argument(
        "--infer-batch",
        type=lambda t: [int(n) for n in t.split(",")],
        default=[1],
        help="images per inference call; several as 1,8",
    )
    parser.add_argument(
        "--infer-path",
        choices=("model", "predict"),
        default="model",
        help="model: the bare forward under bf16 autocast; predict: cityseg.prediction.inference.predict_logits "
        "+ argmax, as `cityseg predict` runs a batch (its own autocast: bf16/fp16 on CUDA only)",
    )
    parser.add_argument("--no-infer", action="store_true", help="skip the inference measurement")
    parser.add_argument("--no-train", action="store_true", help="skip the training measurement")
    parser.add_argument(
        "--variants",
        type=lambda t: t.split(","),
        default=None,
        help="comma list of the variants to measure (default: all); the first is the baseline",
    )
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant first")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile on CPU)")
    add_common_args(parser)
    args = parser.parse_args()

    from cityseg.training.model import build_model

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
    settings = variants(args.compile, args.variants, cuda)
    baseline_name = settings[0][0]
    jobs = [] if args.no_train else [(f"train {w}x{h} b{batch}", batch, (w, h), True) for w, h in train_sizes]
    if not args.no_infer:
        path = " via predict_logits" if args.infer_path == "predict" else ""
        jobs += [
            (f"infer {args.infer_size[0]}x{args.infer_size[1]} b{n}{path}", n, args.infer_size, False)
            for n in args.infer_batch
        ]
    results: dict[str, dict] = {}
    for label, n, size, train in jobs:
        flops = count_flops(base, n, size, train)
        rates = {}
        for variant in settings:
            rate_fn = train_rate if train else infer_rate
            rate, memory = with_peak_memory(device, functools.partial(rate_fn, base, device, n, size, variant, args))
            rates[variant[0]] = {
                "images_per_s": None if rate is None else round(rate, 3),
                "tflops_per_s": None if rate is None else round(rate / n * flops / 1e12, 3),
                "mfu": round(rate / n * flops / peak, 4) if peak and rate else None,
                "peak_memory_gib": None if memory is None else round(memory, 2),
                "ratio": None,
            }
        baseline = rates[baseline_name]["images_per_s"]
        for r in rates.values():
            r["ratio"] = round(r["images_per_s"] / baseline, 2) if baseline and r["images_per_s"] else None
        results[label] = {"gflop_per_step": round(flops / 1e9, 1), "variants": rates, "batch": n, "train": train}
        print(label, rates, flush=True)
    figure = "; ".join(
        f"{label}: "
        + ", ".join(
            f"{name} "
            + ("out of memory" if r["images_per_s"] is None else f"{r['images_per_s']:.3g} img/s" + _extras(r))
            for name, r in res["variants"].items()
        )
        for label, res in results.items()
    )
    ratio = "; ".join(
        f"{label}: "
        + ", ".join(
            f"{name} {'n/a' if r['ratio'] is None else format(r['ratio'], '.2f')}x"
            for name, r in res["variants"].items()
            if name != baseline_name
        )
        + f" vs {baseline_name} (wall time, {torch.get_num_threads()} threads each)"
        for label, res in results.items()
    )
    batches = predict_batch(results) if len([r for r in results.values() if not r["train"]]) > 1 else {}
    if batches:
        figure += (
            "; smallest batch within 5% of the best img/s: "
            + ", ".join(f"{name} {batch}" for name, batch in batches.items())
            + f" -> predict's default batch {max(batches.values())}"
        )
    rec.finish(
        results={
            "device": str(device),
            "threads": torch.get_num_threads(),
            "peak_bf16_flops": peak,
            "predict_batch": batches,
            **results,
        },
        figure=figure,
        ratio=ratio,
        notes=f"{device.type}, {torch.get_num_threads()} threads, warmup {args.warmup}, iters {args.iters}; "
        + ("peak memory of the timed calls (past cuDNN's algorithm search); " if cuda else "")
        + ("bf16 on CPU: no cityseg run uses it (float32 there); " if not cuda and any(v[2] for v in settings) else "")
        + "FLOPs from FlopCounterMode: "
        + ", ".join(f"{k} {v['gflop_per_step']} GFLOP/step" for k, v in results.items()),
    )


if __name__ == "__main__":
    main()
