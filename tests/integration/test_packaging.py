"""What `pip install` of the project puts into site-packages: one top-level package,
`enginesweep`, with the four folders under it and their package data (docs/decisions.md, "One
import namespace")."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_puts_only_enginesweep_at_the_top_of_site_packages(tmp_path):
    target = tmp_path / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (record,) = target.glob("enginesweep-*.dist-info/RECORD")
    paths = [row[0] for row in csv.reader(record.read_text().splitlines())]
    # The console script is recorded as ../../bin/enginesweep (outside site-packages), not a module.
    tops = {path.split("/")[0] for path in paths if not path.startswith("../")}
    assert [p for p in paths if p.startswith("../")] == ["../../bin/enginesweep"]
    dist_info = record.parent.name
    assert tops == {"enginesweep", dist_info}, sorted(tops)
    for folder in ("build_configs", "engines", "evaluation", "flows"):
        assert f"enginesweep/{folder}/__init__.py" in paths
    # Package data travels under the namespace too.
    assert "enginesweep/build_configs/gpus.yaml" in paths
    assert any(p.startswith("enginesweep/engines/trtllm/flags/") and p.endswith(".json") for p in paths)
    assert any(p.startswith("enginesweep/evaluation/planning/published/") for p in paths)
    assert (target / dist_info / "top_level.txt").read_text().split() == ["enginesweep"]
    # The installed copy runs from anywhere, with no repository on the path.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "import enginesweep.build_configs.loading as loading; "
            "print(loading.__file__); print(loading.load_spec('smollm2-cpu-smoke').spec.name)",
            str(target),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    module_file, name = done.stdout.split()
    assert Path(module_file).is_relative_to(target), module_file
    assert name == "smollm2-cpu-smoke"
