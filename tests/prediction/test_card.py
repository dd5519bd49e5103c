"""The model card: built from whatever run files exist, written as strict JSON, and read back only when its schema
and bounds hold (a crafted card.json is a UserError naming it, never a crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cityseg.errors import UserError
from cityseg.prediction.card import build_card, card_json_text, card_markdown
from cityseg.prediction.deployed import CARD_JSON, ONNX_FILE, WEIGHTS_FILE, read_card
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model, load_model

PARITY = {"passed": True, "rule": "r", "runtime": "t", "images": []}
FILES = {
    "weights": {"file": WEIGHTS_FILE, "sha256": "a" * 64},
    "onnx": {"file": ONNX_FILE, "sha256": "b" * 64, "opset": 20, "min_side": 17},
}


@pytest.fixture(scope="module")
def lone(tmp_path_factory) -> tuple[Path, torch.nn.Module, dict]:
    """A checkpoint with no run files beside it (no config.json, no summary.json), loaded as export loads it."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("card") / "runs" / "full" / "weights.pt"
    path.parent.mkdir(parents=True)
    network = build_model(encoder_weights=None, encoder="resnet18")
    config = {"size": [1024, 512], "encoder": "resnet18"}
    save_checkpoint(path, {"model": network.state_dict(), "epoch": 3, "config": config, "num_classes": 19})
    network, state = load_model(path)
    return path, network, state


def test_card_of_a_checkpoint_without_run_files_says_what_is_missing(lone):
    path, network, state = lone
    card = build_card(path, state, network, FILES, PARITY, None)
    assert card["results"] == {"cross_validation": None, "evaluation": None}
    assert card["git"] == {"sha": None, "dirty": None} and card["source"]["epoch"] == 3
    assert card["inference"]["training_size"] == [1024, 512]
    assert card["model"]["title"] == "U-Net / resnet18" and card["model"]["architecture"] == "Unet"
    markdown = card_markdown(card)
    assert "no summary.json" in markdown and "Evaluation: none given" in markdown
    assert markdown.startswith("# cityseg model: U-Net / resnet18")


def test_card_json_is_strict_json_when_run_files_hold_nan_or_infinity(lone, tmp_path):
    path, network, state = lone
    runs = path.parent.parent
    # what `cv` or `evaluate` can write: a one-fold std, a class absent from every fold, an empty split's scores
    summary = {"k": 2, "miou_mean": 0.5, "miou_std": float("nan"), "class_iou_mean": [0.5, float("inf")]}
    (runs / "summary.json").write_text(json.dumps(summary))
    try:
        evaluation = {"split": "val", "miou": float("nan"), "iiou": float("-inf"), "protocol": "p"}
        card = build_card(path, state, network, FILES, PARITY, evaluation)
    finally:
        (runs / "summary.json").unlink()

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    text = card_json_text(card)
    strict = json.loads(text, parse_constant=refuse)
    assert strict["results"]["cross_validation"]["miou_std"] is None
    assert strict["results"]["cross_validation"]["class_iou_mean"]["sidewalk"] is None
    assert strict["results"]["evaluation"]["miou"] is None and strict["results"]["evaluation"]["iiou"] is None
    assert strict["results"]["cross_validation"]["miou_mean"] == 0.5
    assert "n/a" in card_markdown(strict)  # the card's text says so instead of printing nan


def _card(lone) -> dict:
    path, network, state = lone
    return json.loads(card_json_text(build_card(path, state, network, FILES, PARITY, None)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda card: "[" * 200_000 + "]" * 200_000, "cannot be read"),
        (lambda card: card | {"config": card["config"] | {"size": [2**35, 32]}}, "--size"),
        (lambda card: card | {"source": ["a", "list"]}, "'source' is list"),
        (lambda card: card | {"source": "a string"}, "'source' is str"),
        (lambda card: card | {"source": {"epoch": "3"}}, "source.epoch"),
        (lambda card: card | {"files": {"weights": {"file": WEIGHTS_FILE}}}, "files.weights"),
        (lambda card: card | {"files": card["files"] | {"onnx": {"refused": " "}}}, "files.onnx"),
        (lambda card: card | {"files": card["files"] | {"onnx": {"refused": "r", "sha256": "b" * 64}}}, "files.onnx"),
        (lambda card: card | {"files": {"weights": card["files"]["weights"]}}, "files.onnx"),
        (lambda card: card | {"config": 7}, "'config' is int"),
        (lambda card: card | {"format_version": 99}, "version is 99"),
        (lambda card: " " * (2 << 20) + "{}", "bytes"),
    ],
    ids=[
        *("deep", "huge-size", "source-list", "source-str", "epoch-str", "no-hash"),
        *("no-reason", "reason-and-hash", "no-onnx-entry", "config-int", "version", "huge"),
    ],
)
def test_a_crafted_card_is_a_user_error_naming_the_file(lone, tmp_path, change, message):
    changed = change(_card(lone))
    (tmp_path / CARD_JSON).write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(UserError, match=message) as info:
        read_card(tmp_path)
    assert str(tmp_path / CARD_JSON) in str(info.value)


def test_an_unchanged_card_reads_back(lone, tmp_path):
    (tmp_path / CARD_JSON).write_text(json.dumps(_card(lone)))
    assert read_card(tmp_path)["source"]["epoch"] == 3


def test_a_card_without_onnx_says_why_and_reads_back(lone, tmp_path):
    path, network, state = lone
    files = {"weights": FILES["weights"], "onnx": {"refused": "U-Net / resnet18: a reason"}}
    card = json.loads(card_json_text(build_card(path, state, network, files, None, None)))
    assert card["onnx_io"] is None and card["parity"] is None
    markdown = card_markdown(card)
    assert "cannot export U-Net / resnet18: a reason." in " ".join(markdown.split())
    assert ONNX_FILE in markdown and "opset" not in markdown and "parity" not in markdown and "<!--" not in markdown
    (tmp_path / CARD_JSON).write_text(json.dumps(card))
    assert read_card(tmp_path)["files"]["onnx"] == files["onnx"]
