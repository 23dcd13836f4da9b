"""Resume speed: the smoke sweep (or SPEC) run cold, then again unchanged, in one workspace.
Prints both wall times, their ratio, and what each trial executed in the second run (from the
trials' own MLflow runs: `enginesweep.executed_stages`); the goal is no quantize, build,
benchmark or accuracy work and under 10% of the cold time. Asserts nothing.

Run: .venv/bin/python benchmarks/resume_speed.py [SPEC] [--workspace DIR]
(an existing workspace with a finished sweep makes the "cold" figure a warm one: use a new DIR)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "enginesweep"


def timed_run(spec: str, workspace: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(
        [str(SCRIPT), "run", spec, "--set", f"workspace={workspace}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return time.perf_counter() - start, done.returncode


def executed_stages(workspace: Path) -> dict[str, str]:
    """Stages per trial of the latest sweep run in the workspace's MLflow store."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("enginesweep")
    parent = client.search_runs(
        [experiment.experiment_id],
        "tags.`enginesweep.kind` = 'sweep'",
        order_by=["start_time DESC"],
        max_results=1,
    )[0]
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return {c.info.run_name: c.data.tags.get("enginesweep.executed_stages", "?") for c in children}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec", nargs="?", default="smollm2-cpu-smoke")
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    workspace = (args.workspace or Path(tempfile.mkdtemp(prefix="resume-speed-")) / "ws").resolve()
    cold, rc_cold = timed_run(args.spec, workspace)
    print(f"cold run:      {cold:8.1f} s (exit {rc_cold})")
    warm, rc_warm = timed_run(args.spec, workspace)
    print(f"unchanged run: {warm:8.1f} s (exit {rc_warm}) = {warm / cold:.1%} of the cold run")
    for slug, stages in sorted(executed_stages(workspace).items()):
        print(f"  {slug}: executed {stages}")


if __name__ == "__main__":
    main()
