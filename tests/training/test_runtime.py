"""Machine defaults (cityseg.training.runtime): what auto resolves to on a CUDA machine and on a CPU one, the cache's
disk-space check and where the cache goes. CUDA is mocked: only the resolver runs, never a CUDA kernel."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest
import torch

from cityseg.data.cache import MARKER, CachedDataset, ensure_cache
from cityseg.data.dataset import CityscapesDataset
from cityseg.data.frames import list_frames
from cityseg.errors import UserError
from cityseg.training import runtime
from cityseg.training.config import TrainConfig, config_differences, resolve_config
from cityseg.training.runtime import CACHE_MARGIN_BYTES, COMPILE_MIN_MEGAPIXELS, resolve_runtime

Usage = namedtuple("Usage", "total used free")
FOLD_IMAGES = 2380  # a Cityscapes fold's training part: 4/5 of 2975


@pytest.fixture
def cuda_machine(monkeypatch):
    """torch believes a bf16-capable GPU is present; nothing calls into CUDA for real."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mocked H100")


@pytest.fixture
def roomy_disk(monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**13, 0, 10**13))


def strong(**overrides):
    return resolve_config("strong", encoder_weights=None, workers=3, **overrides)


def test_auto_picks_the_fast_path_on_a_cuda_machine(cuda_machine, roomy_disk, mutable_root):
    resolution = resolve_runtime(strong(), mutable_root, FOLD_IMAGES)
    config = resolution.config
    assert (config.device, config.gpu_aug, config.compile) == ("cuda", True, True)
    assert config.cache == str(mutable_root.resolve().parent / "cityseg-cache")  # beside ROOT, built on first use
    assert not (mutable_root.parent / "cityseg-cache").exists()  # deciding builds nothing
    lines = resolution.lines()
    assert len(lines) == 1 and lines[0].startswith("runtime: device cuda (Mocked H100)")
    for text in (
        "3 loader workers",
        "bf16 autocast",
        "compile on (auto",
        "gpu-aug on (auto: photometric",
        f"cache {config.cache} (auto",
    ):
        assert text in lines[0], text
    assert runtime.runtime_record(config, torch.device("cuda"))["amp_dtype"] == "bfloat16"


def test_auto_keeps_the_cpu_path_on_a_cpu_machine(monkeypatch, roomy_disk, mutable_root):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = resolve_runtime(strong(), mutable_root, FOLD_IMAGES).config
    assert (config.device, config.gpu_aug, config.compile, config.cache) == ("cpu", False, False, None)


def test_what_the_user_set_is_kept_and_a_resolved_config_resolves_to_itself(cuda_machine, roomy_disk, mutable_root):
    forced = strong(device="cuda", gpu_aug=False, compile=False, cache=None)
    resolution = resolve_runtime(forced, mutable_root, FOLD_IMAGES)
    assert resolution.config == forced and not resolution.reasons
    first = resolve_runtime(strong(), mutable_root, FOLD_IMAGES)
    again = resolve_runtime(first.config, mutable_root, FOLD_IMAGES)
    assert again.config == first.config and not again.reasons  # train_run under cv prints nothing more


def test_a_saved_resolved_config_resumes_with_the_fields_back_at_auto(cuda_machine, roomy_disk, mutable_root):
    resolved = resolve_runtime(strong(), mutable_root, FOLD_IMAGES).config
    saved = TrainConfig.from_dict(json.loads(json.dumps(resolved.to_dict())))  # as config.json and last.pt hold it
    assert saved == resolved and (saved.compile, saved.gpu_aug) == (True, True)
    assert config_differences(saved, strong()) == []  # `--resume` with auto again is the same experiment
    assert config_differences(saved, strong(lr=1e-3)) == ["lr: 0.0004 -> 0.001"]


def test_gpu_aug_only_for_colour_augmentations(cuda_machine, roomy_disk, mutable_root):
    seed = resolve_config("seed", encoder_weights=None, workers=0)  # flip only
    assert resolve_runtime(seed, mutable_root, FOLD_IMAGES).config.gpu_aug is False
    blur = resolve_config("seed", encoder_weights=None, workers=0, aug=("flip", "gaussian-blur"))
    assert resolve_runtime(blur, mutable_root, FOLD_IMAGES).config.gpu_aug is True


def test_compile_only_for_runs_long_enough_to_repay_it(cuda_machine, roomy_disk, mutable_root):
    # 1024x512 crops, batch 16: the threshold falls between these two step counts
    steps_at_threshold = COMPILE_MIN_MEGAPIXELS * 1e6 / (16 * 1024 * 512)
    short = strong(crop=(1024, 512), batch_size=16, epochs=1, warmup_epochs=0.0)
    images_short = int(0.9 * steps_at_threshold) * 16
    images_long = int(1.1 * steps_at_threshold) * 16
    assert resolve_runtime(short, mutable_root, images_short).config.compile is False
    assert resolve_runtime(short, mutable_root, images_long).config.compile is True
    # the same work over two processes is half per process: each pays the compile time itself
    assert resolve_runtime(short, mutable_root, images_long, world_size=2).config.compile is False


def test_training_megapixels_count_steps_per_process_of_the_input_size():
    config = resolve_config("strong", workers=0, crop=(768, 768), batch_size=8, epochs=200)
    # 2380 // 8 = 297 steps (the last incomplete batch is dropped) x 8 crops x 768 x 768 x 200 epochs
    assert runtime.training_megapixels(config, 2380, 1, None) == pytest.approx(200 * 297 * 8 * 768 * 768 / 1e6)
    full = resolve_config("seed", workers=0)
    assert runtime.training_megapixels(full, 100, 2, (2048, 1024)) == pytest.approx(10 * 12 * 4 * 2048 * 1024 / 1e6)


# ----------------------------------------------------------------------------------------------------------
# The cache: room on the disk, and where it goes
# ----------------------------------------------------------------------------------------------------------


def entry_bytes(root) -> int:
    frames = list_frames(root, "train")
    return len(frames) * 64 * 128 * 4  # strong scales crops: the entry holds the full 128x64 frames


def test_cache_needs_room_for_the_entry_and_a_margin(cuda_machine, monkeypatch, mutable_root):
    needed = entry_bytes(mutable_root) + CACHE_MARGIN_BYTES
    asked = []

    def disk(free):
        def usage(path):
            asked.append(path)
            return Usage(10**13, 0, free)

        return usage

    small_crops = strong(crop=(64, 32))  # fits the 128x64 synthetic frames, so datasets can be built
    monkeypatch.setattr(shutil, "disk_usage", disk(needed - 1))
    short = resolve_runtime(small_crops, mutable_root, FOLD_IMAGES)
    assert short.config.cache is None and asked  # the disk was asked before deciding
    assert len(short.lines()) == 2 and "cache off (PNGs) (auto: no room)" in short.lines()[0]  # one line why
    warning = short.lines()[1]
    assert warning.startswith("decoded-image cache: off, training reads the PNGs")
    assert f"needs {needed / 1e9:.1f} GB" in warning and str(mutable_root.resolve().parent / "cityseg-cache") in warning
    train_set, _ = _datasets(short.config, mutable_root)
    assert isinstance(train_set, CityscapesDataset)

    monkeypatch.setattr(shutil, "disk_usage", disk(needed))
    enough = resolve_runtime(small_crops, mutable_root, FOLD_IMAGES)
    assert enough.config.cache is not None and len(enough.lines()) == 1
    train_set, _ = _datasets(enough.config, mutable_root)  # built here, on first use
    assert isinstance(train_set, CachedDataset) and (mutable_root.parent / "cityseg-cache" / MARKER).is_file()


def test_a_fresh_cache_is_reused_without_asking_for_room(cuda_machine, monkeypatch, mutable_root):
    folder = mutable_root.resolve().parent / "cityseg-cache"
    ensure_cache(mutable_root, "train", None, folder, progress=False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**13, 10**13, 0))  # a full disk
    resolution = resolve_runtime(strong(), mutable_root, FOLD_IMAGES)
    assert resolution.config.cache == str(folder) and "(auto: reused)" in resolution.lines()[0]


def test_cache_falls_back_to_the_users_cache_folder(cuda_machine, roomy_disk, monkeypatch, mutable_root, tmp_path):
    foreign = mutable_root.resolve().parent / "cityseg-cache"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's folder")  # cityseg never writes into it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    chosen = resolve_runtime(strong(), mutable_root, FOLD_IMAGES).config.cache
    assert chosen is not None and chosen.startswith(str(tmp_path / "xdg" / "cityseg" / "cityscapes-"))
    other_root = tmp_path / "other" / "cityscapes"
    assert runtime.default_cache_candidates(other_root)[1] != runtime.default_cache_candidates(mutable_root)[1]

    (tmp_path / "xdg" / "cityseg").mkdir(parents=True)
    blocked = runtime.default_cache_candidates(mutable_root)[1]
    blocked.mkdir()
    (blocked / "notes.txt").write_text("also foreign")
    none = resolve_runtime(strong(), mutable_root, FOLD_IMAGES)
    assert none.config.cache is None and len(none.lines()) == 2 and "--cache DIR" in none.lines()[1]


def _datasets(config, root):
    from cityseg.training.datasets import build_datasets

    ids = [frame.id for frame in list_frames(root, "train")]
    return build_datasets(config, root, ids[:4], ids[4:6])


# ----------------------------------------------------------------------------------------------------------
# --deterministic
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def torch_switches(monkeypatch):
    """Put torch's determinism switches and CUBLAS_WORKSPACE_CONFIG back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    saved_benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved_benchmark


def test_deterministic_sets_the_torch_switches_and_the_cublas_workspace(torch_switches):
    import os

    runtime.apply_determinism(strong(deterministic=True))
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    runtime.apply_determinism(strong())  # a later run in the same process without the flag
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark


def test_deterministic_is_refused_once_cuda_runs_without_the_workspace_setting(torch_switches, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(UserError, match="CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts"):
        runtime.apply_determinism(strong(deterministic=True))


def test_deterministic_never_compiles(cuda_machine, roomy_disk, mutable_root):
    long_run = strong(deterministic=True, epochs=1000)
    resolution = resolve_runtime(long_run, mutable_root, FOLD_IMAGES)
    assert resolution.config.compile is False and "compile off (auto: --deterministic)" in resolution.lines()[0]
    assert "deterministic on" in resolution.lines()[0]
    assert resolve_runtime(strong(epochs=1000), mutable_root, FOLD_IMAGES).config.compile is True
    with pytest.raises(UserError, match="--compile and --deterministic"):
        resolve_runtime(strong(deterministic=True, compile=True), mutable_root, FOLD_IMAGES)


@pytest.mark.trains
def test_a_deterministic_run_trains_and_config_json_records_it(tiny_config, synth_root, tmp_path, torch_switches):
    from cityseg.training.trainer import train_run

    torch.set_num_threads(1)
    ids = [frame.id for frame in list_frames(synth_root, "train")]
    config = tiny_config(epochs=1, batch_size=2, deterministic=True)
    train_run(synth_root, tmp_path / "run", config, ids[:2], ids[2:3], progress=False)
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["config"]["deterministic"] is True and info["runtime"]["deterministic"] is True
    assert torch.are_deterministic_algorithms_enabled()  # what the run trained under
