"""Folders holding copies are checked like copies (local transport): group/other access is
planned and closed by apply; what interrupted writes left is listed by plan and status, then
cleared by the next apply, whatever generation it was for. Files that are not ours stay."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest

from provisioner.manifest.schema import load_schema
from tests.conftest import Runner

PINNED = {"PROVISIONER_NOW": "2026-11-27T08:00:00+00:00"}
RENEWAL = {"PROVISIONER_NOW": "2028-10-20T09:00:00+00:00"}


def test_open_target_folders_are_planned_and_closed_by_apply(cli: Runner, quickstart: Path) -> None:
    out = quickstart.parent / "demo-out"
    folders = {
        "ws-accueil": (out / "workstations/ws-accueil", 0o777),
        "ws-marches": (out / "workstations/ws-marches", 0o1777),
        "backup-share": (out / "shared/backup", 0o755),
    }
    for folder, mode in folders.values():
        folder.mkdir(parents=True)
        os.chmod(folder, mode)
    planned = cli("plan", quickstart)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    for name, (folder, mode) in folders.items():
        assert (
            f"~ secure folder on {name}: {folder}  [folder-permissions] folder mode {mode:04o} "
            "lets others reach the copies: set to 0700" in planned.stdout
        )
    assert "# target ws-accueil" in planned.stdout
    document = json.loads(cli("plan", "--json", quickstart).stdout)
    jsonschema.validate(document, load_schema("plan.schema.json"))
    secured = [a for a in document["actions"] if a["kind"] == "secure-folder"]
    assert {(a["target"], a["reason"], a["entity"]) for a in secured} == {
        (name, "folder-permissions", "") for name in folders
    }
    status = cli("status", quickstart)
    assert f"folder-permissions ws-marches: {folders['ws-marches'][0]}" in status.stdout
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    for folder, _ in folders.values():
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    again = cli("plan", "--detailed-exitcode", quickstart)
    assert again.returncode == 0, again.stdout


def test_leftovers_are_listed_then_cleared_even_for_a_retired_generation(
    cli: Runner, quickstart: Path
) -> None:
    first = cli("apply", "--auto-approve", quickstart, env=PINNED)
    assert first.returncode == 0, first.stdout + first.stderr
    rotated = cli("apply", "--auto-approve", quickstart, env=RENEWAL)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    out = quickstart.parent / "demo-out"
    accueil = out / "workstations/ws-accueil"
    backup = out / "shared/backup"
    assert not (accueil / "commune-exemple.g1.p12").exists(), "g1 is retired"
    # What a write killed before its rename leaves: a complete PKCS#12 of a retired key.
    ours = {
        accueil / ".provisioner-tmp-commune-exemple.g1.p12.0a1b2c3d": "ws-accueil",
        backup / ".provisioner-tmp-syndicat-eaux.g2.p12.89abcdef": "backup-share",
    }
    foreign = [
        accueil / ".provisioner-tmp-notes.txt.0a1b2c3d",
        accueil / "commune-exemple.g1.p12.bak",
        backup / ".provisioner-tmp-commune-exemple.g1.p12",
    ]
    for path in [*ours, *foreign]:
        path.write_bytes(b"a PKCS#12 of a retired key")
    planned = cli("plan", "--detailed-exitcode", quickstart, env=RENEWAL)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    for path, name in ours.items():
        assert f"- remove leftover on {name}: {path}  [leftover] temporary of an interrupted" in (
            planned.stdout
        )
    for path in foreign:
        assert f"{path} " not in planned.stdout
    probe = cli("check", quickstart, env=RENEWAL)
    assert probe.returncode == 1, probe.stdout + probe.stderr  # WARNING, not "in sync"
    assert "PROVISIONER WARNING - 0 critical, 2 warnings: " in probe.stdout
    assert "in sync" not in probe.stdout
    status = cli("status", quickstart, env=RENEWAL)
    assert "Target folders:" in status.stdout
    for path, name in ours.items():
        assert f"leftover           {name}: {path}" in status.stdout
    done = cli("apply", "--auto-approve", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in ours:
        assert not path.exists()
    for path in foreign:
        assert path.read_bytes() == b"a PKCS#12 of a retired key"
    audit = cli("audit", "--json", "--action", "leftover-cleared", quickstart, env=RENEWAL)
    cleared = {
        (r["detail"]["target"], r["detail"]["path"]) for r in json.loads(audit.stdout)["records"]
    }
    assert cleared == {(name, str(path)) for path, name in ours.items()}, audit.stdout
    again = cli("plan", "--detailed-exitcode", quickstart, env=RENEWAL)
    assert again.returncode == 0, again.stdout


def test_a_folder_apply_cannot_close_is_named_and_the_other_targets_are_done(
    cli: Runner, quickstart: Path
) -> None:
    """A workstation folder apply may not change (immutable: not even root may set its mode):
    apply names the target, the folder and the reason, exits 1, and still writes the copies
    everywhere else; the next plan still shows the open folder."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a folder immutable: does not apply here")
    folder = quickstart.parent / "demo-out/workstations/ws-accueil"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)
    marches = quickstart.parent / "demo-out/workstations/ws-marches"  # after it, and closable
    marches.mkdir(parents=True)
    os.chmod(marches, 0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable files (chattr +i): does not apply here")
    try:
        done = cli("apply", "--auto-approve", quickstart, env=PINNED)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"! secure-folder: ws-accueil: cannot set mode 0700 on {folder}: Operation not permitted"
        in done.stderr
    ), done.stderr
    assert (marches / "commune-exemple.g1.p12").exists()
    assert stat.S_IMODE(marches.stat().st_mode) == 0o700
    audit = cli("audit", "--json", "--action", "folder-secured", quickstart, env=PINNED)
    secured = [
        (r["detail"]["target"], r["detail"]["path"]) for r in json.loads(audit.stdout)["records"]
    ]
    assert secured == [("ws-marches", str(marches))], audit.stdout
    again = cli("plan", quickstart, env=PINNED)
    assert f"~ secure folder on ws-accueil: {folder}" in again.stdout, again.stdout
