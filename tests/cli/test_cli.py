"""CLI exit codes: help works for every command, usage errors and UserErrors exit 2 without a traceback."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

import pytest

from cityseg.cli import build_parser, main


def _command_names() -> list[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")  # argparse keeps them here
    return sorted(subparsers.choices)


def test_prepare_is_registered():
    assert "prepare" in _command_names()


@pytest.mark.parametrize("name", _command_names())
def test_help_of_every_command_exits_0(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert name in capsys.readouterr().out


def test_top_level_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "prepare" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_user_error_exits_2_with_one_paragraph_and_no_traceback(tmp_path, capsys):
    missing = tmp_path / "cityscapes"
    assert main(["prepare", str(missing)]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the CLI wraps the paragraph
    assert err.startswith("error:") and "does not exist" in err and "cityscapes" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["prepare", "{root}", "--debug"], ["--debug", "prepare", "{root}"]])
def test_debug_shows_the_traceback(tmp_path, capsys, argv):
    missing = str(tmp_path / "cityscapes")
    assert main([a.format(root=missing) for a in argv]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the CLI wraps the paragraph
    assert "Traceback" in err and "UserError" in err and "does not exist" in err


def test_a_bug_exits_1_with_traceback(tmp_path, capsys, monkeypatch):
    import cityseg.data.prepare

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cityseg.data.prepare, "prepare_dataset", broken)
    assert main(["prepare", str(tmp_path)]) == 1
    err = " ".join(capsys.readouterr().err.split())  # the CLI wraps the paragraph
    assert "Traceback" in err and "bug" in err


def test_prepare_command_counts_converted_and_skipped(synth_raw_root, tmp_path, capsys):
    root = tmp_path / "cityscapes"
    shutil.copytree(synth_raw_root, root)
    n_json = len(list(root.glob("gtFine/*/*/*_gtFine_polygons.json")))
    assert main(["prepare", str(root), "--workers", "1"]) == 0
    assert f"{n_json} converted, 0 skipped" in capsys.readouterr().out
    assert main(["prepare", str(root), "--workers", "1"]) == 0
    assert f"0 converted, {n_json} skipped" in capsys.readouterr().out


def test_user_error_in_a_real_process_exits_2_without_traceback(synth_raw_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "cityseg", "prepare", str(synth_raw_root / "leftImg8bit")]
    result = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(synth_raw_root.resolve()) in " ".join(result.stderr.split())  # names the folder meant


_HALF_BUILT_ON_CTRL_C = """
import argparse, sys
import cityseg.cli as cli


class HalfBuilt:
    def __init__(self):
        raise KeyboardInterrupt  # Ctrl-C inside a constructor, as it can land in tqdm's before its fields exist

    def __del__(self):
        self.pos  # noqa: B018 - AttributeError when collected, as tqdm's close() fails on a half-built bar


def run(args):
    HalfBuilt()


parser = argparse.ArgumentParser()
parser.add_argument("--debug", action="store_true")
parser.set_defaults(func=run)
cli.build_parser = lambda: parser
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_ctrl_c_in_a_constructor_exits_130_without_a_traceback(debug):
    done = subprocess.run(
        [sys.executable, "-c", _HALF_BUILT_ON_CTRL_C, *(["--debug"] if debug else [])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130
    assert done.stderr.strip().splitlines()[0] == "interrupted"
    if debug:  # --debug keeps Python's reports of what the interrupt left behind
        assert "Exception ignored" in done.stderr
    else:
        assert done.stderr.strip() == "interrupted", done.stderr


# ----------------------------------------------------------------------------------------------------------
# Help texts and next: hints
# ----------------------------------------------------------------------------------------------------------

# The metavars of the whole CLI: numbers N (counts), X (reals), K (a fold), FACTOR; sizes WxH; files and folders by
# what they hold; names by what they name. A new option's metavar joins this list or uses one of it.
METAVARS = {"N", "X", "K", "FACTOR", "WxH", "LO,HI", "A,B", "LIST", "DIR", "FILE", "PATH", "PDF", "ROOT", "RUNS"}
METAVARS |= {"OUT", "CHECKPOINT", "PRED_DIR", "EVAL_JSON", "NAME", "NAME|FILE", "OTHER", "DEVICE", "ARCH", "ENCODER"}
METAVARS |= {"LOSS", "COMMAND"}


def _subparsers() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


@pytest.mark.parametrize("name", _command_names())
def test_help_has_one_default_style_no_python_words_and_the_cli_metavars(name):
    parser = _subparsers()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.help:
            continue
        text = formatter._expand_help(action)  # the help line as --help prints it, default added
        where = f"{name} {'/'.join(action.option_strings) or action.dest}: {text}"
        assert text.count("(default:") <= 1 and "[default" not in text and "[seed:" not in text, where
        assert not re.search(r"\b(None|True|False)\b|\bmeans\b", text), where
        takes_value = action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if takes_value and not action.choices and action.dest not in ("help", "debug"):
            assert action.metavar in METAVARS, where  # never argparse's own DEST-in-capitals
    description = parser.description or ""
    assert not re.search(r"\b(None|True|False)\b", description), name


def test_cv_ends_with_what_to_run_next(one_epoch_cv, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(one_epoch_cv.runs, runs, copy_function=os.link)  # finished: --resume trains nothing
    options = ["--folds", "2", "--epochs", "1", "--size", "128x64", "--workers", "0", "--device", "cpu"]
    options += ["--encoder-weights", "none", "--lr", "1e-3", "--resume"]
    assert main(["cv", str(one_epoch_cv.root), "--out", str(runs), *options]) == 0
    lines = capsys.readouterr().out.splitlines()
    hints = lines[lines.index(next(line for line in lines if line.startswith("next: "))) :]
    assert hints[0].startswith(f"next: cityseg predict {runs / 'full' / 'best.pt'} {one_epoch_cv.root} ")
    assert [line.split()[1 if i else 2] for i, line in enumerate(hints)] == ["predict", "evaluate", "report"]
    assert all(command in _command_names() for command in ("predict", "evaluate", "report"))


def test_output_into_a_closed_pipe_ends_quietly_with_141():
    """`cityseg recipes | head -1`: the reader left; no BrokenPipeError traceback, the shell's SIGPIPE code."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before anything is written, so the first write fails
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cityseg", "recipes"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
