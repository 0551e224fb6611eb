"""A real PostgreSQL server on loopback for the tests and the benchmark.

`initdb` makes a throwaway cluster in a temporary folder; `postgres` runs in the foreground on
127.0.0.1 on a free port (and a Unix socket in that folder), local connections trusted for the
superuser, TCP connections with a password (scram-sha-256, the superuser's too), as a real
server asks. Two roles:
the project's owner (`provisioner_owner`, which owns the database `provisioner`: administrators
and the scheduled job) and a read-only probe (`provisioner_reader`). The server refuses to run as
root: as root it runs as the `postgres` user (Debian's package creates it). It runs on the
system's clock (tests/realtime.py) and without fsync (a test never outlives its machine).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.realtime import server_env

OWNER = "provisioner_owner"
OWNER_PASSWORD = "Pg-Owner-Test-Password-1"  # test only
PROBE = "provisioner_reader"
PROBE_PASSWORD = "Pg-Probe-Test-Password-1"  # test only
ADMIN_PASSWORD = "Pg-Admin-Test-Password-1"  # test only: the superuser's, over TCP
DATABASE = "provisioner"


def bindir() -> Path | None:
    """The folder of initdb and postgres: Debian's /usr/lib/postgresql/N/bin (the newest),
    else PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _server_user() -> str | None:
    """Who runs the server: the postgres user when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        return ""


def available() -> bool:
    folder = bindir()
    if folder is None or not (folder / "postgres").is_file():
        return False
    return _server_user() != ""  # root without a postgres user cannot run it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    base: Path
    port: int
    user: str | None  # the Unix user the server runs as (None: this one)
    process: subprocess.Popen[bytes] | None = None
    fsync: bool = False  # the tests need no durability; the benchmark does

    @property
    def data(self) -> Path:
        return self.base / "data"

    def dsn(self, role: str = OWNER, password: str | None = None) -> str:
        """A DSN over TCP with the role's password (what a manifest's secret holds)."""
        secret = password or (OWNER_PASSWORD if role == OWNER else PROBE_PASSWORD)
        return f"postgresql://{role}:{secret}@127.0.0.1:{self.port}/{DATABASE}"

    def superuser(self, database: str = DATABASE) -> Any:
        """A psycopg connection as the superuser, over the Unix socket (autocommit)."""
        import psycopg

        return psycopg.connect(
            host=str(self.base), port=self.port, user="postgres", dbname=database, autocommit=True
        )

    def sql(self, *statements: str, database: str = DATABASE) -> list[tuple[Any, ...]]:
        """Run statements as the superuser; the rows of the last one that returns any."""
        rows: list[tuple[Any, ...]] = []
        with contextlib.closing(self.superuser(database)) as conn:
            for statement in statements:
                cursor = conn.execute(statement.encode())
                if cursor.description is not None:
                    rows = [tuple(r) for r in cursor.fetchall()]
        return rows

    def start(self) -> None:
        folder = bindir()
        assert folder is not None
        process = subprocess.Popen(
            [
                str(folder / "postgres"),
                "-D",
                str(self.data),
                "-k",
                str(self.base),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"fsync={'on' if self.fsync else 'off'}",
                "-c",
                "max_connections=100",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "server.log").open("ab"),
            start_new_session=True,
            env=server_env(),
            user=self.user,
        )
        self.process = process
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (self.base / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited: {log}")
            try:
                with contextlib.closing(self.superuser("postgres")):
                    return
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("postgres did not answer within 30 s")

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """Stop the server: SIGINT is a fast shutdown (sessions are cut, transactions rolled
        back), SIGQUIT an immediate one (as a crash: recovery from the WAL at the next
        start)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, mode)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # backends still closing
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def new_schema(self) -> str:
        """A fresh, unused schema name (the tool creates the schema at its first apply)."""
        return f"t_{os.urandom(5).hex()}"

    def drop_schema(self, schema: str) -> None:
        with contextlib.suppress(Exception):
            self.sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def grant_probe(self, schema: str) -> None:
        """The read-only grants of docs/HOWTO.md for `check`: usage and select."""
        self.sql(
            f'GRANT USAGE ON SCHEMA "{schema}" TO {PROBE}',
            f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {PROBE}',
        )


def start(*, fsync: bool = False) -> PgServer:
    """A new cluster, started, with the project's database and its two roles; `fsync` as a
    production server (the benchmark), else off (the tests)."""
    folder = bindir()
    assert folder is not None
    user = _server_user()
    base = Path(tempfile.mkdtemp(prefix="provisioner-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    os.chmod(base, 0o700)
    done = subprocess.run(
        [
            str(folder / "initdb"),
            "-D",
            str(base / "data"),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        capture_output=True,
        env=server_env(),
        user=user,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")
    server = PgServer(base, free_port(), user, fsync=fsync)
    server.start()
    server.sql(
        f"CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER_PASSWORD}'",
        f"CREATE ROLE {PROBE} LOGIN PASSWORD '{PROBE_PASSWORD}'",
        f"CREATE DATABASE {DATABASE} OWNER {OWNER}",
        f"ALTER ROLE postgres PASSWORD '{ADMIN_PASSWORD}'",
        database="postgres",
    )
    return server


@contextlib.contextmanager
def running(*, fsync: bool = False) -> Iterator[PgServer]:
    server = start(fsync=fsync)
    try:
        yield server
    finally:
        server.remove()
