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
