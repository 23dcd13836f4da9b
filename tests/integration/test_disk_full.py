"""Fault injection: a trial whose workspace is a small tmpfs that fills up while the checkpoint
is being quantized. The trial fails with a message that names the disk and the fix, its record
says so, and nothing half-written is left in the store (the space is given back).

The tmpfs lives in a private mount namespace (`unshare -rm`), so the check of what was left
runs inside it, before the namespace (and the tmpfs) goes away."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.tiny_sweep import write_tiny_sweep

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "enginesweep"
SLUG = "tiny__fp8__kv-auto__tp1"
# What the shell inside the namespace prints after the trial, between markers.
REPORT = """
echo "rc=$rc"
echo "---record"; cat "$WS/sweeps/tiny-sweep/{slug}/record.json"
echo "---tmp"; find "$WS" -name '*.tmp'
echo "---quantized"; ls "$WS/quantized"
echo "---df"; df -k --output=used "$WS" | tail -1
"""


def test_a_full_workspace_fails_the_trial_cleanly(tmp_path, tiny_llama_dir):
    assert shutil.which("unshare"), "unshare (util-linux) is needed for the tmpfs workspace"
    spec = write_tiny_sweep(tmp_path, tiny_llama_dir)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    # 12 MiB: room for the locks and the tasks, not for the FP8 checkpoint of the tiny model.
    script = (
        f'WS={workspace}; mount -t tmpfs -o size=12m tmpfs "$WS" || exit 90\n'
        f'"{SCRIPT}" trial {spec} --slug {SLUG} 2>"$WS/../stderr.txt"; rc=$?\n' + REPORT.format(slug=SLUG)
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode == 90:
        pytest.skip(f"no tmpfs in a user namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    sections = dict(part.split("\n", 1) for part in done.stdout.split("---")[1:])
    assert done.stdout.split("---")[0].splitlines()[-1] == "rc=1"
    message = " ".join((tmp_path / "stderr.txt").read_text().split())
    assert f"no space left on the disk of the workspace {workspace}" in message
    assert "`enginesweep gc SPEC` removes store entries nothing uses" in message
    record = json.loads(sections["record"])
    assert record["status"] == "failed"
    assert record["error"].startswith(f"no space left on the disk of the workspace {workspace}")
    assert sections["tmp"].strip() == ""  # no half-written checkpoint, record or bundle
    assert [line for line in sections["quantized"].split() if line != ".locks"] == []
    assert int(sections["df"].strip()) < 2048  # the space the failed write took is free again
