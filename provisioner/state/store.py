"""The state interface: what the engine, the executor and the commands need from wherever the
state is kept. Four things: a consistent *snapshot*, a *transaction* (`change()`, which bumps
the serial when it commits), one writer at a time (*lock*), and an append-only *audit* log.

SQLite is the embedded default (`state/db.py`: one file beside the escrow, invariants in
triggers, the lock an flock on `<state>/lock`). A server backend for teams (PostgreSQL, the
lock an advisory lock) is one new module implementing `StateStore` and `StateChange`, chosen
in `open_store` and `hold`; nothing above this module names SQLite."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from provisioner.state.records import (
    Recorded,
    RecordedConsultation,
    RecordedCopy,
    RecordedGeneration,
)


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

    path: Path  # where it is, for messages

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

    def set_meta(self, key: str, value: str) -> None:
        """Set a value plans do not depend on (the state's home); the serial stays."""
        ...

    def close(self) -> None: ...


def open_store(state_dir: Path, *, create: bool, migrate: bool) -> StateStore | None:
    """The state of `state_dir`; None when there is none and `create` is false. An older
    schema is migrated when `migrate`, else refused naming `apply`."""
    from provisioner.state.db import StateDB

    return StateDB.open(state_dir, create=create, migrate=migrate)


def holds_state(state_dir: Path) -> str | None:
    """The file that shows `state_dir` holds a state (a tree still in use there), or None."""
    from provisioner.state.db import DB_NAME

    found = state_dir / DB_NAME
    return str(found) if found.exists() else None


def hold(state_dir: Path, command: str, timeout: float = 0.0) -> AbstractContextManager[str | None]:
    """One writer per state: hold the lock for `command`, waiting up to `timeout` seconds
    (LockError naming the holder). Yields a note when a dead holder's record was replaced."""
    from provisioner.state import lock

    return lock.hold(state_dir, command, timeout)
