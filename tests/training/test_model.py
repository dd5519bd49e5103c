"""The network factory: smp architectures by name, local encoder weights, offline errors, checkpoints, devices."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torchvision

from cityseg.errors import UserError
from cityseg.training.checkpoint import save_checkpoint
from cityseg.training.config import resolve_config
from cityseg.training.losses import build_loss
from cityseg.training.model import build_model, load_model, model_of, resolve_device
from cityseg.training.model_names import DEFAULT_ARCH, DEFAULT_ENCODER, DEFAULT_SIZE_MULTIPLE, size_multiple

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


def test_weights_of_another_encoder_name_the_first_mismatch(tmp_path):
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    with pytest.raises(UserError, match="does not fit the resnet34 encoder: first mismatch: missing key layer1.2"):
        build_model(encoder_weights=resnet18)
    model = build_model(resnet18, arch="FPN", encoder="resnet18")  # the same file fits its own encoder
    assert torch.equal(model.encoder.conv1.weight, torch.load(resnet18)["conv1.weight"])
    wide = tmp_path / "wide.pth"
    torch.save(torchvision.models.wide_resnet50_2(weights=None).state_dict(), wide)
    with pytest.raises(UserError, match=r"first mismatch: layer1.0.conv1.weight has shape \[128, 64, 1, 1\]"):
        build_model(wide, arch="Unet", encoder="resnet50")
    extra = tmp_path / "extra.pth"
    torch.save({**torch.load(resnet18), "adapter.weight": torch.zeros(3)}, extra)
    with pytest.raises(UserError, match="first mismatch: unexpected key adapter.weight"):
        build_model(extra, encoder="resnet18")


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


@pytest.mark.slow  # a child python that imports torch
def test_imagenet_offline_names_the_alternatives(tmp_path):
    # A subprocess, because huggingface_hub reads HF_HUB_OFFLINE once at import.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    code = (
        "from cityseg.errors import UserError\nfrom cityseg.training.model import build_model\n"
        "try:\n    build_model('imagenet', arch='FPN', encoder='resnet18')\nexcept UserError as e:\n"
        "    print('USERERROR', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "USERERROR" in result.stdout, result.stderr
    assert "ImageNet resnet18 encoder weights" in result.stdout and "--encoder-weights none" in result.stdout
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


def test_the_default_size_multiple_known_without_smp_is_smps():
    import segmentation_models_pytorch as smp

    unet = smp.create_model(DEFAULT_ARCH, DEFAULT_ENCODER, encoder_weights=None, classes=19)
    assert unet.encoder.output_stride == DEFAULT_SIZE_MULTIPLE
    assert size_multiple("Segformer", "mit_b0") == 32 and size_multiple("deeplabv3plus", "resnet18") == 16


@pytest.mark.parametrize(
    ("arch", "encoder", "loss"),
    [
        ("Unet", "resnet18", "ce"),
        ("FPN", "resnet18", "ce+0.5*dice"),
        ("DeepLabV3Plus", "resnet18", "ohem"),
        ("Segformer", "mit_b0", "lovasz"),
    ],
)
def test_an_architecture_trains_one_step_and_predicts(arch, encoder, loss):
    from cityseg.prediction.inference import predict_logits
    from cityseg.training.optim import build_optimizer

    torch.manual_seed(0)
    config = resolve_config("seed", arch=arch, encoder=encoder, encoder_weights=None, loss=loss, lr=1e-3)
    model = model_of(config).train()
    optimizer = build_optimizer(model, config)  # the encoder/decoder groups exist for every architecture
    images, masks = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    masks[:, :8] = 255
    before = [p.detach().clone() for p in model.parameters()]
    value = build_loss(config.loss, config.ohem_thresh, 100)(model(images), masks)
    value.backward()
    optimizer.step()
    assert torch.isfinite(value) and value > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True) if b.grad is not None)
    with torch.no_grad():
        probabilities = predict_logits(model.eval(), torch.randn(1, 3, 70, 90))  # not a multiple: padded
    assert probabilities.shape == (1, 19, 70, 90)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(1, 70, 90))
