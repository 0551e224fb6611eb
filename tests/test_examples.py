"""The shipped region example tells the story its comments tell: the first apply makes the keys
and `check` is OK; the consultations launched afterwards (the platform's CSV export) bind to
those keys, and `check` is still OK. Its SSH hosts and mounts become local folders here (the
same names, entities, issuer, profiles and consultations), its passwords a DEMO ONLY file."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.conftest import EXAMPLES, Runner

ESCROW = {"PROVISIONER_ESCROW_PASSPHRASE": "Demo-Only-Escrow-Passphrase"}


def region_here(folder: Path) -> Path:
    document = yaml.safe_load((EXAMPLES / "region.yaml").read_text())
    inventory = document["inventory"]
    for role in ("locations", "workstations"):
        inventory[role] = [
            {"name": t["name"], "transport": "local", "path": f"targets/{t['name']}"}
            for t in inventory[role]
        ]
    for entity in document["entities"]:
        entity["password"] = {"file": "secrets/bicle.pass"}  # DEMO ONLY
    manifest = folder / "region.yaml"
    manifest.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
    shutil.copytree(EXAMPLES / "region-ca", folder / "region-ca")
    (folder / "secrets").mkdir()
    shutil.copy(EXAMPLES / "secrets" / "region-ca.pass", folder / "secrets")
    (folder / "secrets" / "bicle.pass").write_text("Demo-Only-Password-2026\n")
    for name in ("region-consultations.yaml", "region-consultations.csv"):
        shutil.copy(EXAMPLES / name, folder)
    return manifest


def test_the_region_example_starts_ok_and_binds_the_consultations_launched_later(
    cli: Runner, tmp_path: Path
) -> None:
    """Issue 31: the shipped region started CRITICAL, its consultations naming keys the first
    apply creates (`unmanaged-key`)."""
    manifest = region_here(tmp_path)
    planned = cli("plan", manifest, env=ESCROW)
    assert planned.returncode == 0, planned.stderr
    assert "Warnings:" not in planned.stdout and "unmanaged-key" not in planned.stdout
    # The one consultation so far, closed, was made with a key from before the tool.
    assert "consultation CB-2025-007: bind" in planned.stdout
    first = cli("apply", "--auto-approve", "-q", manifest, env=ESCROW)
    assert first.returncode == 0, first.stdout + first.stderr
    probe = cli("check", manifest, env=ESCROW)
    assert probe.returncode == 0, probe.stdout
    assert probe.stdout.startswith("PROVISIONER OK - 4 entities, 12 copies in sync")
    # A few days later, the platform's export lists the consultations launched with them.
    later = ["--consultations", tmp_path / "region-consultations.csv"]
    bound = cli("plan", *later, manifest, env=ESCROW)
    assert "Warnings:" not in bound.stdout, bound.stdout
    for line in (
        'consultation CD-2026-0412 is bound to generation 1 "CD Exemple 2026" (definitive)',
        'consultation CA-2026-031 is bound to generation 1 "Commune A 2026" (definitive)',
    ):
        assert line in bound.stdout, bound.stdout
    assert cli("apply", "--auto-approve", "-q", *later, manifest, env=ESCROW).returncode == 0
    for args in ([], later):
        probe = cli("check", *args, manifest, env=ESCROW)
        assert probe.returncode == 0 and "PROVISIONER OK" in probe.stdout, probe.stdout
    status = cli("status", *later, manifest, env=ESCROW).stdout
    assert "CD-2026-0412" in status and "CA-2026-031" in status
