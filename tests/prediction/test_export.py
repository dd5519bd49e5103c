"""`cityseg export`: safetensors + ONNX + model card from a real tiny run, checked against torch with onnxruntime.

One tiny run (2 folds x 1 epoch at 128x64 and the full fit, val predictions, evaluation; the session's
`one_epoch_cv`) and one real `cityseg export` process supply every file; the ONNX graph is traced
once (about a minute) and reused.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cityscapesscripts.helpers.labels import trainId2label
from helpers_training import cli_in_process, format_1_checkpoint
from PIL import Image
from safetensors import safe_open

from cityseg.cli import main
from cityseg.data.frames import read_image
from cityseg.data.transforms import normalize
from cityseg.errors import UserError
from cityseg.prediction import export as export_module
from cityseg.prediction.deployed import (
    CARD_JSON,
    CARD_MD,
    ONNX_FILE,
    WEIGHTS_FILE,
    load_network,
    load_weights,
    weights_metadata,
)
from cityseg.prediction.export import (
    LOGIT_RTOL,
    MIN_AGREEMENT,
    MIN_SIDE,
    check_parity,
    default_check_images,
    export_model,
    parity_text,
)
from cityseg.prediction.image_predict import predict_images
from cityseg.prediction.inference import forward_padded
from cityseg.prediction.ledger import MANIFEST_NAME, file_sha256
from cityseg.prediction.predict import predict_split
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.config import resolve_config
from cityseg.training.model import ONNX_REFUSALS, build_model, load_model


@pytest.fixture(scope="module")
def exported(one_epoch_cv, tmp_path_factory) -> SimpleNamespace:
    """A tiny real run and its val evaluation (`one_epoch_cv`), and `cityseg export runs/full/best.pt --out model
    --eval val.json` (in this process: the CLI's own tests start it as a command)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("export")
    checkpoint = one_epoch_cv.runs / "full" / "best.pt"
    model = base / "model"
    result = cli_in_process("export", checkpoint, "--out", model, "--eval", one_epoch_cv.eval_json)
    return SimpleNamespace(
        base=base,
        root=one_epoch_cv.root,
        runs=one_epoch_cv.runs,
        checkpoint=checkpoint,
        model=model,
        result=result,
        eval_json=one_epoch_cv.eval_json,
        card=json.loads((model / CARD_JSON).read_text()) if (model / CARD_JSON).is_file() else None,
    )


def test_export_writes_weights_graph_and_card_and_says_the_check_passed(exported):
    result = exported.result
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in exported.model.iterdir()) == sorted([WEIGHTS_FILE, ONNX_FILE, CARD_JSON, CARD_MD])
    assert "ONNX parity PASSED" in result.stdout and "argmax agreement" in result.stdout
    rows = exported.card["parity"]["images"]
    assert [row["size"] for row in rows] == ["384x192", "250x141", "141x250", f"100x{MIN_SIDE}"]
    assert "exporting U-Net / resnet34" in result.stdout and "exported U-Net / resnet34 to" in result.stdout
    for row in rows:  # the printed figures are the card's
        assert f"argmax agreement {100 * row['agreement']:.4f}%" in result.stdout
        assert row["agreement"] >= MIN_AGREEMENT and row["max_abs_diff"] <= row["tolerance"]
    assert not list(exported.base.glob(".model*"))  # the staging folder is gone


def test_weights_are_the_checkpoints_network_alone(exported):
    network, _ = load_model(exported.checkpoint)
    expected = network.state_dict()
    with safe_open(exported.model / WEIGHTS_FILE, framework="pt") as weights:
        assert set(weights.keys()) == set(expected)  # no optimizer, scheduler or RNG state
        for name in expected:
            assert torch.equal(weights.get_tensor(name), expected[name]), name
    assert (exported.model / WEIGHTS_FILE).stat().st_size < 0.6 * exported.checkpoint.stat().st_size


def test_onnxruntime_agrees_with_the_checkpoint_on_photos_of_any_size_and_batch(exported):
    import onnxruntime  # here, not at the top: the workers that collect this file but never run it skip the import

    network, _ = load_model(exported.checkpoint)
    session = onnxruntime.InferenceSession(str(exported.model / ONNX_FILE), providers=["CPUExecutionProvider"])
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    assert graph_input.type == "tensor(uint8)" and graph_input.shape[3] == 3 and graph_output.shape[1] == 19
    frames = sorted((exported.root / "leftImg8bit" / "val").rglob("*.png"))
    street = np.stack([read_image(frames[0]), read_image(frames[1])])  # (2, 64, 128, 3): batch of two
    for pixels in (street, street[:, 5:62, 9:109], street[:1, :, :96].transpose(0, 2, 1, 3)):
        pixels = np.ascontiguousarray(pixels)
        with torch.inference_mode():  # what `cityseg predict` computes for these images
            expected = forward_padded(network, normalize(torch.from_numpy(pixels).permute(0, 3, 1, 2))).numpy()
        actual = session.run(None, {graph_input.name: pixels})[0]
        assert actual.shape == expected.shape
        assert np.mean(actual.argmax(1) == expected.argmax(1)) >= MIN_AGREEMENT
        assert np.abs(actual - expected).max() <= LOGIT_RTOL * np.abs(expected).max()
    small = np.zeros((1, MIN_SIDE - 1, 40, 3), np.uint8)
    with pytest.raises(Exception, match=f"at_least_{MIN_SIDE}_px"):  # onnxruntime's error names the failing node
        session.run(None, {graph_input.name: small})
    assert exported.card["files"]["onnx"]["min_side"] == MIN_SIDE


def test_card_reads_its_numbers_from_the_run_files(exported):
    card, runs = exported.card, exported.runs
    summary = json.loads((runs / "summary.json").read_text())
    evaluation = json.loads(exported.eval_json.read_text())
    run_config = json.loads((runs / "full" / "config.json").read_text())
    cv = card["results"]["cross_validation"]
    assert (cv["k"], cv["miou_mean"], cv["miou_std"]) == (2, summary["miou_mean"], summary["miou_std"])
    assert cv["protocol"]  # the summary's own, or the card's description of the older meaning
    val = card["results"]["evaluation"]
    assert (val["split"], val["miou"], val["iiou"]) == (
        "val",
        evaluation["averageScoreClasses"],
        evaluation["averageScoreInstClasses"],
    )
    assert val["same_checkpoint"] is True and "official cityscapesscripts" in val["protocol"]
    assert card["git"] == run_config["git"] and card["config"] == run_config["config"]
    assert card["source"]["sha256"] == file_sha256(exported.checkpoint)
    assert card["files"]["onnx"]["sha256"] == file_sha256(exported.model / ONNX_FILE)
    assert [c["color"] for c in card["classes"]] == [list(trainId2label[t].color) for t in range(19)]
    assert card["training"]["synthetic"] is True
    markdown = (exported.model / CARD_MD).read_text()
    assert "SYNTHETIC" in markdown and f"{100 * summary['miou_mean']:.2f}" in markdown
    assert card["git"]["sha"] in markdown


def test_predict_takes_the_exported_folder_and_gives_the_checkpoints_labels(exported, tmp_path, capsys):
    def pngs(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}

    from_checkpoint = predict_split(
        exported.checkpoint, exported.root, "val", out_dir=tmp_path / "a", device="cpu", progress=False
    ).out_dir
    from_export = predict_split(
        exported.model, exported.root, "val", out_dir=tmp_path / "b", device="cpu", progress=False
    ).out_dir
    assert pngs(from_checkpoint) == pngs(from_export) and pngs(from_export)
    photos = exported.root / "leftImg8bit" / "val"
    args = ["predict", exported.model, "--images", photos, "--out", tmp_path / "d", "--device", "cpu", "--no-progress"]
    assert main([str(arg) for arg in args]) == 0
    assert "U-Net / resnet34: wrote" in capsys.readouterr().out  # the summary names the model that ran
    predict_images(exported.checkpoint, [photos], tmp_path / "c", device="cpu", progress=False)
    labels = {name: data for name, data in pngs(tmp_path / "c").items() if name.endswith("_labelIds.png")}
    assert labels and labels == {n: d for n, d in pngs(tmp_path / "d").items() if n.endswith("_labelIds.png")}


def test_a_graph_that_disagrees_with_torch_fails_the_export_and_leaves_nothing(exported, tmp_path, monkeypatch):
    import onnx

    graph = onnx.load(str(exported.model / ONNX_FILE))
    head = next(t for t in graph.graph.initializer if "segmentation_head" in t.name and len(t.dims) == 4)
    flipped = -onnx.numpy_helper.to_array(head)  # the last convolution's weights negated: a wrong graph
    head.CopyFrom(onnx.numpy_helper.from_array(flipped, head.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(graph, str(tampered))
    folder = tmp_path / "copy"
    shutil.copytree(exported.model, folder)
    shutil.copy(tampered, folder / ONNX_FILE)
    report = check_parity(folder, default_check_images())
    assert not report["passed"] and "FAILED" in parity_text(report)

    # The whole command, with the tracing replaced by writing the tampered graph: it must refuse.
    def write_tampered_graph(network, path: Path) -> int:
        shutil.copy(tampered, path)
        return 20

    monkeypatch.setattr(export_module, "export_onnx", write_tampered_graph)
    out = tmp_path / "model"
    with pytest.raises(UserError, match="does not reproduce the torch model"):
        export_model(exported.checkpoint, out, log=lambda line: None)
    assert not out.exists() and not list(tmp_path.glob(".model*"))


def test_export_refuses_folders_it_did_not_write_and_asks_before_replacing_its_own(exported, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        export_model(exported.checkpoint, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(UserError, match="--overwrite"):
        export_model(exported.checkpoint, exported.model)
    with pytest.raises(UserError, match="not an evaluation JSON"):
        export_model(exported.checkpoint, tmp_path / "new", eval_json=exported.runs / "summary.json")


def test_a_folder_that_is_not_an_export_is_refused_by_predict(exported, tmp_path):
    with pytest.raises(UserError, match="not a model exported by `cityseg export`"):
        load_network(tmp_path)
    truncated = tmp_path / WEIGHTS_FILE
    truncated.write_bytes((exported.model / WEIGHTS_FILE).read_bytes()[:1000])
    with pytest.raises(UserError, match=r"model\.safetensors cannot be read"):
        load_weights(truncated)


def _photos(folder: Path) -> Path:
    """A folder with one photo (250x141) in it."""
    folder.mkdir()
    Image.fromarray(default_check_images()[1][1]).save(folder / "a.png")
    return folder


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # tensor data, far past the header: the file still loads, with other weights
    data[middle : middle + 4096] = bytes(255 - b for b in data[middle : middle + 4096])
    path.write_bytes(bytes(data))


def _half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(("name", "damage"), [(WEIGHTS_FILE, _flip_bytes), (ONNX_FILE, _half)])
def test_a_changed_file_in_an_export_is_refused_naming_it(exported, tmp_path, name, damage):
    folder = tmp_path / "model"
    shutil.copytree(exported.model, folder)
    damage(folder / name)
    if name == WEIGHTS_FILE:
        load_weights(folder / name)  # still loads without the card's hash: the check is what catches it
    with pytest.raises(UserError, match="its sha256 differs") as info:
        load_network(folder)
    assert str(folder / name) in str(info.value) and "cityseg export" in str(info.value)
    with pytest.raises(UserError, match="its sha256 differs"):
        predict_images(folder, [_photos(tmp_path / "in")], tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()


def _reuse_graph(exported, monkeypatch) -> None:
    """Export with the module's traced graph copied in place of a new trace (same checkpoint, same graph)."""

    def copy_graph(network, path: Path) -> int:
        shutil.copy(exported.model / ONNX_FILE, path)
        return exported.card["files"]["onnx"]["opset"]

    monkeypatch.setattr(export_module, "export_onnx", copy_graph)


def test_overwrite_replaces_the_exports_files_and_keeps_the_users(exported, tmp_path, monkeypatch):
    out = tmp_path / "model"
    shutil.copytree(exported.model, out)
    (out / "NOTES.txt").write_text("calibrated on 12 photos")
    (out / "calib").mkdir()
    (out / "calib" / "a.png").write_bytes(b"mine")
    (out / CARD_MD).write_text("an older card")
    _reuse_graph(exported, monkeypatch)
    export_model(exported.checkpoint, out, overwrite=True, log=lambda line: None)
    assert (out / "NOTES.txt").read_text() == "calibrated on 12 photos" and (
        out / "calib" / "a.png"
    ).read_bytes() == b"mine"
    assert (out / CARD_MD).read_text().startswith("# cityseg model: U-Net / resnet34")
    assert load_network(out)[1]["sha256"] == file_sha256(out / WEIGHTS_FILE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left


# An export as `kill -9` finds it: its staging folder beside OUT half-written, and locked while the process lives.
_EXPORTING = """
import fcntl, os, pathlib, sys, time
staged = pathlib.Path(sys.argv[1])
staged.mkdir()
(staged / "model.safetensors").write_bytes(b"half-written")
fcntl.flock(os.open(staged, os.O_RDONLY), fcntl.LOCK_EX)
print("staged", flush=True)
time.sleep(600)
"""


def test_a_staging_folder_of_a_killed_export_is_removed_by_the_next(exported, tmp_path, monkeypatch):
    staged = tmp_path / ".model.export-x7k2"
    child = subprocess.Popen([sys.executable, "-c", _EXPORTING, str(staged)], stdout=subprocess.PIPE, text=True)
    _reuse_graph(exported, monkeypatch)
    try:
        assert child.stdout.readline() == "staged\n"
        export_model(exported.checkpoint, tmp_path / "model", log=lambda line: None)
        assert (staged / WEIGHTS_FILE).read_bytes() == b"half-written"  # a running export's folder is left alone
    finally:
        child.kill()  # kill -9: no cleanup runs
        child.wait()
    lines: list[str] = []
    export_model(exported.checkpoint, tmp_path / "model", overwrite=True, log=lines.append)
    assert not staged.exists() and any(str(staged) in line and "killed" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@contextlib.contextmanager
def _kernel_opens(*paths: Path) -> Iterator[Counter]:
    """How often each file is opened, by any code (Python, torch's C++, safetensors' Rust): Linux inotify's
    IN_OPEN events. Closes are watched too, so that back-to-back opens are not merged into one event."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    watches = {libc.inotify_add_watch(fd, str(path).encode(), 0x20 | 0x10 | 0x08): path for path in paths}
    counts: Counter = Counter()
    try:
        yield counts
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                watch, mask, _, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                counts[watches[watch]] += bool(mask & 0x20)  # IN_OPEN
    finally:
        os.close(fd)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts opens with Linux inotify")
def test_prediction_opens_the_checkpoint_and_the_exports_weights_once(exported, tmp_path):
    photo = _photos(tmp_path / "in") / "a.png"
    weights, graph = exported.model / WEIGHTS_FILE, exported.model / ONNX_FILE
    with _kernel_opens(exported.checkpoint, weights, graph) as opens:
        predict_images(exported.checkpoint, [photo], tmp_path / "a", device="cpu", progress=False)
        predict_images(exported.model, [photo], tmp_path / "b", device="cpu", progress=False)
    assert opens == {exported.checkpoint: 1, weights: 1, graph: 1}  # hash, CRC check and load share one read
    manifests = [json.loads((tmp_path / run / MANIFEST_NAME).read_text())["settings"] for run in "ab"]
    assert [m["checkpoint_sha256"] for m in manifests] == [file_sha256(exported.checkpoint), file_sha256(weights)]


def _checkpoint_of(path: Path, arch: str, encoder: str) -> tuple[Path, torch.nn.Module]:
    config = resolve_config("seed", arch=arch, encoder=encoder, encoder_weights=None, size=(128, 64))
    torch.manual_seed(5)
    network = build_model(None, arch=arch, encoder=encoder).eval()
    save_checkpoint(path, {"model": network.state_dict(), "num_classes": 19, "epoch": 1, "config": config.to_dict()})
    return path, network


@pytest.mark.parametrize(("arch", "encoder"), [("FPN", "resnet34"), ("DeepLabV3Plus", "resnet18")])
def test_an_architecture_it_cannot_trace_exports_without_onnx_and_the_card_says_why(tmp_path, arch, encoder):
    checkpoint, network = _checkpoint_of(tmp_path / "best.pt", arch, encoder)
    lines = []
    result = export_model(checkpoint, tmp_path / "out", log=lines.append)
    title = f"{arch.replace('Plus', '+')} / {encoder}"
    reason = f"{title}: {ONNX_REFUSALS[arch]}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CARD_JSON, CARD_MD, WEIGHTS_FILE]
    assert result.parity is None and any(f"no {ONNX_FILE}" in line and reason in line for line in lines)
    card = json.loads((tmp_path / "out" / CARD_JSON).read_text())
    assert card["files"]["onnx"] == {"refused": reason} and card["parity"] is None and card["onnx_io"] is None
    markdown = " ".join((tmp_path / "out" / CARD_MD).read_text().split())
    assert f"No ONNX graph (`{ONNX_FILE}`) is included: `cityseg export` cannot export {reason}." in markdown
    assert "ONNX parity" not in markdown and "opset" not in markdown and "{" + "onnx" not in markdown
    loaded, state = load_network(tmp_path / "out")  # through safetensors, its hash checked
    assert state["sha256"] == card["files"]["weights"]["sha256"] == file_sha256(tmp_path / "out" / WEIGHTS_FILE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.ones(1, 3, 64, 64)), network(torch.ones(1, 3, 64, 64)))
    _flip_bytes(tmp_path / "out" / WEIGHTS_FILE)
    with pytest.raises(UserError, match="sha256 differs"):
        load_network(tmp_path / "out")


def test_safetensors_weights_name_their_model_and_load_as_it(tmp_path):
    from safetensors.torch import save_file

    _, network = _checkpoint_of(tmp_path / "best.pt", "FPN", "resnet18")
    path = tmp_path / WEIGHTS_FILE
    save_file(dict(network.state_dict()), str(path), metadata=weights_metadata(network))
    loaded = load_weights(path)
    assert type(loaded).__name__ == "FPN"
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.ones(1, 3, 64, 64)), network(torch.ones(1, 3, 64, 64)))


@pytest.mark.slow  # a second ONNX export
def test_a_non_default_model_exports_and_says_what_it_is(tmp_path, monkeypatch):
    """DeepLabV3 / resnet18 (not in ONNX_REFUSALS, the cheapest such export measured): card, summary, predict."""
    checkpoint, _ = _checkpoint_of(tmp_path / "best.pt", "DeepLabV3", "resnet18")
    result = export_model(checkpoint, tmp_path / "model", log=lambda line: None)
    card = json.loads((tmp_path / "model" / CARD_JSON).read_text())
    assert result.model == card["model"]["title"] == "DeepLabV3 / resnet18" and result.parity["passed"]
    assert (card["model"]["architecture"], card["model"]["encoder"], card["model"]["size_multiple"]) == (
        "DeepLabV3",
        "resnet18",
        8,
    )
    assert (tmp_path / "model" / CARD_MD).read_text().startswith("# cityseg model: DeepLabV3 / resnet18")
    photos = _photos(tmp_path / "in")
    predicted = predict_images(tmp_path / "model", [photos], tmp_path / "out", device="cpu", progress=False)
    assert predicted.summary().startswith("DeepLabV3 / resnet18: wrote 1")

    def failing_exporter(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression u0 < 2")  # what torch.export raises

    monkeypatch.setattr(torch.onnx, "export", failing_exporter)
    with pytest.raises(UserError, match=r"failed on DeepLabV3 / resnet18 \(RuntimeError: Could not guard"):
        export_model(checkpoint, tmp_path / "again", log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "in", "model", "out"]


def test_a_format_1_checkpoint_exports_as_the_default_unet(exported, tmp_path, monkeypatch):
    """Checkpoints written before models were named (format 1, "unet-resnet34") export, and the card and predict's
    summary name the U-Net / resnet34 they hold. It holds the weights of the module's run, so the graph traced
    from them is reused and onnxruntime's parity check against the network loaded from format 1 runs for real."""
    network, _ = load_model(exported.checkpoint, torch.device("cpu"))
    checkpoint = format_1_checkpoint(tmp_path / "best.pt", network)
    _reuse_graph(exported, monkeypatch)
    result = export_model(checkpoint, tmp_path / "model", log=lambda line: None)
    card = json.loads((tmp_path / "model" / CARD_JSON).read_text())
    assert result.model == card["model"]["title"] == "U-Net / resnet34" and result.parity["passed"]
    assert (card["model"]["architecture"], card["model"]["encoder"]) == ("Unet", "resnet34")
    predicted = predict_images(
        tmp_path / "model", [_photos(tmp_path / "in")], tmp_path / "out", device="cpu", progress=False
    )
    assert predicted.summary().startswith("U-Net / resnet34: wrote 1")


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    return sorted({*range(0, length - window + 1, stride), length - window})


def _bilinear(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) -> (C, H, W), bilinear with align_corners=False and no antialias, in numpy."""

    def taps(size_out: int, size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0)
        low = np.minimum(np.floor(source).astype(int), size_in - 1)
        return low, np.minimum(low + 1, size_in - 1), (source - low).astype(np.float32)

    (y0, y1, ty), (x0, x1, tx) = taps(height, logits.shape[1]), taps(width, logits.shape[2])
    rows = logits[:, y0] * (1 - ty)[:, None] + logits[:, y1] * ty[:, None]
    return rows[:, :, x0] * (1 - tx) + rows[:, :, x1] * tx


def test_card_md_is_enough_to_reproduce_predict_with_onnxruntime_or_plain_smp(exported, tmp_path, monkeypatch):
    """A stranger's predictor, written from card.md alone (its numbers read from the card.json fields it cites),
    agrees with `cityseg predict --images` on photos of three aspect ratios, one of them predicted in windows."""
    import onnxruntime

    card, markdown = exported.card, (exported.model / CARD_MD).read_text()
    text = " ".join(markdown.split())  # the card's sentences, whatever its line breaks
    recipe, norm, model = card["inference"], card["normalisation"], card["model"]
    size, limit, pad, (num, den) = (
        recipe["training_size"],
        recipe["whole_limit"],
        recipe["pad"],
        recipe["stride_of_window"],
    )
    for stated in (
        "segmentation_models_pytorch",
        f"`{model['architecture']}` with encoder `{model['encoder']}`",
        f"mean {norm['mean']}, std {norm['std']}",
        f"width {size[0]} (the training width), height round(H x {size[0]} / W)",
        "bilinear, align_corners=False, antialias=True when either side shrinks",
        f"more pixels than {limit[0]} x {limit[1]}",
        f"min({limit[0]}, w) x min({limit[1]}, h) pixels, stride the window x {num}/{den}, rounded up",
        f"pad the {pad['sides']} to a multiple of {pad['multiple']} ({pad['mode']}, or zeros where",
        "bilinear, align_corners=False, no antialias",
        *[f"| {c['train_id']} | {c['label_id']} | {c['name']} |" for c in card["classes"]],
    ):
        assert stated in text, stated
    code = markdown.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(exported.model)
    namespace: dict = {}
    exec(code, namespace)  # card.md's own lines build the network and load model.safetensors
    network = namespace["model"]
    session = onnxruntime.InferenceSession(ONNX_FILE, providers=["CPUExecutionProvider"])
    mean, std = np.array(norm["mean"], np.float32), np.array(norm["std"], np.float32)
    label_ids = np.array([c["label_id"] for c in card["classes"]], np.uint8)  # indexed by trainId

    def logits_of(image, forward, h: int, w: int) -> np.ndarray:  # steps 3 and 4 over a (h, w, ...) image
        if w * h <= limit[0] * limit[1]:
            return forward(image)
        win_w, win_h = min(limit[0], w), min(limit[1], h)
        total, count = np.zeros((19, h, w), np.float32), np.zeros((h, w), np.float32)
        for top in _window_starts(h, win_h, -(-win_h * num // den)):
            for left in _window_starts(w, win_w, -(-win_w * num // den)):
                total[:, top : top + win_h, left : left + win_w] += forward(
                    image[top : top + win_h, left : left + win_w]
                )
                count[top : top + win_h, left : left + win_w] += 1
        return total / count

    def smp_forward(image: torch.Tensor) -> np.ndarray:  # (h, w, 3) normalised -> (19, h, w)
        h, w = image.shape[:2]
        pad_h, pad_w = -h % pad["multiple"], -w % pad["multiple"]
        x = F.pad(
            image.permute(2, 0, 1)[None],
            (0, pad_w, 0, pad_h),
            mode=pad["mode"] if pad_h < h and pad_w < w else "constant",
        )
        with torch.no_grad():
            return network(x)[0, :, :h, :w].numpy()

    scene = default_check_images()[0][1]  # 384x192
    photos = {"wide": scene[32:160], "street": scene, "tall": np.ascontiguousarray(scene[:, 100:244])}
    (tmp_path / "in").mkdir()
    for name, photo in photos.items():
        Image.fromarray(photo).save(tmp_path / "in" / f"{name}.png")
    # What `cityseg predict MODEL --images IN --out OUT --device cpu` runs (the CLI's own test compares the two).
    predict_images(exported.model, [tmp_path / "in"], tmp_path / "out", device="cpu", progress=False)
    windows = 0
    for name, photo in photos.items():
        height, width = photo.shape[:2]
        w, h = size[0], round(height * size[0] / width)
        windows += w * h > limit[0] * limit[1]
        normalised = torch.from_numpy((photo / 255 - mean) / std).float().permute(2, 0, 1)[None]
        shrinks = h < height or w < width
        resized = F.interpolate(normalised, size=(h, w), mode="bilinear", align_corners=False, antialias=shrinks)
        by_smp = logits_of(resized[0].permute(1, 2, 0), smp_forward, h, w)
        small = np.asarray(Image.fromarray(photo).resize((w, h), Image.BILINEAR))  # uint8, as the graph takes
        by_onnx = logits_of(
            small, lambda image: session.run(None, {"image": np.ascontiguousarray(image[None])})[0][0], h, w
        )
        expected = np.asarray(Image.open(tmp_path / "out" / f"{name}_labelIds.png"))
        for logits in (by_smp, by_onnx):
            labels = label_ids[_bilinear(logits, height, width).argmax(0)]
            assert np.mean(labels == expected) >= 0.999, name
    assert windows == 1  # the tall photo went through the sliding window
