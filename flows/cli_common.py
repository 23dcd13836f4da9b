"""What every `enginesweep` verb shares: the Typer app, consoles, option types and `_fail`.

Exit codes: 0 success; 1 the command ran but found nothing usable (a plan with no feasible
trial, a failed trial); 2 bad input (an invalid spec, an unknown option value), with every
problem on stderr; 3 a sweep finished partially; 130 interrupted.
"""

from __future__ import annotations

import os
import signal
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="Sweep TensorRT-LLM engines (quantization x parallelism), measure them and promote the "
    "best one under your SLA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 200  # logs and pipes: a wide table beats one wrapped into 80 columns

ConfigArg = Annotated[
    str, typer.Argument(help="A spec file path, or a shipped config name (`enginesweep ls`).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a spec field: KEY.PATH=VALUE (VALUE is YAML, e.g. axes.tp=[1,2])."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so servers and load generators are stopped; the
    request is also recorded, so that waits raise it again if a library swallowed this one."""
    from enginesweep.engines.interrupts import request_stop

    request_stop(f"signal {signum}")
    raise KeyboardInterrupt(f"signal {signum}")


def handle_sigterm() -> None:
    signal.signal(signal.SIGTERM, raise_interrupt)
