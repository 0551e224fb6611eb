"""The safety invariants of DESIGN.md that are not already proved end to end elsewhere.

Invariant 6 (plans are exact) and 7 (one writer) are in test_engine.py; 2 and 3 (bound keys,
definitive bindings) arrive with consultations.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from provisioner import atomic, clock
from provisioner.apply.executor import Executor
from provisioner.crypto import pkcs12
from provisioner.engine import load_inputs, make_plan, observe, open_state
from provisioner.state.escrow import Escrow
from tests.conftest import Runner
from tests.engine_helpers import ESCROW_PASSPHRASE, PASSWORDS, p12_files, serial, state_rows


class FailingEscrow(Escrow):
    """An escrow whose disk refuses the write (full disk, I/O error)."""

    def put(self, key: object, entity: str, serial: int | None = None) -> str:  # type: ignore[override]
        raise OSError(28, "No space left on device")


def test_invariant_1_escrow_first_no_key_is_recorded_or_distributed_before_escrow(
    quickstart: Path,
) -> None:
    with open_state(load_inputs(quickstart, None), create=True) as session:
        assert session.db is not None and session.escrow is not None
        plan = make_plan(session, observe(session), clock.now())
        failing = FailingEscrow(session.escrow.folder, session.escrow._data_key)
        with pytest.raises(OSError, match="No space left"):
            Executor(
                desired=session.desired(),
                recorded=session.recorded,
                db=session.db,
                escrow=failing,
                passwords=session.passwords,
                plan=plan,
                now=clock.now(),
                parallel=8,
                pool=session.pool,
                issuers={},
            ).run()
    assert state_rows(quickstart, "SELECT * FROM generations") == []
    assert p12_files(quickstart) == {} if (quickstart.parent / "demo-out").exists() else True


def test_invariant_1_every_recorded_generation_is_in_the_escrow_and_decrypts(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    escrow = Escrow.unlock(quickstart.parent / ".provisioner" / "escrow", ESCROW_PASSPHRASE)
    for (key_sha256,) in state_rows(quickstart, "SELECT key_sha256 FROM generations"):
        assert isinstance(key_sha256, str)
        escrow.get(key_sha256)  # raises unless present, authentic and matching


def test_invariant_4_no_clear_secret_in_output_files_state_or_audit(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    outputs = []
    outputs.append(cli("plan", "--out", tmp_path / "p.plan", quickstart))
    outputs.append(cli("plan", "--json", quickstart))
    outputs.append(cli("apply", "--auto-approve", quickstart))
    (quickstart.parent / "secrets" / "commune-exemple.pass").write_text("Changed-Password-77!\n")
    outputs.append(cli("apply", "--auto-approve", "--json", quickstart))
    outputs.append(cli("status", "--json", quickstart))
    outputs.append(
        cli("export", quickstart, "syndicat-eaux", "--format", "pem", "--out", tmp_path / "c.pem")
    )
    # Failures too: a password refused by the policy, a wrong adopt password.
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").write_text("Zq9-tiny\n")
    outputs.append(cli("plan", quickstart))
    secrets = [*PASSWORDS.values(), ESCROW_PASSPHRASE, "Changed-Password-77!", "Zq9-tiny"]
    texts = [o.stdout + o.stderr for o in outputs]
    assert "is refused: password is shorter than 12" in texts[-1]
    files = [p for p in (quickstart.parent / ".provisioner").rglob("*") if p.is_file()]
    files += [tmp_path / "p.plan", tmp_path / "c.pem"]
    blobs = [f.read_bytes() for f in files] + [t.encode() for t in texts]
    for secret in secrets:
        for blob in blobs:
            assert secret.encode() not in blob
    for blob in blobs:
        assert b"PRIVATE KEY" not in blob
    # The private exponent of a distributed key appears nowhere but inside encrypted files.
    copy = p12_files(quickstart)["shared/backup/commune-exemple.g1.p12"]
    key = pkcs12.decode(copy.read_bytes(), "Changed-Password-77!").key
    d = key.private_numbers().d.to_bytes(256, "big")[:32]
    for blob in blobs:
        assert d not in blob
    audit = state_rows(quickstart, "SELECT detail FROM audit")
    assert len(audit) >= 10


def test_invariant_4_secret_command_runs_without_a_shell(
    tmp_path: Path, cli: Runner, quickstart: Path
) -> None:
    marker = tmp_path / "injected"
    text = quickstart.read_text().replace(
        "password: {file: secrets/commune-exemple.pass}",
        f"password: {{command: [printf, 'Cmd-Password-123!; touch {marker}']}}",
    )
    quickstart.write_text(text)
    done = cli("plan", quickstart)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "a shell interpreted the secret command"


def test_invariant_5_atomic_private_writes_leave_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "sub" / "bicle.p12"
    atomic.write_private(target, b"old content")
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert os.stat(target.parent).st_mode & 0o777 == 0o700

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        atomic.write_private(target, b"new content that never lands")
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert [p.name for p in target.parent.iterdir()] == ["bicle.p12"], "no temporary left"
    link = tmp_path / "link.p12"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IsADirectoryError, match="symlink"):
        atomic.write_private(link, b"x")
    assert not (tmp_path / "elsewhere").exists()


def test_invariant_5_partial_copies_never_appear_under_their_final_name(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    leftovers = [
        p for p in (quickstart.parent / "demo-out").rglob("*") if atomic.TMP_MARK in p.name
    ]
    assert leftovers == []


def test_invariant_8_bad_input_changes_nothing(cli: Runner, quickstart: Path) -> None:
    folder = quickstart.parent
    original = quickstart.read_text()
    quickstart.write_text(original.replace("size: 2048", "size: 1024"))
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1
    assert re.search(r"quickstart\.yaml:\d+:\d+: error: defaults\.key\.size", done.stderr)
    assert "Traceback" not in done.stderr
    assert not (folder / ".provisioner").exists() and not (folder / "demo-out").exists()

    quickstart.write_text(original)
    (folder / "secrets" / "syndicat-eaux.pass").write_text("weakpassword\n")
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1
    assert re.search(
        r"quickstart\.yaml:\d+:\d+: entity syndicat-eaux: the password from file "
        r"secrets/syndicat-eaux\.pass is refused",
        done.stderr,
    )
    assert not (folder / ".provisioner").exists() and not (folder / "demo-out").exists()

    (folder / "secrets" / "syndicat-eaux.pass").write_text(PASSWORDS["syndicat-eaux"] + "\n")
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    before = serial(quickstart)
    snapshot = {p: p.read_bytes() for p in (folder / "demo-out").rglob("*.p12")}
    (folder / "secrets" / "escrow.pass").write_text("Not-The-Escrow-Passphrase\n")
    (folder / "secrets" / "commune-exemple.pass").write_text("A-New-Password-For-It-1\n")
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1 and "wrong escrow passphrase" in done.stderr
    assert serial(quickstart) == before
    assert {p: p.read_bytes() for p in (folder / "demo-out").rglob("*.p12")} == snapshot

    missing = quickstart.read_text().replace(
        "{file: secrets/escrow.pass}", "{env: NOT_SET_ANYWHERE}"
    )
    quickstart.write_text(missing)
    done = cli("plan", quickstart)
    assert done.returncode == 1
    assert "escrow passphrase: environment variable NOT_SET_ANYWHERE is not set" in done.stderr


def test_audit_log_is_append_only(cli: Runner, quickstart: Path) -> None:
    import sqlite3

    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    conn = sqlite3.connect(quickstart.parent / ".provisioner" / "state.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET action = 'x'")
    conn.close()


def test_state_from_a_newer_version_or_damaged_is_refused(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    db = quickstart.parent / ".provisioner" / "state.db"
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    done = cli("plan", quickstart)
    assert done.returncode == 1
    assert "written by a newer provisioner (schema version 99" in done.stderr
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    for suffix in ("-wal", "-shm"):
        (db.parent / f"state.db{suffix}").unlink(missing_ok=True)
    done = cli("plan", quickstart)
    assert done.returncode == 1 and "state database is unreadable" in done.stderr
    assert "Traceback" not in done.stderr
