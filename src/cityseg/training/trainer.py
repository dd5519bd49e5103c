"""The training loop of one run: model, loss and optimizer set up (files: `runfolder`, data: `datasets`, optimizer
and random state: `optim`), then train, validate and save each epoch."""

import contextlib
import errno
import functools
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cityseg.data.device_augment import BatchAugment
from cityseg.data.frames import ListedSplit, listed_split
from cityseg.errors import UserError
from cityseg.labels import NUM_CLASSES
from cityseg.training import dist, runfolder, runinfo, runtime
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.compiling import CompiledOrEager
from cityseg.training.config import TrainConfig, read_recipe
from cityseg.training.datasets import build_datasets, build_loaders
from cityseg.training.engine import json_float, train_one_epoch, validate
from cityseg.training.losses import build_loss
from cityseg.training.model import check_encoder_weights, model_of
from cityseg.training.model_names import model_title_of
from cityseg.training.optim import build_optimizer, build_scheduler, rng_state, seed_everything, set_rng_state
from cityseg.training.tensorboard_log import TensorBoardLog


def train_run(
    root: Path,
    run_dir: Path,
    config: TrainConfig,
    train_ids: Sequence[str],
    val_ids: Sequence[str] | None = None,
    resume: bool = False,
    on_epoch: runfolder.EpochCallback | None = None,
    run_name: str | None = None,
    progress: bool = True,
    split: ListedSplit | None = None,
) -> runfolder.RunResult:
    """Train one model on `train_ids`, validating on `val_ids` each epoch; the run folder is locked."""
    root, run_dir = Path(root), Path(run_dir)
    run_name = run_name or run_dir.name
    runtime.apply_determinism(config)  # before init_distributed's first CUDA call
    info = dist.init_distributed(config.device)
    split = listed_split(split if split is not None else root, "train", config.labels)
    config = runtime.resolve_and_report(config, split, len(train_ids), info.world_size, info.device, always=False)
    if not (resume and (run_dir / runfolder.LAST_FILE).is_file()):
        check_encoder_weights(config)  # a missing download or file fails before anything is written
    if dist.is_main():
        runfolder.make_run_folder(run_dir)
    dist.barrier()
    with dist.held_by_main(lambda: runfolder.lock_run_folder(run_dir)):
        state = runfolder.check_run_dir(run_dir, config, resume)  # every rank checks before rank 0 writes anything
        dist.barrier()
        if dist.is_main() and resume:
            runfolder.repair_after_kill(run_dir, state)
        dist.barrier()
        if state is not None and state["epoch"] >= config.epochs and runfolder.is_finished(run_dir, config.epochs):
            return runfolder.RunResult(run_dir, runfolder.load_log(run_dir), state.get("best_epoch"))
        train_set, val_set = build_datasets(config, split, train_ids, val_ids)
        if dist.is_main():
            record = {
                "config": config.to_dict(),
                "recipe_file": read_recipe(config.recipe).record(),
                "runtime": runtime.runtime_record(config, info.device, info.world_size),
                "run_name": run_name,
                **runinfo.collect(info.device, root, world_size=info.world_size),
                "device": str(info.device),
                "n_train": len(train_set),
                "n_val": len(val_set or []),
            }
            runfolder.write_config_json(run_dir, record, resumed=state is not None)
        resumed_from, training = (state["epoch"] if state is not None else 0), None  # _Training empties `state`
        try:
            training = _Training(run_dir, run_name, config, info, (train_set, val_set), state)
            for epoch in range(training.saved_epoch + 1, config.epochs + 1):
                training.run_epoch(epoch, progress, on_epoch)
            return runfolder.RunResult(run_dir, runfolder.load_log(run_dir), training.best_epoch)
        except KeyboardInterrupt:
            if dist.is_main():
                saved = training.saved_epoch if training is not None else resumed_from
                said = f"{run_dir / runfolder.LAST_FILE} holds epoch {saved} of {run_name}; continue with --resume."
                if not saved:
                    said = f"{run_name} stopped before its first epoch ended, so no checkpoint was saved in {run_dir}; "
                    said += "--resume starts it again from epoch 1."
                tqdm.write(f"interrupted: {said}", file=sys.stderr)
            raise
        except torch.cuda.OutOfMemoryError:
            raise UserError(
                f"the GPU ran out of memory training {run_name} (batch size {config.batch_size}, crop "
                f"{_size_text(config.crop)}, size {_size_text(config.size)}). Lower --batch-size, use a smaller "
                "--crop, or train at a lower resolution with --size (e.g. 1024x512); --amp (mixed precision) also "
                f"saves memory and may be added on --resume, which continues from the last finished epoch in {run_dir}."
            ) from None
        finally:
            if training is not None:
                training.board.close()


def _size_text(size: tuple[int, int] | None) -> str:
    return "full resolution" if size is None else f"{size[0]}x{size[1]}"


class _Training:
    """Everything one run holds while it trains (loaders, model, optimizer, schedule, loss, TensorBoard)."""

    def __init__(self, run_dir: Path, run_name: str, config: TrainConfig, info: dist.DistInfo, datasets, state) -> None:
        self.run_dir, self.run_name, self.config, device = run_dir, run_name, config, info.device
        seed_everything(config.seed + info.rank)
        self.train_loader, self.val_loader, self.sampler = build_loaders(config, *datasets, info)
        self.context = runtime.step_context(config, device, info.rank)
        # A resumed run loads its weights below, so it needs no download.
        core = model_of(config, None if state is not None else config.encoder_weights)
        if config.sync_bn and info.world_size > 1 and device.type == "cuda":
            core = nn.SyncBatchNorm.convert_sync_batchnorm(core)
        if state is not None:
            core.load_state_dict(state["model"])
        memory_format = torch.channels_last if self.context.channels_last else torch.preserve_format
        self.core = core.to(device, memory_format=memory_format)
        self.model: nn.Module = core  # what runs: the bare network (what checkpoints store), maybe wrapped
        if dist.is_distributed():  # also a one-process torchrun job: the multi-GPU path on one GPU
            cuda_ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(core, device_ids=cuda_ids)
        if config.compile:
            on_fallback = functools.partial(runtime.note_compile_fallback, run_dir) if dist.is_main() else None
            self.model = CompiledOrEager(self.model, on_fallback)
        self.optimizer = build_optimizer(core, config)
        self.scheduler = build_scheduler(self.optimizer, config, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(device.type, enabled=runtime.needs_grad_scaler(self.context))
        self.criterion = build_loss(config.loss, config.ohem_thresh, config.ohem_min_kept)
        self.best_metric, self.best_epoch = float("nan"), None
        self.saved_epoch = state["epoch"] if state is not None else 0  # the epoch last.pt holds
        title = f"{run_name}: {model_title_of(config)}"
        board_dir = run_dir if dist.is_main() else None
        self.board = TensorBoardLog(
            board_dir, len(self.train_loader), config.epochs, self.saved_epoch, datasets[1], title
        )
        if state is not None:
            self.restore(state, info.rank)
            state.clear()  # the loaded tensors (hundreds of MB) now live in the model and optimizer

    def run_epoch(self, epoch: int, progress: bool, on_epoch: runfolder.EpochCallback | None) -> None:
        """Train, validate, then save last.pt, best.pt (if improved) and the log row, in that order."""
        self.sampler.set_epoch(epoch)  # the shuffle and every sample's draws follow (seed, epoch)
        if isinstance(self.context.augment, BatchAugment):
            self.context.augment.start_epoch(epoch)  # --gpu-aug draws follow (seed, epoch, step, rank)
        started = time.perf_counter()
        parts = (self.model, self.train_loader, self.criterion, self.optimizer, self.scheduler, self.scaler)
        stats = train_one_epoch(*parts, self.context, epoch, progress, self.board.step_writer(epoch))
        val = None
        if self.val_loader is not None:
            dist.broadcast_buffers(self.core)  # validate exactly the model rank 0 saves
            # The bare network: compiling would build a second graph (eval mode, full-resolution shapes) per run.
            val = validate(self.core, self.val_loader, self.context, size=self.config.size, progress=progress)
        row = {
            "epoch": epoch,
            "lr": stats.lr,
            "train_loss": json_float(stats.loss),
            "val_loss": json_float(val.loss) if val is not None else None,
            "val_miou": json_float(val.miou) if val is not None else None,
            "class_iou": [json_float(v) for v in val.class_iou] if val is not None else None,
            "images_per_s": json_float(stats.images_per_s),
            "data_wait_share": json_float(round(stats.data_wait_share, 4)),
            "peak_memory_gb": None if stats.peak_memory_bytes is None else round(stats.peak_memory_bytes / 2**30, 3),
            "seconds": round(time.perf_counter() - started, 3),
        }
        select = self.config.select
        metric = runfolder.selection_metric(row, select) if val is not None else None
        improved = val is None or self.best_epoch is None or runfolder.is_better(metric, self.best_metric, select)
        if improved:
            self.best_metric, self.best_epoch = (float("nan") if metric is None else float(metric)), epoch
        if dist.is_main():
            self.board.log_epoch(epoch, row, self.core, self.context, self.config.size)  # flushed before last.pt
            with _disk_full_is_a_user_error(self.run_dir, epoch, self.saved_epoch):
                save_checkpoint(self.run_dir / runfolder.LAST_FILE, self.checkpoint(epoch, row))
                self.saved_epoch = epoch
                if improved:
                    runfolder.copy_atomic(self.run_dir / runfolder.LAST_FILE, self.run_dir / runfolder.BEST_FILE)
                runfolder.append_log_row(self.run_dir, row)
            if progress:
                marked = improved and val is not None and select != "last"
                tqdm.write(_summary_line(self.run_name, self.config.epochs, row, marked))
            if on_epoch is not None:
                on_epoch(self.run_name, row)
        dist.barrier()

    def checkpoint(self, epoch: int, row: dict) -> dict[str, Any]:
        """The state a run resumes from; tensors and plain types only."""
        return {
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "num_classes": NUM_CLASSES,
            "log_row": row,
        }

    def restore(self, state: dict, rank: int) -> None:
        """Continue where last.pt left off: same optimizer moments, schedule step and random streams."""
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # another number or size of parameter groups
            raise UserError(
                f"{self.run_dir / runfolder.LAST_FILE} holds optimizer state for other parameter groups: the run was "
                "started by an older cityseg (before norm weights and biases got their own groups without weight "
                "decay). Finish it with that version, or start it again in a new --out folder."
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_metric, self.best_epoch = float(state["best_metric"]), state.get("best_epoch")
        if rank == 0:
            set_rng_state(state["rng"])
        else:
            seed_everything(self.config.seed + rank + 1000 * state["epoch"])  # only rank 0's streams are saved


@contextlib.contextmanager
def _disk_full_is_a_user_error(run_dir: Path, epoch: int, saved_epoch: int) -> Iterator[None]:
    """A full disk at the end of an epoch: say which file, and that --resume continues from what is intact."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = Path(exc.filename).name if exc.filename else "the run's files"
        kept = (
            f"the files of epoch {saved_epoch} are intact" if saved_epoch else "nothing was saved yet, so it restarts"
        )
        raise UserError(
            f"the disk holding {run_dir} is full ({exc.strerror}): {where} of epoch {epoch} could not be written "
            f"to {exc.filename or run_dir}. Free some space (a checkpoint needs a few hundred MB), then rerun with "
            f"--resume: {kept}."
        ) from None


def _summary_line(run_name: str, epochs: int, row: dict, improved: bool) -> str:
    def show(value: float | None, fmt: str, scale: float = 1) -> str:
        return "-" if value is None else format(scale * value, fmt)

    return (
        f"{run_name} epoch {row['epoch']}/{epochs}  lr {row['lr']:.2e}  train_loss {show(row['train_loss'], '.4f')}  "
        f"val_loss {show(row['val_loss'], '.4f')}  mIoU {show(row['val_miou'], '.2%')}  "
        f"{show(row['images_per_s'], '.1f')} img/s  data wait {show(row.get('data_wait_share'), '.0f', 100)}%  "
        f"{row['seconds']:.0f}s" + ("  *best" if improved else "")
    )
