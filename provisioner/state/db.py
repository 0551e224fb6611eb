"""The state database: one SQLite file, versioned schema, lineage and serial, audit log.

The embedded default behind the state interface of `state/store.py`: `StateDB` is a
`StateStore`, `Change` a `StateChange`. The schema and its triggers are in `schema.py`, the
snapshot reader in `snapshot.py`, the mutations of a transaction in `change.py`."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provisioner import clock, faults
from provisioner.atomic import DIR_MODE, FILE_MODE, make_private_dirs
from provisioner.errors import StateError
from provisioner.state.change import Change, _iso_local, actor
from provisioner.state.records import AuditRow, Recorded
from provisioner.state.schema import MIGRATIONS, SCHEMA_VERSION, _statements
from provisioner.state.snapshot import read_snapshot

DB_NAME = "state.db"


def _disk_full(path: Path, exc: BaseException) -> bool:
    """Whether `exc` comes from a full disk (SQLite reports some as plain I/O errors)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return True
    if name.startswith("SQLITE_IOERR"):
        with contextlib.suppress(OSError):
            return os.statvfs(path.parent).f_bavail == 0
    return False


def _failure(path: Path, exc: BaseException, doing: str) -> StateError:
    """The StateError for a failed database step; a full disk is named, never taken for
    damage (the file is intact: SQLite rolled the step back)."""
    if _disk_full(path, exc):
        return StateError(
            f"{path}: {doing}: the disk is full ({exc}); nothing of this step was recorded. "
            f"Free space on the file system holding {path.parent}, then run the command again"
        )
    return StateError(f"{path}: {doing}: {exc}")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class StateDB:
    """Access to the state database of one state folder."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.where = str(path)

    @classmethod
    def open(cls, state_dir: Path, *, create: bool, migrate: bool | None = None) -> StateDB | None:
        """Open the state; None when it does not exist and `create` is false. An older schema
        is migrated when `migrate` (default: `create`), else refused naming `apply`."""
        migrate = create if migrate is None else migrate
        path = state_dir / DB_NAME
        if not create and path.is_file() and path.stat().st_size == 0:
            return None  # truncated or never written: no state (opening it would write)
        if not path.exists():
            if not create:
                return None
            try:
                make_private_dirs(state_dir)
                os.chmod(state_dir, DIR_MODE)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            except OSError as exc:
                raise _failure(path, exc, "cannot create the state") from None
        try:
            conn = _connect(path)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if _disk_full(path, exc):
                raise _failure(path, exc, "cannot open the state") from None
            raise StateError(
                f"{path}: the state database is unreadable ({exc}); restore it from a backup "
                "or see docs/RECOVERY.md"
            ) from None
        if version > SCHEMA_VERSION:
            conn.close()
            raise StateError(
                f"{path}: the state was written by a newer provisioner (schema version {version}; "
                f"this one knows up to {SCHEMA_VERSION}); upgrade provisioner"
            )
        db = cls(conn, path)
        if version == 0 and not create:
            conn.close()
            return None  # an empty file (truncated, or never written): no state
        if version < SCHEMA_VERSION:
            if not migrate:
                conn.close()
                raise StateError(
                    f"{path}: the state uses schema version {version}; run `provisioner apply` "
                    f"once to migrate it to version {SCHEMA_VERSION}"
                )
            db._migrate(version)
        return db

    def _migrate(self, version: int) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for step in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[step]):
                    self.conn.execute(statement)
                if step == 2:
                    self._dates_in_paris_time()
                self.conn.execute(f"PRAGMA user_version = {step + 1}")
            if version == 0:
                self.conn.execute("INSERT INTO meta VALUES ('lineage', ?)", (str(uuid.uuid4()),))
                self.conn.execute("INSERT INTO meta VALUES ('serial', '0')")
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise _failure(self.path, exc, "migration failed") from None

    def _dates_in_paris_time(self) -> None:
        """v3: consultation dates were stored in UTC (`2028-08-02T22:00:00Z` for a file's
        `2028-08-03`); they are rewritten in Paris time, the calendar day the file gave."""
        rows = list(self.conn.execute("SELECT reference, deadline, opening FROM consultations"))
        for reference, deadline, opening in rows:
            self.conn.execute(
                "UPDATE consultations SET deadline = ?, opening = ? WHERE reference = ?",
                (_iso_local(_date(deadline)), _iso_local(_date(opening)), reference),
            )

    def close(self) -> None:
        self.conn.close()

    def home(self) -> str:
        """The state folder this database is in (symlinks resolved)."""
        return str(self.path.parent.resolve())

    def snapshot(self) -> Recorded:
        """Everything the planner needs, read in one transaction."""
        try:
            self.conn.execute("BEGIN")
            try:
                return read_snapshot(self.conn)
            finally:
                self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise _failure(self.path, exc, "cannot read the state") from None

    @contextlib.contextmanager
    def change(self) -> Iterator[Change]:
        """A write transaction; the serial is bumped when it commits. A database failure
        (a full disk...) is a StateError saying so; the transaction is rolled back."""
        with self._transaction():
            yield Change(self.conn)
            self.conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'serial'"
            )
            faults.reached("mid-commit")

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already (it does on a full disk
        and may after an interrupted COMMIT): the error that got here is the one to report."""
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def note(self, action: str, entity: str | None, **detail: Any) -> None:
        """Append an audit record that changes nothing else (the serial stays)."""
        with self._transaction():
            Change(self.conn).audit(action, entity, **detail)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield
            self.conn.execute("COMMIT")
            faults.reached("committed")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise _failure(self.path, exc, "cannot record the change") from None
        except BaseException:
            self._rollback()
            raise

    def serial(self) -> int:
        """The serial as committed now (a snapshot may be older)."""
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'serial'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: cannot read the state: {exc}") from None
        return int(row[0]) if row else 0

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value that is not part of what plans depend on (the serial stays)."""
        with contextlib.closing(self.conn.cursor()) as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                cursor.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise

    def audit_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT at, actor, action, entity, detail FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            {"at": r[0], "actor": r[1], "action": r[2], "entity": r[3], "detail": json.loads(r[4])}
            for r in rows
        ]

    def table_rows(self, table: str) -> list[tuple[Any, ...]]:
        from provisioner.state.store import ROW_ORDER, TABLE_COLUMNS

        order = ROW_ORDER[table] + (", rowid" if table == "designations" else "")
        query = f"SELECT {', '.join(TABLE_COLUMNS[table])} FROM {table} ORDER BY {order}"
        try:
            return [tuple(row) for row in self.conn.execute(query)]
        except sqlite3.DatabaseError as exc:
            raise _failure(self.path, exc, "cannot read the state") from None

    def load_rows(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        from provisioner.state.store import TABLE_COLUMNS

        with self._transaction():
            self.conn.execute("DELETE FROM meta")
            for table, columns in TABLE_COLUMNS.items():
                self.conn.executemany(_insert(table, columns, "?"), rows.get(table, []))

    def audit_records(self) -> list[AuditRow]:
        try:
            return _audit_rows(
                self.conn.execute(
                    "SELECT id, at, actor, action, entity, detail FROM audit ORDER BY id"
                ).fetchall()
            )
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: cannot read the audit log: {exc}") from None

    def audit_recent(self, per_entity: int, general: int) -> list[AuditRow]:
        try:
            return _audit_rows(
                self.conn.execute(
                    "SELECT id, at, actor, action, entity, detail FROM ("
                    " SELECT id, at, actor, action, entity, detail,"
                    "  ROW_NUMBER() OVER (PARTITION BY entity ORDER BY id DESC) AS n FROM audit"
                    ") AS recent WHERE n <= CASE WHEN entity IS NULL THEN ? ELSE ? END",
                    (general, per_entity),
                ).fetchall()
            )
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: cannot read the audit log: {exc}") from None


def _insert(table: str, columns: tuple[str, ...], mark: str) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(mark * len(columns))})"


def _audit_rows(rows: list[Any]) -> list[AuditRow]:
    return [AuditRow(*row) for row in rows]


def _date(value: str | None) -> dt.datetime | None:
    return clock.parse(value) if value else None


__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Change",
    "StateDB",
    "_statements",
    "actor",
]
