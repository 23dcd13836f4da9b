"""The GPU install profile against TensorRT-LLM 1.2's package versions.

NVIDIA's images pin transformers 4.57.1, nvidia-modelopt 0.37, datasets 3.1.0, numpy<2 and (through
transformers) huggingface_hub<1, where the reference stack runs transformers 5, ModelOpt 0.47 and
hub 1.x. `.venv-trtllm` (scripts/setup-trtllm-env) is an environment of that shape on this CPU,
with `.[gpu]` put in by scripts/setup-gpu. Tests marked `container` must pass there too:
`test_the_container_tests_pass_in_the_trtllm_environment` runs them in it from the main suite, and
the two module-level checks below run in both environments. The acceptance check resolves
`.[gpu]` under constraints-trtllm-1.2.txt with pip itself (needs PyPI). See docs/decisions.md,
"GPU install profile and the container-shaped environment".
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
TRTLLM_PYTHON = REPO_ROOT / ".venv-trtllm" / "bin" / "python"
CONSTRAINTS = REPO_ROOT / "constraints-trtllm-1.2.txt"
FOLDERS = ("build_configs", "engines", "evaluation", "flows")
PACKAGES = tuple(f"enginesweep.{folder}" for folder in FOLDERS)
# The container tests: the recipes' ModelOpt configs, the checkpoint fetch against olah, the
# trtllm-pytorch stack's real ModelOpt export (a tiny MoE's too), the trtllm-engine stack with
# stand-ins, this file.
CONTAINER_PATHS = (
    "tests/unit/test_quant_recipes.py",
    "tests/integration/test_checkpoint_fetch.py",
    "tests/integration/test_trtllm_pytorch_stack.py",
    "tests/integration/test_trtllm_engine_stack.py",
    "tests/integration/test_gpu_layouts.py",
    "tests/integration/test_tiny_moe.py",
    "tests/integration/test_container_profile.py",
)
# What must be among them whatever else is marked (brief: FP8, FP8 + FP8 KV, INT4-AWQ exports; the
# fetch with hub<1; an engine-stack trial; every module imported).
REQUIRED = (
    "test_a_real_unified_hf_export_is_recorded_in_the_bundle[fp8-auto]",
    "test_a_real_unified_hf_export_is_recorded_in_the_bundle[fp8-fp8]",
    "test_a_real_unified_hf_export_is_recorded_in_the_bundle[int4_awq-auto]",
    "test_warm_cache_serves_a_pinned_commit_with_the_hub_gone",
    "test_a_sweep_trial_whose_build_runs_out_of_memory_is_recorded_as_failed",
    "test_every_module_of_the_four_packages_imports",
    "test_an_export_that_lost_experts_or_changed_top_k_is_refused",
    "test_gpu_acceptance_on_a_fake_gpu_runs_both_stacks_and_writes_the_summary",
)
# Modules that import only inside another process: Triton's Python backend loads this one as
# `model.py` (its `triton_python_backend_utils` exists only there).
RUNS_ELSEWHERE = {"enginesweep.engines.triton.reference_model": "triton_python_backend_utils"}
# Third-party modules the code imports (lazily) that no environment of ours installs: NVIDIA's
# image has tensorrt_llm, Triton's backend triton_python_backend_utils, and aiconfigurator runs
# from its own .venv-aic as a subprocess.
NOT_OURS = {"tensorrt_llm", "triton_python_backend_utils", "aiconfigurator"}
# The GPU stacks' side: what a trial of trtllm-engine/trtllm-pytorch and the CLI can reach.
GPU_SEEDS = tuple(
    f"enginesweep.{seed}"
    for seed in (
        "engines.stacks.trtllm_engine",
        "engines.stacks.trtllm_pytorch",
        "engines.llmapi",
        "engines.trtllm",
        "flows",
        "evaluation",
    )
)
PROTECTED = ("torch", "transformers", "nvidia-modelopt", "numpy", "datasets", "huggingface-hub")

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
failed = {}
for package in sys.argv[1:]:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        try:
            importlib.import_module(info.name)
        except BaseException as error:
            failed[info.name] = f"{type(error).__name__}: {error}"
print(json.dumps(failed))
"""


def _modules() -> dict[str, Path]:
    """Every module of the four packages -> its file."""
    found = {}
    for folder, package in zip(FOLDERS, PACKAGES):
        root = REPO_ROOT / folder
        found[package] = root / "__init__.py"
        for info in pkgutil.walk_packages([str(root)], package + "."):
            path = root.joinpath(*info.name.split(".")[2:])
            found[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return found


def _imports(path: Path) -> set[str]:
    """Every module name `path` imports anywhere (functions too), `from a import b` as a and a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.container
def test_every_module_of_the_four_packages_imports():
    """In a fresh interpreter, as a user's would: no module needs what only `.[reference]` brings."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *PACKAGES],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads(done.stdout.splitlines()[-1])
    assert set(failed) == set(RUNS_ELSEWHERE), failed
    for module, missing in RUNS_ELSEWHERE.items():
        assert failed[module] == f"ModuleNotFoundError: No module named '{missing}'"
    assert len(_modules()) > 100  # the walk found the packages, not an empty tree


@pytest.mark.container
def test_every_import_the_gpu_stacks_can_reach_is_installed_here():
    """Lazy imports too: follow the project's own imports from the GPU stacks, the CLI and the
    measure side, and find every third-party module they name in this environment."""
    modules = _modules()
    todo = [m for m in modules if any(m == s or m.startswith(s + ".") for s in GPU_SEEDS)]
    seen, outside = set(todo), {}
    while todo:
        module = todo.pop()
        for name in _imports(modules[module]):
            top = name.split(".")[0]
            if top == "enginesweep":
                if name in modules and name not in seen:
                    seen.add(name)
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                outside.setdefault(top, set()).add(module)
    assert {"enginesweep.engines.quantize.hf_export", "enginesweep.engines.checkpoints"} <= seen
    missing = {
        top: sorted(where)
        for top, where in outside.items()
        if top not in NOT_OURS and importlib.util.find_spec(top) is None
    }
    assert missing == {}, f"imported by the GPU side but not installed here: {missing}"


def _trtllm_versions() -> dict[str, str]:
    probe = (
        "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
        f"{list(PROTECTED)!r}}}))"
    )
    done = subprocess.run(
        [str(TRTLLM_PYTHON), "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def trtllm_env() -> dict[str, str]:
    """.venv-trtllm's versions of the protected packages; a missing env is an error with the fix."""
    if not TRTLLM_PYTHON.exists():
        pytest.fail(
            f"{TRTLLM_PYTHON} is missing: run scripts/setup-trtllm-env (scripts/setup-test-services runs it)"
        )
    return _trtllm_versions()


def test_the_trtllm_environment_holds_tensorrt_llm_1_2_s_versions(trtllm_env):
    from packaging.version import Version

    assert trtllm_env["transformers"] == "4.57.1"
    assert Version(trtllm_env["nvidia-modelopt"]).release[:2] == (0, 37)
    assert trtllm_env["datasets"] == "3.1.0"
    assert Version(trtllm_env["numpy"]) < Version("2")
    assert Version(trtllm_env["huggingface-hub"]) < Version("1")
    assert Version(trtllm_env["torch"]).base_version == "2.13.0"  # THE deviation (CPU build)


def test_the_container_tests_pass_in_the_trtllm_environment(trtllm_env, tmp_path):
    """Every test marked `container` passes in .venv-trtllm: as many as this environment
    collects, the required ones among them, none skipped."""
    collect = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "container",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",  # in this process: the outer suite's worker is already one of the two
            "--collect-only",
            "-q",
            *CONTAINER_PATHS,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert collect.returncode == 0, collect.stdout[-3000:]
    # As junit names them: dotted module path and test name.
    expected = {
        line.replace(".py::", "::").replace("/", ".") for line in collect.stdout.splitlines() if "::" in line
    }
    assert set(REQUIRED) <= {name.split("::", 1)[1] for name in expected}
    report = tmp_path / "junit.xml"
    done = subprocess.run(
        [
            str(TRTLLM_PYTHON),
            "-m",
            "pytest",
            "-m",
            "container",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",  # in this process: the outer suite's worker is already one of the two
            f"--junitxml={report}",
            "-q",
            *CONTAINER_PATHS,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, output
    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcomes = {
        f"{case.get('classname')}::{case.get('name')}": {child.tag for child in case} for case in cases
    }
    assert set(outcomes) == expected, output
    not_passed = {name: tags for name, tags in outcomes.items() if tags & {"skipped", "failure", "error"}}
    assert not_passed == {}, output
    assert f"{len(expected)} passed" in done.stdout, output
    print(done.stdout[-3000:])


def test_the_gpu_extra_resolves_under_tensorrt_llm_1_2_s_pins(trtllm_env, tmp_path):
    """The acceptance check: pip itself fits `.[gpu]` around constraints-trtllm-1.2.txt (torch
    replaced by the environment's own build, the named deviation) and moves none of the
    protected packages, both in .venv-trtllm as it is and resolved from nothing."""
    constraints = tmp_path / "constraints.txt"
    lines = [
        line
        for line in CONSTRAINTS.read_text().splitlines()
        if not (line.startswith("torch") and line[5:6] in "<>=~!; ")
    ]
    assert len(lines) < len(CONSTRAINTS.read_text().splitlines())  # TensorRT-LLM's torch line went
    constraints.write_text("\n".join([*lines, f"torch=={trtllm_env['torch']}", ""]))

    def dry_run(report: Path, *extra: str) -> dict:
        done = subprocess.run(
            [
                str(TRTLLM_PYTHON),
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--quiet",
                "--report",
                str(report),
                *extra,
                "-c",
                str(constraints),
                "-e",
                ".[gpu]",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        return {
            item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]
        }

    # In the environment as it is: nothing protected would be installed or changed.
    installs = dry_run(tmp_path / "as-is.json")
    assert not set(installs) & set(PROTECTED), installs
    assert "enginesweep" in installs  # the report is of this very install
    # From nothing (a fresh image's view of the profile's closure): every protected package
    # that `.[gpu]` needs at all resolves to the version the environment holds.
    resolved = dry_run(tmp_path / "fresh.json", "--ignore-installed")
    assert {"prefect", "mlflow", "aiperf", "lm-eval", "numpy", "transformers"} <= set(resolved)
    assert {name: resolved[name] for name in PROTECTED if name in resolved} == {
        name: trtllm_env[name] for name in PROTECTED if name in resolved
    }
    print("resolved:", {name: resolved[name] for name in ("prefect", "mlflow", "aiperf", "lm-eval")})


def test_setup_gpu_runs_again_changing_nothing_under_the_images_pip_constraint(trtllm_env, tmp_path):
    """scripts/setup-gpu, the one command users run in the image, a second time in .venv-trtllm:
    a PIP_CONSTRAINT the image sets is applied and its names are protected; nothing is added or
    moved. A PIP_CONSTRAINT naming a missing file stops it before pip runs."""
    probe = "import importlib.metadata as m; print(m.version('rich'))"
    rich = subprocess.run(
        [str(TRTLLM_PYTHON), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    image_constraints = tmp_path / "constraint.txt"
    image_constraints.write_text(f"rich=={rich}\n")
    command = ["scripts/setup-gpu", "--python", str(TRTLLM_PYTHON)]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PIP_CONSTRAINT": str(image_constraints)},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"the image's PIP_CONSTRAINT applies to every pip call: {image_constraints}" in done.stdout
    assert "0 packages added; 0 unprotected packages changed" in done.stdout
    assert "protected packages unchanged, `pip check` reports nothing new" in done.stdout
    protected = (REPO_ROOT / "build" / "setup-gpu" / ".venv-trtllm" / "protected.txt").read_text()
    assert f"rich=={rich}" in protected.splitlines()
    assert {f"{name}=={trtllm_env[name]}" for name in ("transformers", "datasets", "numpy")} <= set(
        protected.splitlines()
    )
    missing = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_CONSTRAINT": str(tmp_path / "absent.txt")},
        check=False,
    )
    assert missing.returncode != 0
    assert f"PIP_CONSTRAINT names {tmp_path / 'absent.txt'}, which does not exist" in missing.stderr
