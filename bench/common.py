"""What every benchmark script shares: the machine it ran on, the command that ran it, and the record.

A benchmark prints one JSON line (for tools) and appends one row to BENCHMARKS.md (for people). The row
carries the date, the machine, the exact command and the figures with their ratios, so no number in
BENCHMARKS.md stands without the command that produced it. Ratios compare runs made in the same process,
which cancels most of the noise of a shared machine; the load average before and after is recorded so a
busy run can be recognised.

Use from a script in bench/ (run as `python bench/NAME.py`, which puts bench/ on sys.path):

    from common import Recorder, add_common_args
    parser = argparse.ArgumentParser(...); add_common_args(parser); args = parser.parse_args()
    rec = Recorder("loader", args)          # notes the load average now
    ...measure...
    rec.finish(results={...}, figure="...", ratio="...", notes="...")
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every row below was appended by a script in `bench/` (`make bench` runs them all; each also runs on its
own). A row holds the date, the machine (cores, CPU model, GPU), the exact command, the figures and the
ratio against a baseline measured in the same process. The load average before and after the run is in
the notes: the development machine is shared, and a load near or above the core count means the absolute
figures are low (ratios suffer less). Numbers are never typed in by hand: rerun the command to check one.

| Date | Benchmark | Machine | Command | Figures | Ratio | Notes |
| --- | --- | --- | --- | --- | --- | --- |
"""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark takes: where the row goes, or that no row is written (smoke runs)."""
    group = parser.add_argument_group("Recording")
    group.add_argument("--no-record", action="store_true", help="print the JSON line only; leave BENCHMARKS.md alone")
    group.add_argument("--md", type=Path, default=BENCHMARKS_MD, help="Markdown file the row is appended to")
    group.add_argument("--note", default="", help="free text added to the row's notes (e.g. 'machine busy')")


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), which `platform` rarely gives."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """The first CUDA device's name, or None without one (torch is imported only here, lazily)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine() -> dict[str, Any]:
    """Facts that decide what a figure means: cores, CPU, GPU, library versions."""
    info: dict[str, Any] = {
        "cores": usable_cores(),
        "cpu": cpu_model(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def describe_machine(info: dict[str, Any]) -> str:
    """One short phrase for the Markdown table, e.g. '2 cores AMD EPYC, no GPU'."""
    return f"{info['cores']} cores {info['cpu']}, " + (info["gpu"] or "no GPU")


def command_line() -> str:
    """The command as typed from the repository root, so a reader can paste it."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    return "python " + shlex.join([script_text, *sys.argv[1:]])


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def timed(
    fn: Callable[[], Any],
    warmup: int,
    iters: int,
    sync: Callable[[], None] | None = None,
    after_warmup: Callable[[], None] | None = None,
) -> float:
    """Seconds per call of `fn` after `warmup` untimed calls; `sync` waits for queued GPU work; `after_warmup`
    runs between the two (e.g. resetting CUDA's peak-memory counter past cuDNN's algorithm search)."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    if after_warmup:
        after_warmup()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if sync:
        sync()
    return (time.perf_counter() - start) / iters


def seconds_per_item(function: Callable[[Any], Any], items: list, repeats: int = 3) -> float:
    """Minimum over `repeats` passes of the mean seconds of `function` over `items` (one thread): the least
    disturbed pass on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best


def run_until_logged(command: list[str], log: Path, rows: int, output: Path, timeout: float) -> int | None:
    """Run `command` (stdout and stderr into `output`) until `log` holds `rows` lines, then SIGKILL its process
    group (its loader workers too). Returns its exit status when it ended first, None when it was stopped; past
    `timeout` seconds, or when this process gets SIGTERM (a step's time limit), the group is killed too."""
    with open(output, "w", encoding="utf-8") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)  # its own session: a time limit must reach it here
    try:
        while process.poll() is None:
            if log.is_file() and log.read_text().count("\n") >= rows:
                return None
            if time.monotonic() > deadline:
                tail = output.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{shlex.join(command)} ran past {timeout:.0f} s, killed; its output ended:\n{tail}")
            time.sleep(0.05)
        return process.returncode
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


class Recorder:
    """Collects one benchmark's context at its start and writes the JSON line and the row at its end."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.date = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %z")
        self.command = command_line()
        self.machine = machine()
        self.load_start = load_average()
        self.started = time.perf_counter()

    def finish(self, results: dict[str, Any], figure: str, ratio: str, notes: str = "") -> dict[str, Any]:
        """Print the JSON line and append the Markdown row (unless --no-record); returns the record."""
        load_end = load_average()
        busy = self._busy_note(load_end)
        all_notes = "; ".join(n for n in (notes, busy, getattr(self.args, "note", "")) if n)
        record = {
            "bench": self.name,
            "date": self.date,
            "machine": self.machine,
            "command": self.command,
            "results": results,
            "figure": figure,
            "ratio": ratio,
            "notes": all_notes,
            "load_avg_1m": [self.load_start, load_end],
            "wall_s": round(time.perf_counter() - self.started, 1),
        }
        print(json.dumps(record, sort_keys=True), flush=True)
        if not getattr(self.args, "no_record", False):
            append_row(Path(getattr(self.args, "md", BENCHMARKS_MD)), record)
        return record

    def _busy_note(self, load_end: float | None) -> str:
        if self.load_start is None or load_end is None:
            return ""
        cores = self.machine["cores"]
        # This process itself adds up to its worker count to the load; "busy" means others were running too.
        shared = self.load_start > 0.5 * cores
        return f"load avg {self.load_start} -> {load_end} on {cores} cores" + (
            " (machine shared/busy)" if shared else ""
        )


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def append_row(path: Path, record: dict[str, Any]) -> None:
    """Append one table row, writing the header first when the file is new."""
    new = not path.exists() or path.stat().st_size == 0
    row = (
        "| "
        + " | ".join(
            _cell(c)
            for c in (
                record["date"],
                record["bench"],
                describe_machine(record["machine"]),
                f"`{record['command']}`",
                record["figure"],
                record["ratio"],
                record["notes"],
            )
        )
        + " |\n"
    )
    with open(path, "a", encoding="utf-8") as handle:
        if new:
            handle.write(HEADER)
        handle.write(row)


def add_data_args(parser: argparse.ArgumentParser, frames: int | None, per_city: int = 4) -> None:
    """Where the synthetic 2048x1024 data lives (generated on first use, then reused) and how much of it.

    `frames` None leaves the default to the script (e.g. one per device), which fills in `args.frames`.
    """
    group = parser.add_argument_group("Data")
    group.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "cityseg-bench",
        help="folder for the generated synthetic datasets (reused between runs)",
    )
    group.add_argument(
        "--frames",
        type=int,
        default=frames,
        help="train frames to generate" + ("" if frames is not None else "; default depends on the device"),
    )
    group.add_argument("--per-city", type=int, default=per_city, help="train frames per city")


def synthetic_root(
    base: Path,
    frames: int,
    size: tuple[int, int] = (2048, 1024),
    prepared: bool = False,
    per_city: int = 4,
    copies: int = 1,
) -> Path:
    """A synthetic Cityscapes tree with about `frames` train images, built once under `base` and reused.

    Built in a `.partial` folder and renamed when whole, so an interrupted build is redone, never reused.
    `copies` > 1 adds that many hard-linked copies of every train frame under new frame ids (many frames,
    rendered once). `prepared` gives a tree with the labelTrainIds PNGs that `cityseg prepare` writes, alone in
    its own folder (`<name>_prepared/cityscapes`), so its default cache (ROOT/../cityseg-cache) is its own.
    """
    cities = max(1, -(-frames // per_city))
    raw = base / f"synth_{size[0]}x{size[1]}_{cities}x{per_city}"
    if not raw.is_dir():
        from cityseg.synthetic import write_dataset

        partial = _fresh_partial(raw)
        print(
            f"generating {cities * per_city} synthetic {size[0]}x{size[1]} train frames in {raw} (once)",
            file=sys.stderr,
        )
        write_dataset(
            partial,
            size=size,
            train_cities=cities,
            val_cities=1,
            test_cities=1,
            per_city=per_city,
            seed=0,
            workers=usable_cores(),
            progress=True,
        )
        os.rename(partial, raw)
    if copies > 1:
        raw = _tiled(raw, copies, per_city)
    if not prepared:
        return raw
    done = base / f"{raw.name}_prepared" / "cityscapes"
    if not done.is_dir():
        from cityseg.data.prepare import prepare_dataset

        partial = _fresh_partial(done)
        shutil.copytree(raw, partial, copy_function=os.link)  # prepare adds files; it changes none in place
        prepare_dataset(partial, workers=usable_cores(), progress=False)
        os.rename(partial, done)
    return done


def _tiled(raw: Path, copies: int, per_city: int) -> Path:
    """`raw` with its train frames hard-linked `copies` times, copy k under sequence numbers shifted by k x
    `per_city` (`aachen_000000_000019` -> `aachen_000016_000019`); val, test and the marker linked once."""
    tiled = raw.with_name(f"{raw.name}_x{copies}")
    if tiled.is_dir():
        return tiled
    partial = _fresh_partial(tiled)
    shutil.copytree(raw, partial, copy_function=os.link)
    for path in sorted(partial.glob("*/train/*/*")):
        city, sequence, rest = path.name.split("_", 2)
        for copy in range(1, copies):
            os.link(path, path.with_name(f"{city}_{int(sequence) + copy * per_city:06d}_{rest}"))
    os.rename(partial, tiled)
    return tiled


def _fresh_partial(final: Path) -> Path:
    """An empty `<final>.partial` folder; a leftover one is from an interrupted run of this helper."""
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    return partial


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
    """The GPU's dense bf16 peak in FLOP/s, or None (CPU, or a GPU not in the table): the MFU denominator."""
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def count_flops(model: torch.nn.Module, batch: int, size: tuple[int, int], train: bool) -> int:
    """FLOPs of one step (forward, plus backward when training), counted on meta tensors: nothing is computed."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

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
