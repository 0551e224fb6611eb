"""Opening-day rehearsal: every copy must open a test bid encrypted to its certificate."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.conftest import Runner
from tests.engine_helpers import p12_files


def test_every_copy_opens_the_test_bid(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    done = cli("rehearse", quickstart)
    assert done.returncode == 0, done.stdout
    # 5 copies and the 2 escrowed keys, each opening its test bid.
    assert "Rehearsal: 7 copies opened the test bid, 0 failed." in done.stdout
    document = json.loads(cli("rehearse", "--json", quickstart).stdout)
    assert document["opened"] == 7 and document["failed"] == 0
    assert {c["reason"] for c in document["copies"]} == {"opened"}
    assert sum(c["target"] == "escrow" for c in document["copies"]) == 2


def test_a_damaged_escrowed_key_fails_the_rehearsal(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    key = sorted((quickstart.parent / ".provisioner" / "escrow").glob("*.key"))[0]
    record = json.loads(key.read_text())
    sealed = bytearray(base64.b64decode(record["sealed"]))
    sealed[40] ^= 0xFF
    record["sealed"] = base64.b64encode(bytes(sealed)).decode()
    key.write_text(json.dumps(record))
    done = cli("rehearse", quickstart)
    assert done.returncode == 1
    assert f"FAILED  escrow: {key}  [unreadable]" in done.stdout


def test_each_broken_copy_is_reported_with_its_reason(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    # Same password for both entities, so that a swapped file opens but holds the wrong key.
    shared = (quickstart.parent / "secrets" / "commune-exemple.pass").read_text()
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").write_text(shared)
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = p12_files(quickstart)
    # 1. another entity's file in place of commune-exemple's on ws-accueil
    files["workstations/ws-accueil/commune-exemple.g1.p12"].write_bytes(
        files["shared/backup/syndicat-eaux.g1.p12"].read_bytes()
    )
    # 2. a copy protected by another password (re-exported by hand) on ws-marches
    env = {"OTHER": "Some-Other-Password-9"}
    out = tmp_path / "other.p12"
    assert (
        cli(
            "export",
            quickstart,
            "commune-exemple",
            "--out",
            out,
            "--password-env",
            "OTHER",
            env=env,
        ).returncode
        == 0
    )
    files["workstations/ws-marches/commune-exemple.g1.p12"].write_bytes(out.read_bytes())
    # 3. a deleted copy
    files["workstations/ws-marches/syndicat-eaux.g1.p12"].unlink()
    # 4. a damaged copy
    files["shared/backup/syndicat-eaux.g1.p12"].write_bytes(b"\x30\x03garbage")

    done = cli("rehearse", "--json", quickstart)
    assert done.returncode == 1
    by_place = {(c["entity"], c["target"]): c for c in json.loads(done.stdout)["copies"]}
    assert by_place[("commune-exemple", "ws-accueil")]["reason"] == "wrong key"
    assert by_place[("commune-exemple", "ws-marches")]["reason"] == "wrong password"
    assert by_place[("syndicat-eaux", "ws-marches")]["reason"] == "missing"
    assert by_place[("syndicat-eaux", "backup-share")]["reason"] == "unreadable"
    assert by_place[("commune-exemple", "backup-share")]["opened"] is True
    text = cli("rehearse", quickstart).stdout
    assert "FAILED  ws-accueil:" in text and "[wrong key]" in text
    assert "Rehearsal: 3 copies opened the test bid, 4 failed." in text  # 2 are the escrow


def test_an_expired_current_key_fails_the_rehearsal(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    done = cli(
        "rehearse",
        "--limit",
        "commune-exemple",
        quickstart,
        env={"PROVISIONER_NOW": "2029-01-01T00:00:00+00:00"},
    )
    assert done.returncode == 1
    assert "[expired] the certificate expired on" in done.stdout
