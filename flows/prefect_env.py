"""Embedded Prefect defaults, applied before `prefect` is imported (it reads its settings then).

Without a configured API, Prefect runs an ephemeral API on 127.0.0.1 whose database lives under
`<workspace>/prefect`; analytics are off. A user who has set PREFECT_API_URL (a Prefect server,
work pools) keeps it: these are defaults, not overrides.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
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
    database = _default_database(home)
    with key_lock(
        home / ".ephemeral-start.lock", "another sweep starting Prefect's API here", log=lambda _: None
    ):
        new = database is not None and not database.exists()
        seeded = new and _seed(database)
        # get_client starts the server (and waits for its health check); `hello` proves it answers.
        with get_client(sync_client=True) as client:
            client.hello()
        if new and not seeded:  # migrated just now, no flow run in it yet
            _keep_template(database)
    watch_children(PREFECT_SERVER)


TEMPLATE_DIR = Path("~/.cache/enginesweep/prefect")
"""Where a freshly migrated Prefect database is kept, one per Prefect version."""


def _default_database(home: Path) -> Path | None:
    """The ephemeral API's sqlite file under `home`, or None when a database URL is configured."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    path = home.resolve() / "prefect.db"
    return path if PREFECT_API_DATABASE_CONNECTION_URL.value() == f"sqlite+aiosqlite:///{path}" else None


def _template() -> Path:
    import prefect

    return TEMPLATE_DIR.expanduser() / f"prefect-{prefect.__version__}.db"


def _seed(database: Path) -> bool:
    """A new workspace's database starts as a copy of a migrated one: Prefect migrates an empty
    sqlite file on its first start, about 6 of the 10 CPU-seconds that start costs. The copy is
    of the same Prefect version; the server still checks the schema on start."""
    template = _template()
    if not template.is_file():
        return False
    partial = database.with_name(database.name + ".seeding")
    shutil.copyfile(template, partial)
    partial.rename(database)
    return True


def _keep_template(database: Path) -> None:
    """Keep the just-migrated database (no flow run in it yet) as the template, once per version:
    a consistent snapshot through sqlite's backup API, written beside and renamed into place."""
    template = _template()
    if template.is_file() or not database.is_file():
        return
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f"{template.name}.{os.getpid()}")
    source, target = sqlite3.connect(database), sqlite3.connect(partial)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    partial.rename(template)
