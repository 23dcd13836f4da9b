"""`enginesweep doctor --stack trtllm-engine|trtllm-pytorch [--spec SPEC] [--json]`: every check
of `flows.gpu_doctor` for a GPU stack on this host, one line each (ok, detail, fix). Exit 0
only when every check passes, 1 otherwise, 2 for bad input."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated

import typer

from enginesweep.flows.cli_common import JsonOpt, SetOpt, _fail, app, out


class GpuStack(str, Enum):
    trtllm_engine = "trtllm-engine"
    trtllm_pytorch = "trtllm-pytorch"


@app.command()
def doctor(
    stack: Annotated[GpuStack, typer.Option("--stack", help="The GPU stack to check this host for.")],
    spec: Annotated[
        str | None,
        typer.Option(
            "--spec",
            help="A spec (path or shipped name) whose settings to check with: servers, "
            "trtllm_root/trtllm_paths, workspace, model, accuracy tasks.",
        ),
    ] = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Can this host run a GPU stack? TensorRT-LLM, the layout and every file a trial uses, GPUs,
    ModelOpt, the install profile, calibration text, disk, hub state and ports; each with a fix."""
    from enginesweep.build_configs.loading import SpecError, load_spec
    from enginesweep.flows.gpu_doctor import as_json, diagnose

    resolved = None
    if spec is not None:
        try:
            resolved = load_spec(spec, set_ or [])
        except SpecError as exc:
            raise _fail(str(exc)) from None
    elif set_:
        raise _fail("--set needs --spec (it overrides a field of the spec)")
    checks = diagnose(stack.value, resolved)
    if json_:
        sys.stdout.write(json.dumps(as_json(checks), indent=2) + "\n")
    else:
        for check in checks:
            out.print(check.line(), highlight=False, markup=False, soft_wrap=True)
        failed = sum(not check.ok for check in checks)
        out.print(
            f"{stack.value}: {len(checks) - failed} of {len(checks)} checks pass"
            + (f"; {failed} fail (see the fixes above)" if failed else ""),
            highlight=False,
        )
    if not all(check.ok for check in checks):
        raise typer.Exit(1)
