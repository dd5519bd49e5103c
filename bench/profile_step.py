"""Where one compiled training step spends its time: torch.profiler over a few steps, kernels grouped by kind.

The step is the one the plain defaults train on a GPU (`cityseg.training.runtime`): the strong recipe's batch of
uint8 crops on the device, colour augmentation there (gpu_aug), normalisation, forward and backward of the
U-Net under bf16 autocast in channels-last, compiled with the trainer's fallback (`cityseg.training.compiling`),
cross-entropy, Adam with its parameter groups. Random batches already on the device isolate the step from
the loader (bench/train_loop.py measures the loader). After --warmup steps (compiling, cuDNN's search),
--steps steps are timed, then profiled.

Writes into --out:
  profile_top_kernels.md   the --top CUDA kernels by total time (on CPU: the top operators), with counts
  profile_summary.md       where the time goes: step time, GPU busy share, MFU, kernel time by kind
and appends one row to --md (BENCHMARKS.md by default) with the figures.

    python bench/profile_step.py --out OUT                 # CUDA: batch 16 at 1024x512, compiled
    python bench/profile_step.py --device cpu --batch 1 --crop 128x64 --no-compile --out /tmp/p --no-record
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from pathlib import Path

import torch
from common import Recorder, add_common_args, count_flops, peak_flops

from cityseg.cli.common import size_type

# Kernel kinds, first match wins (names as CUDA, cuDNN, CUTLASS and Triton report them).
KINDS = (
    ("convolution and matmul (tensor cores)", r"conv|gemm|xmma|cutlass|implicit|sm\d\d_|wgrad|dgrad|fprop|cudnn"),
    ("Triton kernels (fused by inductor: norms, activations, elementwise)", r"^triton"),
    ("optimizer (Adam, fused where torch has it)", r"multi_tensor|adam|foreach|fused_"),
    ("loss (log-softmax, NLL)", r"nll|softmax|cross_entropy"),
    ("batch norm (not fused)", r"batch_norm|bn_fw|bn_bw"),
    ("copies and fills", r"memcpy|memset|copy|fill|cat"),
    ("other elementwise and reductions", r"elementwise|reduce|vectorized|unrolled"),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, lowered)), "other")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=size_type, default=(1024, 512))
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compiling, cuDNN's search)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps, then as many profiled")
    parser.add_argument("--top", type=int, default=20, help="kernels in the table")
    parser.add_argument("--no-compile", action="store_true", help="profile the eager step")
    parser.add_argument("--out", type=Path, required=True, help="folder for the two Markdown files")
    add_common_args(parser)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    args.device = "cuda" if cuda else "cpu"
    return args


def main() -> None:
    args = parse_args()
    from cityseg.training.compiling import CompiledOrEager, first_step
    from cityseg.training.config import resolve_config
    from cityseg.training.engine import to_device_batch
    from cityseg.training.losses import build_loss
    from cityseg.training.model import build_model
    from cityseg.training.optim import build_optimizer
    from cityseg.training.runtime import step_context

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rec = Recorder("profile_step", args)
    config = resolve_config(
        "strong",
        crop=args.crop,
        batch_size=args.batch,
        encoder_weights=None,
        workers=0,
        device=args.device,
        gpu_aug=True,
        compile=not args.no_compile,
        cache=None,
    )
    torch.manual_seed(0)
    core = build_model(encoder_weights=None)
    flops = count_flops(core, args.batch, args.crop, train=True)
    context = step_context(config, device)
    core.to(device, memory_format=torch.channels_last if context.channels_last else torch.preserve_format).train()
    model = CompiledOrEager(core) if config.compile else core
    optimizer = build_optimizer(core, config)
    criterion = build_loss(config.loss, config.ohem_thresh, config.ohem_min_kept)
    width, height = args.crop
    images = torch.randint(0, 256, (args.batch, 3, height, width), dtype=torch.uint8, device=device)  # (B, 3, H, W)
    masks = torch.randint(0, 19, (args.batch, height, width), dtype=torch.uint8, device=device)  # (B, H, W)

    def forward_backward() -> None:
        image, target = to_device_batch(images, masks, context, train=True)  # augment + normalise on the device
        with context.autocast():
            loss = criterion(model(image), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def step() -> None:
        first_step(model, forward_backward)
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    step_s = (time.perf_counter() - start) / args.steps
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
    )
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync()
    kernels = kernel_times(prof, device)
    peak = peak_flops(device)
    failure = getattr(model, "failure", None)
    write_files(args, kernels, step_s, warmup_s, flops, peak, failure)
    busy = sum(total for total, _ in kernels.values()) / args.steps / 1e6  # seconds of kernels per step
    by_kind = kind_totals(kernels)
    rec.finish(
        results={
            "step_ms": round(1000 * step_s, 2),
            "images_per_s": round(args.batch / step_s, 1),
            "gpu_busy_share": round(busy / step_s, 3) if device.type == "cuda" else None,
            "mfu": round(flops / step_s / peak, 4) if peak else None,
            "warmup_s": round(warmup_s, 1),
            "kind_share": {kind: round(share, 3) for kind, share in by_kind.items()},
            "compiled": config.compile and failure is None,
            "compile_failed": failure,
        },
        figure=f"{1000 * step_s:.1f} ms/step ({args.batch / step_s:.0f} img/s)"
        + (f", MFU {100 * flops / step_s / peak:.1f}%" if peak else "")
        + (f", GPU busy {100 * busy / step_s:.0f}%" if device.type == "cuda" else "")
        + "; kernel time: "
        + ", ".join(f"{kind.split(' (')[0]} {100 * share:.0f}%" for kind, share in by_kind.items()),
        ratio="-",
        notes=f"{device.type}, strong recipe step with gpu_aug, batch {args.batch} at {width}x{height}, "
        f"{'compiled' if config.compile and failure is None else 'eager'}, warmup {args.warmup} ({warmup_s:.0f} s incl. "
        f"compiling), {args.steps} timed + {args.steps} profiled steps; tables in {args.out}",
    )


def kernel_times(prof, device: torch.device) -> dict[str, tuple[float, int]]:
    """name -> (total microseconds, calls): CUDA kernels on a GPU, else the CPU operators' own time."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    if device.type == "cuda":
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                totals[event.name][0] += event.time_range.elapsed_us()
                totals[event.name][1] += 1
    else:
        for event in prof.key_averages():
            totals[event.key] = [event.self_cpu_time_total, event.count]
    return {name: (total, int(count)) for name, (total, count) in totals.items()}


def kind_totals(kernels: dict[str, tuple[float, int]]) -> dict[str, float]:
    """Share of the kernel time per kind, largest first."""
    by_kind: dict[str, float] = defaultdict(float)
    for name, (total, _) in kernels.items():
        by_kind[kind_of(name)] += total
    whole = sum(by_kind.values()) or 1.0
    return {kind: total / whole for kind, total in sorted(by_kind.items(), key=lambda item: -item[1])}


def write_files(
    args: argparse.Namespace,
    kernels: dict[str, tuple[float, int]],
    step_s: float,
    warmup_s: float,
    flops: int,
    peak: float | None,
    failure: str | None,
) -> None:
    """The top-kernel table and the summary, as Markdown in --out."""
    args.out.mkdir(parents=True, exist_ok=True)
    whole = sum(total for total, _ in kernels.values()) or 1.0
    top = sorted(kernels.items(), key=lambda item: -item[1][0])[: args.top]
    what = "CUDA kernels" if args.device == "cuda" else "CPU operators (self time)"
    lines = [
        f"# Top {args.top} {what} of {args.steps} training steps",
        "",
        "| # | Kernel | Kind | Total ms | Per step ms | Calls per step | Share |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number, (name, (total, calls)) in enumerate(top, start=1):
        short = name if len(name) <= 110 else name[:107] + "..."
        lines.append(
            f"| {number} | `{short.replace('|', '/')}` | {kind_of(name).split(' (')[0]} | {total / 1e3:.2f} | "
            f"{total / 1e3 / args.steps:.3f} | {calls / args.steps:g} | {100 * total / whole:.1f}% |"
        )
    (args.out / "profile_top_kernels.md").write_text("\n".join(lines) + "\n")

    busy_ms = whole / 1e3 / args.steps
    summary = [
        "# Where one training step's time goes",
        "",
        f"- step: {1000 * step_s:.1f} ms for {args.batch} crops of {args.crop[0]}x{args.crop[1]} "
        f"({args.batch / step_s:.0f} img/s), {'compiled' if failure is None and not args.no_compile else 'eager'}"
        + (f" (compiling failed: {failure})" if failure else "")
        + f"; warm-up {warmup_s:.0f} s",
        f"- model FLOPs per step (FlopCounterMode): {flops / 1e9:.0f} GFLOP"
        + (
            f"; MFU {100 * flops / step_s / peak:.1f}% of the {peak / 1e12:.0f} TFLOP/s dense bf16 peak" if peak else ""
        ),
    ]
    if args.device == "cuda":
        summary.append(
            f"- GPU busy (kernel time / step time): {busy_ms:.1f} of {1000 * step_s:.1f} ms = "
            f"{100 * busy_ms / (1000 * step_s):.0f}%; the rest the GPU waits for the host (launches, syncs)"
        )
    summary += ["", "| Kind | ms per step | Share of kernel time |", "| --- | --- | --- |"]
    summary += [
        f"| {kind} | {share * busy_ms:.2f} | {100 * share:.1f}% |" for kind, share in kind_totals(kernels).items()
    ]
    summary += [
        "",
        "Reading it: convolutions at the tensor cores' rate would give MFU near their share of the time; "
        "a low MFU with a high convolution share means the convolutions themselves run far below peak "
        "(small channel counts of the decoder's late stages, memory-bound); a large Triton or copy share "
        "is memory traffic that fusion or fewer layout changes could cut; a low GPU busy share is host "
        'overhead that CUDA graphs (`mode="reduce-overhead"`) would remove.',
    ]
    (args.out / "profile_summary.md").write_text("\n".join(summary) + "\n")


if __name__ == "__main__":
    main()
