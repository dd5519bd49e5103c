"""The network factory: output shape, local encoder weights, offline errors, checkpoint loading, devices."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torchvision

from cityseg.errors import UserError
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.model import build_model, load_model, resolve_device

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def resnet34_weights(tmp_path_factory):
    """A torchvision-format resnet34 state dict on disk (random weights: nothing is downloaded)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet34(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet34.pth"
    torch.save(state, path)
    return path, state


def test_forward_shape_is_19_classes_at_input_size():
    model = build_model(encoder_weights=None).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 128))  # (B, C, H, W)
    assert out.shape == (1, 19, 64, 128)


def test_local_resnet34_state_dict_is_loaded_into_the_encoder(resnet34_weights):
    path, state = resnet34_weights
    model = build_model(encoder_weights=path)
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.encoder.layer4[2].bn2.running_var, state["layer4.2.bn2.running_var"])
    # A second random init would not match: the weights really came from the file.
    assert not torch.equal(build_model(encoder_weights="none").encoder.conv1.weight, state["conv1.weight"])


def test_resnet18_state_dict_is_a_user_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(UserError, match="not a torchvision resnet34"):
        build_model(encoder_weights=path)


def test_missing_or_non_state_dict_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_model(encoder_weights=tmp_path / "nope.pth")
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(UserError, match="not a state dict"):
        build_model(encoder_weights=not_a_dict)
    for i, junk in enumerate((b"not a torch file", b"these are my notes")):  # the second trips torch.load's IndexError
        garbage = tmp_path / f"garbage{i}.pth"
        garbage.write_bytes(junk)
        with pytest.raises(UserError, match="cannot read encoder weights"):
            build_model(encoder_weights=garbage)


def test_imagenet_offline_names_the_alternatives(tmp_path):
    # A subprocess, because huggingface_hub reads HF_HUB_OFFLINE once at import.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    code = (
        "from cityseg.errors import UserError\nfrom cityseg.training.model import build_model\n"
        "try:\n    build_model('imagenet')\nexcept UserError as e:\n    print('USERERROR', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "USERERROR" in result.stdout, result.stderr
    assert "--encoder-weights none" in result.stdout
    assert "state dict" in result.stdout and "HF_HUB_OFFLINE=1" in result.stdout


def _checkpoint(path, model, num_classes=19):
    save_checkpoint(path, {"model": model.state_dict(), "num_classes": num_classes, "epoch": 1})
    return path


def test_load_model_restores_weights_in_eval_mode(tmp_path):
    torch.manual_seed(1)
    model = build_model(encoder_weights=None)
    loaded, state = load_model(_checkpoint(tmp_path / "best.pt", model), device="cpu")
    assert not loaded.training
    assert state["epoch"] == 1
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_load_model_rejects_other_class_count_or_architecture(tmp_path):
    model = build_model(encoder_weights=None)
    with pytest.raises(UserError, match="another architecture or class count"):
        load_model(_checkpoint(tmp_path / "a.pt", model, num_classes=10))
    # Claims 19 classes but holds 10-class weights: the strict load must catch it.
    ten = build_model(encoder_weights=None, num_classes=10)
    with pytest.raises(UserError, match="another architecture or class count"):
        load_model(_checkpoint(tmp_path / "b.pt", ten, num_classes=19))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no usable CUDA"):
            resolve_device("cuda")
    with pytest.raises(UserError):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")
