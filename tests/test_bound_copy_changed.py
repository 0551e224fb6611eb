"""A bound key's copy that changed since it was written is as good as missing to whoever opens
the bids, and the plan says so for each target where it happened: whatever the targets
before it in the entity's list are (unreachable, outside --limit), and never for a copy that
still holds the key (re-encoded by someone, the same key under the same password)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from tests.conftest import Runner
from tests.engine_helpers import PASSWORDS, out_of_reach

COPY = "commune-exemple.g1.p12"
CONSULTATIONS = """version: 1
consultations:
  - reference: AO-2026-042
    title: Entretien des espaces verts
    entity: commune-exemple
    designation: Commune Exemple
    status: open
    deadline: 2027-03-01
    opening: 2027-03-05
"""


@pytest.fixture
def bound(cli: Runner, quickstart: Path) -> Path:
    """commune-exemple's key made, then bound to an open consultation; its copies sit on
    the backup share first, then on ws-accueil and ws-marches (Entity.targets' order)."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    (quickstart.parent / "consultations.yaml").write_text(CONSULTATIONS)
    done = cli("apply", "--auto-approve", "-q", quickstart, *with_file(quickstart))
    assert done.returncode == 0, done.stdout + done.stderr
    return quickstart


def with_file(manifest: Path) -> list[str]:
    return ["--consultations", str(manifest.parent / "consultations.yaml")]


def copy_on(manifest: Path, folder: str) -> Path:
    return manifest.parent / "demo-out" / folder / COPY


def bound_missing(stdout: str) -> list[str]:
    return [x for x in stdout.splitlines() if "[bound-missing]" in x]


def test_a_changed_copy_is_named_though_a_target_before_it_was_not_reached(
    cli: Runner, bound: Path, tmp_path: Path
) -> None:
    backup = bound.parent / "demo-out" / "shared" / "backup"
    out_of_reach(backup, tmp_path / "backup-away")
    copy_on(bound, "workstations/ws-marches").write_bytes(b"")
    planned = cli("plan", bound, *with_file(bound))
    assert "backup-share: cannot observe the target" in planned.stdout, planned.stdout
    missing = bound_missing(planned.stdout)
    assert len(missing) == 1 and "its copy on workstation ws-marches changed since" in missing[0]
    assert "AO-2026-042" in missing[0], missing


def test_under_a_limit_the_changed_copy_within_it_is_named(cli: Runner, bound: Path) -> None:
    """--limit ws-accueil: the backup share, first in the entity's list, is outside the
    limit; ws-accueil's emptied copy is still named."""
    copy_on(bound, "workstations/ws-accueil").write_bytes(b"")
    planned = cli("plan", bound, "--limit", "ws-accueil", *with_file(bound))
    missing = bound_missing(planned.stdout)
    assert len(missing) == 1 and "its copy on workstation ws-accueil changed since" in missing[0]


def test_a_copy_re_encoded_with_the_same_key_is_not_called_missing(
    cli: Runner, bound: Path
) -> None:
    """Someone re-exported the copy (another friendly name, same key, same password): the
    agents can still open the bids; apply rewrites it as written, no risk is claimed."""
    path = copy_on(bound, "workstations/ws-accueil")
    password = PASSWORDS["commune-exemple"].encode()
    found = pkcs12.load_pkcs12(path.read_bytes(), password)
    assert found.key is not None and found.cert is not None
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"Exporte par un agent",
            found.key,
            found.cert.certificate,
            None,
            BestAvailableEncryption(password),
        )
    )
    planned = cli("plan", bound, *with_file(bound))
    assert "rewrite g1 on ws-accueil" in planned.stdout, planned.stdout
    assert bound_missing(planned.stdout) == [], planned.stdout
    # (check reads no password: to it such a copy is not known to hold the key, CRITICAL
    # until apply rewrites it, as docs/RUNBOOK.md says.)


def test_under_a_limit_the_deleted_copy_within_it_is_named(cli: Runner, bound: Path) -> None:
    """--limit ws-accueil: the backup share, first in the entity's list, is outside the
    limit; ws-accueil's deleted copy of the bound key is still named, once."""
    copy_on(bound, "workstations/ws-accueil").unlink()
    planned = cli("plan", bound, "--limit", "ws-accueil", *with_file(bound))
    missing = bound_missing(planned.stdout)
    assert len(missing) == 1 and "workstation ws-accueil: no agent there" in missing[0], (
        planned.stdout
    )
    assert "AO-2026-042" in missing[0], missing


def test_a_deleted_copy_is_named_though_a_target_before_it_was_not_reached(
    cli: Runner, bound: Path, tmp_path: Path
) -> None:
    backup = bound.parent / "demo-out" / "shared" / "backup"
    out_of_reach(backup, tmp_path / "backup-away")
    copy_on(bound, "workstations/ws-marches").unlink()
    planned = cli("plan", bound, *with_file(bound))
    assert "backup-share: cannot observe the target" in planned.stdout, planned.stdout
    missing = bound_missing(planned.stdout)
    assert len(missing) == 1 and "workstation ws-marches: no agent there" in missing[0], (
        planned.stdout
    )


def test_a_retired_key_brought_back_is_not_called_missing_where_nothing_was_looked_at(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Generation 1 retired by a renewal (taken off the workstations), then named by a new
    consultation: the plan brings it back and says it is missing from ws-marches, which it
    looked at; ws-accueil, which it could not reach, is said unreachable, not missing."""
    renewal = {"PROVISIONER_NOW": "2028-10-20T09:00:00+00:00"}
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", "-q", quickstart, env=renewal).returncode == 0
    assert not copy_on(quickstart, "workstations/ws-marches").exists()
    accueil = quickstart.parent / "demo-out" / "workstations" / "ws-accueil"
    out_of_reach(accueil, tmp_path / "accueil-away")
    (quickstart.parent / "consultations.yaml").write_text(
        CONSULTATIONS.replace("2027-03-01", "2029-03-01").replace("2027-03-05", "2029-03-05")
    )
    planned = cli("plan", quickstart, *with_file(quickstart), env=renewal)
    assert "ws-accueil: cannot observe the target" in planned.stdout, planned.stdout
    assert f"+ write g1 on ws-marches: {copy_on(quickstart, 'workstations/ws-marches')}" in (
        planned.stdout
    ), planned.stdout
    missing = bound_missing(planned.stdout)
    assert len(missing) == 1 and "workstation ws-marches: no agent there" in missing[0], (
        planned.stdout
    )


def test_a_consultation_given_by_reference_alone_is_named_by_it(
    cli: Runner, quickstart: Path
) -> None:
    """A consultation with no title and no dates (only its reference, entity, status and key)
    is named by its bare reference where a warning names it."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    (quickstart.parent / "consultations.yaml").write_text(
        "version: 1\nconsultations:\n  - {reference: AO-7, entity: commune-exemple, "
        "designation: Commune Exemple, status: open}\n"
    )
    done = cli("apply", "--auto-approve", "-q", quickstart, *with_file(quickstart))
    assert done.returncode == 0, done.stdout + done.stderr
    copy_on(quickstart, "workstations/ws-accueil").unlink()
    planned = cli("plan", quickstart, *with_file(quickstart))
    missing = bound_missing(planned.stdout)
    assert len(missing) == 1, planned.stdout
    assert 'generation 1 "Commune Exemple" is bound to AO-7 but ' in missing[0], missing
