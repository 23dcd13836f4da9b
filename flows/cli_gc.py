"""`enginesweep gc`: free the store of the spec's workspace (see `flows.gc` for what is kept)."""

from __future__ import annotations

from typing import Annotated

import typer

from enginesweep.build_configs.loading import SpecError, load_spec
from enginesweep.flows.cli_common import ConfigArg, SetOpt, _fail, app, err, out


@app.command()
def gc(
    config: ConfigArg,
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")] = False,
) -> None:
    """Remove engine bundles and quantized checkpoints that no trial record names and no
    registered model version points to, and what crashed runs left half-written."""
    try:
        resolved = load_spec(config, set_ or [])
    except SpecError as exc:
        raise _fail(str(exc)) from None
    from enginesweep.engines.locks import GC_LOCK
    from enginesweep.flows.gc import GcBusy, collect_exclusive, registered_hashes
    from enginesweep.flows.sweep_settings import tracking_uri

    workspace = resolved.spec.workspace.resolve()
    if not workspace.is_dir():
        raise _fail(f"workspace: {workspace} does not exist; nothing to collect")
    uri = tracking_uri(resolved)
    try:
        registered = registered_hashes(uri)
    except Exception as exc:
        raise _fail(
            f"tracking.mlflow_uri: cannot read the model registry at {uri} ({exc}); gc "
            "never removes what a registered version points to, so it stops here"
        ) from None
    try:
        report = collect_exclusive(workspace, workspace / GC_LOCK, registered=registered, dry_run=dry_run)
    except GcBusy as exc:
        raise _fail(str(exc), code=1) from None
    verb = "would remove" if dry_run else "removed"
    for entry in report.removed:
        out.print(f"{verb} {entry.relative_to(workspace)}", highlight=False)
    for entry, why in report.skipped:
        err.print(f"skipped {entry}: {why}", highlight=False)
    out.print(
        f"{verb} {len(report.removed)} entries ({report.freed_bytes / 1e6:.1f} MB); kept "
        f"{len(report.kept)} referenced",
        highlight=False,
    )
