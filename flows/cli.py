"""The `enginesweep` command line: thin verbs over `build_configs`, `engines` and `evaluation`.

`flows.cli_plan` holds the planning verbs, `flows.cli_run` the ones that run things; both register
on the one Typer app of `flows.cli_common` (exit codes are documented there).
"""

from flows import cli_plan, cli_run  # noqa: F401 - importing registers the verbs
from flows.cli_common import app

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
