"""The state interface: what the engine, the executor and the commands need from wherever the
state is kept. Four things: a consistent *snapshot*, a *transaction* (`change()`, which bumps
the serial when it commits), one writer at a time (*lock*), and an append-only *audit* log;
and where the escrow keeps its sealed blobs (`escrow_blobs`).

Where is a `StateLocation` (state/location.py). SQLite is the embedded default (`state/db.py`:
one file beside the escrow folder, invariants in triggers, the lock an flock on
`<state>/lock`; refused on a network filesystem, `state/filesystems.py`). PostgreSQL is the
team's backend (`state/pg.py`: the state and the escrow's blobs in one schema, invariants in
triggers; `state/pg_lock.py`: a session-level advisory lock keyed by the schema). Each is
chosen here; nothing above this module names SQLite or PostgreSQL."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from provisioner.state.blobs import FolderBlobs, SealedBlobs
from provisioner.state.location import StateLocation
from provisioner.state.records import (
    AuditRow,
    Recorded,
    RecordedConsultation,
    RecordedCopy,
    RecordedGeneration,
)

# Every table of a state with every column, in the order `state migrate` inserts them (a
# table after those it refers to), and the order its rows are read in: a copy is exact, and
# two states compare row for row. (The designations' ties keep insertion order: SQLite's
# rowid, PostgreSQL's seq, each backend adds it.)
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "generations": (
        "id",
        "entity",
        "number",
        "designation",
        "common_name",
        "issuer",
        "key_size",
        "subject",
        "certificate",
        "chain",
        "cert_sha256",
        "key_sha256",
        "chain_sha256",
        "not_before",
        "not_after",
        "status",
        "origin",
        "created_at",
        "retired_at",
    ),
    "targets": ("name", "spec"),
    "copies": (
        "target",
        "path",
        "entity",
        "generation",
        "sha256",
        "size",
        "profile",
        "password_id",
        "friendly_name",
        "chain_sha256",
        "written_at",
    ),
    "consultations": (
        "reference",
        "entity",
        "key_ref",
        "generation",
        "title",
        "status",
        "deadline",
        "opening",
        "bound_at",
        "closed_at",
        "cert_sha256",
    ),
    "designations": ("generation", "designation", "since"),
    "audit": ("id", "at", "actor", "action", "entity", "detail"),
}
ROW_ORDER: dict[str, str] = {
    "meta": "key",
    "generations": "entity, number",
    "targets": "name",
    "copies": "target, path",
    "consultations": "reference",
    "designations": "since",
    "audit": "id",
}
Rows = dict[str, list[tuple[Any, ...]]]


class StateChange(Protocol):
    """The mutations of one transaction; nothing is visible to others before it commits."""

    def audit(self, action: str, entity: str | None, **detail: Any) -> None: ...
    def add_generation(self, g: RecordedGeneration) -> None: ...
    def add_former_designation(
        self, generation_id: str, designation: str, since: dt.datetime
    ) -> None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def set_status(self, generation_id: str, status: str, at: dt.datetime) -> None: ...
    def set_chain(self, generation_id: str, chain: bytes, chain_sha256: str) -> None: ...
    def set_designation(self, generation_id: str, designation: str) -> None: ...
    def put_copy(self, c: RecordedCopy) -> None: ...
    def delete_copy(self, target: str, path: str) -> None: ...
    def put_consultation(self, c: RecordedConsultation) -> None: ...
    def put_target(self, name: str, spec: str) -> None: ...


class StateStore(Protocol):
    """An open state. Errors are StateError naming the state and what to do."""

    where: str  # where it is, for messages

    def snapshot(self) -> Recorded:
        """Everything the planner needs, read consistently (one read transaction)."""
        ...

    def change(self) -> AbstractContextManager[StateChange]:
        """A write transaction: committed (serial + 1) when the block ends, rolled back when
        it raises."""
        ...

    def serial(self) -> int:
        """The serial as committed now (a snapshot may be older)."""
        ...

    def note(self, action: str, entity: str | None, **detail: Any) -> None:
        """Append an audit record that changes nothing else (the serial stays)."""
        ...

    def audit_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit records first: at, actor, action, entity, detail."""
        ...

    def audit_records(self) -> list[AuditRow]:
        """Every audit record, oldest first."""
        ...

    def audit_recent(self, per_entity: int, general: int) -> list[AuditRow]:
        """The newest `per_entity` records of each entity and `general` of no entity."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Set a value plans do not depend on (the state's home); the serial stays."""
        ...

    def table_rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of one of TABLE_COLUMNS' tables, its columns in that order, in ROW_ORDER
        (`state migrate` copies and compares them)."""
        ...

    def load_rows(self, rows: Rows) -> None:
        """Fill a state just created with a copy's rows (meta replaced whole, ids kept), in
        one transaction that does not bump the serial: the copy's serial is the source's."""
        ...

    def home(self) -> str:
        """The state's home as this place names it (the state folder's path; PostgreSQL's
        cluster, database and schema): a state used from another home was copied."""
        ...

    def close(self) -> None: ...


def _located(where: StateLocation | Path) -> StateLocation:
    return where if isinstance(where, StateLocation) else StateLocation("sqlite", where)


def open_store(where: StateLocation | Path, *, create: bool, migrate: bool) -> StateStore | None:
    """The state there (a folder given as a path is a SQLite one); None when there is none
    and `create` is false. An older schema is migrated when `migrate`, else refused naming
    `apply`."""
    location = _located(where)
    if location.backend == "postgresql":
        from provisioner.state.pg import PgStore

        return PgStore.open(location, create=create, migrate=migrate)
    from provisioner.state.db import StateDB
    from provisioner.state.filesystems import refuse_network_folder

    refuse_network_folder(location.folder)
    return StateDB.open(location.folder, create=create, migrate=migrate)


def state_exists(where: StateLocation | Path) -> bool:
    """Whether a state is kept there (for SQLite: its file exists, even empty)."""
    location = _located(where)
    if location.backend == "postgresql":
        store = open_store(location, create=False, migrate=False)
        if store is None:
            return False
        store.close()
        return True
    from provisioner.state.db import DB_NAME

    return (location.folder / DB_NAME).exists()


def discard_state(where: StateLocation | Path) -> None:
    """Remove a state this run created and recorded nothing in (a declined or refused run
    leaves none behind): the SQLite file and its journal, or the PostgreSQL state's tables
    (the schema stays: an administrator may have made it)."""
    location = _located(where)
    if location.backend == "postgresql":
        from provisioner.state.pg import PgStore

        PgStore.discard(location)
        return
    from provisioner.state.db import DB_NAME

    path = location.folder / DB_NAME
    for item in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        item.unlink(missing_ok=True)


def holds_state(home: Path | str) -> str | None:
    """What shows that the state folder `home` holds a state (a tree still in use there), or
    None. A PostgreSQL home (`postgresql://...`) cannot be looked at without its credentials:
    None."""
    if str(home).startswith("postgresql:"):
        return None
    from provisioner.state.db import DB_NAME

    found = Path(home) / DB_NAME
    return str(found) if found.exists() else None


def escrow_blobs(where: StateLocation | Path) -> SealedBlobs:
    """Where the escrow of that state keeps its sealed blobs (the `escrow/` folder beside a
    SQLite state; the schema's escrow table)."""
    location = _located(where)
    if location.backend == "postgresql":
        from provisioner.state.pg import PgBlobs

        return PgBlobs(location)
    return FolderBlobs(location.escrow_dir)


def hold(
    where: StateLocation | Path, command: str, timeout: float = 0.0
) -> AbstractContextManager[str | None]:
    """One writer per state: hold the lock for `command`, waiting up to `timeout` seconds
    (LockError naming the holder). Yields a note when a dead holder's record was replaced.
    A SQLite state folder is made (0700) for its lock file."""
    location = _located(where)
    if location.backend == "postgresql":
        from provisioner.state import pg_lock

        return pg_lock.hold(location, command, timeout)
    from provisioner.atomic import make_private_dirs
    from provisioner.state import lock
    from provisioner.state.filesystems import refuse_network_folder

    refuse_network_folder(location.folder)
    make_private_dirs(location.folder)
    return lock.hold(location.folder, command, timeout)
