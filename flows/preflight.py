"""Checks that fail a run before any trial starts, each naming the field and the fix: a
workspace that cannot be written, an MLflow tracking server that does not answer, a GPU stack
whose files (TensorRT-LLM's scripts, Triton's templates, the server programs) are not on this
host.

They are cheap (a probe file, one HTTP request with a short timeout) because the alternative is
worse: MLflow's client retries an unreachable server for minutes, and a read-only workspace is
otherwise found after the first checkpoint conversion.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Predictor
from enginesweep.flows.sweep_settings import tracking_uri


class PreflightError(ValueError):
    """Bad input found before anything ran: `field: what is wrong; what to do`."""


def check_workspace(workspace: Path) -> None:
    """The workspace exists or can be created, and a file can be written in it."""
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        probe = workspace / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(
            f"workspace: {workspace} is not writable ({exc.strerror or exc}); "
            "point `workspace` at a folder you can write, or fix its "
            "permissions"
        ) from None


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) tracking URI answers MLflow's /health; file and sqlite URIs are local."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    health = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as answer:
            if answer.status == 200:
                return
            problem = f"answered HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        problem = f"answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        problem = f"cannot be reached ({getattr(exc, 'reason', exc)})"
    raise PreflightError(
        f"tracking.mlflow_uri: {uri} {problem} at {health}; start the MLflow "
        "server, fix the address, or remove the field to track in "
        "sqlite under the workspace"
    )


def preflight(resolved: ResolvedSpec) -> None:
    """Every check above, for the spec's workspace and tracking URI."""
    check_workspace(resolved.spec.workspace.resolve())
    check_tracking(tracking_uri(resolved))


def check_stack_files(resolved: ResolvedSpec, stacks: Sequence[Any]) -> None:
    """Every file and program the feasible trials of each stack will use on this host is there;
    `engines.trtllm.layout.LayoutError` names what is missing, the layouts probed and the fix.
    The plan here is the roofline's (feasibility does not depend on the predictor; it is fast)."""
    from enginesweep.engines.stacks.base import preflight_stack
    from enginesweep.evaluation.planning import expand

    plan = expand(resolved, predictor=Predictor.ROOFLINE, calibrated=False, top_k=None)
    for stack in stacks:
        configs = [t.config for t in plan.trials if t.feasible and t.stack == stack.name]
        if configs:
            preflight_stack(stack, configs, accuracy=bool(resolved.spec.accuracy.tasks))
