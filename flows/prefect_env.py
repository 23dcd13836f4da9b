"""Embedded Prefect defaults, applied before `prefect` is imported (it reads its settings then).

Without a configured API, Prefect runs an ephemeral API on 127.0.0.1 whose database lives under
`<workspace>/prefect`; analytics are off. A user who has set PREFECT_API_URL (a Prefect server,
work pools) keeps it: these are defaults, not overrides.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure_prefect(workspace: Path) -> None:
    """Point Prefect's home at the workspace and turn analytics off, unless already set."""
    home = Path(os.environ.setdefault("PREFECT_HOME", str((workspace / "prefect").resolve())))
    home.mkdir(parents=True, exist_ok=True)  # the ephemeral API's sqlite cannot create folders
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


PREFECT_SERVER = "prefect.server.api.server:create_app"  # in the ephemeral server's command line


def start_ephemeral_api(workspace: Path) -> None:
    """Start Prefect's ephemeral API now (it would start with the flow run), unless an API is
    configured. One process at a time per Prefect home: the server migrates its sqlite database
    on start, and two sweeps starting together on one workspace would do it at once. The server
    is handed to the janitor, so a SIGKILLed sweep does not leave it running."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.client.orchestration import get_client

    from enginesweep.engines.janitor import watch_children
    from enginesweep.engines.locks import key_lock

    home = Path(os.environ["PREFECT_HOME"])
    # get_client starts the server (and waits for its health check); `hello` proves it answers.
    with (
        key_lock(
            home / ".ephemeral-start.lock", "another sweep starting Prefect's API here", log=lambda _: None
        ),
        get_client(sync_client=True) as client,
    ):
        client.hello()
    watch_children(PREFECT_SERVER)
