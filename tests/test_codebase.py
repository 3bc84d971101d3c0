"""The codebase itself: every module of the five packages imports (nothing stale survives),
and no function outside the benchmarks is longer than 60 lines."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "preprocessing", "training", "evaluation", "infra")
MAX_FUNCTION_LINES = 60


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_function_over_60_lines_outside_benchmarks():
    long = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "benchmarks" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {n}")
    assert not long, long


def test_no_helpers_modules():
    assert not [p for p in ROOT.glob("*/**/helpers.py") if ".venv" not in p.parts]


def _project_imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Project modules ``path`` imports (module and ``module.name`` when that is a module);
    ``top_level_only``: not those imported inside functions."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        for m in mods:
            parts = m.split(".")
            if parts[0] in PACKAGES:
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def import_closure(entry: str) -> set[str]:
    """Files of every project module ``entry`` imports, transitively (relative paths)."""
    seen, todo, files = set(), [entry], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is not None:
            files.add(str(path.relative_to(ROOT)))
            todo += _project_imports(path)
    return files


@pytest.mark.parametrize(
    ("stage", "entry"),
    [
        ("prepare", "preprocessing.prepare"),
        ("train", "training.train"),
        ("evaluate", "evaluation.evaluate"),
        ("export", "training.onnx_export"),
    ],
)
def test_dvc_stage_depends_on_the_code_it_imports(stage, entry):
    import yaml

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    code = [d.rstrip("/") for d in deps if not d.startswith("$")]
    assert "pipelines/cli.py" in code
    # the CLI imports each stage's code inside its command: its module level counts
    cli = set()
    for module in _project_imports(ROOT / "pipelines" / "cli.py", top_level_only=True):
        cli |= import_closure(module)
    for file in sorted(import_closure(entry) | cli):
        assert any(file == d or file.startswith(d + "/") for d in code), (stage, file)
    assert not any("benchmarks" in d for d in code)
    assert "benchmarks/" in (ROOT / ".dvcignore").read_text().split()
