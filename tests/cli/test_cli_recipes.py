"""Training flags generated from TrainConfig (every field has one, values round-trip) and `cityseg recipes`."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess

import pytest
from helpers_training import CLI_ENV, cityseg_command

from cityseg.cli import main
from cityseg.cli.config_flags import add_config_arguments, config_from_args, flag_args
from cityseg.training.config import (
    FIELD_GROUPS,
    RECIPES,
    TrainConfig,
    field_differences,
    field_text,
    resolve_config,
    value_text,
)

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def training_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser


def test_every_config_field_has_a_flag_with_help():
    parser = training_parser()
    options = {option: action for action in parser._actions for option in action.option_strings}
    for name in FIELDS:
        action = options["--" + name.replace("_", "-")]
        assert action.dest == name and len(action.help) > 15, name


def test_every_field_round_trips_through_its_flag():
    # A target that differs from the seed recipe in every field, so a flag that is ignored cannot pass.
    target = resolve_config(
        "strong",
        labels="ids",
        workers=3,
        cache="/tmp/cache",
        gpu_aug=True,
        loss="ohem",
        ohem_thresh=0.6,
        ohem_min_kept=5000,
        arch="FPN",
        encoder="resnet18",
        encoder_weights="/tmp/resnet18.pth",
        sync_bn=True,
        seed=7,
        device="cpu",
        compile=True,
        deterministic=True,
        momentum=0.8,
        poly_power=1.5,
        size=(1536, 768),
        crop_max_class_ratio=0.5,
        schedule_epochs=300,
        optimizer="sgd",
    )
    seed = resolve_config("seed")
    same = [name for name in FIELDS if getattr(target, name) == getattr(seed, name)]
    assert same == [], f"pick target values for {same}"
    words = ["--recipe", "seed"] + [
        word for name in FIELDS if name != "recipe" for word in flag_args(name, getattr(target, name))
    ]
    parsed = config_from_args(training_parser().parse_args(words))
    assert field_differences(parsed, target, ("recipe",)) == []
    assert parsed.recipe == "seed"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["--size", "1024x512"], {"size": (1024, 512)}),
        (["--size", "none", "--crop", "full"], {"size": None, "crop": None}),
        (
            ["--scale-range", "0.5,2.0", "--crop", "768x768", "--aug", "flip,scale-crop"],
            {"scale_range": (0.5, 2.0), "crop": (768, 768), "aug": ("flip", "scale-crop")},
        ),
        (["--aug", "flip,photometric"], {"aug": ("flip", "photometric")}),
        (["--aug", "none"], {"aug": ()}),
        (["--no-amp", "--amp"], {"amp": True}),
        (["--recipe", "strong", "--no-amp"], {"amp": False}),
        (["--encoder-weights", "none", "--cache", "none"], {"encoder_weights": None, "cache": None}),
        (
            ["--ohem-thresh", "0.5", "--ohem-min-kept", "1000", "--loss", "ohem"],
            {"ohem_thresh": 0.5, "ohem_min_kept": 1000, "loss": "ohem"},
        ),
        (
            ["--betas", "0.9,0.99", "--encoder-weight-decay-mult", "0.25"],
            {"betas": (0.9, 0.99), "encoder_weight_decay_mult": 0.25},
        ),
        (
            ["--momentum", "0.95", "--poly-power", "1.0", "--crop-max-class-ratio", "1"],
            {"momentum": 0.95, "poly_power": 1.0, "crop_max_class_ratio": 1.0},
        ),
        (["--schedule-epochs", "20", "--schedule-epochs", "none"], {"schedule_epochs": None}),
    ],
)
def test_documented_value_syntaxes(words, expected):
    config = config_from_args(training_parser().parse_args(words))
    assert {name: getattr(config, name) for name in expected} == expected
    untouched = resolve_config(config.recipe)
    assert {n for n, _, _ in field_differences(untouched, config, ("workers",))} <= set(expected)  # nothing else


@pytest.mark.parametrize("words", [["--size", "1024"], ["--size", "0x512"], ["--betas", "0.9"], ["--select", "best"]])
def test_bad_flag_values_are_usage_errors(words, capsys):
    with pytest.raises(SystemExit) as info:
        training_parser().parse_args(words)
    assert info.value.code == 2 and "error:" in capsys.readouterr().err


def test_help_shows_each_recipes_value():
    text = " ".join(training_parser().format_help().split())
    assert "[seed: 0.0001; strong: 0.0004]" in text and "[seed: loss; strong: last]" in text
    assert "[default: 0.7]" in text  # --ohem-thresh: no recipe changes it
    assert "--compile, --no-compile" in text and "--gpu-aug, --no-gpu-aug" in text
    assert text.count("[default: auto]") == 4  # --cache, --gpu-aug, --device, --compile: the machine decides


def test_machine_switches_stay_auto_unless_given():
    parser = training_parser()
    assert (config_from_args(parser.parse_args([])).compile, config_from_args(parser.parse_args([])).cache) == (
        None,
        "auto",
    )
    forced = config_from_args(parser.parse_args(["--compile", "--no-gpu-aug", "--cache", "none"]))
    assert (forced.compile, forced.gpu_aug, forced.cache) == (True, False, None)
    assert flag_args("compile", None) == [] and flag_args("compile", False) == ["--no-compile"]


def test_recipes_prints_every_field_value_and_source_of_every_recipe(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    cards = out.split("\n\nrecipe ")
    assert len(cards) == len(RECIPES)
    for card, recipe in zip(cards, RECIPES.values(), strict=True):
        config = resolve_config(recipe.name)
        flat = " ".join(card.split())
        for name in FIELDS[1:]:
            assert f"{name} {field_text(name, getattr(config, name))}" in flat, (recipe.name, name)
        for group in FIELD_GROUPS:
            assert " ".join(recipe.sources[group].split()) in flat
        for deviation in recipe.deviations:
            assert " ".join(deviation.split()) in flat


def test_recipes_diff_lists_exactly_the_differing_fields():
    result = subprocess.run(
        cityseg_command("recipes", "strong", "--diff", "seed"), env=CLI_ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = field_differences(resolve_config("strong"), resolve_config("seed"), ("recipe",))
    assert lines[0] == f"{len(expected)} fields differ between strong and seed:"
    assert [line.split()[:3] for line in lines[2:]] == [[n, value_text(a), value_text(b)] for n, a, b in expected]
    assert main(["recipes", "--diff", "seed"]) == 2  # which recipe to compare is missing
