"""The optimizer over the network's parameter groups, the per-iteration lr schedule, and the random state a
checkpoint carries (plain lists and tensors, so checkpoints load with weights_only=True)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from cityseg.training.config import TrainConfig


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Decoder (group 0, at `lr`: the lr the log reports) and encoder (lr * encoder_lr_mult, weight_decay *
    encoder_weight_decay_mult: SwiftNet's split), each with its 1-D parameters (norm weights, biases) in a group
    without decay, as timm does (mmsegmentation's CNN schedules decay everything; its AdamW configs exempt norms)."""
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    decoder = [p for p in model.parameters() if id(p) not in encoder_ids]
    encoder = [p for p in model.parameters() if id(p) in encoder_ids]
    encoder_lr = config.lr * config.encoder_lr_mult
    encoder_decay = config.weight_decay * config.encoder_weight_decay_mult
    parts = (("decoder", decoder, config.lr, config.weight_decay), ("encoder", encoder, encoder_lr, encoder_decay))
    groups = []
    for name, params, lr, decay in parts:
        groups.append({"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": decay, "name": name})
        flat = [p for p in params if p.ndim <= 1]
        groups.append({"params": flat, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"})
    return [group for group in groups if group["params"]]


# Devices with fused optimizer kernels: faster than torch's default (BENCHMARKS.md, optimizer rows of 2026-11-28 15:56).
_FUSED_DEVICES = {"cpu", "cuda"}


def fused_where_supported(groups: list[dict[str, Any]]) -> bool | None:
    """True when every parameter sits on a device with fused optimizer kernels; None keeps torch's default elsewhere."""
    devices = {param.device.type for group in groups for param in group["params"]}
    return True if devices <= _FUSED_DEVICES else None


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over `parameter_groups`, fused where torch has the kernels."""
    groups = parameter_groups(model, config)
    fused = fused_where_supported(groups)
    if config.optimizer in ("adam", "adamw"):
        adam = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        return adam(groups, lr=config.lr, betas=config.betas, fused=fused)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, fused=fused)


def lr_factor(
    step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float = 0.0, power: float = 0.9
) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then constant/cosine/poly."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + np.cos(np.pi * progress)) if schedule == "cosine" else (1.0 - progress) ** power
    return float(min_ratio + (1.0 - min_ratio) * decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """A per-iteration LambdaLR over `config.schedule_length` epochs, which a shorter run stops partway through."""
    total = config.schedule_length * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    min_ratio = config.min_lr / config.lr

    def factor(step: int) -> float:
        return lr_factor(step, total, warmup, config.schedule, min_ratio, config.poly_power)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator the run draws from, as plain types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
