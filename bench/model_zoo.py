"""Model zoo: per smp architecture/encoder (weights none), parameters, GFLOP per 1024x512 image (FlopCounterMode),
CPU ms of a training step (forward, cross-entropy, backward, fused Adam; batch 2 at 256x128; the models take turns,
the fastest of the rounds counts) against the default U-Net/ResNet-34, and whether cityseg's ONNX export graph traces
and agrees with torch in onnxruntime on two tiny odd-sized photos (and whether `cityseg export` refuses it).

--gpu-columns measures the table's GPU columns instead: training images/s at --train-size (the strong recipe's
optimizer and step context: bf16 autocast and channels-last on CUDA, eager) with its peak memory, and whole-image
inference images/s at --infer-size through `cityseg.prediction.inference.predict_logits` + argmax (bf16 on CUDA).

    python bench/model_zoo.py                                      # ~10 minutes on 2 CPU cores, mostly ONNX
    python bench/model_zoo.py --no-onnx --rounds 1 --no-record     # smoke run
    python bench/model_zoo.py --gpu-columns                        # CUDA: ~40 s
"""

from __future__ import annotations

import argparse
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import Recorder, add_common_args, count_flops, timed

from cityseg.cli.common import size_type
from cityseg.training.config import resolve_config
from cityseg.training.model import build_model, onnx_refusal
from cityseg.training.model_names import model_title
from cityseg.training.optim import build_optimizer

MODELS = ("Unet/resnet34", "Unet/resnet18", "FPN/resnet34", "DeepLabV3Plus/resnet50", "Segformer/mit_b0")


def train_step(model: torch.nn.Module, arch: str, encoder: str) -> Callable[[], None]:
    """One training step of `model` on fixed random data, as a function to time."""
    config = resolve_config("seed", arch=arch, encoder=encoder, encoder_weights=None)
    optimizer = build_optimizer(model, config)
    images, masks = torch.randn(2, 3, 128, 256), torch.randint(0, 19, (2, 128, 256))  # (B, 3, H, W), (B, H, W)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), masks, ignore_index=255).backward()
        optimizer.step()

    return step


def gpu_rates(model: torch.nn.Module, arch: str, encoder: str, args: argparse.Namespace) -> dict[str, float | None]:
    """Training and inference images/s of `model` on --device, and the training step's peak memory in GiB."""
    from cityseg.prediction.inference import predict_logits
    from cityseg.training.runtime import step_context

    device = torch.device(args.device)
    config = resolve_config("strong", arch=arch, encoder=encoder, encoder_weights=None, device=args.device)
    context = step_context(config, device)
    layout = torch.channels_last if context.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    optimizer = build_optimizer(model, config)
    (width, height), (infer_w, infer_h) = args.train_size, args.infer_size
    images = torch.randn(args.batch, 3, height, width, device=device).contiguous(memory_format=layout)  # (B, 3, H, W)
    masks = torch.randint(0, 19, (args.batch, height, width), device=device)  # (B, H, W)
    photos = torch.randn(args.infer_batch, 3, infer_h, infer_w, device=device).contiguous(memory_format=layout)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with context.autocast():
            loss = torch.nn.functional.cross_entropy(model(images), masks, ignore_index=255)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        predict_logits(model, photos, amp=True).argmax(dim=1)  # (B, H, W): the labels predict writes

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    reset = (lambda: torch.cuda.reset_peak_memory_stats(device)) if cuda else None
    train_s = timed(step, args.warmup, args.iters, sync, after_warmup=reset)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    model.eval()
    infer_s = timed(infer, args.warmup, args.iters, sync)
    return {"train_img_s": args.batch / train_s, "infer_img_s": args.infer_batch / infer_s, "train_peak_gib": peak}


def gpu_table(rows: list[dict], args: argparse.Namespace) -> None:
    """The GPU columns as Markdown, to sit beside the CPU table in docs/models.md."""
    (w, h), (iw, ih) = args.train_size, args.infer_size
    precision = "bf16" if args.device == "cuda" else "float32"
    print(
        f"\n| Model (smp arch/encoder) | GPU training, {w}x{h} batch {args.batch} {precision} | vs default | "
        f"peak memory | GPU inference, {iw}x{ih} batch {args.infer_batch} {precision} | vs default |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = rows[0]
    for row in rows:
        peak = "-" if row["train_peak_gib"] is None else f"{row['train_peak_gib']:.1f} GiB"
        print(
            f"| {row['model']} (`{row['smp']}`) | {row['train_img_s']:.4g} img/s | "
            f"{row['train_img_s'] / base['train_img_s']:.2f}x | {peak} | {row['infer_img_s']:.4g} img/s | "
            f"{row['infer_img_s'] / base['infer_img_s']:.2f}x |"
        )


def onnx_check(model: torch.nn.Module) -> str:
    """'passes', or what failed: the trace, or onnxruntime's agreement with torch on two tiny photos."""
    import onnxruntime

    from cityseg.data.transforms import normalize
    from cityseg.prediction.export import LOGIT_RTOL, MIN_AGREEMENT, export_onnx
    from cityseg.prediction.inference import forward_padded

    model.eval()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / "model.onnx"
        try:
            export_onnx(model, path)
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for height, width in ((70, 100), (101, 67)):
                photo = torch.randint(0, 256, (1, height, width, 3), dtype=torch.uint8)
                actual = session.run(["logits"], {"image": photo.numpy()})[0]
                with torch.inference_mode():
                    expected = forward_padded(model, normalize(photo.permute(0, 3, 1, 2))).numpy()
                agreement = float(np.mean(actual.argmax(1) == expected.argmax(1)))
                if agreement < MIN_AGREEMENT or np.abs(actual - expected).max() > LOGIT_RTOL * np.abs(expected).max():
                    return f"fails: onnxruntime differs from torch at {width}x{height} (agreement {agreement:.4f})"
        except Exception as exc:  # noqa: BLE001 - the trace or onnxruntime fail in many ways; the row says how
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split(". ")[0]  # torch colours its messages
            return f"fails: {type(exc).__name__}: {' '.join(first.split())[:70]}"
    return "passes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="ARCH/ENCODER list; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; each model's fastest step counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export check")
    gpu = parser.add_argument_group("GPU columns")
    gpu.add_argument("--gpu-columns", action="store_true", help="measure the GPU columns (no CPU steps, no ONNX)")
    gpu.add_argument("--device", choices=("cpu", "cuda"), default="cuda", help="device of --gpu-columns")
    gpu.add_argument("--train-size", type=size_type, default=(1024, 512), help="training input WxH")
    gpu.add_argument("--batch", type=int, default=8, help="training batch")
    gpu.add_argument("--infer-size", type=size_type, default=(2048, 1024), help="inference image WxH")
    gpu.add_argument("--infer-batch", type=int, default=1, help="images per inference call (predict's default: 1)")
    gpu.add_argument("--warmup", type=int, default=3, help="untimed calls first (cuDNN's algorithm search)")
    gpu.add_argument("--iters", type=int, default=10, help="timed calls")
    add_common_args(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # as training and predict: fixed sizes
    recorder = Recorder("model_zoo", args)
    if args.gpu_columns:
        gpu_main(args, recorder)
        return
    rows, steps = [], []
    for name in args.models.split(","):
        arch, encoder = name.split("/")
        torch.manual_seed(0)
        model = build_model(None, arch=arch, encoder=encoder)
        rows.append(
            {
                "model": model_title(arch, encoder),
                "smp": name,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "gflop_1024x512": count_flops(model.eval(), 1, (1024, 512), train=False) / 1e9,
                "refused": onnx_refusal({"arch": arch, "encoder": encoder}),
                "onnx": "not run" if args.no_onnx else onnx_check(model),
                "train_ms": float("inf"),
            }
        )
        steps.append(train_step(model.train(), arch, encoder))
        print(rows[-1], flush=True)
    for round_ in range(args.rounds):  # in turns, so a load that comes and goes touches every model alike
        for row, step in zip(rows, steps, strict=True):
            row["train_ms"] = min(row["train_ms"], 1000 * timed(step, warmup=1 if round_ == 0 else 0, iters=1))
    base = rows[0]["train_ms"]
    print(
        "\n| Model (smp arch/encoder) | Parameters | GFLOP per 1024x512 image | CPU train step, 256x128 batch 2 | "
        "vs default | ONNX export (measured) | `cityseg export` |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for row in rows:
        verdict = "refuses: " + row["refused"].split(": ", 1)[1] if row["refused"] else "exports"
        print(
            f"| {row['model']} (`{row['smp']}`) | {row['params_m']:.1f} M | {row['gflop_1024x512']:.0f} | "
            f"{row['train_ms']:.0f} ms | {row['train_ms'] / base:.2f}x | {row['onnx']} | {verdict} |"
        )
    recorder.finish(
        results={"models": rows},
        figure="; ".join(
            f"{r['smp']}: {r['params_m']:.1f}M params, {r['gflop_1024x512']:.0f} GFLOP/1024x512, "
            f"train {r['train_ms']:.0f} ms, ONNX {r['onnx']}"
            for r in rows
        ),
        ratio="; ".join(f"{r['smp']} {r['train_ms'] / base:.2f}x" for r in rows[1:]) + f" vs {rows[0]['smp']}",
        notes=f"cpu, {torch.get_num_threads()} threads; train step = forward + cross-entropy + backward + fused Adam "
        f"at 256x128 batch 2, fastest of {args.rounds} rounds taken in turns (after 1 warm-up step); encoder weights "
        "none; ONNX = cityseg's export graph + onnxruntime on 70x100 and 67x101 photos",
    )


def gpu_main(args: argparse.Namespace, recorder: Recorder) -> None:
    rows = []
    for name in args.models.split(","):
        arch, encoder = name.split("/")
        torch.manual_seed(0)
        model = build_model(None, arch=arch, encoder=encoder)
        rows.append({"model": model_title(arch, encoder), "smp": name, **gpu_rates(model, arch, encoder, args)})
        del model
        if args.device == "cuda":
            torch.cuda.empty_cache()  # the last model's optimizer state and activations
        print(rows[-1], flush=True)
    gpu_table(rows, args)
    (w, h), (iw, ih) = args.train_size, args.infer_size
    recorder.finish(
        results={"models": rows},
        figure="; ".join(
            f"{r['smp']}: train {r['train_img_s']:.4g} img/s"
            + ("" if r["train_peak_gib"] is None else f" ({r['train_peak_gib']:.1f} GiB)")
            + f", infer {r['infer_img_s']:.4g} img/s"
            for r in rows
        ),
        ratio="; ".join(
            f"{r['smp']} train {r['train_img_s'] / rows[0]['train_img_s']:.2f}x, infer "
            f"{r['infer_img_s'] / rows[0]['infer_img_s']:.2f}x"
            for r in rows[1:]
        )
        + f" vs {rows[0]['smp']}",
        notes=f"{args.device}, eager; training: {w}x{h} batch {args.batch}, the strong recipe's optimizer (fused Adam, "
        "its groups) and step context (bf16 autocast + channels-last on CUDA, float32 on CPU), cross-entropy; "
        f"inference: {iw}x{ih} batch {args.infer_batch} through predict_logits + argmax (bf16 autocast on CUDA); "
        f"warm-up {args.warmup} + {args.iters} timed calls each; peak memory of the timed training steps",
    )


if __name__ == "__main__":
    main()
