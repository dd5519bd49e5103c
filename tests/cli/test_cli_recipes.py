"""Training flags generated from TrainConfig (every field has one, values round-trip) and `cityseg recipes`."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess

import pytest
from helpers_training import CLI_ENV, cityseg_command

from cityseg.cli import main
from cityseg.cli.config_flags import add_config_arguments, config_from_args
from cityseg.training.config import (
    TrainConfig,
    field_differences,
    field_text,
    read_recipe,
    resolve_config,
    value_text,
)
from cityseg.training.recipes import BUILTIN, FIELD_GROUPS

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def flag_args(name: str, value) -> list[str]:
    """The command-line words that set field `name` to `value` (`--no-amp`, `--size 1024x512`; none for a switch
    left at auto): the inverse of the generated parser."""
    option = "--" + name.replace("_", "-")
    if value is None and dataclasses.fields(TrainConfig)[FIELDS.index(name)].type == "bool | None":
        return []
    if isinstance(value, bool):
        return [option if value else "--no-" + option[2:]]
    return [option, value_text(value)]


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
    assert "(default: seed 0.0001, strong 0.0004)" in text and "(default: seed loss, strong last)" in text
    assert "(default: 0.7)" in text  # --ohem-thresh: no recipe changes it
    assert "--compile, --no-compile" in text and "--gpu-aug, --no-gpu-aug" in text
    assert text.count("(default: auto)") == 4  # --cache, --gpu-aug, --device, --compile: the machine decides


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
    assert len(cards) == len(BUILTIN)
    for card, recipe in zip(cards, map(read_recipe, BUILTIN), strict=True):
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
    assert lines[1].split() == ["field", "strong", "seed"] and set(lines[2]) == {"-", " "}
    assert [line.split()[:3] for line in lines[3:]] == [[n, value_text(a), value_text(b)] for n, a, b in expected]
    assert main(["recipes", "--diff", "seed"]) == 2  # which recipe to compare is missing


def _recipe(folder, name: str, text: str):
    path = folder / name
    path.write_text(text)
    return path


def test_a_recipe_file_extends_a_built_in_and_runs_through_the_flags(tmp_path, capsys):
    mine = _recipe(tmp_path, "my.toml", 'extends = "seed"\narch = "fpn"\nencoder = "resnet18"\nloss = "ce+0.5*dice"\n')
    config = config_from_args(training_parser().parse_args(["--recipe", str(mine), "--epochs", "3"]))
    assert (config.arch, config.encoder, config.loss, config.epochs, config.lr) == (
        "FPN",
        "resnet18",
        "ce+0.5*dice",
        3,
        1e-4,
    )
    assert config.recipe == str(mine.resolve())
    assert TrainConfig.from_dict(config.to_dict()) == config  # a stored config does not need the file again
    assert main(["recipes", str(mine), "--diff", "seed"]) == 0
    diff = capsys.readouterr().out.splitlines()
    assert diff[0] == f"3 fields differ between {mine} and seed:"
    assert [line.split()[:3] for line in diff[3:]] == [
        ["loss", "ce+0.5*dice", "ce"],
        ["arch", "FPN", "Unet"],
        ["encoder", "resnet18", "resnet34"],
    ]
    assert main(["recipes", str(mine)]) == 0
    card = " ".join(capsys.readouterr().out.split())
    assert (
        "extends seed" in card and "(no source given in my.toml)" in card
    )  # the model changed: seed's source is not its
    assert (
        read_recipe("seed").sources["optimization"].split()[0] in card
    )  # an unchanged group keeps its parent's source


def test_extends_is_relative_to_the_file_and_values_override_the_parent(tmp_path):
    (tmp_path / "sub").mkdir()
    _recipe(tmp_path, "base.toml", 'extends = "strong"\nlr = 2e-4\nepochs = 50\n')
    child = _recipe(tmp_path / "sub", "child.toml", 'extends = "../base.toml"\nepochs = 20\ncrop = "512x256"\n')
    config = resolve_config(child)
    assert (config.lr, config.epochs, config.crop, config.optimizer) == (2e-4, 20, (512, 256), "adam")
    assert read_recipe(child).parents == (str((tmp_path / "base.toml").resolve()), "strong")


BAD_RECIPES = {
    "unknown-key": ('extends = "seed"\nlearning_rate = 0.1\n', "'learning_rate'.*valid keys are description.*lr"),
    "machine-key": ("workers = 4\n", "'workers'.*flags, not recipe values"),
    "wrong-type": ('lr = "fast"\n', "lr must be float.*'fast'"),
    "wrong-size": ('crop = "big"\n', "crop must be tuple"),
    "bad-value": ("lr = -1.0\n", "--lr.*greater than 0"),
    "bad-sources": ('[sources]\nmodels = "x"\n', "unknown group.*models.*optimization, schedule"),
    "bad-description": ("description = 3\n", "description must be a string"),
    "missing-parent": ('extends = "nope.toml"\n', "nope.toml does not exist.*seed, strong"),
    "cycle": ('extends = "cycle.toml"\n', "cycle"),
    "invalid-toml": ("lr = = 1\n", "cannot be read as TOML"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_a_bad_recipe_file_is_exit_2_naming_the_file_and_key_and_nothing_is_written(tmp_path, capsys, case):
    text, message = BAD_RECIPES[case]
    bad = _recipe(tmp_path, "cycle.toml" if case == "cycle" else "bad.toml", text)
    runs = tmp_path / "runs"
    assert main(["cv", str(tmp_path / "root"), "--out", str(runs), "--recipe", str(bad)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert str(bad) in error and re.search(message, error), error
    assert not runs.exists()
    assert main(["recipes", str(bad)]) == 2


@pytest.mark.parametrize(
    ("words", "flag"),
    [
        (["--seed", "99999999999999999999999"], "--seed"),
        (["--scale-range", "0.5,inf", "--crop", "64x64", "--aug", "flip,scale-crop"], "--scale-range"),
        (["--lr", "nan"], "--lr"),
        (["--size", "34359738368x32"], "--size"),
        (["--arch", "Unetz"], "--arch"),
    ],
)
def test_absurd_training_flags_are_exit_2_naming_the_flag(tmp_path, capsys, words, flag):
    assert main(["cv", str(tmp_path / "root"), "--out", str(tmp_path / "runs"), *words]) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_model_flags_are_never_read_as_prefixes():
    config = config_from_args(training_parser().parse_args(["--encoder", "resnet50", "--encoder-weights", "none"]))
    assert (config.encoder, config.encoder_lr_mult) == ("resnet50", 1.0)
    with pytest.raises(SystemExit):
        training_parser().parse_args(["--encoder-lr", "0.5"])  # a prefix of --encoder-lr-mult: no abbreviations


def test_the_notebook_takes_a_recipe_file_and_model_overrides_and_config_json_records_the_file(tmp_path):
    import hashlib

    from cityseg.report.notebook import training_config
    from cityseg.training.config import read_recipe

    mine = _recipe(tmp_path, "my.toml", 'extends = "seed"\nloss = "ce+0.5*dice"\n')
    overrides = {"arch": "fpn", "encoder": "resnet18"}
    config = training_config(str(mine), overrides, epochs=1, size="128x64", workers=0, encoder_weights="none")
    assert (config.arch, config.encoder, config.loss, config.size) == ("FPN", "resnet18", "ce+0.5*dice", (128, 64))
    record = read_recipe(config.recipe).record()  # what training/trainer.py writes into config.json
    assert record["sha256"] == hashlib.sha256(mine.read_bytes()).hexdigest() and record["file"] == str(mine.resolve())
    assert (
        record["extends"] == ["seed"] and record["values"]["loss"] == "ce+0.5*dice" and record["values"]["lr"] == 1e-4
    )
    assert read_recipe(resolve_config("strong").recipe).record()["values"]["crop"] == [768, 768]
