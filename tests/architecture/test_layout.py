"""The package layout is the pipeline: each folder imports only the stages before it (docs/ARCHITECTURE.md),
no module imports itself back through others, no module grows past 450 lines, and `cityseg --help` stays fast
by never importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cityseg"
LEAVES = {"__init__", "errors", "fileio", "locks", "labels", "system"}
# What each part of the package may import besides itself; the leaves import only leaves. This is the one
# import rule of docs/ARCHITECTURE.md: arrows point back along the pipeline, never forward, never into cli.
ALLOWED = {
    "leaves": set(),
    "data": {"leaves"},
    "synthetic": {"leaves", "data"},
    "training": {"leaves", "data"},
    "evaluation": {"leaves", "data"},
    "prediction": {"leaves", "data", "synthetic", "training", "evaluation"},
    "report": {"leaves", "data", "training", "evaluation", "prediction"},
    "cli": {"leaves", "data", "synthetic", "training", "evaluation", "prediction", "report"},
}
MAX_LINES = 450
COMMANDS = (
    "synth",
    "download",
    "prepare",
    "cache",
    "recipes",
    "cv",
    "train",
    "predict",
    "export",
    "evaluate",
    "submit",
    "report",
    "compare",
)


def part_of(module: str) -> str:
    """The layer of a dotted module name under cityseg: a subpackage's name, or "leaves"."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in LEAVES or parts[1] == "__main__":
        return "cli" if parts[-1] == "__main__" else "leaves"
    return parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every cityseg module `path` imports, at the top or inside a function: (line, dotted name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "cityseg"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "cityseg"
        ):
            # `from cityseg.data import cache` names the module cityseg.data.cache
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file() or (
                    PACKAGE.parent / Path(*candidate.split("."))
                ).is_dir()
                found.append((node.lineno, candidate if is_module else node.module))
    return found


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_part_of_reads_the_layers():
    assert part_of("cityseg") == "leaves" and part_of("cityseg.errors") == "leaves"
    assert part_of("cityseg.training.runfolder") == "training" and part_of("cityseg.cli.common") == "cli"
    assert part_of("cityseg.__main__") == "cli"


def test_imports_point_back_along_the_pipeline():
    upward = []
    for path in python_files():
        importer = module_name(path)
        own = part_of(importer)
        for line, imported in imported_modules(path):
            target = part_of(imported)
            if target != own and target not in ALLOWED[own]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {imported} ({target})")
    assert not upward, "imports against the pipeline (docs/ARCHITECTURE.md):\n" + "\n".join(upward)


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the import graph (module -> the cityseg modules it imports), or None when there is none."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return error.args[1]
    return None


def test_no_import_cycle_between_cityseg_modules():
    """Imports inside functions count too: a cycle is a design knot even when Python tolerates it at run time."""
    graph = {module_name(path): {name for _, name in imported_modules(path)} for path in python_files()}
    graph = {module: imported - {module} for module, imported in graph.items()}
    cycle = import_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import cityseg.training.cv\ndef f():\n    from cityseg.training.model import build_model\n")
    graph = {"cityseg.training.cv": {"cityseg.training.model"}, "x": {name for _, name in imported_modules(sample)}}
    graph["cityseg.training.model"] = {"x"}
    assert set(import_cycle(graph)) == {"cityseg.training.cv", "cityseg.training.model", "x"}
    assert import_cycle({"a": {"b"}, "b": set()}) is None


def test_no_library_module_imports_the_cli():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in python_files()
        if part_of(module_name(path)) != "cli"
        for line, imported in imported_modules(path)
        if part_of(imported) == "cli"
    ]
    assert not offenders


def test_the_import_check_sees_an_upward_import(tmp_path):
    """The checker itself: a library module importing the CLI inside a function is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from cityseg.cli.common import add_command\n    from cityseg.data import cache\n")
    assert imported_modules(sample) == [(2, "cityseg.cli.common"), (3, "cityseg.data.cache")]


def test_no_module_is_over_450_lines():
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in python_files()}
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these by responsibility: {too_long}"


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_no_torch(command):
    """`cityseg --help` and every `cityseg X --help` print without importing torch (it takes ~1 s to load)."""
    argv = [command, "--help"] if command else ["--help"]
    probe = (
        "import sys\n"
        "from cityseg.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: cityseg" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "False", f"`cityseg {command} --help` imported torch"


def test_the_code_is_ruff_formatted():
    """`ruff format` is the one code style (`make lint` runs the same check)."""
    root = PACKAGE.parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "bench", "scripts", "notebooks"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_module_docstrings_are_at_most_8_lines_and_no_module_is_compiled():
    """A module docstring says what and why (measurements live in BENCHMARKS.md); the package is pure Python."""
    long = {}
    for path in python_files():
        docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        if len(docstring.strip().splitlines()) > 8:
            long[str(path.relative_to(PACKAGE))] = len(docstring.strip().splitlines())
    assert not long, f"shorten these module docstrings to 8 lines: {long}"
    compiled = [p.name for p in PACKAGE.rglob("*") if p.suffix in {".c", ".cpp", ".pyx", ".so"}]
    assert not compiled and not (PACKAGE.parents[1] / "setup.py").exists(), compiled


def test_the_project_cites_only_files_it_holds():
    """No text the project ships points at a notes file or folder outside the repository."""
    root = PACKAGE.parents[1]
    shipped = [root / "README.md", root / "Makefile", *(root / "docs").rglob("*.md")]
    for folder in ("src", "scripts", "bench", "notebooks"):
        shipped += [p for p in (root / folder).rglob("*") if p.suffix in {".py", ".sh", ".md", ".toml", ".ipynb"}]
    outside = [str(p.relative_to(root)) for p in shipped if any(s in p.read_text() for s in ("NOTES.md", "../shared"))]
    assert not outside, f"these cite files the repository does not hold: {outside}"


def test_commit_subjects_are_at_most_72_characters():
    """Commit subjects fit one `git log --oneline` line; details go in the body (checked from df55d71 on)."""
    root = PACKAGE.parents[1]
    known = subprocess.run(["git", "cat-file", "-e", "df55d71^{commit}"], cwd=root, capture_output=True)
    if known.returncode != 0:
        pytest.skip("not a git clone of this repository's history")
    log = subprocess.run(
        ["git", "log", "--no-merges", "--format=%s", "df55d71..HEAD"], cwd=root, capture_output=True, text=True
    )
    too_long = [subject for subject in log.stdout.splitlines() if len(subject) > 72]
    assert not too_long, f"shorten these commit subjects (git commit --amend / rebase before pushing): {too_long}"
