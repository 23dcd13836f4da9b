"""A real PostgreSQL server for a test: a fresh cluster in a temporary folder, on loopback.

`initdb` writes a throw-away cluster (trust authentication for loopback TCP and the unix socket,
nothing else) and `postgres` serves it on 127.0.0.1 at a free port, with its unix socket in the
same folder, so nothing of the machine's own PostgreSQL (Debian's `main` cluster, port 5432, its
socket in /var/run/postgresql) is used or touched. Durability is switched off (fsync, full-page
writes): the cluster dies with the test.

The server refuses to run as root. When the tests run as root (CI, this machine), initdb and
postgres run as the `postgres` system user that Debian's package creates, through `setpriv`
(it execs, so the process we start *is* the postmaster); the folder is made outside pytest's
tmp dir, which is private to root, and handed to that user. The binaries are Debian's
(`/usr/lib/postgresql/<major>/bin`, off PATH) or the first `initdb` on PATH elsewhere; missing
ones are an error naming `scripts/setup-test-services`, never a skip.

The postmaster runs in a process session of its own and is always stopped: `pg_ctl stop -m fast`,
then, as a fallback, its process group and its children by pid (each postgres child calls
setsid(), so no group or session holds them all), then the folder is removed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from enginesweep.engines.processes import STAT_PPID, pids_where, stop_process_group, wait_ready
from enginesweep.engines.triton.server import free_port

DEBIAN_BINARIES = Path("/usr/lib/postgresql")
SETUP_HINT = "run scripts/setup-test-services (it installs Debian's postgresql package)"
READY_TIMEOUT_S = 60.0
SUPERUSER = "enginesweep"
# Only loopback and the private unix socket, and no passwords: the server lives for one test.
PG_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


def find_postgres_bindir(search: Sequence[Path] = (DEBIAN_BINARIES,)) -> Path | None:
    """The folder of the newest PostgreSQL server binaries (initdb, postgres, pg_ctl), or None.

    Debian keeps them in `/usr/lib/postgresql/<major>/bin`; elsewhere `initdb` is on PATH."""
    found = [initdb.parent for root in search for initdb in root.glob("*/bin/initdb")]
    if found:
        return max(found, key=lambda bindir: _major(bindir.parent.name))
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _major(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def require_postgres(search: Sequence[Path] = (DEBIAN_BINARIES,)) -> Path:
    """The server binaries' folder; missing ones are an error with the fix, never a skip."""
    bindir = find_postgres_bindir(search)
    if bindir is None or not all((bindir / tool).exists() for tool in ("initdb", "postgres", "pg_ctl")):
        raise RuntimeError(
            f"PostgreSQL server binaries not found (no initdb under "
            f"{', '.join(str(root) for root in search)}/*/bin nor on PATH): "
            f"{SETUP_HINT}"
        )
    return bindir


def _run_as() -> list[str]:
    """The prefix that runs a command as the user the server may run as: `postgres` under root
    (setpriv execs, so a Popen's pid is the server's own), nothing otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, and there is no 'postgres' system user to run the "
            f"server as (PostgreSQL refuses root): {SETUP_HINT}"
        ) from None
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


@dataclass
class PostgresServer:
    """One throw-away PostgreSQL cluster served on 127.0.0.1:`port`, database `database`."""

    bindir: Path
    database: str = "mlflow"
    port: int = field(default_factory=free_port)
    root: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def sqlalchemy_uri(self) -> str:
        """The URI MLflow takes (SQLAlchemy with the psycopg2 driver), over loopback TCP."""
        return self.uri_for(self.database)

    def uri_for(self, database: str) -> str:
        """The SQLAlchemy URI of another database of this server."""
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def _as_server_user(self, *command: str | Path, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*_run_as(), *map(str, command)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **kwargs,
        )

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> PostgresServer:
        """initdb, start the postmaster, wait until it answers, create `database`."""
        prefix = _run_as()
        # Not under pytest's basetemp: /tmp/pytest-of-root is 0700, the postgres user could not
        # reach a folder inside it.
        self.root = Path(tempfile.mkdtemp(prefix="enginesweep-pg-"))
        try:
            (self.root / "socket").mkdir()
            if prefix:
                owner = pwd.getpwnam("postgres")
                for path in (self.root, self.root / "socket"):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            data = self.root / "data"
            done = self._as_server_user(
                self.bindir / "initdb",
                "--pgdata",
                data,
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
            (data / "pg_hba.conf").write_text(PG_HBA)
            if prefix:
                os.chown(data / "pg_hba.conf", owner.pw_uid, owner.pw_gid)
            settings = {
                "listen_addresses": "127.0.0.1",
                "port": str(self.port),
                "unix_socket_directories": str(self.root / "socket"),
                "fsync": "off",
                "full_page_writes": "off",
                "synchronous_commit": "off",
            }
            command = [*prefix, str(self.bindir / "postgres"), "-D", str(data)]
            for key, value in settings.items():
                command += ["-c", f"{key}={value}"]
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            wait_ready(
                self.process,
                self._accepts_connections,
                timeout_s=timeout_s,
                what="postgres",
                log_tail=lambda: self.log_path.read_text(errors="replace")[-3000:],
            )
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def _accepts_connections(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(
                host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", connect_timeout=2
            ).close()
        except psycopg2.OperationalError:
            return False
        return True

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name` (owned by the superuser the stores connect as)."""
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def query(self, sql: str, params: Sequence[object] = (), database: str | None = None) -> list[tuple]:
        """Rows of one SQL query on `database` (this server's own by default), straight through
        psycopg2 (no MLflow)."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database or self.database
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            connection.close()

    def stop(self) -> None:
        """Fast shutdown through pg_ctl, then the whole process group as a fallback, then the
        folder. Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None and self.root is not None:
                # A fast shutdown rolls back open sessions (MLflow's pooled connections) at once.
                self._as_server_user(
                    self.bindir / "pg_ctl",
                    "stop",
                    "--pgdata",
                    self.root / "data",
                    "--mode",
                    "fast",
                    "--wait",
                    "--timeout",
                    "30",
                )
            # Fallback for a postmaster pg_ctl could not stop. Its children call setsid() each,
            # so its process group does not hold them: they are killed by pid.
            children = _children(process.pid)
            stop_process_group(process)
            for pid in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        root, self.root = self.root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    return pids_where(STAT_PPID, pid)


@contextlib.contextmanager
def running_postgres(database: str = "mlflow") -> Iterator[PostgresServer]:
    """A started server, stopped (and its folder removed) whatever happens in the block."""
    server = PostgresServer(require_postgres(), database=database)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the module's tests, database `mlflow`; always stopped."""
    with running_postgres() as server:
        yield server
