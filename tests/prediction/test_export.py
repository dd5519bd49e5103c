"""`cityseg export`: safetensors + ONNX + model card from a real tiny run, checked against torch with onnxruntime.

One tiny run (2 folds x 1 epoch at 128x64 and the full fit, val predictions, evaluation; the session's
`one_epoch_cv`) and one real `cityseg export` process supply every file; the ONNX graph is traced
once (about a minute) and reused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from cityscapesscripts.helpers.labels import trainId2label
from helpers_training import CLI_ENV, cityseg_command
from safetensors import safe_open

from cityseg.data.frames import read_image
from cityseg.data.transforms import normalize
from cityseg.errors import UserError
from cityseg.prediction import export as export_module
from cityseg.prediction.deployed import (
    CARD_JSON,
    CARD_MD,
    ONNX_FILE,
    WEIGHTS_FILE,
    load_exported,
    load_network,
    load_weights,
    weights_metadata,
)
from cityseg.prediction.export import (
    LOGIT_RTOL,
    MIN_AGREEMENT,
    check_parity,
    default_check_images,
    export_model,
)
from cityseg.prediction.image_predict import predict_images
from cityseg.prediction.inference import forward_padded
from cityseg.prediction.ledger import file_sha256
from cityseg.prediction.predict import predict_split
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.config import resolve_config
from cityseg.training.model import ONNX_REFUSALS, build_model, load_model

pytestmark = pytest.mark.slow  # a tiny cv, then an ONNX export and its onnxruntime check


@pytest.fixture(scope="module")
def exported(one_epoch_cv, tmp_path_factory) -> SimpleNamespace:
    """A tiny real run and its val evaluation (`one_epoch_cv`), and `cityseg export runs/full/best.pt --out model
    --eval val.json`."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("export")
    checkpoint = one_epoch_cv.runs / "full" / "best.pt"
    model = base / "model"
    result = subprocess.run(
        cityseg_command("export", checkpoint, "--out", model, "--eval", one_epoch_cv.eval_json),
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
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
    assert [row["size"] for row in rows] == ["384x192", "250x141", "141x250"]
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


def test_predict_takes_the_exported_folder_and_gives_the_checkpoints_labels(exported, tmp_path):
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
    result = subprocess.run(
        cityseg_command(
            "predict", exported.model, "--images", photos, "--out", tmp_path / "d", "--device", "cpu", "--no-progress"
        ),
        env=CLI_ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    predict_images(exported.checkpoint, [photos], tmp_path / "c", device="cpu", progress=False)
    labels = {name: data for name, data in pngs(tmp_path / "c").items() if name.endswith("_labelIds.png")}
    assert labels and labels == {n: d for n, d in pngs(tmp_path / "d").items() if n.endswith("_labelIds.png")}


def test_a_graph_that_disagrees_with_torch_fails_the_export_and_leaves_nothing(exported, tmp_path, monkeypatch):
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
    assert not report.passed and "FAILED" in report.text()

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
    broken = tmp_path / "broken"
    shutil.copytree(exported.model, broken)
    (broken / WEIGHTS_FILE).write_bytes((exported.model / WEIGHTS_FILE).read_bytes()[:1000])
    with pytest.raises(UserError, match=r"model\.safetensors cannot be read"):
        load_exported(broken, torch.device("cpu"))


def test_card_of_a_checkpoint_without_run_files_says_what_is_missing(tmp_path):
    from cityseg.prediction.card import build_card, card_markdown

    lone = tmp_path / "somewhere" / "weights.pt"  # no config.json, no summary.json beside it
    network = build_model(encoder_weights=None)
    save_checkpoint(
        lone, {"model": network.state_dict(), "epoch": 3, "config": {"size": [1024, 512]}, "num_classes": 19}
    )
    _, state = load_model(lone)
    parity = {"passed": True, "rule": "r", "runtime": "t", "images": []}
    files = {"weights": {"file": WEIGHTS_FILE}, "onnx": {"file": ONNX_FILE, "opset": 20}}
    card = build_card(lone, state, network, files, parity, None)
    assert card["results"] == {"cross_validation": None, "evaluation": None}
    assert card["git"] == {"sha": None, "dirty": None} and card["source"]["epoch"] == 3
    assert card["inference"]["training_size"] == [1024, 512]
    markdown = card_markdown(card)
    assert "no summary.json" in markdown and "Evaluation: none given" in markdown


def _checkpoint_of(path: Path, arch: str, encoder: str) -> tuple[Path, torch.nn.Module]:
    config = resolve_config("seed", arch=arch, encoder=encoder, encoder_weights=None, size=(128, 64))
    torch.manual_seed(5)
    network = build_model(None, arch=arch, encoder=encoder).eval()
    save_checkpoint(path, {"model": network.state_dict(), "num_classes": 19, "epoch": 1, "config": config.to_dict()})
    return path, network


@pytest.mark.parametrize(("arch", "encoder"), [("FPN", "resnet34"), ("DeepLabV3Plus", "resnet18")])
def test_export_refuses_an_architecture_it_cannot_trace_by_name_with_the_reason(tmp_path, arch, encoder):
    checkpoint, _ = _checkpoint_of(tmp_path / "best.pt", arch, encoder)
    with pytest.raises(UserError, match=f"cannot be exported to ONNX: {arch.replace('Plus', '[+]')} / {encoder}"):
        export_model(checkpoint, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # nothing written
    assert arch in ONNX_REFUSALS and "torch.export" in ONNX_REFUSALS[arch]


def test_safetensors_weights_name_their_model_and_load_as_it(tmp_path):
    from safetensors.torch import save_file

    _, network = _checkpoint_of(tmp_path / "best.pt", "FPN", "resnet18")
    path = tmp_path / WEIGHTS_FILE
    save_file(dict(network.state_dict()), str(path), metadata=weights_metadata(network))
    loaded = load_weights(path)
    assert type(loaded).__name__ == "FPN"
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.ones(1, 3, 64, 64)), network(torch.ones(1, 3, 64, 64)))
