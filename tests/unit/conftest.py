"""Unit tests plan with the roofline only, uncalibrated: aiconfigurator runs in its own venv as a
subprocess (seconds, not milliseconds) and is tested in tests/integration; each test runs in its
own empty folder, so no calibration.json of a developer's workspace is read."""

from __future__ import annotations

import pytest

from enginesweep.evaluation.planning.aiconfigurator import PYTHON_ENV


@pytest.fixture(autouse=True)
def _roofline_only(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(PYTHON_ENV, "/nonexistent/enginesweep-unit-tests/python")
    # Specs' default workspace is relative: a developer's own calibration.json must not leak in.
    monkeypatch.chdir(tmp_path)
