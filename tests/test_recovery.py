"""Disaster recovery and invariant 9 (not ours, not touched; state and escrow one unit), as
docs/RECOVERY.md describes them. Each test starts from a converged quickstart, breaks what an
operator or a disk would break, and checks what a user would notice: exit codes, messages,
the bytes of every copy, and that the keys never change."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.conftest import REPO, TEST_CLOCK, Runner
from tests.engine_helpers import (
    PASSWORDS,
    backup_state,
    escrow_blob,
    escrowed_keys,
    key_fingerprints,
    lose_state,
    openssl_p12,
    out_of_reach,
    p12_files,
    restore_state,
    set_escrow_blob,
    state_rows,
)
from tests.oracle import encrypt_bid, opens_bid, p12_contents
from tests.test_chain import make_ca

RENEWAL = {"PROVISIONER_NOW": "2028-10-15T10:00:00Z"}  # inside the quickstart's renewal window


def snapshot(manifest: Path) -> dict[str, str]:
    """The SHA-256 of every copy on every target: what must not change under a refusal."""
    return {
        rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p in p12_files(manifest).items()
    }


def state_dir(manifest: Path) -> Path:
    return manifest.parent / ".provisioner"


def key_fingerprints_of_rows(manifest: Path) -> set[str]:
    """The keys the state records."""
    return {row[0] for row in state_rows(manifest, "SELECT key_sha256 FROM generations")}


def converged(cli: Runner, manifest: Path, env: dict[str, str] | None = None) -> None:
    done = cli("plan", "--detailed-exitcode", manifest, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def said_once(output: str, line: str) -> bool:
    """Whether `output` has `line` once, whole, "*" standing for a fingerprint's 16 digits."""
    pattern = re.escape(line).replace(r"\*", "[0-9a-f]{16}")
    found = re.findall(f"^{pattern}$", output, re.MULTILINE)
    assert len(found) == 1, output
    return True


def current_generations(manifest: Path) -> list[tuple[str, int, str, str]]:
    """(entity, number, certificate's and key's SHA-256) of each current generation."""
    return [
        (entity, number, cert, key)
        for entity, number, cert, key in state_rows(
            manifest,
            "SELECT entity, number, cert_sha256, key_sha256 FROM generations "
            "WHERE status = 'current' ORDER BY entity",
        )
    ]


def assert_renewal_taken_back(manifest: Path, key: str) -> None:
    """commune-exemple's generation 1 retired and generation 2 current, with key `key`."""
    rows = state_rows(
        manifest,
        "SELECT number, status, key_sha256 FROM generations WHERE entity = 'commune-exemple' "
        "ORDER BY number",
    )
    assert [r[:2] for r in rows] == [(1, "retired"), (2, "current")] and rows[1][2] == key


def renewed_here_and_in_a_copy(cli: Runner, manifest: Path, tmp_path: Path) -> tuple[Path, str]:
    """The tree copied whole (its state, so its lineage, included), then renewed here and in
    the copy, each on its own: the copy's folder, and this tree's generation 2 key."""
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(manifest.parent, copy)
    assert cli("apply", "--auto-approve", "-q", manifest, env=RENEWAL).returncode == 0
    copied = cli("apply", "--auto-approve", "-q", copy / manifest.name, env=RENEWAL)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    return copy, key_fingerprints(manifest)["shared/backup/commune-exemple.g2.p12"]


def recovered_record(cli: Runner, manifest: Path) -> dict[str, Any]:
    """What the audit log says the one recover did (`audit --json --action state-recovered`)."""
    listed = cli("audit", "--json", "--action", "state-recovered", manifest)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    records = json.loads(listed.stdout)["records"]
    assert len(records) == 1, records
    detail: dict[str, Any] = records[0]["detail"]
    return detail


@pytest.mark.both_backends
def test_state_folder_lost_apply_refuses_then_recover_takes_every_copy_back(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    keys, files = key_fingerprints(quickstart), snapshot(quickstart)
    lose_state(quickstart)  # the admin host's disk, the database: state and escrow gone

    planned = cli("plan", quickstart)
    assert planned.returncode == 1
    assert "! conflict g1 on backup-share:" in planned.stdout
    assert "provisioner recover" in planned.stdout
    refused = cli("apply", "--auto-approve", quickstart)
    assert refused.returncode == 1
    assert "Left alone: commune-exemple, syndicat-eaux" in refused.stderr
    assert snapshot(quickstart) == files, "no copy may be replaced by a new key"

    # Declined at its question: exit 1, nothing recorded (the recover below finds it all).
    declined = cli("recover", quickstart, input="no\n")
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert "2 generations, 5 copies, 2 keys back into the escrow; 0 lost" in declined.stdout
    assert snapshot(quickstart) == files
    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "2 generations, 5 copies, 2 keys back into the escrow; 0 lost" in recovered.stdout
    assert recovered.stdout.splitlines()[-1] == (
        "Recovered. Run `provisioner plan` to see what is left to repair."  # no binding to record
    ), recovered.stdout
    taken = current_generations(quickstart)
    assert recovered_record(cli, quickstart) == {
        "generations": [f"{entity} g1 sha256:{cert}" for entity, _, cert, _ in taken],
        "retired": [],
        "copies": 5,
        "forgotten": [],
        "escrow_restored": sorted(key for *_, key in taken),
        "lineage": None,
        "lost": [],
    }
    converged(cli, quickstart)
    assert key_fingerprints(quickstart) == keys and snapshot(quickstart) == files
    assert cli("rehearse", quickstart).returncode == 0
    assert len(escrowed_keys(quickstart)) == 2
    assert "(adopted)" not in cli("status", quickstart).stdout, "keys this tool made"


def test_empty_state_db_is_refused_and_nothing_is_written(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = snapshot(quickstart)
    db = state_dir(quickstart) / "state.db"
    for leftover in ("state.db-wal", "state.db-shm"):
        (state_dir(quickstart) / leftover).unlink(missing_ok=True)
    db.write_bytes(b"")
    for command in (("plan",), ("apply", "--auto-approve")):
        done = cli(*command, quickstart)
        assert done.returncode == 1
        assert "there is no state, but the escrow holds 2 key(s)" in done.stderr
        assert "provisioner recover" in done.stderr and "Traceback" not in done.stderr
    assert db.stat().st_size == 0, "nothing is created over a lost state"
    assert snapshot(quickstart) == files
    assert cli("recover", "--auto-approve", quickstart).returncode == 0
    converged(cli, quickstart)
    assert snapshot(quickstart) == files


@pytest.mark.both_backends
def test_older_backup_restored_after_a_renewal_takes_newer_generations_back(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    backup = tmp_path / "backup"
    backup_state(quickstart, backup)  # the state folder copied, or pg_dump
    imaged = p12_files(quickstart)["workstations/ws-marches/syndicat-eaux.g1.p12"]
    image = imaged.read_bytes()
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    keys, files = key_fingerprints(quickstart), snapshot(quickstart)
    assert "shared/backup/commune-exemple.g2.p12" in files
    restore_state(quickstart, backup)

    refused = cli("apply", "--auto-approve", quickstart, env=RENEWAL)
    assert refused.returncode == 1
    assert "! conflict g2 on backup-share:" in refused.stdout
    assert snapshot(quickstart) == files, "generation 2 must not be made again over its copies"
    # one workstation restored from its own image, taken before the renewal: its copy of
    # generation 1 is back, as the restored state records it
    imaged.write_bytes(image)
    gone = sorted(  # the backup's records of the copies the renewal took off the workstations
        f"{target}:{path}"
        for target, path in state_rows(quickstart, "SELECT target, path FROM copies")
        if target.startswith("ws-") and not Path(path).exists()
    )
    assert len(gone) == 2, gone

    recovered = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert 'generation 2 "Syndicat Eaux Val 2028" (current)' in recovered.stdout
    assert "current -> retired" in recovered.stdout
    # the audit log says what recover did: generation 2 of each taken back with its key, the
    # generations 1 retired, the records of the copies of generation 1 the renewal had taken
    # off the workstations forgotten
    taken = current_generations(quickstart)
    record = recovered_record(cli, quickstart)
    assert sorted(record.pop("forgotten")) == gone
    assert record == {
        "generations": [f"{entity} g2 sha256:{cert}" for entity, _, cert, _ in taken],
        "retired": ["commune-exemple g1", "syndicat-eaux g1"],
        "copies": 5,
        "escrow_restored": sorted(key for *_, key in taken),
        "lineage": None,
        "lost": [],
    }, record
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    assert not imaged.exists(), "the retired key the state still records is taken off"
    converged(cli, quickstart, RENEWAL)
    assert key_fingerprints(quickstart) == keys
    numbers = state_rows(quickstart, "SELECT entity, number, status FROM generations ORDER BY 1, 2")
    assert numbers == [
        ("commune-exemple", 1, "retired"),
        ("commune-exemple", 2, "current"),
        ("syndicat-eaux", 1, "retired"),
        ("syndicat-eaux", 2, "current"),
    ]


@pytest.mark.both_backends
def test_missing_keyring_beside_sealed_keys_is_refused_never_replaced(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    set_escrow_blob(quickstart, "keyring.json", None)
    for command in (("plan",), ("apply", "--auto-approve"), ("recover", "--auto-approve")):
        done = cli(*command, quickstart)
        assert done.returncode == 1, command
        assert "keyring.json is missing but 2 sealed key file(s) are there" in done.stderr
        # Each says what to do, recover too (which reads the escrow without the unit check).
        # ... and where it is told, a page that exists, spelt as it is
        assert "(docs/RECOVERY.md)" in done.stderr, done.stderr
    assert (REPO / "docs" / "RECOVERY.md").is_file()
    # recover's own words (it reads the escrow without the unit check)
    assert done.stderr.endswith(
        "keyring.json is missing but 2 sealed key file(s) are there; a new keyring would never "
        "open them. Restore keyring.json from the backup of this state folder "
        "(docs/RECOVERY.md)\n"
    ), done.stderr
    assert escrow_blob(quickstart, "keyring.json") is None, "a second keyring was created"
    probe = cli("check", quickstart)
    assert probe.returncode == 2 and "PROVISIONER CRITICAL - " in probe.stdout, probe.stdout


def test_check_names_every_open_consultation_while_the_unit_is_broken(
    cli: Runner, quickstart: Path
) -> None:
    """Stateful suite, random seed 2769655202: with keyring.json gone, check was CRITICAL but
    named no consultation, the recorded one nor one only in the file (apply refuses all)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    c = quickstart.parent / "c.csv"
    head = "reference;title;entity;designation;status;deadline;opening\n"
    c.write_text(head + "R-1;x;commune-exemple;Commune Exemple;open;10/12/2026 12:00;11/12/2026\n")
    assert cli("apply", "--auto-approve", "--consultations", c, quickstart).returncode == 0
    c.write_text(c.read_text() + "F-2;y;syndicat-eaux;Syndicat Eaux Val 2026;open;12/12/2026;\n")
    (state_dir(quickstart) / "escrow" / "keyring.json").unlink()
    probe = cli("check", "--consultations", c, quickstart)
    assert probe.returncode == 2, probe.stdout
    for reference in ("R-1", "F-2"):
        line = next(x for x in probe.stdout.splitlines() if f"consultation {reference}" in x)
        assert line.startswith("CRITICAL: ") and "[unit-broken]" in line, line


def test_escrow_of_another_lineage_is_refused(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(quickstart, other / "quickstart.yaml")
    shutil.copytree(quickstart.parent / "secrets", other / "secrets")
    assert cli("apply", "--auto-approve", other / "quickstart.yaml").returncode == 0
    escrow = state_dir(quickstart) / "escrow"
    shutil.rmtree(escrow)
    shutil.copytree(state_dir(other / "quickstart.yaml") / "escrow", escrow)
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1
    assert "the escrow belongs to another state" in done.stderr
    # Read without unlocking it (status reads no passphrase): refused alike.
    seen = cli("status", quickstart)
    assert seen.returncode == 1 and "the escrow belongs to another state" in seen.stderr
    ring = json.loads((escrow / "keyring.json").read_text())
    assert ring["lineage"] != state_rows(quickstart, "SELECT value FROM meta WHERE key='lineage'")


@pytest.mark.both_backends
def test_deleted_escrow_key_is_taken_back_from_a_copy(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    lost = f"{escrowed_keys(quickstart)[0]}.key"
    set_escrow_blob(quickstart, lost, None)
    planned = cli("plan", quickstart)
    assert "restore escrowed key from backup-share" in planned.stdout, planned.stdout
    assert "[escrow-missing]" in planned.stdout
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert escrow_blob(quickstart, lost) is not None
    converged(cli, quickstart)
    # With every copy gone too, the key exists nowhere: said, never taken for fine.
    set_escrow_blob(quickstart, lost, None)
    for copy in p12_files(quickstart).values():
        copy.unlink()
    broken = cli("plan", quickstart)
    assert "[escrow-missing]" in broken.stdout
    assert "its private key is missing from the escrow" in broken.stdout
    probe = cli("check", quickstart)
    assert probe.returncode == 2 and "missing from the escrow" in probe.stdout, probe.stdout


def test_retired_generation_deleted_from_the_shared_location_is_written_again(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    old = quickstart.parent / "demo-out" / "shared" / "backup" / "commune-exemple.g1.p12"
    before = key_fingerprints(quickstart)["shared/backup/commune-exemple.g1.p12"]
    old.unlink()
    planned = cli("plan", quickstart, env=RENEWAL)
    assert "+ write g1 on backup-share:" in planned.stdout and "[missing]" in planned.stdout
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    assert key_fingerprints(quickstart)["shared/backup/commune-exemple.g1.p12"] == before


def test_stray_file_where_a_copy_goes_is_never_replaced(cli: Runner, quickstart: Path) -> None:
    ws = quickstart.parent / "demo-out" / "workstations" / "ws-accueil"
    ws.mkdir(parents=True)
    stray = ws / "commune-exemple.g1.p12"
    stray.write_bytes(b"an agent's own file")
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1
    assert "(not a PKCS#12 file): left as it is" in done.stdout
    assert stray.read_bytes() == b"an agent's own file"
    # The other entity is not held back by it.
    assert (quickstart.parent / "demo-out/workstations/ws-marches/syndicat-eaux.g1.p12").exists()
    stray.unlink()  # the operator's decision
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    converged(cli, quickstart)


@pytest.mark.parametrize("home", ["recorded", "not recorded (made by an older version)"])
def test_copied_tree_does_not_remove_the_originals_copies(
    cli: Runner, quickstart: Path, tmp_path: Path, home: str
) -> None:
    """A state copied with its tree is told by its recorded home, or, made before homes were
    recorded, by its local targets' folders recorded under the original's root."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = snapshot(quickstart)
    if home != "recorded":
        db = sqlite3.connect(state_dir(quickstart) / "state.db")
        with db:
            db.execute("DELETE FROM meta WHERE key = 'home'")
        db.close()
    copy = tmp_path / "copy"
    shutil.copytree(quickstart.parent, copy)
    done = cli("apply", "--auto-approve", copy / "quickstart.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[copied-tree]" in done.stdout
    # A renewal in the copy retires generation 1: still nothing of the original is removed.
    renewed = cli("apply", "--auto-approve", copy / "quickstart.yaml", env=RENEWAL)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert "[copied-tree]" in renewed.stdout
    assert snapshot(quickstart) == files, "the original tree's copies were touched"
    # recover does not make the copy the home unless told the tree was moved.
    assert cli("recover", "--auto-approve", copy / "quickstart.yaml", env=RENEWAL).returncode == 0
    again = cli("apply", "--auto-approve", copy / "quickstart.yaml", env=RENEWAL)
    assert "[copied-tree]" in again.stdout and snapshot(quickstart) == files
    # nor when told it moved while the original tree still holds its state
    moved = cli("recover", "--moved", "--auto-approve", copy / "quickstart.yaml", env=RENEWAL)
    assert moved.returncode == 1, moved.stdout + moved.stderr
    assert f"still holds a state ({state_dir(quickstart).resolve() / 'state.db'})" in moved.stdout


def test_copied_tree_with_absolute_target_paths(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "targets"
    quickstart.write_text(quickstart.read_text().replace("path: demo-out", f"path: {shared}"))
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    before = {p.name for p in shared.rglob("*.p12")}
    copy = tmp_path / "copy"
    shutil.copytree(quickstart.parent, copy)
    renewed = cli("apply", "--auto-approve", copy / "quickstart.yaml", env=RENEWAL)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert before <= {p.name for p in shared.rglob("*.p12")}, "a copy of the tree removed files"
    # The copies at the recorded paths may be the original's: generation 1's three
    # workstation copies are not removed, and a changed password is not written over the
    # four copies of commune-exemple either; the plan counts what it held back.
    held = cli("plan", copy / "quickstart.yaml", env=RENEWAL)
    assert "(a copied or moved tree): 3 removals or rewrites are held back" in held.stdout
    (copy / "secrets" / "commune-exemple.pass").write_text("Nouveau-mot-de-passe-2026\n")
    held = cli("plan", copy / "quickstart.yaml", env=RENEWAL)
    assert "(a copied or moved tree): 7 removals or rewrites are held back" in held.stdout
    assert "Plan: 0 to create, 0 to update, 0 to remove." in held.stdout, held.stdout


def test_moved_tree_is_rehomed_on_request(cli: Runner, quickstart: Path, tmp_path: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.move(quickstart.parent, moved)
    manifest = moved / "quickstart.yaml"
    held = cli("apply", "--auto-approve", manifest)
    assert "[copied-tree]" in held.stdout and "are held back" in held.stdout
    done = cli("recover", "--moved", "--auto-approve", manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the state's home becomes" in done.stdout
    applied = cli("apply", "--auto-approve", manifest)
    assert applied.returncode == 0 and "[copied-tree]" not in applied.stdout
    assert cli("apply", "--auto-approve", manifest, env=RENEWAL).returncode == 0
    converged(cli, manifest, RENEWAL)


def test_absent_entity_keeps_its_copies_on_shared_locations(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    text = quickstart.read_text().replace(
        "  - id: syndicat-eaux\n", "  - id: syndicat-eaux\n    state: absent\n"
    )
    quickstart.write_text(text)
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    left = set(p12_files(quickstart))
    assert "shared/backup/syndicat-eaux.g1.p12" in left
    assert "workstations/ws-marches/syndicat-eaux.g1.p12" not in left
    converged(cli, quickstart)


def test_recover_takes_back_an_absent_entitys_keys_before_it_returns(
    cli: Runner, quickstart: Path
) -> None:
    """Seed 110335550: state and escrow lost, the entity set absent, recover, then present
    again: the keys its copies hold must be taken back, not left only in the copies."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    keys, files = key_fingerprints(quickstart), snapshot(quickstart)
    shutil.rmtree(state_dir(quickstart))
    present = quickstart.read_text()
    quickstart.write_text(
        present.replace("  - id: syndicat-eaux\n", "  - id: syndicat-eaux\n    state: absent\n")
    )
    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "Not recovered:" not in recovered.stdout
    assert '+ syndicat-eaux: generation 1 "' in recovered.stdout
    assert "2 generations, 5 copies, 2 keys back into the escrow; 0 lost" in recovered.stdout
    assert key_fingerprints_of_rows(quickstart) == set(keys.values())
    assert len(list((state_dir(quickstart) / "escrow").glob("*.key"))) == 2
    absent = cli("apply", "--auto-approve", quickstart)
    assert absent.returncode == 0, absent.stdout + absent.stderr
    left = set(p12_files(quickstart))
    assert "shared/backup/syndicat-eaux.g1.p12" in left
    assert "workstations/ws-marches/syndicat-eaux.g1.p12" not in left
    quickstart.write_text(present)
    back = cli("apply", "--auto-approve", quickstart)
    assert back.returncode == 0, back.stdout + back.stderr
    converged(cli, quickstart)
    on_share = snapshot(quickstart)["shared/backup/syndicat-eaux.g1.p12"]
    assert on_share == files["shared/backup/syndicat-eaux.g1.p12"]


def test_recover_names_an_absent_entity_whose_password_cannot_be_read(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    shutil.rmtree(state_dir(quickstart))
    quickstart.write_text(
        quickstart.read_text().replace(
            "  - id: syndicat-eaux\n", "  - id: syndicat-eaux\n    state: absent\n"
        )
    )
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").unlink()
    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "Not recovered:" in recovered.stdout
    assert "syndicat-eaux (state: absent): its copies were not read:" in recovered.stdout
    assert "1 generation, 3 copies, 1 key back into the escrow" in recovered.stdout


@pytest.mark.both_backends
def test_escrow_passphrase_rotation(
    cli: Runner, quickstart: Path, tmp_path: Path, state_backend: str
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    new = tmp_path / "new.pass"
    new.write_text("A-Brand-New-Escrow-Passphrase-2027\n")
    weak = cli("rekey", quickstart, "--new-passphrase-env", "W", env={"W": "short"})
    assert weak.returncode == 1 and "refused" in weak.stderr
    done = cli("rekey", quickstart, "--new-passphrase-file", new)
    assert done.returncode == 0, done.stderr
    old = cli("plan", quickstart)
    assert old.returncode == 1 and "wrong escrow passphrase" in old.stderr
    set_aside = f"move {quickstart.parent / '.provisioner' / 'escrow'} aside"
    if state_backend == "postgresql":  # the escrow is the schema's table
        schema = re.search(r"schema (\w+)", old.stderr)
        assert schema is not None, old.stderr
        set_aside = (
            f"keep a pg_dump of schema {schema[1]} and empty its escrow table "
            '(docs/TEAM.md, "A lost escrow passphrase")'
        )
    # The next step is named (issue 31): the rotated secret, else RECOVERY's row for a lost one.
    assert (
        "file secrets/escrow.pass, which escrow.passphrase names, does not open it. If the "
        "passphrase was rotated (`provisioner rekey`), point escrow.passphrase at the new one. "
        'If it is lost for good, follow docs/RECOVERY.md, "What each loss costs", row "the '
        'escrow passphrase": point escrow.passphrase at a new secret, '
        f"{set_aside} and run `provisioner recover {quickstart}`" in old.stderr
    ), old.stderr
    row = next(
        line
        for line in (REPO / "docs" / "RECOVERY.md").read_text().splitlines()
        if line.startswith("| the escrow passphrase |")
    )
    assert "`wrong escrow passphrase`" in row and "provisioner recover MANIFEST" in row
    text = quickstart.read_text().replace("{file: secrets/escrow.pass}", f"{{file: {new}}}")
    quickstart.write_text(text)
    again = cli("plan", "--detailed-exitcode", quickstart)
    assert again.returncode == 0, again.stdout + again.stderr
    # Password ids survive the rotation: a changed entity password is still detected.
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").write_text("Changed-After-Rekey-1\n")
    assert "[password-changed]" in cli("plan", quickstart).stdout
    assert state_rows(quickstart, "SELECT action FROM audit WHERE action = 'escrow-rekeyed'")


def test_state_db_older_than_its_escrow_is_refused_then_recovered(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    db = state_dir(quickstart) / "state.db"
    assert cli("plan", quickstart).returncode == 0  # checkpointed: state.db alone is whole
    shutil.copy(db, tmp_path / "state.db")
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    keys = key_fingerprints(quickstart)
    for leftover in ("state.db-wal", "state.db-shm"):
        (state_dir(quickstart) / leftover).unlink(missing_ok=True)
    shutil.copy(tmp_path / "state.db", db)
    for command in (("plan",), ("apply", "--auto-approve"), ("status",)):  # status: locked
        done = cli(*command, quickstart, env=RENEWAL)
        assert done.returncode == 1
        assert "the state is older than its escrow" in done.stderr, done.stderr
        # Both renewed keys, the first one included: it was sealed at the backup's serial.
        new = len(set(keys.values()) - key_fingerprints_of_rows(quickstart))
        assert new == 2 and f"holds {new} key(s) sealed since" in done.stderr, done.stderr
    assert cli("recover", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    converged(cli, quickstart, RENEWAL)
    assert key_fingerprints(quickstart) == keys


def test_a_conflict_does_not_hide_the_entitys_other_repairs(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(quickstart, other / "quickstart.yaml")
    shutil.copytree(quickstart.parent / "secrets", other / "secrets")
    assert cli("apply", "--auto-approve", other / "quickstart.yaml").returncode == 0
    name = "workstations/ws-accueil/commune-exemple.g1.p12"
    stray = p12_files(quickstart)[name]
    stray.write_bytes(p12_files(other / "quickstart.yaml")[name].read_bytes())
    foreign = stray.read_bytes()
    shared = p12_files(quickstart)["shared/backup/commune-exemple.g1.p12"]
    shared.unlink()
    planned = cli("plan", quickstart)
    assert "! conflict g1 on ws-accueil:" in planned.stdout
    assert "+ write g1 on backup-share:" in planned.stdout
    status = cli("status", quickstart)
    assert "not opened: this command reads no password" in status.stdout, status.stdout
    probe = cli("check", quickstart)
    assert probe.returncode == 1 and "run provisioner recover" in probe.stdout, probe.stdout
    assert cli("apply", "--auto-approve", quickstart).returncode == 1
    assert shared.exists() and stray.read_bytes() == foreign


@pytest.mark.parametrize("limit", [(), ("--limit", "syndicat-eaux")])
def test_apply_after_the_whole_state_folder_is_lost_writes_nothing(
    cli: Runner, quickstart: Path, limit: tuple[str, ...]
) -> None:
    """The state folder lost: an apply, limited to one entity or not, finds every entity it
    looks at held by copies it did not write, and leaves no new state or keyring behind."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    shutil.rmtree(state_dir(quickstart))
    assert cli("apply", "--auto-approve", *limit, quickstart).returncode == 1
    assert not (state_dir(quickstart) / "state.db").exists()
    assert not (state_dir(quickstart) / "escrow").exists(), "a keyring was made over a lost state"
    declined = cli("recover", quickstart)  # no terminal: declined
    assert declined.returncode == 1
    assert not (state_dir(quickstart) / "state.db").exists()
    assert not (state_dir(quickstart) / "escrow").exists()


def test_a_lost_state_never_starts_over_beside_a_later_generation_on_the_workstations(
    cli: Runner, quickstart: Path
) -> None:
    """Found by the stateful suite (the last-shared-location rule, drawn): after a renewal
    the workstations hold only generation 2; the state folder is lost and the entity's shared
    location (which held generation 1) taken out of the manifest. Apply made a new first key
    beside generation 2 (nothing stood at the g1 paths) and the next plan called the real
    key's copies conflicts. A copy named beyond the next number is a state older than its
    targets: the entity is held, naming it, until recover takes it back."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    workstation = quickstart.parent / "demo-out/workstations/ws-accueil"
    assert sorted(p.name for p in workstation.glob("commune-exemple.*")) == [
        "commune-exemple.g2.p12"
    ]
    real = key_fingerprints(quickstart)["workstations/ws-accueil/commune-exemple.g2.p12"]
    shutil.rmtree(state_dir(quickstart))
    quickstart.write_text(
        quickstart.read_text().replace(
            "    shared_locations: [backup-share]\n    workstations: [service-marches, ws-accueil]",
            "    shared_locations: []\n    workstations: [service-marches, ws-accueil]",
        )
    )
    files = snapshot(quickstart)

    refused = cli("apply", "--auto-approve", quickstart, env=RENEWAL)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "! conflict g2 on ws-accueil:" in refused.stdout
    assert "named as generation 2, a number this state never gave" in refused.stdout
    assert "provisioner recover" in refused.stdout
    assert "Left alone: commune-exemple, syndicat-eaux" in refused.stderr
    assert not (workstation / "commune-exemple.g1.p12").exists(), "no new first key"
    assert snapshot(quickstart) == files

    recovered = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    converged(cli, quickstart, RENEWAL)
    current = state_rows(
        quickstart,
        "SELECT number, key_sha256 FROM generations "
        "WHERE entity = 'commune-exemple' AND status = 'current'",
    )
    assert current == [(2, real)], "the key the workstations held stays current"


def test_recover_prefers_the_escrows_key_over_a_foreign_copy(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    keys = key_fingerprints(quickstart)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(quickstart, other / "quickstart.yaml")
    shutil.copytree(quickstart.parent / "secrets", other / "secrets")
    assert cli("apply", "--auto-approve", other / "quickstart.yaml").returncode == 0
    name = "shared/backup/commune-exemple.g1.p12"
    p12_files(quickstart)[name].write_bytes(p12_files(other / "quickstart.yaml")[name].read_bytes())
    (state_dir(quickstart) / "state.db").unlink()
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left as it is" in done.stdout, done.stdout
    assert "commune-exemple: key" not in done.stdout, "a foreign key went into the escrow"
    planned = cli("plan", quickstart)
    assert "! conflict g1 on backup-share:" in planned.stdout
    keys.pop(name)
    assert {k: v for k, v in key_fingerprints(quickstart).items() if k != name} == keys


def other_tree(quickstart: Path, tmp_path: Path, cli: Runner) -> Path:
    """Another tree with the same entities and passwords (a test copy, a staging site)."""
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(quickstart, other / "quickstart.yaml")
    shutil.copytree(quickstart.parent / "secrets", other / "secrets")
    assert cli("apply", "--auto-approve", other / "quickstart.yaml").returncode == 0
    return other / "quickstart.yaml"


def test_state_lost_escrow_kept_a_key_the_escrow_never_sealed_is_not_taken(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Red team 4, H2: another tree's copy named like a newer generation was made current,
    the real key retired from every workstation and the foreign file deleted."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    other = other_tree(quickstart, tmp_path, cli)
    stray = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g2.p12"
    foreign = p12_files(other)["workstations/ws-accueil/commune-exemple.g1.p12"].read_bytes()
    stray.write_bytes(foreign)
    also = quickstart.parent / "demo-out/workstations/ws-marches/commune-exemple.g2.p12"
    also.write_bytes(foreign)  # on two workstations: one clash, naming both
    # and a third tree's key beside them: a clash of its own, said as well
    third = tmp_path / "third"
    shutil.copytree(other.parent, third, ignore=shutil.ignore_patterns(".provisioner", "demo-out"))
    assert cli("apply", "--auto-approve", "-q", third / "quickstart.yaml").returncode == 0
    another = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g3.p12"
    another.write_bytes(
        p12_files(third / "quickstart.yaml")[
            "workstations/ws-accueil/commune-exemple.g1.p12"
        ].read_bytes()
    )
    keyring = escrow_blob(quickstart, "keyring.json")
    assert keyring is not None
    lineage = json.loads(keyring)["lineage"]
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (state_dir(quickstart) / name).unlink(missing_ok=True)  # the escrow is kept
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    for where in (f"ws-marches:{also}, ws-accueil:{stray}", f"ws-accueil:{another}"):
        assert said_once(
            done.stdout,
            f"  ! left as it is: commune-exemple: {where} holds a key the escrow never sealed "
            "(sha256:*); the escrow was kept when the state was lost and holds every key this "
            "state made, so this is not one of them (a copy from another tree?): left as it is. "
            "If it is this organisation's key, `provisioner adopt` takes it in",
        )
    # the rebuilt state is of the kept escrow's lineage, which stays as it was: an older
    # backup of the lost state is still of this unit; the audit log says which lineage
    assert state_rows(quickstart, "SELECT value FROM meta WHERE key = 'lineage'") == [(lineage,)]
    assert escrow_blob(quickstart, "keyring.json") == keyring
    assert recovered_record(cli, quickstart)["lineage"] == lineage
    assert "generation 2" not in done.stdout
    rows = state_rows(
        quickstart, "SELECT number, status FROM generations WHERE entity = 'commune-exemple'"
    )
    assert rows == [(1, "current")]
    assert len(list((state_dir(quickstart) / "escrow").glob("*.key"))) == 2
    cli("apply", "--auto-approve", quickstart, env=RENEWAL)
    assert stray.read_bytes() == foreign, "a file this state did not write was touched"
    assert also.read_bytes() == foreign, "a file this state did not write was touched"
    held = set(p12_files(quickstart))
    for ws in ("ws-accueil", "ws-marches"):
        assert f"workstations/{ws}/commune-exemple.g1.p12" in held


def test_full_loss_two_certificates_for_one_number_both_keys_are_kept(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Red team 4, M3: the certificate that lost the number was left only in its copy, and the
    plan advised moving that file away."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    ours = key_fingerprints(quickstart)["shared/backup/commune-exemple.g1.p12"]
    other = other_tree(quickstart, tmp_path, cli)
    for ws in ("ws-accueil", "ws-marches"):
        name = f"workstations/{ws}/commune-exemple.g1.p12"
        p12_files(quickstart)[name].write_bytes(p12_files(other)[name].read_bytes())
    shutil.rmtree(state_dir(quickstart))
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert said_once(
        done.stdout,
        "  ! left as it is: commune-exemple: backup-share:"
        f"{p12_files(quickstart)['shared/backup/commune-exemple.g1.p12']} holds a certificate "
        "(sha256:*) that is not generation 1 as the state records it: left as it is; its key "
        "goes into the escrow (it may be the only other copy)",
    )
    escrowed = {p.stem for p in (state_dir(quickstart) / "escrow").glob("*.key")}
    assert ours in escrowed and len(escrowed) == 3
    planned = cli("plan", quickstart)
    conflict = [x for x in planned.stdout.splitlines() if "! conflict" in x and "backup" in x]
    assert conflict and all("NOT in the escrow" not in x for x in conflict), planned.stdout


def test_full_loss_two_certificates_held_as_often_the_shared_locations_one_wins(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """State and escrow lost; generation 1 is held once by backup-share (this tree's key) and
    once by ws-accueil (another tree's, same password), ws-marches' copy gone: as many copies
    each, so the one on a shared location becomes generation 1 and the workstation's is left
    as it is, its key escrowed beside it."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    ours = key_fingerprints(quickstart)["shared/backup/commune-exemple.g1.p12"]
    other = other_tree(quickstart, tmp_path, cli)
    name = "workstations/ws-accueil/commune-exemple.g1.p12"
    p12_files(quickstart)[name].write_bytes(p12_files(other)[name].read_bytes())
    theirs = key_fingerprints(quickstart)[name]
    p12_files(quickstart)["workstations/ws-marches/commune-exemple.g1.p12"].unlink()
    lose_state(quickstart)
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert said_once(
        done.stdout,
        f"  ! left as it is: commune-exemple: ws-accueil:{p12_files(quickstart)[name]} holds a "
        "certificate (sha256:*) that is not generation 1 as the state records it: left as it "
        "is; its key goes into the escrow (it may be the only other copy)",
    )
    rows = state_rows(
        quickstart, "SELECT key_sha256 FROM generations WHERE entity = 'commune-exemple'"
    )
    assert rows == [(ours,)]
    assert {ours, theirs} <= {p.stem for p in (state_dir(quickstart) / "escrow").glob("*.key")}


def test_an_entity_held_back_by_a_conflict_is_not_promised_a_renewal(
    cli: Runner, quickstart: Path
) -> None:
    """Red team 4, L1: check said "run provisioner apply" and plan "a new generation will be
    created by the next apply" for an entity apply leaves alone."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    stray = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g2.p12"
    stray.write_bytes(b"someone's file " * 100)  # where the renewal's copy goes
    late = {"PROVISIONER_NOW": "2028-12-10T09:00:00Z"}
    checked = cli("check", quickstart, env=late)
    assert checked.returncode == 2, checked.stdout
    expired = next(x for x in checked.stdout.splitlines() if "commune-exemple: [expired]" in x)
    assert "apply makes no new generation while the entity has a conflict" in expired
    planned = cli("plan", quickstart, env=late)
    renewal = [x for x in planned.stdout.splitlines() if "[renewal-soon]" in x and "commune" in x]
    assert renewal and "will be created" not in renewal[0], planned.stdout
    assert "makes no new generation while the entity has a conflict" in planned.stdout


def test_recover_records_nothing_while_a_shared_location_is_out_of_sight(
    cli: Runner, quickstart: Path
) -> None:
    """Red team 5, H1/H4: with the share not mounted, recover said "0 generations ... Recovered"
    or called its keys lost, and the next apply started over with new keys."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = snapshot(quickstart)
    shutil.rmtree(state_dir(quickstart))
    share = quickstart.parent / "demo-out" / "shared" / "backup"
    share.rename(share.with_name("backup.unmounted"))
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "records nothing while a shared location is not observed" in done.stdout
    assert f"backup-share: {share} does not exist (not mounted?)" in done.stdout
    assert "lost" not in done.stdout
    left = (
        {p.name for p in state_dir(quickstart).iterdir()}
        if state_dir(quickstart).exists()
        else set()
    )
    assert left <= {"lock"}, left
    share.with_name("backup.unmounted").rename(share)
    again = cli("recover", "--auto-approve", quickstart)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 generations, 5 copies, 2 keys back into the escrow; 0 lost" in again.stdout
    assert snapshot(quickstart) == files


def test_recover_says_so_when_an_entity_out_of_the_manifest_lost_an_escrow_key(
    cli: Runner, quickstart: Path
) -> None:
    """Stateful suite, fixed seed, histories 650-660: recover reported nothing left out while
    an entity dropped from the manifest had lost its escrowed key (its copies not read)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    (key,) = state_rows(
        quickstart, "SELECT key_sha256 FROM generations WHERE entity = 'syndicat-eaux'"
    )[0]
    (state_dir(quickstart) / "escrow" / f"{key}.key").unlink()
    text = quickstart.read_text()
    start = text.index("  - id: syndicat-eaux")
    quickstart.write_text(text[:start])
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Not recovered:" in done.stdout, done.stdout
    assert "syndicat-eaux: generation 1" in done.stdout
    assert (
        ": its key is not in the escrow, and the entity is not in the manifest, so its copies "
        "were not read: put its block back and run recover again"
    ) in done.stdout, done.stdout
    quickstart.write_text(text)
    again = cli("recover", "--auto-approve", quickstart)
    assert again.returncode == 0 and "1 key back into the escrow" in again.stdout, again.stdout
    assert "Not recovered" not in again.stdout and "; 0 lost" in again.stdout, again.stdout


def test_escrow_rebuilt_from_copies_does_not_reencode_every_copy(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = snapshot(quickstart)
    shutil.move(state_dir(quickstart) / "escrow", tmp_path / "escrow-aside")
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 keys back into the escrow" in done.stdout
    converged(cli, quickstart)
    assert snapshot(quickstart) == files


@pytest.mark.both_backends
def test_recover_binds_the_consultations_again(cli: Runner, quickstart: Path) -> None:
    consultations = quickstart.parent / "consultations.csv"
    consultations.write_text(
        "reference;title;entity;designation;status;deadline;opening\n"
        "2028-TX-014;Voirie;commune-exemple;Commune Exemple;open;15/12/2028 12:00;20/12/2028\n"
    )
    given = ("--consultations", str(consultations))
    assert cli("apply", "--auto-approve", *given, quickstart).returncode == 0
    assert cli("apply", "--auto-approve", *given, quickstart, env=RENEWAL).returncode == 0
    converged(cli, quickstart, RENEWAL)
    lose_state(quickstart)
    gone = p12_files(quickstart)["workstations/ws-marches/syndicat-eaux.g2.p12"]
    gone.unlink()  # a copy to write again: recover records the bindings, and writes nothing
    done = cli("recover", "--auto-approve", *given, quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        "Recovered; 1 consultation binding(s) recorded again. Run `provisioner plan` to see "
        "what is left to repair."
    ), done.stdout
    assert not gone.exists(), "recover wrote to a workstation"
    # Without the file, the bound generation 1 stays on the workstations (its guard is back).
    planned = cli("plan", quickstart, env=RENEWAL)
    assert "remove g1 on ws-" not in planned.stdout, planned.stdout
    assert f"+ write g2 on ws-marches: {gone}  [missing]" in planned.stdout, planned.stdout


def test_recover_killed_before_its_bindings_records_them_when_run_again(
    cli: Runner, quickstart: Path
) -> None:
    """Red team 4, M2: killed after recording the copies, before the bindings, recover said
    "Nothing to recover" and a renewal without the file then removed the bound key."""
    consultations = quickstart.parent / "consultations.csv"
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    consultations.write_text(
        "reference;title;entity;designation;status;deadline;opening\n"
        "2028-TX-014;Voirie;commune-exemple;Commune Exemple;open;15/12/2028 12:00;20/12/2028\n"
    )
    given = ("--consultations", str(consultations))
    assert cli("apply", "--auto-approve", *given, quickstart).returncode == 0
    shutil.rmtree(state_dir(quickstart))
    killed = cli(
        "recover",
        "--auto-approve",
        *given,
        quickstart,
        env={"PROVISIONER_FAULT_INJECT": "committed"},
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    again = cli("recover", "--auto-approve", *given, quickstart)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing to recover" in again.stdout
    assert "1 consultation binding(s) recorded again" in again.stdout
    planned = cli("plan", quickstart, env=RENEWAL)
    removed = [x for x in planned.stdout.splitlines() if "- remove g1 on ws-" in x]
    assert removed and not any("commune-exemple.g1.p12" in x for x in removed), planned.stdout
    assert "Nothing to recover" in cli("recover", "--auto-approve", *given, quickstart).stdout


@pytest.mark.both_backends
def test_damaged_escrow_key_is_seen_by_plan_and_taken_back(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    key = f"{escrowed_keys(quickstart)[0]}.key"
    blob = escrow_blob(quickstart, key)
    assert blob is not None
    record = json.loads(blob)
    sealed = record["sealed"]
    record["sealed"] = sealed[:40] + ("A" if sealed[40] != "A" else "B") + sealed[41:]
    set_escrow_blob(quickstart, key, json.dumps(record).encode())
    planned = cli("plan", quickstart)
    assert "[escrow-missing]" in planned.stdout, planned.stdout
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    converged(cli, quickstart)
    assert cli("rehearse", quickstart).returncode == 0


@pytest.mark.parametrize("origin", ["another tree", "openssl"])
def test_recover_on_an_intact_state_never_makes_a_foreign_file_current(
    cli: Runner, quickstart: Path, tmp_path: Path, origin: str
) -> None:
    """A look-alike copy (`ENTITY.g2.p12`, opening with the entity's password) dropped in an
    agent's folder while the state and escrow are intact: recover names it and records
    nothing; the next apply keeps the real key, the one bids are encrypted to, on every
    workstation, and leaves the dropped file as it is (issue 27, item 2)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    copies = p12_files(quickstart)
    real = copies["workstations/ws-marches/commune-exemple.g1.p12"]
    password = (quickstart.parent / "secrets" / "commune-exemple.pass").read_text().strip()
    contents = p12_contents(real.read_bytes(), password)
    assert contents is not None
    bid = encrypt_bid(x509.load_der_x509_certificate(contents[1]), b"bid of company A")
    if origin == "another tree":
        other = other_tree(quickstart, tmp_path, cli)
        foreign = p12_files(other)["workstations/ws-marches/commune-exemple.g1.p12"].read_bytes()
    else:
        made = tmp_path / "made"
        made.mkdir()
        foreign = openssl_p12(made, password, TEST_CLOCK, name="Commune Exemple 2026").read_bytes()
    dropped = real.parent / "commune-exemple.g2.p12"
    dropped.write_bytes(foreign)
    before = state_rows(quickstart, "SELECT entity, number, status, key_sha256 FROM generations")

    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert said_once(
        done.stdout,
        "  ! left as it is: commune-exemple: ws-marches:"
        f"{p12_files(quickstart)['workstations/ws-marches/commune-exemple.g2.p12']} holds a "
        "certificate (sha256:*) this state does not record, whose key the escrow never sealed "
        "and whose serial number carries no mark of this state's lineage: not a generation "
        "this state made (an agent's own export, another tool's or another tree's key?): left "
        "as it is, never current. If it is this organisation's key, `provisioner adopt` takes "
        "it in",
    )
    assert state_rows(quickstart, "SELECT entity, number, status, key_sha256 FROM generations") == (
        before
    ), "nothing recorded: generation 1 stays current"

    applied = cli("apply", "--auto-approve", quickstart)
    assert applied.returncode == 1, applied.stdout + applied.stderr  # the entity left alone
    assert "! conflict g2 on ws-marches:" in applied.stdout
    assert "unknown to this state): left as it is" in applied.stdout
    for ws in ("ws-marches", "ws-accueil"):
        held = quickstart.parent / "demo-out" / "workstations" / ws / "commune-exemple.g1.p12"
        if ws == "ws-marches" or held.exists():
            assert opens_bid(held.read_bytes(), password, bid), f"the bid opens on {ws}"
    assert dropped.read_bytes() == foreign, "a file this state did not write is left as it is"
    assert cli("rehearse", quickstart).returncode == 0


@pytest.mark.parametrize("home", ["recorded", "not recorded (made by an older version)"])
def test_recover_moved_in_a_copied_tree_is_refused_while_the_original_holds_its_state(
    cli: Runner, quickstart: Path, tmp_path: Path, home: str
) -> None:
    """The copied-tree warning invites `recover --moved`; run in a copy while the original is
    still in use, it would make the copy the home and its next apply would remove every copy
    at the old paths (issue 27, item 3). It refuses, naming the original's state; once that
    state is moved away (the original retired), it re-homes. A state made before homes were
    recorded is told copied by its local targets' folders, and refused alike."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = snapshot(quickstart)
    if home != "recorded":
        with contextlib.closing(sqlite3.connect(state_dir(quickstart) / "state.db")) as db, db:
            db.execute("DELETE FROM meta WHERE key = 'home'")
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(quickstart.parent, copy)
    manifest = copy / "quickstart.yaml"
    held = cli("apply", "--auto-approve", manifest)
    assert "[copied-tree]" in held.stdout and "recover --moved" in held.stdout

    refused = cli("recover", "--moved", "--auto-approve", manifest)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    original_state = state_dir(quickstart).resolve() / "state.db"
    assert refused.stdout == (
        "provisioner recover records nothing:\n"
        f"  ! --moved: the state's home {state_dir(quickstart).resolve()} still holds a state "
        f"({original_state}): this tree was copied, not moved, and the tree there may still be "
        "in use. If that tree is retired, move its state folder away (keep it as a backup), "
        "then run `recover --moved` again; if both trees stay in use, run this one without "
        "--moved (its removals stay held back)\n"
    ), refused.stdout
    plain = cli("recover", "--auto-approve", manifest)  # without --moved: never re-homed
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "home" not in plain.stdout, plain.stdout
    again = cli("apply", "--auto-approve", manifest)
    assert "[copied-tree]" in again.stdout, "the copy is still not the home"
    assert snapshot(quickstart) == files, "the original tree's copies are untouched"
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0, "original converged"
    # --moved where the state already is at home: nothing to record (its home, when the
    # state did not record one yet)
    at_home = cli("recover", "--moved", "--auto-approve", quickstart)
    assert at_home.returncode == 0, at_home.stdout + at_home.stderr
    if home == "recorded":
        assert at_home.stdout.startswith("Nothing to recover"), at_home.stdout
    else:
        becomes = f"  ~ the state's home becomes {state_dir(quickstart).resolve()}\n"
        assert becomes in at_home.stdout and "0 generations, 0 copies" in at_home.stdout

    shutil.move(state_dir(quickstart), tmp_path / "retired-state")
    done = cli("recover", "--moved", "--auto-approve", manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the state's home becomes" in done.stdout
    # The old tree's state comes back (the tree was in use after all): the removals that
    # would reach the old paths are held back again, naming that home.
    shutil.move(tmp_path / "retired-state", state_dir(quickstart))
    assert snapshot(quickstart) == files
    back = cli("apply", "--auto-approve", manifest)
    assert "[copied-tree]" in back.stdout, back.stdout
    assert snapshot(quickstart) == files, "a folder another live state records is untouched"


@pytest.mark.parametrize("lost", ["state.db", "the whole state folder"])
def test_a_password_changed_after_a_lost_state_is_one_recover_away(
    cli: Runner, quickstart: Path, tmp_path: Path, lost: str
) -> None:
    """Issue 27, item 5: the state lost, then the entity's password changed in the manifest:
    its copies, under the old password, are conflicts and the entity gets no renewal. One
    command takes them back with the previous password; the next apply re-encodes them."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    keys = key_fingerprints(quickstart)
    secret = quickstart.parent / "secrets" / "commune-exemple.pass"
    old = tmp_path / "old.pass"
    shutil.copy(secret, old)
    if lost == "state.db":
        (state_dir(quickstart) / "state.db").unlink()
    else:
        shutil.rmtree(state_dir(quickstart))
    secret.write_text("Nouveau-mot-de-passe-2026\n")
    # one copy already under the new password (an agent's workstation re-keyed by hand)
    rekeyed = p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g1.p12"]
    bundle = pkcs12.load_pkcs12(rekeyed.read_bytes(), old.read_text().strip().encode())
    assert bundle.key is not None and bundle.cert is not None
    rekeyed.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"Commune Exemple",
            bundle.key,  # type: ignore[arg-type]
            bundle.cert.certificate,
            None,
            serialization.BestAvailableEncryption(b"Nouveau-mot-de-passe-2026"),
        )
    )

    stuck = cli("recover", "--auto-approve", quickstart)
    assert "commune-exemple.g1.p12" in stuck.stdout and "wrong password" in stuck.stdout
    held = cli("apply", "--auto-approve", quickstart)
    assert held.returncode == 1 and "! conflict g1" in held.stdout

    done = cli("recover", "--auto-approve", "--previous-password-file", old, quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrong password" not in done.stdout
    assert old.read_text().strip() not in done.stdout + done.stderr, "no secret in the output"
    planned = cli("plan", quickstart)
    assert planned.stdout.count("[password-changed]") == 2, planned.stdout  # not ws-accueil's
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    converged(cli, quickstart)
    for rel, path in p12_files(quickstart).items():
        if "commune-exemple" in rel:
            opened = p12_contents(path.read_bytes(), "Nouveau-mot-de-passe-2026")
            assert opened is not None, rel
            assert opened[0] == keys[rel], "the same key, under the new password"


def test_an_older_backup_recovered_keeps_a_bound_generation_retained_and_the_next_plan_empty(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """A backup taken before a renewal, restored after it: `recover` finds the new generation
    current and the bound one, which stayed on the workstations for its open consultation,
    reads "retained" at once (status, state), not "retired" until some later apply; the plan
    that follows has nothing to do."""
    from tests.test_consultations import CREATED, IN_WINDOW, consultations

    c = consultations(quickstart.parent)
    at_creation = {"PROVISIONER_NOW": CREATED}
    assert cli("apply", "--auto-approve", quickstart, env=at_creation).returncode == 0
    done = cli("apply", "--auto-approve", quickstart, "--consultations", c, env=at_creation)
    assert done.returncode == 0, done.stdout + done.stderr
    backup = tmp_path / "backup"
    shutil.copytree(state_dir(quickstart), backup)
    renewal = {"PROVISIONER_NOW": IN_WINDOW}
    done = cli("apply", "--auto-approve", quickstart, "--consultations", c, env=renewal)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(state_dir(quickstart))
    shutil.copytree(backup, state_dir(quickstart))

    recovered = cli("recover", "--auto-approve", quickstart, "--consultations", c, env=renewal)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    rows = state_rows(
        quickstart, "SELECT number, status FROM generations WHERE entity = 'commune-exemple'"
    )
    assert sorted(rows) == [(1, "retained"), (2, "current")]
    status = cli("status", quickstart, "--consultations", c, env=renewal)
    assert 'g1 retained "Commune Exemple"' in status.stdout, status.stdout
    plan = cli("plan", "--detailed-exitcode", quickstart, "--consultations", c, env=renewal)
    assert plan.returncode == 0, plan.stdout


GENERATION_ROWS = (
    "SELECT entity, number, issuer, origin, status, key_sha256, cert_sha256 FROM generations "
    "ORDER BY entity, number"
)


def test_a_full_loss_recovered_keeps_an_adopted_key_adopted_and_an_issued_one_its_issuers(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """State and escrow lost: recover records each key as what it was. An adopted key (its
    certificate made elsewhere, without this tool's serial mark) stays adopted, so the
    manifest's certificate settings do not force a new generation over the key the platform
    knows (the adopted key was taken off both workstations by the next apply); a key made by
    the manifest's issuer stays that issuer's, so its renewed certificate still updates the
    chain of every copy."""
    folder = quickstart.parent
    make_ca(folder, 1)
    quickstart.write_text(
        quickstart.read_text()
        .replace(
            "escrow:",
            "issuers:\n  - {name: internal, certificate: ca.pem, private_key: ca.key}\nescrow:",
            1,
        )
        .replace(
            "designation: Syndicat Eaux Val {year}",
            "designation: Syndicat Eaux Val {year}\n      issuer: internal",
        )
    )
    pfx = openssl_p12(tmp_path, PASSWORDS["commune-exemple"], TEST_CLOCK)
    assert cli("adopt", quickstart, "commune-exemple", pfx).returncode == 0
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files, before = snapshot(quickstart), state_rows(quickstart, GENERATION_ROWS)
    lose_state(quickstart)

    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert state_rows(quickstart, GENERATION_ROWS) == before  # self-signed, adopted: as adopt said
    planned = cli("plan", "--detailed-exitcode", quickstart)
    assert planned.returncode == 0, planned.stdout  # no [spec-changed] over the adopted key
    lines = cli("status", quickstart).stdout.splitlines()
    adopted = [line for line in lines if line.endswith("(adopted)")]
    assert len(adopted) == 1 and '"Ancienne cle"' in adopted[0], lines
    origins = {
        e["id"]: [g["origin"] for g in e["generations"]]
        for e in json.loads(cli("status", "--json", quickstart).stdout)["entities"]
    }
    assert origins == {"commune-exemple": ["adopted"], "syndicat-eaux": ["generated"]}
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert snapshot(quickstart) == files, "the adopted key stays on every target"

    make_ca(folder, 2)  # the issuer's certificate renewed, same key
    planned = cli("plan", quickstart)
    assert "~ generation 1: update issuer chain  [chain-changed]" in planned.stdout
    assert planned.stdout.count("[chain-changed]") == 3  # syndicat-eaux's generation, 2 copies


def test_a_full_loss_recovered_records_each_generation_as_it_was(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """State and escrow lost: what recover records of each generation (issuer, origin, status,
    key, certificate) is what apply and adopt had recorded. Here an adopted key whose
    certificate another organisation's authority issued (issuer `external:...`), and a key made
    by the manifest's second issuer, the first one's certificate file holding no certificate
    (an authority kept in the manifest for the record)."""
    folder = quickstart.parent
    make_ca(folder, 1)
    (folder / "archive-ca.pem").write_text("retired authority: see the archive\n")
    quickstart.write_text(
        quickstart.read_text()
        .replace(
            "escrow:",
            "issuers:\n"
            "  - {name: archive, certificate: archive-ca.pem, private_key: ca.key}\n"
            "  - {name: internal, certificate: ca.pem, private_key: ca.key}\n"
            "escrow:",
            1,
        )
        .replace(
            "designation: Syndicat Eaux Val {year}",
            "designation: Syndicat Eaux Val {year}\n      issuer: internal",
        )
    )
    pfx = openssl_p12(
        tmp_path, PASSWORDS["commune-exemple"], TEST_CLOCK, issued_by="AC Partenaire Externe"
    )
    assert cli("adopt", quickstart, "commune-exemple", pfx).returncode == 0
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    before = state_rows(quickstart, GENERATION_ROWS)
    assert [row[2:4] for row in before] == [
        ("external:CN=AC Partenaire Externe", "adopted"),
        ("internal", "generated"),
    ]
    lose_state(quickstart)

    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert state_rows(quickstart, GENERATION_ROWS) == before
    converged(cli, quickstart)


# What a full loss leaves for recover to read back from the copies: every column of a
# generation but its id and the instant it was retired; every column of a copy but the
# instant it was written, its generation named by entity and number, and its password named by
# which copies share it (a rebuilt escrow derives other password ids).
RECOVERABLE_GENERATIONS = (
    "SELECT entity, number, designation, common_name, issuer, key_size, subject, certificate, "
    "chain, cert_sha256, key_sha256, chain_sha256, not_before, not_after, status, origin, "
    "created_at FROM generations ORDER BY entity, number"
)


def copy_rows(manifest: Path) -> list[tuple[object, ...]]:
    rows = state_rows(
        manifest,
        "SELECT c.target, c.path, c.entity, g.number, c.sha256, c.size, c.profile, "
        "c.friendly_name, c.chain_sha256, c.password_id FROM copies c "
        "JOIN generations g ON g.id = c.generation ORDER BY c.target, c.path",
    )
    passwords = {row[-1]: n for n, row in reversed(list(enumerate(rows)))}
    return [(*row[:-1], passwords[row[-1]]) for row in rows]


def test_a_full_loss_after_a_renewal_finds_the_bound_generation_retained_on_the_workstations(
    cli: Runner, quickstart: Path
) -> None:
    """State and escrow lost after a renewal that kept generation 1 on the workstations for its
    open consultation, and `recover` run without the consultations file: it reads each
    generation's status from where its copies are.
    The newest is current; the older one, found on a workstation, is retained (live, on the
    workstations), not retired; an older generation found only on the shared location is
    retired. The next run with the consultations records the binding, moves no key, and every
    workstation keeps both keys."""
    from tests.test_consultations import CREATED, IN_WINDOW, consultations

    c = consultations(quickstart.parent)
    at_creation = {"PROVISIONER_NOW": CREATED}
    assert cli("apply", "--auto-approve", quickstart, env=at_creation).returncode == 0
    done = cli("apply", "--auto-approve", quickstart, "--consultations", c, env=at_creation)
    assert done.returncode == 0, done.stdout + done.stderr
    renewal = {"PROVISIONER_NOW": IN_WINDOW}
    done = cli("apply", "--auto-approve", quickstart, "--consultations", c, env=renewal)
    assert done.returncode == 0, done.stdout + done.stderr
    files = snapshot(quickstart)
    assert "workstations/ws-marches/commune-exemple.g1.p12" in files
    assert "workstations/ws-marches/syndicat-eaux.g1.p12" not in files
    before = state_rows(quickstart, RECOVERABLE_GENERATIONS), copy_rows(quickstart)
    lose_state(quickstart)

    # recover without the consultations: only where the copies are says which key is live
    recovered = cli("recover", "--auto-approve", quickstart, env=renewal)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    # what the copies tell of each generation and copy, recorded as apply had recorded it
    assert (state_rows(quickstart, RECOVERABLE_GENERATIONS), copy_rows(quickstart)) == before
    statuses = {
        e["id"]: [(g["number"], g["status"]) for g in e["generations"]]
        for e in json.loads(
            cli("status", "--json", quickstart, "--consultations", c, env=renewal).stdout
        )["entities"]
    }
    assert statuses == {
        "commune-exemple": [(1, "retained"), (2, "current")],
        "syndicat-eaux": [(1, "retired"), (2, "current")],
    }, statuses
    # the next run with the consultations only records the binding: no key moves
    plan = cli("plan", quickstart, "--consultations", c, env=renewal)
    assert "Plan: 1 to create, 0 to update, 0 to remove." in plan.stdout, plan.stdout
    assert "+ consultation 2026-TX-014: bind  [new-binding]" in plan.stdout, plan.stdout
    done = cli("apply", "--auto-approve", quickstart, "--consultations", c, env=renewal)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(quickstart) == files
    # recover run again over the intact state changes no status it recorded
    again = cli("recover", "--auto-approve", quickstart, env=renewal)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = state_rows(
        quickstart, "SELECT number, status FROM generations WHERE entity = 'commune-exemple'"
    )
    assert sorted(rows) == [(1, "retained"), (2, "current")]


def test_an_entity_declared_absent_when_recovered_has_no_current_generation(
    cli: Runner, quickstart: Path
) -> None:
    """State and escrow lost, the entity declared absent before `recover`: its keys are taken
    back into the escrow, every one retired (an absent entity has no current generation), and
    the next apply takes nothing more off the shared location."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    lose_state(quickstart)
    quickstart.write_text(
        quickstart.read_text().replace(
            "  - id: syndicat-eaux\n", "  - id: syndicat-eaux\n    state: absent\n"
        )
    )
    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    status = cli("status", "--json", quickstart)
    statuses = {
        e["id"]: [(g["number"], g["status"]) for g in e["generations"]]
        for e in json.loads(status.stdout)["entities"]
    }
    assert statuses["syndicat-eaux"] == [(1, "retired")], statuses
    assert statuses["commune-exemple"] == [(1, "current")], statuses


def test_a_backup_older_than_a_second_renewal_retires_only_the_generation_it_had_current(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Two renewals, the backup taken between them and restored after the second: `recover`
    takes generation 3 back as current and says one change of status per entity, generation
    2 current -> retired; generation 1, retired long before, is not said again."""
    second_renewal = {"PROVISIONER_NOW": "2030-09-20T10:00:00Z"}  # generation 2's window
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    backup = tmp_path / "backup"
    backup_state(quickstart, backup)
    done = cli("apply", "--auto-approve", quickstart, env=second_renewal)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shared/backup/commune-exemple.g3.p12" in snapshot(quickstart)
    restore_state(quickstart, backup)

    recovered = cli("recover", "--auto-approve", quickstart, env=second_renewal)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    changes = sorted(line.strip() for line in recovered.stdout.splitlines() if " -> " in line)
    assert [line.split('"')[0].strip() for line in changes] == [
        "~ commune-exemple: generation 2",
        "~ syndicat-eaux: generation 2",
    ], recovered.stdout
    assert all("current -> retired" in line for line in changes), changes
    numbers = state_rows(quickstart, "SELECT entity, number, status FROM generations ORDER BY 1, 2")
    assert numbers == [
        (entity, number, status)
        for entity in ("commune-exemple", "syndicat-eaux")
        for number, status in ((1, "retired"), (2, "retired"), (3, "current"))
    ]
    converged(cli, quickstart, second_renewal)


def test_recover_rebuilds_the_state_in_the_state_dir_it_is_given(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The state kept in `--state-dir` (not beside the manifest) and lost: `recover
    --state-dir` rebuilds it there, and nothing appears beside the manifest."""
    elsewhere = tmp_path / "state-elsewhere"
    given = ("--state-dir", str(elsewhere))
    assert cli("apply", "--auto-approve", "-q", *given, quickstart).returncode == 0
    keys = key_fingerprints(quickstart)
    shutil.rmtree(elsewhere)
    recovered = cli("recover", "--auto-approve", *given, quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert recovered.stdout.splitlines()[-1] == (
        "Recovered. Run `provisioner plan` to see what is left to repair."
    ), recovered.stdout
    assert (elsewhere / "state.db").is_file()
    assert not state_dir(quickstart).exists()
    assert cli("plan", "--detailed-exitcode", *given, quickstart).returncode == 0
    assert key_fingerprints(quickstart) == keys


def test_recover_uses_the_state_backend_it_is_given(cli: Runner, quickstart: Path) -> None:
    """`recover --state-backend postgresql` on a manifest that declares no PostgreSQL state:
    refused, naming what is missing, and no SQLite state is made instead."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    lose_state(quickstart)
    done = cli("recover", "--auto-approve", "--state-backend", "postgresql", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "a PostgreSQL state needs its DSN" in done.stderr, done.stderr
    assert not state_dir(quickstart).exists()


@pytest.mark.parametrize("broken", ["folder gone", "folder replaced by a file"])
def test_recover_reads_every_other_target_while_a_workstation_cannot_be_read(
    cli: Runner, quickstart: Path, broken: str
) -> None:
    """State and escrow lost, and one workstation's folder cannot be listed: recover records
    what the shared location and the other workstations hold, and names the workstation it
    did not read (a workstation is not a shared location: it does not hold every generation,
    so recover does not wait for it)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    lose_state(quickstart)
    folder = quickstart.parent / "demo-out/workstations/ws-marches"
    shutil.rmtree(folder)
    if broken != "folder gone":
        folder.write_text("a reinstalled workstation\n")
    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    # the shared location's two copies and ws-accueil's, read after ws-marches
    assert "Recover: 2 generations, 3 copies, 2 keys back into the escrow" in recovered.stdout
    if broken == "folder gone":  # a folder not made yet: no copy there, nothing to say
        assert "ws-marches" not in recovered.stdout, recovered.stdout
        assert cli("apply", "--auto-approve", quickstart).returncode == 0
        converged(cli, quickstart)
        assert (folder / "syndicat-eaux.g1.p12").is_file()
    else:
        said = f"  ! not observed: ws-marches: cannot list {folder}: Not a directory\n"
        assert said in recovered.stdout, recovered.stdout


def test_an_unreadable_copy_does_not_hide_the_next_one_on_its_target(
    cli: Runner, quickstart: Path
) -> None:
    """State and escrow lost after a renewal, and generation 1's copy on the shared location
    damaged: recover says so, and still takes generation 2 from the same folder."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    lose_state(quickstart)
    damaged = p12_files(quickstart)["shared/backup/commune-exemple.g1.p12"]
    damaged.write_bytes(b"\x30\x03\x02\x01\x03")
    recovered = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"  ! not read: backup-share: {damaged}: not a readable PKCS#12 file\n" in (
        recovered.stdout
    )
    lost = [line for line in recovered.stdout.splitlines() if line.startswith("  ! lost:")]
    assert lost == [
        "  ! lost: commune-exemple: generation 1: no surviving copy holds it (its key is lost "
        "unless an older backup of the escrow has it)"
    ], recovered.stdout
    g2 = damaged.with_name("commune-exemple.g2.p12")
    assert f"  + commune-exemple: copy on backup-share: {g2}\n" in recovered.stdout
    assert "Recover: 3 generations, 6 copies, 3 keys back into the escrow; 1 lost." in (
        recovered.stdout
    )


def test_recover_says_a_recorded_generation_whose_key_is_nowhere_is_lost(
    cli: Runner, quickstart: Path
) -> None:
    """The state is intact, but generation 1's escrowed key is gone and so is every copy of
    it: recover cannot take the key back, and says that generation is lost (its bids cannot
    be opened) rather than pass over it."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    (key,) = {k for rel, k in key_fingerprints(quickstart).items() if "commune-exemple" in rel}
    set_escrow_blob(quickstart, f"{key}.key", None)
    for rel, path in p12_files(quickstart).items():
        if "commune-exemple" in rel:
            path.unlink()
    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr  # it did what it could
    lost = [line for line in recovered.stdout.splitlines() if line.startswith("  ! lost:")]
    assert lost == [
        '  ! lost: commune-exemple: generation 1 "Commune Exemple": its key is in neither the '
        "escrow nor any copy that opens with the current password"
    ], recovered.stdout
    probe = cli("check", quickstart)
    assert probe.returncode == 2 and probe.stdout.startswith("PROVISIONER CRITICAL"), probe.stdout


def test_recover_reads_a_workstation_the_manifest_no_longer_gives_the_entity(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """An older backup restored after a renewal, and ws-accueil taken off commune-exemple's
    workstations meanwhile: recover still reads ws-accueil, where the state recorded copies,
    so the renewal's copy there is recorded and the next apply takes it off (it would
    otherwise stay there for good, a file no state records)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    backup = tmp_path / "backup"
    backup_state(quickstart, backup)
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    left = p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g2.p12"]
    restore_state(quickstart, backup)
    quickstart.write_text(
        quickstart.read_text().replace(
            "workstations: [service-marches, ws-accueil]", "workstations: [service-marches]"
        )
    )
    recovered = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"  + commune-exemple: copy on ws-accueil: {left}\n" in recovered.stdout
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    assert not left.exists(), "the copy on the workstation the entity left is taken off"
    converged(cli, quickstart, RENEWAL)


def test_a_backup_two_changes_old_recovered_past_an_interrupted_apply_is_usable(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """A state backup two changes old restored, and the escrow holding a key that an apply
    killed after sealing it never used (sealed at the serial of the state's last change): recover
    takes the generations back from the copies and moves the state's serial past that key, so
    the next plan runs instead of refusing a state older than its escrow."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    db = state_dir(quickstart) / "state.db"
    assert cli("plan", quickstart).returncode == 0  # checkpointed: state.db alone is whole
    shutil.copy(db, tmp_path / "state.db")  # the state database alone, two changes ago
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    subject = 'subject: {organization: "Demo", country: FR}'
    quickstart.write_text(quickstart.read_text().replace(subject, subject.replace("Demo", "D2")))
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0  # g3 of each
    quickstart.write_text(quickstart.read_text().replace('"D2"', '"D3"'))
    killed = cli(
        "apply",
        "--auto-approve",
        quickstart,
        env={**RENEWAL, "PROVISIONER_FAULT_INJECT": "after-escrow"},
    )
    assert killed.returncode != 0
    quickstart.write_text(quickstart.read_text().replace('"D3"', '"D2"'))
    for leftover in ("state.db-wal", "state.db-shm"):
        (state_dir(quickstart) / leftover).unlink(missing_ok=True)
    shutil.copy(tmp_path / "state.db", db)

    recovered = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "Recover: 4 generations" in recovered.stdout, recovered.stdout
    planned = cli("plan", "--detailed-exitcode", quickstart, env=RENEWAL)
    assert planned.returncode == 0, planned.stdout + planned.stderr


def test_a_current_copy_deleted_from_a_workstation_is_for_apply_to_repair_not_recover(
    cli: Runner, quickstart: Path
) -> None:
    """The state is intact and an agent deleted the current key's copy on ws-accueil:
    recover has nothing to record (that record is no retired copy to forget), and the plan
    writes the copy again."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    gone = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g1.p12"
    gone.unlink()
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Nothing to recover: the state already records every copy")
    assert "retired generation's copy" not in done.stdout, done.stdout
    planned = cli("plan", quickstart)
    assert f"+ write g1 on ws-accueil: {gone}" in planned.stdout, planned.stdout


def test_recover_says_why_a_shared_location_was_not_observed_and_records_nothing(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """State lost, and the backup share's folder turned into a symlink (this tool writes
    through none): recover records nothing, and says what is wrong with that folder."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    lose_state(quickstart)
    backup = quickstart.parent / "demo-out/shared/backup"
    out_of_reach(backup, tmp_path / "away")
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"  ! not observed: backup-share: the target folder {backup} is a symlink; declare the "
        "folder it points to instead\n"
    ) in done.stdout, done.stdout
    assert "Bring it back (mount the share, start the host) and run recover again." in done.stdout


def test_recover_records_no_binding_the_consultations_file_gets_wrong(
    cli: Runner, quickstart: Path
) -> None:
    """C-1 was bound to commune-exemple's key; the state is lost, and the consultations file
    given to recover now names syndicat-eaux's key for it: recover takes the copies back but
    records no binding (nor says it did), and the plan then refuses the file's entry."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    listed = quickstart.parent / "c.yaml"
    listed.write_text(
        "version: 1\nconsultations:\n  - {reference: C-1, entity: commune-exemple, "
        "designation: Commune Exemple, status: open, deadline: 2027-01-20}\n"
    )
    given = ("--consultations", listed)
    assert cli("apply", "--auto-approve", "-q", *given, quickstart).returncode == 0
    lose_state(quickstart)
    listed.write_text(
        listed.read_text().replace("Commune Exemple", f"Syndicat Eaux Val {TEST_CLOCK.year}")
    )
    done = cli("recover", "--auto-approve", *given, quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        "Recovered. Run `provisioner plan` to see what is left to repair."
    ), done.stdout
    planned = cli("plan", *given, quickstart)
    assert planned.returncode == 1, planned.stdout
    assert "consultation C-1 names entity commune-exemple, but" in planned.stdout, planned.stdout


def test_after_a_full_loss_an_entity_never_distributed_is_not_said_lost(
    cli: Runner, quickstart: Path
) -> None:
    """A third entity was declared after the last apply, so no copy of it exists anywhere:
    once state and escrow are lost, recover takes the other two back and says nothing of it
    lost (there was never a key to lose); the next apply makes its first generation."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    (quickstart.parent / "secrets" / "nouvelle.pass").write_text("Demo-Only-Nouvelle-41!\n")
    quickstart.write_text(
        quickstart.read_text() + "\n  - id: nouvelle-entite\n    name: Nouvelle Entite\n"
        "    key: {designation: Nouvelle Entite}\n"
        "    password: {file: secrets/nouvelle.pass}\n"
        "    shared_locations: [backup-share]\n    workstations: [ws-accueil]\n"
    )
    lose_state(quickstart)
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 generations, 5 copies, 2 keys back into the escrow; 0 lost" in done.stdout
    assert "nouvelle-entite" not in done.stdout, done.stdout
    created = cli("apply", "--auto-approve", quickstart)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "+ generation 1: create" in created.stdout and "# nouvelle-entite" in created.stdout


def test_recover_limited_to_one_entity_takes_back_that_one_only(
    cli: Runner, quickstart: Path
) -> None:
    """State and escrow lost: `recover --limit syndicat-eaux` takes back syndicat-eaux's
    generation, copies and key, and nothing of commune-exemple, declared before it; then,
    commune-exemple declared absent and its password file gone, a recover names its copies
    as not read, and why, and still takes back the key syndicat-eaux lost since."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    lose_state(quickstart)
    done = cli("recover", "--auto-approve", "--limit", "syndicat-eaux", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Recover: 1 generation, 2 copies, 1 key back into the escrow; 0 lost." in done.stdout
    assert "commune-exemple" not in done.stdout, done.stdout
    assert "serial" not in done.stdout, "a new escrow holds no key newer than the new state"
    text = quickstart.read_text()
    quickstart.write_text(
        text.replace("  - id: commune-exemple\n", "  - id: commune-exemple\n    state: absent\n")
    )
    secret = quickstart.parent / "secrets" / "commune-exemple.pass"
    secret.unlink()
    # and syndicat-eaux, declared after it, lost its escrowed key: still taken back
    ((key,),) = state_rows(
        quickstart, "SELECT key_sha256 FROM generations WHERE entity = 'syndicat-eaux'"
    )
    (state_dir(quickstart) / "escrow" / f"{key}.key").unlink()
    again = cli("recover", "--auto-approve", quickstart)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Recover: 0 generations, 0 copies, 1 key back into the escrow; 0 lost." in again.stdout
    assert (
        "  ! not read: commune-exemple (state: absent): its copies were not read: "
        f"{quickstart}:40:15: entity commune-exemple password: secret file {secret}: cannot "
        "read: No such file or directory\n"
    ) in again.stdout, again.stdout


def test_recover_names_every_shared_location_out_of_sight_in_one_run(
    cli: Runner, quickstart: Path
) -> None:
    """State lost, and neither of the entity's two backup shares mounted: recover records
    nothing and names both, so that one trip fixes them, not one recover per share."""
    text = quickstart.read_text()
    two = text.replace(
        "      path: demo-out/shared/backup\n",
        "      path: demo-out/shared/backup\n"
        "    - name: backup-2\n      transport: local\n      path: demo-out/shared/backup2\n",
    ).replace("shared_locations: [backup-share]", "shared_locations: [backup-share, backup-2]")
    assert two.count("backup-2") == 3
    quickstart.write_text(two)
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    lose_state(quickstart)
    shares = [quickstart.parent / "demo-out/shared" / n for n in ("backup", "backup2")]
    for share in shares:
        share.rename(share.with_name(share.name + ".unmounted"))
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    for name, share in zip(("backup-share", "backup-2"), shares, strict=True):
        assert said_once(
            done.stdout, f"  ! not observed: {name}: {share} does not exist (not mounted?)"
        ), done.stdout
    assert not state_dir(quickstart).exists() or {
        p.name for p in state_dir(quickstart).iterdir()
    } <= {"lock"}


def test_recover_held_by_an_unmounted_share_also_names_the_workstation_out_of_reach(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """State lost, the backup share not mounted and a workstation's folder replaced by a
    symlink: recover records nothing, and names the workstation too, so that one trip brings
    both back instead of a second recover finding the second problem."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    lose_state(quickstart)
    share = quickstart.parent / "demo-out/shared/backup"
    share.rename(share.with_name("backup.unmounted"))
    accueil = quickstart.parent / "demo-out/workstations/ws-accueil"
    out_of_reach(accueil, tmp_path / "away")
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert said_once(
        done.stdout, f"  ! not observed: backup-share: {share} does not exist (not mounted?)"
    )
    assert said_once(
        done.stdout,
        f"  ! not observed: ws-accueil: the target folder {accueil} is a symlink; declare the "
        "folder it points to instead",
    ), done.stdout
    assert not state_dir(quickstart).exists() or {
        p.name for p in state_dir(quickstart).iterdir()
    } <= {"lock"}


# The next generation's name, and one beyond it (a number this state never gave).
@pytest.mark.parametrize("renamed", ["syndicat-eaux.g2.p12", "syndicat-eaux.g3.p12"])
def test_full_loss_a_copy_renamed_on_a_workstation_keeps_the_shared_locations_number(
    cli: Runner, quickstart: Path, renamed: str
) -> None:
    """State and escrow lost; an agent renamed the workstation's copy of generation 1 to a
    later generation's name (the next, or one beyond it). One copy says 1 (the backup share),
    one says another number: the shared location's name wins, the key comes back as
    generation 1, the renamed copy is this state's (no conflict), and apply puts the copy
    back under its name and removes the renamed one."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    ws = quickstart.parent / "demo-out/workstations/ws-marches"
    (ws / "syndicat-eaux.g1.p12").rename(ws / renamed)
    lose_state(quickstart)
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = state_rows(
        quickstart, "SELECT number, status FROM generations WHERE entity = 'syndicat-eaux'"
    )
    assert rows == [(1, "current")], rows
    planned = cli("plan", quickstart)
    assert "conflict" not in planned.stdout, planned.stdout
    assert (
        f"  - remove g1 on ws-marches: {ws / renamed}  [moved] a copy of "
        "generation 1 under another name (renamed on the target?): the copy under its own name "
        "holds its key\n"
    ) in planned.stdout, planned.stdout
    applied = cli("apply", "--auto-approve", "-q", quickstart)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    converged(cli, quickstart)
    assert sorted(p.name for p in ws.iterdir()) == [
        "commune-exemple.g1.p12",
        "syndicat-eaux.g1.p12",
    ]
    password = PASSWORDS["syndicat-eaux"]
    platform = p12_contents(
        (quickstart.parent / "demo-out/shared/backup/syndicat-eaux.g1.p12").read_bytes(), password
    )
    assert platform is not None
    bid = encrypt_bid(x509.load_der_x509_certificate(platform[1]), b"bid of a company")
    assert opens_bid((ws / "syndicat-eaux.g1.p12").read_bytes(), password, bid)


def test_full_loss_a_copy_renamed_to_the_next_generations_name_does_not_block_its_renewal(
    cli: Runner, quickstart: Path
) -> None:
    """As above with the next generation's name, but the first plan after `recover` comes in
    the renewal window: the file where generation 2's copy goes is this state's copy of
    generation 1 (taken back by recover), so it is no conflict ("a symlink or special file",
    the renewal held for ever, as before 2026-12-08): the new copy goes over it, saying so,
    generation 1's key stays in the escrow and on the backup share, and one apply converges."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    ws = quickstart.parent / "demo-out/workstations/ws-marches"
    (ws / "syndicat-eaux.g1.p12").rename(ws / "syndicat-eaux.g2.p12")
    lose_state(quickstart)
    assert cli("recover", "--auto-approve", quickstart).returncode == 0
    planned = cli("plan", quickstart, env=RENEWAL)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "conflict" not in planned.stdout, planned.stdout
    assert (
        f"    + write g2 on ws-marches: {ws / 'syndicat-eaux.g2.p12'}  [new-generation] copy "
        "of the new generation, over this state's copy of an older generation renamed to its "
        "name (that key stays in the escrow)\n"
    ) in planned.stdout, planned.stdout
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    converged(cli, quickstart, RENEWAL)
    rows = state_rows(
        quickstart, "SELECT number, status FROM generations WHERE entity = 'syndicat-eaux'"
    )
    assert rows == [(1, "retired"), (2, "current")], rows
    shared = quickstart.parent / "demo-out/shared/backup"
    password = PASSWORDS["syndicat-eaux"]
    new, old = (
        p12_contents((shared / f"syndicat-eaux.g{n}.p12").read_bytes(), password) for n in (2, 1)
    )
    assert new is not None and old is not None
    on_ws = p12_contents((ws / "syndicat-eaux.g2.p12").read_bytes(), password)
    assert on_ws is not None and on_ws[0] == new[0] != old[0], "generation 2 on the workstation"
    bid = encrypt_bid(x509.load_der_x509_certificate(old[1]), b"bid sealed to generation 1")
    assert opens_bid((shared / "syndicat-eaux.g1.p12").read_bytes(), password, bid)
    assert old[0] in escrowed_keys(quickstart) and len(escrowed_keys(quickstart)) == 4


def test_full_loss_an_older_key_under_the_current_generations_name_is_rewritten_and_said(
    cli: Runner, quickstart: Path
) -> None:
    """After the renewal an agent put the backup share's generation-1 file on ws-marches under
    generation 2's name; then the state is lost. recover records that file as generation 1's
    copy at that path, and the next plan rewrites generation 2 there, saying why word for
    word; one apply converges and the workstation opens bids sealed to generation 2."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    shared = quickstart.parent / "demo-out/shared/backup"
    placed = quickstart.parent / "demo-out/workstations/ws-marches/syndicat-eaux.g2.p12"
    placed.write_bytes((shared / "syndicat-eaux.g1.p12").read_bytes())
    lose_state(quickstart)
    assert cli("recover", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    planned = cli("plan", quickstart, env=RENEWAL)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert (
        f"    ~ rewrite g2 on ws-marches: {placed}  [drifted] holds another generation's key\n"
    ) in planned.stdout, planned.stdout
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    converged(cli, quickstart, RENEWAL)
    password = PASSWORDS["syndicat-eaux"]
    current = p12_contents((shared / "syndicat-eaux.g2.p12").read_bytes(), password)
    assert current is not None
    bid = encrypt_bid(x509.load_der_x509_certificate(current[1]), b"bid sealed to generation 2")
    assert opens_bid(placed.read_bytes(), password, bid)


def test_full_loss_copies_an_agent_re_encoded_are_taken_back_and_encoded_as_declared(
    cli: Runner, quickstart: Path
) -> None:
    """State and escrow lost; an agent had exported the key again with another tool: on one
    workstation with a MAC neither profile uses, on the other in the modern profile but with
    no friendly name. recover takes both back as they are, and the next plan says what it
    will re-encode and why: the profile was unknown, the friendly name empty."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    password = PASSWORDS["commune-exemple"]
    ws = quickstart.parent / "demo-out/workstations"
    accueil = ws / "ws-accueil/commune-exemple.g1.p12"
    marches = ws / "ws-marches/commune-exemple.g1.p12"
    key, cert, _ = pkcs12.load_key_and_certificates(accueil.read_bytes(), password.encode())
    assert key is not None and cert is not None

    def exported(mac: hashes.HashAlgorithm) -> bytes:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(mac)
            .build(password.encode())
        )
        return pkcs12.serialize_key_and_certificates(None, key, cert, None, encryption)  # type: ignore[arg-type]

    accueil.write_bytes(exported(hashes.SHA1()))
    marches.write_bytes(exported(hashes.SHA256()))
    lose_state(quickstart)
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    planned = cli("plan", quickstart)
    assert (
        f"  ~ rewrite g1 on ws-accueil: {accueil}  [profile-changed] PKCS#12 profile unknown -> "
        "modern (same key, re-encoded)\n"
    ) in planned.stdout, planned.stdout
    assert (
        f"  ~ rewrite g1 on ws-marches: {marches}  [friendly-name-changed] friendly name '' -> "
        "'Commune Exemple'\n"
    ) in planned.stdout, planned.stdout
    applied = cli("apply", "--auto-approve", "-q", quickstart)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    converged(cli, quickstart)


def test_keys_recover_took_back_still_prove_an_older_state_restored_after_it_is_older(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """After a renewal both new keys' escrow files were deleted, and recover took them back
    from the copies. A state backup from before the renewal, restored then, is still refused
    as older than its escrow: the keys recover sealed carry the state's change number, as
    apply's do, so they still prove the escrow is newer than that state."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    db = state_dir(quickstart) / "state.db"
    assert cli("plan", quickstart).returncode == 0  # checkpointed: state.db alone is whole
    shutil.copy(db, tmp_path / "state.db")
    before = key_fingerprints_of_rows(quickstart)
    assert cli("apply", "--auto-approve", quickstart, env=RENEWAL).returncode == 0
    renewed = key_fingerprints_of_rows(quickstart) - before
    assert len(renewed) == 2
    for fp in renewed:
        (state_dir(quickstart) / "escrow" / f"{fp}.key").unlink()
    done = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.stem for p in (state_dir(quickstart) / "escrow").glob("*.key")} >= renewed
    assert cli("plan", quickstart, env=RENEWAL).returncode == 0  # checkpointed
    for leftover in ("state.db-wal", "state.db-shm"):
        (state_dir(quickstart) / leftover).unlink(missing_ok=True)
    shutil.copy(tmp_path / "state.db", db)
    done = cli("plan", quickstart, env=RENEWAL)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the state is older than its escrow" in done.stderr, done.stderr
    assert "holds 2 key(s) sealed since" in done.stderr, done.stderr


def test_recover_moved_as_the_first_command_in_a_copy_of_a_state_without_a_home_is_refused(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """A tree whose state predates recorded homes is copied, and `recover --moved` is the
    first command run in the copy (no apply there recorded the home it was found to have):
    it is refused while the original's state is there, as for a state with a home."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = snapshot(quickstart)
    with contextlib.closing(sqlite3.connect(state_dir(quickstart) / "state.db")) as db, db:
        db.execute("DELETE FROM meta WHERE key = 'home'")
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(quickstart.parent, copy)
    refused = cli("recover", "--moved", "--auto-approve", copy / "quickstart.yaml")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        f"  ! --moved: the state's home {state_dir(quickstart).resolve()} still holds a state "
        f"({state_dir(quickstart).resolve() / 'state.db'}): this tree was copied, not moved"
    ) in refused.stdout, refused.stdout
    again = cli("apply", "--auto-approve", copy / "quickstart.yaml")
    assert "[copied-tree]" in again.stdout, "the copy did not become the home"
    assert snapshot(quickstart) == files, "the original tree's copies are untouched"


def test_a_rebuilt_state_restored_from_before_its_first_renewal_takes_that_renewal_back(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Everything lost, recover rebuilt the state (a new lineage; the certificates it took
    back carry the old one's mark). The rebuilt state and its escrow were backed up, then a
    renewal made generation 2, under the new lineage's mark; then that backup was restored.
    The restored state records no generation of its own lineage's mark, yet generation 2 is
    its own: recover takes it back as current, not as somebody else's key."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    lose_state(quickstart)
    assert cli("recover", "--auto-approve", quickstart).returncode == 0
    backup = tmp_path / "backup"
    backup_state(quickstart, backup)
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    keys = key_fingerprints(quickstart)
    restore_state(quickstart, backup)
    done = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'generation 2 "Syndicat Eaux Val 2028" (current)' in done.stdout, done.stdout
    assert "not a generation this state made" not in done.stdout, done.stdout
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    converged(cli, quickstart, RENEWAL)
    assert key_fingerprints(quickstart) == keys


def test_an_older_backup_restored_past_a_foreign_key_on_every_target_takes_the_renewal_back(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The state and its escrow restored from before a renewal; meanwhile another tree's key
    (same passwords, a staging site's) was copied onto all three of commune-exemple's targets
    under a later name, and the renewal's copy on ws-marches was lost. The foreign key, held
    more often than generation 2, is read first and left as it is; generation 2 is still
    taken back as current."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    backup = tmp_path / "backup"
    backup_state(quickstart, backup)
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    ours = key_fingerprints(quickstart)["shared/backup/commune-exemple.g2.p12"]
    other = other_tree(quickstart, tmp_path, cli)
    foreign = p12_files(other)["shared/backup/commune-exemple.g1.p12"].read_bytes()
    out = quickstart.parent / "demo-out"
    for folder in ("shared/backup", "workstations/ws-accueil", "workstations/ws-marches"):
        (out / folder / "commune-exemple.g3.p12").write_bytes(foreign)
    (out / "workstations/ws-marches/commune-exemple.g2.p12").unlink()
    restore_state(quickstart, backup)
    done = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'generation 2 "Commune Exemple (2)" (current)' in done.stdout, done.stdout
    assert "not a generation this state made" in done.stdout, done.stdout
    assert_renewal_taken_back(quickstart, ours)
    assert all(
        (out / folder / "commune-exemple.g3.p12").read_bytes() == foreign
        for folder in ("shared/backup", "workstations/ws-accueil", "workstations/ws-marches")
    ), "the foreign key is left as it is"


def test_a_restored_state_takes_back_the_escrows_renewal_not_a_copied_trees_of_that_number(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """A copy of the tree (its state, so its lineage, included) renewed on its own; its
    generation 2 was copied over this tree's on ws-accueil. Then state.db was restored from
    before this tree's renewal, its escrow kept. Both certificates claim generation 2 and
    carry this lineage's mark: the one whose key this escrow sealed is generation 2, held
    more often or not; the copied tree's is left as it is, and its key is not taken into an
    escrow that survived."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    db = state_dir(quickstart) / "state.db"
    assert cli("plan", quickstart).returncode == 0  # checkpointed: state.db alone is whole
    shutil.copy(db, tmp_path / "state.db")
    copy, ours = renewed_here_and_in_a_copy(cli, quickstart, tmp_path)
    name = "workstations/ws-accueil/commune-exemple.g2.p12"
    theirs_bytes = (copy / "demo-out" / name).read_bytes()
    target = quickstart.parent / "demo-out" / name
    target.write_bytes(theirs_bytes)
    theirs = key_fingerprints(quickstart)[name]
    assert theirs != ours
    for leftover in ("state.db-wal", "state.db-shm"):
        (state_dir(quickstart) / leftover).unlink(missing_ok=True)
    shutil.copy(tmp_path / "state.db", db)
    done = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert said_once(
        done.stdout,
        f"  ! left as it is: commune-exemple: ws-accueil:{target} holds a certificate "
        "(sha256:*) that is not generation 2 as the state records it: left as it is",
    ), done.stdout
    rows = state_rows(
        quickstart,
        "SELECT key_sha256 FROM generations WHERE entity = 'commune-exemple' AND number = 2",
    )
    assert rows == [(ours,)]
    assert theirs not in {p.stem for p in (state_dir(quickstart) / "escrow").glob("*.key")}
    assert target.read_bytes() == theirs_bytes, "left as it is"


def test_a_clash_over_a_recorded_number_does_not_hide_the_renewal_found_after_it(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The state and its escrow restored from before a renewal. On both workstations a copied
    tree's generation 2 stands under generation 1's name (an agent copied it over), and this
    tree's generation 2 is left on the backup share alone. The copied tree's certificate,
    held more often, is read first and left as it is (it is not generation 1 as recorded);
    this tree's generation 2 is still taken back as current."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    backup = tmp_path / "backup"
    backup_state(quickstart, backup)
    copy, ours = renewed_here_and_in_a_copy(cli, quickstart, tmp_path)
    theirs = (copy / "demo-out/workstations/ws-accueil/commune-exemple.g2.p12").read_bytes()
    for ws in ("ws-accueil", "ws-marches"):
        folder = quickstart.parent / "demo-out/workstations" / ws
        (folder / "commune-exemple.g2.p12").unlink()
        (folder / "commune-exemple.g1.p12").write_bytes(theirs)
    restore_state(quickstart, backup)
    done = cli("recover", "--auto-approve", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "that is not generation 1 as the state records it: left as it is" in done.stdout
    assert 'generation 2 "Commune Exemple (2)" (current)' in done.stdout, done.stdout
    assert_renewal_taken_back(quickstart, ours)
