"""TrainConfig: recipes say what they claim, JSON round-trips, and bad values fail with the field's name."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cityseg.errors import UserError
from cityseg.training.config import (
    MACHINE_FIELDS,
    MAX_SIDE,
    TrainConfig,
    config_differences,
    parse_size,
    read_recipe,
    recipe_differences,
    resolve_config,
)
from cityseg.training.recipes import BUILTIN, FIELD_GROUPS


def test_seed_recipe_is_the_reference():
    config = resolve_config("seed")
    assert (config.optimizer, config.lr, config.batch_size, config.epochs) == ("adam", 1e-4, 4, 10)
    assert (config.loss, config.schedule, config.select) == ("ce", "constant", "loss")
    assert config.aug == ("flip",)
    assert config.size is None and config.crop is None and config.scale_range is None  # full resolution
    assert config.encoder_weights == "imagenet" and config.encoder_lr_mult == 1.0 and config.weight_decay == 0.0
    assert config.betas == (0.9, 0.999) and config.amp is False  # torch's Adam defaults, float32 like the reference
    assert (config.arch, config.encoder) == ("Unet", "resnet34")
    assert len(read_recipe("seed").deviations) == 2  # drop_last and the epoch choice by CV, listed on its card


def test_strong_recipe_values():
    config = resolve_config("strong")
    # SwiftNet's own optimiser: Adam (coupled L2), betas (0.9, 0.99), encoder at lr/4 and weight decay/4
    assert (config.optimizer, config.lr, config.encoder_lr_mult, config.weight_decay) == ("adam", 4e-4, 0.25, 1e-4)
    assert (config.betas, config.encoder_weight_decay_mult, config.min_lr) == ((0.9, 0.99), 0.25, 1e-6)
    assert (config.schedule, config.batch_size, config.epochs, config.select) == ("cosine", 8, 200, "last")
    assert config.amp is True and config.schedule_epochs is None
    assert config.warmup_epochs > 0
    assert config.crop == (768, 768) and config.scale_range == (0.5, 2.0)
    assert {"flip", "scale-crop", "photometric"} <= set(config.aug)
    assert resolve_config("strong", loss="ohem").ohem_thresh == 0.7
    assert resolve_config("strong", loss="ohem").ohem_min_kept == 100_000


def test_every_recipe_cites_a_source_for_every_field_group():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    grouped = [name for names in FIELD_GROUPS.values() for name in names]
    assert set(grouped) <= fields and len(grouped) == len(set(grouped))
    for recipe in map(read_recipe, BUILTIN):
        assert set(recipe.sources) == set(FIELD_GROUPS), recipe.name
        assert all(len(text) > 20 for text in recipe.sources.values())
        assert set(recipe.values) <= fields - set(MACHINE_FIELDS) - {"recipe"}
        assert all(len(text) > 20 for text in recipe.deviations)


def test_overrides_change_only_what_was_asked():
    base, changed = resolve_config("strong"), resolve_config("strong", lr=1e-3, crop=[512, 256])
    assert changed.lr == 1e-3 and changed.crop == (512, 256)  # JSON-style lists become tuples
    assert config_differences(base, changed) == ["lr: 0.0004 -> 0.001", "crop: [768, 768] -> [512, 256]"]
    assert config_differences(base, dataclasses.replace(base, workers=0, device="cpu")) == []


def test_json_round_trip():
    config = resolve_config("strong", size=(1024, 512), crop=(512, 512), encoder_weights=None, cache="/tmp/c")
    text = json.dumps(config.to_dict())
    assert TrainConfig.from_dict(json.loads(text)) == config


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", "4"),
        ("lr", "fast"),
        ("amp", 1),
        ("epochs", 2.5),
        ("crop", [512, 512, 3]),
        ("aug", "flip"),
        ("size", [1024, "512"]),
    ],
)
def test_from_dict_wrong_type_names_the_key(key, value):
    data = resolve_config("seed").to_dict() | {key: value}
    with pytest.raises(UserError, match=key):
        TrainConfig.from_dict(data)


def test_from_dict_unknown_key():
    data = resolve_config("seed").to_dict() | {"learning_rate": 0.1}
    with pytest.raises(UserError, match="learning_rate"):
        TrainConfig.from_dict(data)
    with pytest.raises(UserError, match="learnin_rate"):
        resolve_config("seed", learnin_rate=0.1)
    with pytest.raises(UserError, match="recipe"):
        resolve_config("nope")


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"epochs": 0}, "--epochs"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": -1e-3}, "--lr"),
        ({"crop": (0, 64)}, "--crop"),
        ({"crop": (100, 64)}, "--crop"),  # not divisible by 32
        ({"size": (1024, 500)}, "--size"),
        ({"scale_range": (2.0, 0.5)}, "--scale-range"),
        ({"size": (256, 128), "crop": (512, 128)}, "--crop"),  # crop larger than the resized image
        ({"aug": ("flip", "mixup")}, "--aug"),
        ({"aug": ("scale-crop",)}, "--aug"),  # needs --crop and --scale-range
        ({"optimizer": "lion"}, "--optimizer"),
        ({"warmup_epochs": 20.0}, "--warmup-epochs"),
        ({"schedule_epochs": 5}, "--schedule-epochs"),  # shorter than --epochs (10)
        ({"betas": (0.9, 1.0)}, "--betas"),
        ({"encoder_weight_decay_mult": -1.0}, "--encoder-weight-decay-mult"),
        ({"select": "best"}, "--select"),
    ],
)
def test_range_errors_name_the_flag(overrides, flag):
    with pytest.raises(UserError, match=flag):
        resolve_config("seed", **overrides)


def test_recipe_differences_name_what_the_run_changed_but_not_the_machine():
    # compile and gpu_aug are resolved per machine when left at auto (cityseg.training.runtime): machine fields too
    config = resolve_config(
        "strong", lr=1e-3, amp=False, workers=0, device="cpu", cache="/tmp/c", compile=True, gpu_aug=False
    )
    assert recipe_differences(config) == [("lr", 4e-4, 1e-3), ("amp", True, False)]
    assert recipe_differences(resolve_config("seed", workers=3)) == []


def test_warmup_may_exceed_a_run_cut_short_but_not_its_schedule():
    config = resolve_config("strong", epochs=1, schedule_epochs=200, workers=0)  # the full fit stopped at epoch 1
    assert config.schedule_length == 200 and config.warmup_epochs == 2.0


def test_parse_size_is_the_one_size_syntax():
    assert parse_size("1024x512") == (1024, 512) and parse_size(" 64X32 ") == (64, 32)
    assert parse_size("none") is None and parse_size("full") is None and parse_size(None) is None
    assert parse_size([64, 32]) == (64, 32)
    for bad in ("1024", "axb", "1024x512x3", "0x64", "-64x32", (1, 2, 3)):
        with pytest.raises(UserError, match="WIDTHxHEIGHT|positive|pair"):
            parse_size(bad)


def test_seed_recipe_says_what_is_guessed_and_cites_files_the_repository_holds():
    seed = read_recipe("seed")
    text = " ".join([seed.description, *seed.sources.values(), *seed.deviations])
    for guess in ("full-resolution", "no crop", "constant learning rate", "test-time augmentation", "which split"):
        assert guess in text, guess
    for recipe in map(read_recipe, BUILTIN):
        texts = " ".join([recipe.path.read_text(), *recipe.sources.values()])
        assert "NOTES.md" not in texts and "as in mmsegmentation's schedules" not in texts


def test_strong_recipe_states_its_own_choices_exactly():
    strong = read_recipe("strong")
    text = " ".join(" ".join([*strong.sources.values(), *strong.deviations]).split())
    assert "warm-up is ours" in text and "poly without warm-up" in text
    assert "2.5e-7" in text and "eta_min=1e-6" in text  # the encoder's cosine floor, documented
    assert "our choice" in text and "decay every parameter" in text


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"size": (2**35, 32)}, "--size"),
        ({"crop": (32, MAX_SIDE + 32)}, "--crop"),
        ({"seed": 99999999999999999999999}, "--seed"),
        ({"seed": 2**32}, "--seed"),
        ({"scale_range": (0.5, float("inf"))}, "--scale-range"),
        ({"lr": float("inf")}, "--lr"),
        ({"ohem_thresh": float("nan")}, "--ohem-thresh"),
        ({"min_lr": float("nan")}, "--min-lr"),
        ({"betas": (0.9, float("nan"))}, "--betas"),
    ],
)
def test_absurd_and_non_finite_values_are_refused(overrides, flag):
    with pytest.raises(UserError, match=flag):
        resolve_config("seed", **overrides)


def test_a_stored_config_with_an_absurd_size_is_refused_on_reading():
    data = resolve_config("seed").to_dict() | {"size": [2**35, 32]}
    with pytest.raises(UserError, match="--size"):
        TrainConfig.from_dict(data)
    assert resolve_config("seed", seed=2**32 - 1, size=(MAX_SIDE, 32)).seed == 2**32 - 1  # the bounds themselves pass


def test_model_names_are_smps_in_any_case_and_unknown_ones_list_the_valid():
    config = resolve_config("seed", arch="deeplabv3plus", encoder="resnet18", encoder_weights=None)
    assert config.arch == "DeepLabV3Plus"
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(UserError, match="unknown architecture 'UNetz'.*Unet, UnetPlusPlus.*Segformer"):
        resolve_config("seed", arch="UNetz")
    with pytest.raises(UserError, match="cannot build Unet with encoder 'resnet35'.*'resnet18', 'resnet34'"):
        resolve_config("seed", encoder="resnet35")
    with pytest.raises(UserError, match="no ImageNet weights for encoder 'resnext101_32x48d'.*instagram"):
        resolve_config("seed", encoder="resnext101_32x48d")
    with pytest.raises(UserError, match="smp cannot build DPT"):  # DPT takes only ViT ('tu-') encoders
        resolve_config("seed", arch="DPT", encoder="resnet18", encoder_weights=None)


@pytest.mark.parametrize(
    ("arch", "encoder", "multiple"),
    [
        ("Unet", "resnet18", 32),
        ("DeepLabV3Plus", "resnet18", 16),
        ("DeepLabV3", "resnet18", 8),
        ("PSPNet", "resnet18", 8),
    ],
)
def test_the_size_multiple_comes_from_the_model(arch, encoder, multiple):
    fits = resolve_config("seed", arch=arch, encoder=encoder, encoder_weights=None, size=(multiple * 9, multiple * 5))
    assert fits.size == (multiple * 9, multiple * 5)
    with pytest.raises(UserError, match=f"divisible by {multiple} .*Use e.g."):
        resolve_config("seed", arch=arch, encoder=encoder, encoder_weights=None, crop=(multiple * 9 + 4, multiple))
