"""The same code as one process or as N under torchrun (RANK, WORLD_SIZE, LOCAL_RANK; nccl on CUDA, gloo on CPU);
without torchrun every helper is a no-op. Only rank 0 writes files and draws bars."""

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from cityseg.errors import UserError
from cityseg.training.model import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job and which device it drives."""

    rank: int
    world_size: int
    device: torch.device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one (idempotent) and pick this rank's device."""
    rank, size, local_rank = (int(os.environ.get(name, 0)) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    size = max(size, 1)
    chosen = resolve_device(device)
    if chosen.type == "cuda":  # one GPU per process: the local rank picks it
        chosen = torch.device("cuda", local_rank if size > 1 else (chosen.index or 0))
        torch.cuda.set_device(chosen)
    # Under torchrun even one process joins the group and trains with DDP (as torchvision's references do).
    if (size > 1 or {"RANK", "WORLD_SIZE"} <= os.environ.keys()) and not dist.is_initialized():
        cuda = chosen.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", device_id=chosen if cuda else None)
    return DistInfo(rank=rank, world_size=size, device=chosen)


def is_distributed() -> bool:
    """True inside a torchrun job (with one process too: its collectives and DDP run all the same)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 writes files and prints; the others only compute."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place and return it (unchanged for one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so all ranks validate the model rank 0 saves."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    """Wait for every rank (no-op for one process): e.g. until rank 0 has written a file others read."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def held_by_main(enter: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Enter `enter()` on rank 0 only; a refusal there raises the same UserError on every rank."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if is_main():
            try:
                stack.enter_context(enter())
            except UserError as exc:
                refusal = exc
        if is_distributed():
            box = [None if refusal is None else str(refusal)]
            dist.broadcast_object_list(box, src=0)
            if box[0] is not None and refusal is None:
                refusal = UserError(box[0])
        if refusal is not None:
            raise refusal
        yield


def cleanup() -> None:
    """Leave the process group so the job exits without warnings."""
    if is_distributed():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Indices rank::world_size without DistributedSampler's padding, which would count an image twice."""

    def __init__(self, length: int, shard: int | None = None, shards: int | None = None) -> None:
        self.indices = range(rank() if shard is None else shard, length, world_size() if shards is None else shards)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
