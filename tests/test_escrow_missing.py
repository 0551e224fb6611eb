"""A key missing from the escrow (invariant: every distributed key escrowed): the plan takes it
back from an intact copy that opens with the entity's current password, for every generation
whatever the others, and otherwise says exactly what was looked at and what to do."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Runner
from tests.engine_helpers import escrow_blob, set_escrow_blob, state_rows

RENEWAL = {"PROVISIONER_NOW": "2028-10-15T10:00:00Z"}
OUT = "demo-out"


def key_of(manifest: Path, number: int) -> str:
    [(key,)] = state_rows(
        manifest,
        "SELECT key_sha256 FROM generations "
        f"WHERE entity = 'commune-exemple' AND number = {number}",
    )
    return f"{key}.key"


def test_a_newer_generations_lost_key_is_taken_back_though_an_older_ones_is_there(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    lost = key_of(quickstart, 2)
    set_escrow_blob(quickstart, lost, None)
    planned = cli("plan", quickstart, env=RENEWAL)
    said = [line.strip() for line in planned.stdout.splitlines() if "[escrow-missing]" in line]
    assert said == [
        "+ generation 2: restore escrowed key from backup-share  [escrow-missing] the escrowed "
        "private key is missing: taken back from the copy on backup-share"
    ], planned.stdout
    assert cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL).returncode == 0
    assert escrow_blob(quickstart, lost) is not None


def test_under_a_limit_a_lost_key_is_said_with_what_was_not_looked_at(
    cli: Runner, quickstart: Path
) -> None:
    """The escrowed key lost and ws-accueil's copy damaged: a run limited to ws-accueil cannot
    take the key back and says why (only the copies within --limit were looked at); a run
    over every target takes it back from the backup share."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    lost = key_of(quickstart, 1)
    set_escrow_blob(quickstart, lost, None)
    (quickstart.parent / OUT / "workstations/ws-accueil/commune-exemple.g1.p12").write_bytes(b"")
    limited = cli("plan", "--limit", "ws-accueil", quickstart)
    assert (
        '! commune-exemple: [escrow-missing] generation 1 "Commune Exemple": its private key '
        "is missing from the escrow and no intact copy that opens with the current password "
        "was observed (only the copies within --limit were looked at: run without a target "
        "limit to take it back from another); restore the escrow from a backup, or run "
        "`provisioner recover` (docs/RECOVERY.md)" in limited.stdout
    ), limited.stdout
    whole = cli("plan", quickstart)
    assert "restore escrowed key from backup-share" in whole.stdout, whole.stdout
    assert "only the copies within --limit" not in whole.stdout


def test_a_lost_key_is_never_taken_from_a_copy_under_a_former_password(
    cli: Runner, quickstart: Path
) -> None:
    """The entity's password changed in its secret file, not applied yet, and its escrowed
    key lost: every copy still has the former password, so none is taken; the plan says
    the key is missing with nothing observed to take it from, and where to go."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    set_escrow_blob(quickstart, key_of(quickstart, 1), None)
    (quickstart.parent / "secrets" / "commune-exemple.pass").write_text("Nouveau-mdp-2026\n")
    planned = cli("plan", quickstart)
    assert "restore escrowed key" not in planned.stdout, planned.stdout
    assert (
        '! commune-exemple: [escrow-missing] generation 1 "Commune Exemple": its private key '
        "is missing from the escrow and no intact copy that opens with the current password "
        "was observed; restore the escrow from a backup, or run `provisioner recover` "
        "(docs/RECOVERY.md)" in planned.stdout
    ), planned.stdout
