"""One writer per project on PostgreSQL: a session-level advisory lock whose key is derived from
the project's schema name (another project's schema, even in the same database, has another
key: never a global lock), taken without waiting and retried until `--lock-timeout`.

The server releases it when the session ends, so a crashed holder's lock falls away with its
connection (a killed process at once; a vanished host once the TCP keepalives set on the
session give up, about a minute). Who holds it (pid, user@host, command, since, as the SQLite
lock's record) is one row of the schema's `lock_holder` table, written once the lock is
taken; a refused command reads it, checked against the server's own record of the session
holding the lock (`pg_locks`), so that a row left by a crashed holder is never named as the
holder: it is reported as stale and replaced by the next one."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from provisioner.state import pg
from provisioner.state.location import StateLocation
from provisioner.state.lock import holder_record, refusal, stale_note

HOLDER_TABLE = (
    "CREATE TABLE lock_holder ("
    " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    " backend integer NOT NULL,"
    " holder text NOT NULL)"
)


def lock_key(schema: str) -> int:
    """The advisory lock's 64-bit key for a project's schema."""
    digest = hashlib.sha256(b"provisioner-state-lock\0" + schema.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def holder(conn: psycopg.Connection[Any], key: int) -> str:
    """The holder record of the session that holds `key`, or "" when none can be named."""
    found = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = ((%s::bigint >> 32) & 4294967295)::oid"
        " AND objid = (%s::bigint & 4294967295)::oid AND objsubid = 1",
        (key, key),
    ).fetchone()
    if found is None:
        return ""
    try:
        row = conn.execute("SELECT backend, holder FROM lock_holder").fetchone()
    except psycopg.Error:
        return ""
    if row is None or row[0] != found[0]:
        return ""  # the holder has not written its record yet
    return str(row[1])


def _try(conn: psycopg.Connection[Any], key: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def hold(location: StateLocation, command: str, timeout: float = 0.0) -> Iterator[str | None]:
    """Hold the project's lock; waits up to `timeout` seconds, else raises LockError naming the
    holder. Yields a note when a crashed holder's record was replaced. While held, this
    process's state writes to the project go through this session (pg.HELD)."""
    conn = pg.connect(location, f"lock {command}")
    key = lock_key(location.schema)
    deadline = time.monotonic() + timeout
    try:
        try:
            while not _try(conn, key):
                if time.monotonic() >= deadline:
                    raise refusal(location, holder(conn, key)) from None
                time.sleep(0.1)
            pg.create_schema(conn, location.schema)
            if not pg.table_exists(conn, location.schema, "lock_holder"):
                conn.execute(HOLDER_TABLE)  # (a role may write rows without CREATE rights)
            row = conn.execute("SELECT holder FROM lock_holder").fetchone()
            note = stale_note(str(row[0])) if row is not None else None
            record = holder_record(command)
            conn.execute(
                "INSERT INTO lock_holder (backend, holder) VALUES (pg_backend_pid(), %s)"
                " ON CONFLICT (one) DO UPDATE SET backend = excluded.backend,"
                " holder = excluded.holder",
                (record,),
            )
        except psycopg.Error as exc:
            raise pg.failure(location, exc, f"cannot take the lock for `{command}`") from None
        pg.HELD[(location.dsn, location.schema)] = conn
        try:
            yield note
        finally:
            pg.HELD.pop((location.dsn, location.schema), None)
            with contextlib.suppress(psycopg.Error):
                conn.execute("DELETE FROM lock_holder WHERE backend = pg_backend_pid()")
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()
