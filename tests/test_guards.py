"""The guards of the safety invariants on the paths a history rarely takes, each as the operator
would walk it: found by mutation testing (docs/TESTING.md), where a flipped condition or a
dropped guard in these places passed every other test."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from provisioner.crypto import pkcs12
from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import PASSWORDS, p12_files, state_rows

HEADER = "reference;title;entity;designation;status;deadline;opening\n"
RENEWAL = TEST_CLOCK + dt.timedelta(days=685)  # inside the 60-day window of a 730-day key


def at(when: dt.datetime) -> dict[str, str]:
    return {"PROVISIONER_NOW": when.isoformat()}


def bound_history(cli: Runner, manifest: Path) -> tuple[str, str]:
    """Generation 1 of commune-exemple made, then bound (the next day) to consultation C-1,
    open until 2028-11-20: the `--consultations` arguments that give that file."""
    assert cli("apply", "--auto-approve", manifest).returncode == 0
    c = manifest.parent / "c.csv"
    c.write_text(HEADER + "C-1;x;commune-exemple;Commune Exemple;open;10/11/2028;20/11/2028\n")
    given = ("--consultations", str(c))
    day_after = at(TEST_CLOCK + dt.timedelta(days=1))
    done = cli("apply", "--auto-approve", *given, manifest, env=day_after)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = state_rows(manifest, "SELECT generation FROM consultations WHERE reference = 'C-1'")
    assert rows and rows[0][0] is not None, "C-1 is bound to generation 1"
    return given


def refused(
    cli: Runner, manifest: Path, given: tuple[str, str], when: dt.datetime, *words: str
) -> None:
    """plan and apply at `when` both exit 1, plan saying each of `words`."""
    planned = cli("plan", *given, manifest, env=at(when))
    assert planned.returncode == 1, planned.stdout
    said = " ".join((planned.stdout + planned.stderr).split())
    for word in words:
        assert word in said, said
    done = cli("apply", "--auto-approve", *given, manifest, env=at(when))
    assert done.returncode == 1, done.stdout


def workstation_copies(manifest: Path, entity: str) -> set[str]:
    return {rel for rel in p12_files(manifest) if rel.startswith("workstations/") and entity in rel}


def test_an_entity_declared_absent_is_refused_while_an_older_renewed_generation_is_bound(
    cli: Runner, quickstart: Path
) -> None:
    """Invariant 2: the bound generation is no longer the current one (the key was renewed),
    and `state: absent` would still take it off every workstation before C-1's opening."""
    given = bound_history(cli, quickstart)
    renewed = cli("apply", "--auto-approve", *given, quickstart, env=at(RENEWAL))
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    before = workstation_copies(quickstart, "commune-exemple")
    assert "workstations/ws-accueil/commune-exemple.g1.p12" in before
    assert "workstations/ws-accueil/commune-exemple.g2.p12" in before
    quickstart.write_text(
        quickstart.read_text().replace(
            "  - id: commune-exemple\n", "  - id: commune-exemple\n    state: absent\n", 1
        )
    )
    refused(
        cli,
        quickstart,
        given,
        RENEWAL + dt.timedelta(days=1),
        "entity commune-exemple is marked absent, but",
        "C-1",
    )
    assert workstation_copies(quickstart, "commune-exemple") == before


def test_removing_the_last_shared_location_of_a_bound_entity_is_refused(
    cli: Runner, quickstart: Path
) -> None:
    """Invariant 2: the shared location keeps the copy that is never lost; with a consultation
    open, the entity's last one cannot go."""
    given = bound_history(cli, quickstart)
    backup = "shared/backup/commune-exemple.g1.p12"
    assert backup in p12_files(quickstart)
    text = quickstart.read_text()
    block = text.index("  - id: commune-exemple")
    end = text.index("  - id: syndicat-eaux")
    quickstart.write_text(
        text[:block]
        + text[block:end].replace("    shared_locations: [backup-share]\n", "", 1)
        + text[end:]
    )
    refused(
        cli,
        quickstart,
        given,
        TEST_CLOCK + dt.timedelta(days=2),
        "entity commune-exemple declares no shared location any more, but",
        "Removing its last shared location is refused",
    )
    assert backup in p12_files(quickstart)


def test_a_retired_generations_lost_escrow_key_is_taken_back_from_the_shared_location(
    cli: Runner, quickstart: Path
) -> None:
    """Invariant 10: retired generations are escrowed and observed too; a lost key file is
    CRITICAL in check until apply takes it back from the shared location's copy."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("apply", "--auto-approve", quickstart, env=at(RENEWAL)).returncode == 0
    rows = state_rows(
        quickstart,
        "SELECT key_sha256, status FROM generations WHERE entity = 'commune-exemple' "
        "AND number = 1",
    )
    assert rows and rows[0][1] == "retired", rows
    assert "workstations/ws-accueil/commune-exemple.g1.p12" not in p12_files(quickstart)
    lost = quickstart.parent / ".provisioner" / "escrow" / f"{rows[0][0]}.key"
    assert lost.is_file()
    lost.unlink()
    later = at(RENEWAL + dt.timedelta(days=1))
    planned = cli("plan", quickstart, env=later)
    assert "restore escrowed key from backup-share" in planned.stdout, planned.stdout
    assert "[escrow-missing]" in planned.stdout
    probe = cli("check", quickstart, env=later)
    assert probe.returncode == 2, probe.stdout
    assert "generation 1's private key is missing from the escrow" in probe.stdout
    assert cli("apply", "--auto-approve", quickstart, env=later).returncode == 0
    assert lost.is_file()
    assert cli("check", quickstart, env=later).returncode == 0


def test_check_is_critical_from_the_critical_days_day_on_and_not_a_day_before(
    cli: Runner, quickstart: Path
) -> None:
    """`--critical-days N`: a current key expiring in N days is CRITICAL, in N + 1 days a
    WARNING (`--warn-days`); the boundary day is the operator's, not one off."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    copy = p12_files(quickstart)["shared/backup/commune-exemple.g1.p12"]
    cert: x509.Certificate = pkcs12.decode(
        copy.read_bytes(), PASSWORDS["commune-exemple"]
    ).certificate
    not_after = cert.not_valid_after_utc
    limits = ("--warn-days", "100", "--critical-days", "75", "--limit", "commune-exemple")
    hour = dt.timedelta(hours=1)
    on_the_day = cli("check", *limits, quickstart, env=at(not_after - dt.timedelta(days=75) - hour))
    assert on_the_day.returncode == 2, on_the_day.stdout
    assert "current generation 1 expires in 75 days" in on_the_day.stdout
    day_before = cli("check", *limits, quickstart, env=at(not_after - dt.timedelta(days=76) - hour))
    assert day_before.returncode == 1, day_before.stdout
    assert "current generation 1 expires in 76 days" in day_before.stdout
    assert "CRITICAL" not in day_before.stdout
    # Only --critical-days raised past the default --warn-days (30): the day it names is
    # still CRITICAL, and the day before the key's expiry is not a finding at all (only the
    # renewal coming, a warning of the plan).
    alone = ("--critical-days", "75", "--limit", "commune-exemple")
    on_the_day = cli("check", *alone, quickstart, env=at(not_after - dt.timedelta(days=75) - hour))
    assert on_the_day.returncode == 2, on_the_day.stdout
    assert "current generation 1 expires in 75 days" in on_the_day.stdout
    day_before = cli("check", *alone, quickstart, env=at(not_after - dt.timedelta(days=76) - hour))
    assert "[expiring]" not in day_before.stdout and "CRITICAL" not in day_before.stdout
