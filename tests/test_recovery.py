"""Disaster recovery, as docs/RECOVERY.md describes it."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import Runner
from tests.engine_helpers import PASSWORDS, key_fingerprints, state_rows


def readopt_from_backup(cli: Runner, manifest: Path) -> None:
    for entity in PASSWORDS:
        copy = manifest.parent / "demo-out" / "shared" / "backup" / f"{entity}.g1.p12"
        done = cli("adopt", manifest, entity, copy)
        assert done.returncode == 0, done.stderr


def test_state_lost_escrow_kept_readopt_from_the_shared_location(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    before = key_fingerprints(quickstart)
    state = quickstart.parent / ".provisioner"
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (state / name).unlink(missing_ok=True)
    readopt_from_backup(cli, quickstart)
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert key_fingerprints(quickstart) == before, "the same keys, never new ones"
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0


def test_escrow_lost_shared_copy_kept(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    before = key_fingerprints(quickstart)
    state = quickstart.parent / ".provisioner"
    shutil.rmtree(state / "escrow")
    refused = cli("plan", quickstart)
    assert refused.returncode == 1
    assert "the escrow is missing while the state records 2 generations" in refused.stderr
    # RECOVERY.md: keep the old state aside for its audit log, start a fresh one, re-adopt.
    state.rename(quickstart.parent / ".provisioner.lost-escrow")
    readopt_from_backup(cli, quickstart)
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert key_fingerprints(quickstart) == before
    assert len(list((quickstart.parent / ".provisioner" / "escrow").glob("*.key"))) == 2


def test_escrow_passphrase_rotation(cli: Runner, quickstart: Path, tmp_path: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    new = tmp_path / "new.pass"
    new.write_text("A-Brand-New-Escrow-Passphrase-2027\n")
    weak = cli("rekey", quickstart, "--new-passphrase-env", "W", env={"W": "short"})
    assert weak.returncode == 1 and "refused" in weak.stderr
    done = cli("rekey", quickstart, "--new-passphrase-file", new)
    assert done.returncode == 0, done.stderr
    old = cli("plan", quickstart)
    assert old.returncode == 1 and "wrong escrow passphrase" in old.stderr
    text = quickstart.read_text().replace("{file: secrets/escrow.pass}", f"{{file: {new}}}")
    quickstart.write_text(text)
    again = cli("plan", "--detailed-exitcode", quickstart)
    assert again.returncode == 0, again.stdout + again.stderr
    # Password ids survive the rotation: a changed entity password is still detected.
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").write_text("Changed-After-Rekey-1\n")
    assert "[password-changed]" in cli("plan", quickstart).stdout
    assert state_rows(quickstart, "SELECT action FROM audit WHERE action = 'escrow-rekeyed'")
