"""The house's structure, checked on the source: one import namespace (`enginesweep.*`) and
one-way layers, build_configs <- engines <- evaluation <- flows (a lower layer never imports a
higher one, lazily inside a function either). docs/architecture.md says what each layer holds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("build_configs", "engines", "evaluation", "flows")  # lowest first
FOLDERS = (*LAYERS, "tests", "benchmarks")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in `path`, at any depth (functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _sources(*folders: str) -> list[Path]:
    return sorted(
        p
        for folder in folders
        for p in (REPO_ROOT / folder).rglob("*.py")
        if "fixtures" not in p.relative_to(REPO_ROOT).parts
    )


def test_the_code_imports_itself_only_through_the_enginesweep_namespace():
    """`import flows...` would work from the repository root and nowhere else (and would load a
    second copy of a module beside its `enginesweep.` one)."""
    bare = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {module}"
        for path in _sources(*FOLDERS)
        for line, module in _imports(path)
        if module.split(".")[0] in LAYERS
    ]
    assert bare == []


def test_no_layer_imports_a_higher_one():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for layer in LAYERS:
        for path in _sources(layer):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] == "enginesweep" and len(parts) > 1 and rank[parts[1]] > rank[layer]:
                    upward.append(f"{path.relative_to(REPO_ROOT)}:{line}: {module}")
    assert upward == []


def test_the_layers_test_sees_lazy_imports(tmp_path):
    """The walk finds an import inside a function, so a lazy upward import cannot hide."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from enginesweep.flows.trial import run_trial\n")
    assert _imports(source) == [(2, "enginesweep.flows.trial")]


def test_the_build_side_loads_no_planner():
    """A build-side import of the trial's config once loaded the whole planner (aiconfigurator,
    roofline, ...): the stacks must load without any module of evaluation.planning."""
    code = (
        "import sys, enginesweep.engines.stacks, enginesweep.engines.stacks.trtllm_engine, "
        "enginesweep.engines.stacks.trtllm_pytorch, enginesweep.engines.stacks.reference; "
        "print(sorted(m for m in sys.modules if m.startswith('enginesweep.evaluation')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert done.stdout.strip() == "[]", done.stdout
