"""The state database: one SQLite file, versioned schema, lineage and serial, audit log."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import getpass
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provisioner import clock, faults
from provisioner.atomic import DIR_MODE, FILE_MODE, make_private_dirs
from provisioner.errors import StateError
from provisioner.state.records import (
    Recorded,
    RecordedConsultation,
    RecordedCopy,
    RecordedGeneration,
)

DB_NAME = "state.db"

# Each entry migrates from version i to i+1; PRAGMA user_version holds the version reached.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE generations (
        id TEXT PRIMARY KEY,
        entity TEXT NOT NULL,
        number INTEGER NOT NULL,
        designation TEXT NOT NULL,
        common_name TEXT NOT NULL,
        issuer TEXT NOT NULL,
        key_size INTEGER NOT NULL,
        subject TEXT NOT NULL,
        certificate BLOB NOT NULL,
        chain BLOB NOT NULL,
        cert_sha256 TEXT NOT NULL,
        key_sha256 TEXT NOT NULL,
        chain_sha256 TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('current', 'retained', 'retired')),
        origin TEXT NOT NULL,
        created_at TEXT NOT NULL,
        retired_at TEXT,
        UNIQUE (entity, number)
    );
    CREATE UNIQUE INDEX one_current ON generations (entity) WHERE status = 'current';
    CREATE TABLE copies (
        target TEXT NOT NULL,
        path TEXT NOT NULL,
        entity TEXT NOT NULL,
        generation TEXT NOT NULL REFERENCES generations (id),
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        profile TEXT NOT NULL,
        password_id TEXT NOT NULL,
        friendly_name TEXT NOT NULL,
        chain_sha256 TEXT NOT NULL,
        written_at TEXT NOT NULL,
        PRIMARY KEY (target, path)
    );
    CREATE TABLE targets (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        entity TEXT,
        detail TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # v2: consultations and their definitive bindings to a key generation.
    """
    CREATE TABLE consultations (
        reference TEXT PRIMARY KEY,
        entity TEXT NOT NULL,
        key_ref TEXT NOT NULL,
        generation TEXT REFERENCES generations (id),
        title TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'opening', 'closed')),
        deadline TEXT,
        opening TEXT,
        bound_at TEXT NOT NULL,
        closed_at TEXT
    );
    CREATE TRIGGER binding_is_definitive BEFORE UPDATE OF entity, key_ref, generation
        ON consultations
        WHEN OLD.entity IS NOT NEW.entity OR OLD.key_ref IS NOT NEW.key_ref
            OR (OLD.generation IS NOT NULL AND OLD.generation IS NOT NEW.generation)
        BEGIN SELECT RAISE(ABORT, 'a consultation binding is definitive'); END;
    CREATE TRIGGER consultations_are_kept BEFORE DELETE ON consultations
        BEGIN SELECT RAISE(ABORT, 'consultations are never deleted from the state'); END;
    """,
    # v3: a binding names its generation by certificate (cert_sha256, checked against the
    # generation); key_ref stays as the file first wrote it. Every designation a generation has
    # had is kept, so a file naming a former one still refers to the same generation.
    """
    CREATE TABLE designations (
        generation TEXT NOT NULL REFERENCES generations (id),
        designation TEXT NOT NULL,
        since TEXT NOT NULL,
        PRIMARY KEY (generation, designation)
    );
    INSERT INTO designations (generation, designation, since)
        SELECT id, designation, created_at FROM generations;
    CREATE TRIGGER designations_are_kept BEFORE DELETE ON designations
        BEGIN SELECT RAISE(ABORT, 'the designation history is kept'); END;
    ALTER TABLE consultations ADD COLUMN cert_sha256 TEXT;
    UPDATE consultations SET cert_sha256 =
        (SELECT g.cert_sha256 FROM generations g WHERE g.id = consultations.generation);
    DROP TRIGGER binding_is_definitive;
    CREATE TRIGGER binding_is_definitive BEFORE UPDATE OF entity, key_ref, generation, cert_sha256
        ON consultations
        WHEN OLD.entity IS NOT NEW.entity OR OLD.key_ref IS NOT NEW.key_ref
            OR (OLD.generation IS NOT NULL AND OLD.generation IS NOT NEW.generation)
            OR (OLD.cert_sha256 IS NOT NULL AND OLD.cert_sha256 IS NOT NEW.cert_sha256)
        BEGIN SELECT RAISE(ABORT, 'a consultation binding is definitive'); END;
    CREATE TRIGGER binding_names_its_certificate_on_insert BEFORE INSERT ON consultations
        WHEN NEW.generation IS NOT NULL AND NEW.cert_sha256 IS NOT
            (SELECT cert_sha256 FROM generations WHERE id = NEW.generation)
        BEGIN SELECT RAISE(ABORT, 'a binding names its generation by certificate'); END;
    CREATE TRIGGER binding_names_its_certificate BEFORE UPDATE ON consultations
        WHEN NEW.generation IS NOT NULL AND NEW.cert_sha256 IS NOT
            (SELECT cert_sha256 FROM generations WHERE id = NEW.generation)
        BEGIN SELECT RAISE(ABORT, 'a binding names its generation by certificate'); END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def actor() -> str:
    """Who acts, for the audit log: user@host and pid."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


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

    def snapshot(self) -> Recorded:
        """Everything the planner needs, read in one transaction."""
        try:
            self.conn.execute("BEGIN")
            try:
                return self._read()
            finally:
                self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback()
            raise _failure(self.path, exc, "cannot read the state") from None

    def _read(self) -> Recorded:
        meta = dict(self.conn.execute("SELECT key, value FROM meta"))
        generations = tuple(
            RecordedGeneration(
                id=r[0],
                entity=r[1],
                number=r[2],
                designation=r[3],
                common_name=r[4],
                issuer=r[5],
                key_size=r[6],
                subject=tuple(json.loads(r[7])),
                certificate=bytes(r[8]),
                chain=bytes(r[9]),
                cert_sha256=r[10],
                key_sha256=r[11],
                chain_sha256=r[12],
                not_before=clock.parse(r[13]),
                not_after=clock.parse(r[14]),
                status=r[15],
                origin=r[16],
                created_at=clock.parse(r[17]),
            )
            for r in self.conn.execute(
                "SELECT id, entity, number, designation, common_name, issuer, key_size, subject,"
                " certificate, chain, cert_sha256, key_sha256, chain_sha256, not_before,"
                " not_after, status, origin, created_at FROM generations ORDER BY entity, number"
            )
        )
        # The copies of one generation repeat its entity, ids, profile, names and write time:
        # one object each instead of one per copy (tens of MB at 100,000 copies).
        shared: dict[str, str] = {}
        one = shared.setdefault
        stamps: dict[str, dt.datetime] = {}
        copies: dict[tuple[str, str], RecordedCopy] = {}
        for r in self.conn.execute(
            "SELECT target, path, entity, generation, sha256, size, profile, password_id,"
            " friendly_name, chain_sha256, written_at FROM copies"
        ):
            target = one(r[0], r[0])
            written_at = stamps.get(r[10])
            if written_at is None:
                written_at = stamps[r[10]] = clock.parse(r[10])
            copies[(target, r[1])] = RecordedCopy(
                target=target,
                path=r[1],
                entity=one(r[2], r[2]),
                generation_id=one(r[3], r[3]),
                sha256=r[4],
                size=r[5],
                profile=one(r[6], r[6]),
                password_id=one(r[7], r[7]),
                friendly_name=one(r[8], r[8]),
                chain_sha256=one(r[9], r[9]),
                written_at=written_at,
            )
        targets = dict(self.conn.execute("SELECT name, spec FROM targets"))
        consultations = {
            r[0]: RecordedConsultation(
                reference=r[0],
                entity=r[1],
                key_ref=r[2],
                generation_id=r[3],
                title=r[4],
                status=r[5],
                deadline=_date(r[6]),
                opening=_date(r[7]),
                bound_at=clock.parse(r[8]),
                closed_at=_date(r[9]),
                cert_sha256=r[10],
            )
            for r in self.conn.execute(
                "SELECT reference, entity, key_ref, generation, title, status, deadline,"
                " opening, bound_at, closed_at, cert_sha256 FROM consultations"
            )
        }
        designations: dict[str, tuple[str, ...]] = {}
        for generation, designation in self.conn.execute(
            "SELECT generation, designation FROM designations ORDER BY since, rowid"
        ):
            designations[generation] = (*designations.get(generation, ()), designation)
        return Recorded(
            lineage=meta.get("lineage"),
            serial=int(meta.get("serial", "0")),
            generations=generations,
            copies=copies,
            targets=targets,
            consultations=consultations,
            designations=designations,
            home=meta.get("home"),
        )

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


def _date(value: str | None) -> dt.datetime | None:
    return clock.parse(value) if value else None


def _iso(value: dt.datetime | None) -> str | None:
    return clock.iso(value) if value else None


def _iso_local(value: dt.datetime | None) -> str | None:
    return clock.local_iso(value) if value else None


def _statements(script: str) -> list[str]:
    """Split a migration script into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                out.append(buffer.strip())
            buffer = ""
    return out


class Change:
    """Mutations inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.actor = actor()

    def audit(self, action: str, entity: str | None, **detail: Any) -> None:
        """Append an audit record; callers pass identifiers and fingerprints, never secrets."""
        self.conn.execute(
            "INSERT INTO audit (at, actor, action, entity, detail) VALUES (?, ?, ?, ?, ?)",
            (
                clock.iso(clock.now()),
                self.actor,
                action,
                entity,
                json.dumps(detail, sort_keys=True, default=str),
            ),
        )

    def add_generation(self, g: RecordedGeneration) -> None:
        self.conn.execute(
            "INSERT INTO generations (id, entity, number, designation, common_name, issuer,"
            " key_size, subject, certificate, chain, cert_sha256, key_sha256, chain_sha256,"
            " not_before, not_after, status, origin, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                g.id,
                g.entity,
                g.number,
                g.designation,
                g.common_name,
                g.issuer,
                g.key_size,
                json.dumps(list(g.subject)),
                g.certificate,
                g.chain,
                g.cert_sha256,
                g.key_sha256,
                g.chain_sha256,
                clock.iso(g.not_before),
                clock.iso(g.not_after),
                g.status,
                g.origin,
                clock.iso(g.created_at),
            ),
        )
        self.conn.execute(
            "INSERT OR IGNORE INTO designations (generation, designation, since) VALUES (?, ?, ?)",
            (g.id, g.designation, clock.iso(g.created_at)),
        )

    def add_former_designation(
        self, generation_id: str, designation: str, since: dt.datetime
    ) -> None:
        """Record a name the generation had before it came under management (adopt)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO designations (generation, designation, since) VALUES (?, ?, ?)",
            (generation_id, designation, clock.iso(since)),
        )

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def set_status(self, generation_id: str, status: str, at: dt.datetime) -> None:
        self.conn.execute(
            "UPDATE generations SET status = ?, retired_at = ? WHERE id = ?",
            (status, clock.iso(at) if status == "retired" else None, generation_id),
        )

    def set_chain(self, generation_id: str, chain: bytes, chain_sha256: str) -> None:
        self.conn.execute(
            "UPDATE generations SET chain = ?, chain_sha256 = ? WHERE id = ?",
            (chain, chain_sha256, generation_id),
        )

    def set_designation(self, generation_id: str, designation: str) -> None:
        """Rename a generation; its former names stay in the designation history."""
        self.conn.execute(
            "UPDATE generations SET designation = ? WHERE id = ?", (designation, generation_id)
        )
        self.conn.execute(
            "INSERT OR IGNORE INTO designations (generation, designation, since) VALUES (?, ?, ?)",
            (generation_id, designation, clock.iso(clock.now())),
        )

    def put_copy(self, c: RecordedCopy) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO copies (target, path, entity, generation, sha256, size,"
            " profile, password_id, friendly_name, chain_sha256, written_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                c.target,
                c.path,
                c.entity,
                c.generation_id,
                c.sha256,
                c.size,
                c.profile,
                c.password_id,
                c.friendly_name,
                c.chain_sha256,
                clock.iso(c.written_at),
            ),
        )

    def delete_copy(self, target: str, path: str) -> None:
        self.conn.execute("DELETE FROM copies WHERE target = ? AND path = ?", (target, path))

    def put_consultation(self, c: RecordedConsultation) -> None:
        """Record a consultation, or update its status and dates; the binding itself is
        protected by a trigger and cannot change."""
        self.conn.execute(
            "INSERT INTO consultations (reference, entity, key_ref, generation, title, status,"
            " deadline, opening, bound_at, closed_at, cert_sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (reference) DO UPDATE SET entity = excluded.entity,"
            " key_ref = excluded.key_ref, generation = excluded.generation,"
            " cert_sha256 = excluded.cert_sha256,"
            " title = excluded.title, status = excluded.status, deadline = excluded.deadline,"
            " opening = excluded.opening, closed_at = excluded.closed_at",
            (
                c.reference,
                c.entity,
                c.key_ref,
                c.generation_id,
                c.title,
                c.status,
                _iso_local(c.deadline),
                _iso_local(c.opening),
                clock.iso(c.bound_at),
                _iso(c.closed_at),
                c.cert_sha256,
            ),
        )

    def put_target(self, name: str, spec: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO targets (name, spec) VALUES (?, ?)", (name, spec))
