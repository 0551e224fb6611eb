"""The open state of a command (engine/session.py): closed on every path, the escrow folder
listed once per command, `desired` (password ids included) computed once per command."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.engine import load_inputs, open_state
from provisioner.errors import StalePlanError
from provisioner.state.escrow import Escrow
from tests.conftest import Runner


def run(*args: str | Path) -> int:
    """`provisioner ARGS` in this process (so that the counters below see it)."""
    env = {k: None for k in os.environ if k.startswith("PROVISIONER_") and k != "PROVISIONER_NOW"}
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code


@pytest.fixture
def applied(cli: Runner, quickstart: Path) -> Iterator[Path]:
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stderr
    yield quickstart


def assert_closed(conn: object) -> None:
    """A SQLite connection refuses a query once closed; a PostgreSQL one says it is closed."""
    if isinstance(conn, sqlite3.Connection):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    else:
        assert getattr(conn, "closed", False), "the database session is still open"


@pytest.mark.both_backends
def test_the_state_is_closed_when_the_block_raises(applied: Path) -> None:
    with (
        pytest.raises(RuntimeError),
        open_state(load_inputs(applied, None), create=False) as session,
    ):
        assert session.db is not None
        conn = session.db.conn  # type: ignore[attr-defined]
        blobs = session.escrow_blobs
        raise RuntimeError("a command fails half-way")
    assert_closed(conn)
    assert getattr(blobs, "_conn", None) is None, "the escrow's session is closed too"


def test_a_stale_saved_plan_leaves_the_state_closed(
    cli: Runner, applied: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply PLAN refused as stale (the state changed since) closes the state it opened."""
    from provisioner.engine import session as session_module
    from provisioner.flows import apply as apply_run

    saved = applied.parent / "tomorrow.plan"
    assert cli("plan", applied, "--out", saved).returncode == 0
    (applied.parent / "demo-out").rename(applied.parent / "gone")  # the targets changed
    opened: list[object] = []
    real = session_module.open_store

    def recording(*args: object, **kwargs: object) -> object:
        store = real(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    monkeypatch.setattr(session_module, "open_store", recording)
    with pytest.raises(StalePlanError, match="files on the targets changed"):
        apply_run.apply_saved(saved, lock_timeout=0, parallel=1)
    assert opened
    for store in opened:
        if store is not None:
            with pytest.raises(sqlite3.ProgrammingError, match="closed"):
                store.conn.execute("SELECT 1")  # type: ignore[attr-defined]


def test_the_escrow_folder_is_listed_once_per_command(
    applied: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    escrow = str(applied.parent / ".provisioner" / "escrow")
    listings: list[str] = []
    real = os.scandir

    def counting(path: object = ".") -> object:
        if str(path) == escrow:
            listings.append(str(path))
        return real(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", counting)
    monkeypatch.chdir(applied.parent)
    for command in (["plan"], ["status"], ["check"], ["apply", "--auto-approve"]):
        listings.clear()
        code = run(*command, applied)
        assert code == 0, command
        assert len(listings) == 1, f"{command}: the escrow was listed {len(listings)} times"


def test_password_ids_are_computed_once_per_apply(
    applied: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`desired` (an HMAC per entity's password) is computed once per command, not per step."""
    calls: list[str] = []
    real = Escrow.password_id

    def counting(self: Escrow, entity: str, password: str) -> str:
        calls.append(entity)
        return real(self, entity, password)

    monkeypatch.setattr(Escrow, "password_id", counting)
    monkeypatch.chdir(applied.parent)
    assert run("apply", "--auto-approve", applied) == 0  # nothing to do
    assert sorted(calls) == ["commune-exemple", "syndicat-eaux"]
