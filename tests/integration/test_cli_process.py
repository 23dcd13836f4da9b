"""The installed `enginesweep` console script as a real process, from a folder outside the
checkout: packaging (package data, entry point) and the JSON contract other tools read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "enginesweep"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_console_script_sizes_a_deployment_as_json(tmp_path):
    done = run(
        "size",
        "--model",
        "llama-3.1-405b",
        "--gpu",
        "H100-SXM-80GB",
        "--quant",
        "fp8",
        "--tp",
        "8",
        "--isl",
        "2048",
        "--osl",
        "512",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    trial = json.loads(done.stdout)
    assert trial["feasible"] is True
    assert trial["config"]["tp"] == 8
    # Run from another folder, the console script still finds aiconfigurator's venv.
    assert trial["predicted"]["source"] == "predicted:aiconfigurator"
    assert "h100_sxm / trtllm 1.3.0rc20" in trial["predicted"]["source_version"]


def test_console_script_validates_shipped_configs_from_anywhere(tmp_path):
    listing = run("ls", cwd=tmp_path)
    assert listing.returncode == 0
    done = run("validate", "smollm2-cpu-smoke", "llama-3.1-8b-h100", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok: ") == 2


def test_console_script_reports_bad_input_on_stderr_with_exit_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nstack: nope\n")
    done = run("plan", str(spec), "--json", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""  # nothing half-printed where a JSON reader looks
    assert "stack: Input should be 'reference', 'trtllm-engine' or 'trtllm-pytorch'" in done.stderr
