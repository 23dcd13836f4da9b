"""The `enginesweep` command line: thin verbs over `build_configs`, `engines` and `evaluation`.

`flows.cli_plan` and `flows.cli_size` hold the planning verbs, `flows.cli_calibrate` the closed
loop, `flows.cli_run` the ones that run things, `flows.cli_schedule` the schedules,
`flows.cli_report` the sweep report; all register
on the one Typer app of `flows.cli_common` (exit codes are documented there).
"""

# Importing each verb module registers its verbs on the app.
from enginesweep.flows import (  # noqa: F401
    cli_acceptance,
    cli_calibrate,
    cli_doctor,
    cli_gc,
    cli_plan,
    cli_quantize,
    cli_report,
    cli_run,
    cli_schedule,
    cli_size,
)
from enginesweep.flows.cli_common import app

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
