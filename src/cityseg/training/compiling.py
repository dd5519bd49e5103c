"""torch.compile with a way back: a run whose model fails to compile trains eagerly, after one warning line.

torch.compile compiles lazily, so a missing Triton, an unsupported GPU or a compiler bug fails inside the first
training step. `CompiledOrEager` (the forward) and `first_step` (the backward too) switch to eager for good and redo
the step from the same state (BatchNorm buffers put back), so the run gives an eager run's numbers. Out of memory
is not a compile failure and is re-raised.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from cityseg.training.dist import is_main

T = TypeVar("T")
WARNING_PREFIX = "warning: torch.compile failed"


class CompiledOrEager(nn.Module):
    """`torch.compile(eager)` until the first failure, then `eager` (one warning line, `on_fallback` called)."""

    def __init__(self, eager: nn.Module, on_fallback: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.eager = eager
        # Kept out of the module tree: it wraps `eager`, whose parameters must be listed once.
        self.__dict__["compiled"] = torch.compile(eager)
        self.on_fallback = on_fallback
        self.failure: str | None = None  # why compiling failed; None while the compiled module runs
        self.proven = False  # a whole step (forward and backward) ran compiled

    def forward(self, *args, **kwargs):
        if self.failure is not None:
            return self.eager(*args, **kwargs)
        saved = None if self.proven else self.buffers_snapshot()
        try:
            return self.compiled(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler error: Triton, inductor, dynamo, the GPU's driver
            self.fall_back(exc, saved)
        return self.eager(*args, **kwargs)

    def train(self, mode: bool = True) -> CompiledOrEager:
        super().train(mode)
        self.compiled.train(mode)
        return self

    def buffers_snapshot(self) -> dict[str, Tensor]:
        """Copies of the running statistics (BatchNorm) a forward updates in training mode."""
        return {name: buffer.clone() for name, buffer in self.eager.named_buffers()}

    def fall_back(self, exc: BaseException, saved: dict[str, Tensor] | None) -> None:
        """Switch to eager for good: put back the buffers the failed call changed, say so once, tell the run."""
        with torch.no_grad():
            for name, buffer in self.eager.named_buffers() if saved is not None else ():
                buffer.copy_(saved[name])
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        self.failure = f"{type(exc).__name__}: {first_line}"
        if is_main():
            print(
                f"{WARNING_PREFIX} ({self.failure}); training continues eagerly (slower, same results); "
                "--no-compile skips the attempt",
                file=sys.stderr,
                flush=True,
            )
        if self.on_fallback is not None:
            self.on_fallback(self.failure)


def first_step(model: nn.Module, step: Callable[[], T]) -> T:
    """Run one training step; a compile failure anywhere in the first one switches to eager and redoes it."""
    if not isinstance(model, CompiledOrEager) or model.proven or model.failure is not None:
        return step()
    saved = model.buffers_snapshot()
    try:
        result = step()
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - as in CompiledOrEager.forward
        if model.failure is not None:
            raise  # the forward already fell back and ran eagerly: this error is not the compiler's
        model.fall_back(exc, saved)
        return step()
    model.proven = model.failure is None
    return result
