"""Consultations: definitive bindings, the guards that protect bid opening, and `check`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from provisioner.consultations import read_consultations
from provisioner.crypto import pkcs12
from provisioner.errors import ManifestError
from provisioner.state.escrow import Escrow
from tests.conftest import Runner
from tests.engine_helpers import (
    ESCROW_PASSPHRASE,
    PASSWORDS,
    openssl_p12,
    p12_files,
    serial,
    state_rows,
)

# The quickstart's keys are created "now" (2026) and valid 730 days; these instants move the
# clock through the life of a consultation bound to generation 1 of commune-exemple.
CREATED = "2026-12-01T09:00:00+00:00"
IN_WINDOW = "2028-10-20T09:00:00+00:00"  # inside the 60-day renewal window
EXPIRED = "2028-12-10T09:00:00+00:00"  # generation 1 expired, the consultation still open
CLOSED = "2029-01-20T09:00:00+00:00"


def consultations(
    folder: Path,
    status: str = "open",
    designation: str = "Commune Exemple",
    name: str = "consultations.yaml",
) -> Path:
    path = folder / name
    path.write_text(
        "version: 1\n"
        "consultations:\n"
        "  - reference: 2026-TX-014\n"
        "    title: Voirie rue des Lilas\n"
        "    entity: commune-exemple\n"
        f"    designation: {designation}\n"
        f"    status: {status}\n"
        "    deadline: 2026-12-20T12:00:00+01:00\n"
        "    opening: 2027-01-10\n"
    )
    return path


def run(
    cli: Runner, manifest: Path, at: str, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    done = cli(
        *args,
        manifest,
        "--consultations",
        manifest.parent / "consultations.yaml",
        env={"PROVISIONER_NOW": at},
    )
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def bound_after_the_first_apply(cli: Runner, manifest: Path) -> None:
    """The keys are made first; then the platform makes consultation 2026-TX-014 with
    generation 1's certificate and the next apply binds it (a consultation in the file before
    its key existed names a key made elsewhere: never bound to a new one)."""
    done = cli("apply", "--auto-approve", manifest, env={"PROVISIONER_NOW": CREATED})
    assert done.returncode == 0, done.stdout + done.stderr
    consultations(manifest.parent)
    run(cli, manifest, CREATED, "apply", "--auto-approve")


def workstation_files(manifest: Path) -> set[str]:
    return {rel for rel in p12_files(manifest) if rel.startswith("workstations/")}


def test_invariant_2_bound_keys_live_through_renewal_until_their_consultation_closes(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    bound_after_the_first_apply(cli, quickstart)
    assert state_rows(quickstart, "SELECT reference, status FROM consultations") == [
        ("2026-TX-014", "open")
    ]

    planned = run(cli, quickstart, IN_WINDOW, "plan")
    assert "~ generation 1: retain  [bound-to-open-consultation]" in planned.stdout
    assert (
        "2026-TX-014 (Voirie rue des Lilas; deadline 2026-12-20; opening 2027-01-10)"
        in planned.stdout
    )
    assert "keeps          = generation 1" in planned.stdout
    run(cli, quickstart, IN_WINDOW, "apply", "--auto-approve")
    held = workstation_files(quickstart)
    for ws in ("ws-accueil", "ws-marches"):
        assert f"workstations/{ws}/commune-exemple.g1.p12" in held, "old key left a workstation"
        assert f"workstations/{ws}/commune-exemple.g2.p12" in held
    # Syndicat has no consultation: its old generation left the workstations.
    assert "workstations/ws-marches/syndicat-eaux.g1.p12" not in held

    # Expired yet still bound: kept, repaired if lost, and warned about.
    p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g1.p12"].unlink()
    planned = run(cli, quickstart, EXPIRED, "plan")
    assert "+ write g1 on ws-accueil" in planned.stdout
    assert '[expired-bound] generation 1 "Commune Exemple" expired on' in planned.stdout
    run(cli, quickstart, EXPIRED, "apply", "--auto-approve")
    copy = p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g1.p12"]
    pkcs12.decode(copy.read_bytes(), PASSWORDS["commune-exemple"])

    # Closed: the next apply retires generation 1 from the workstations, escrow keeps it.
    consultations(folder, status="closed")
    planned = run(cli, quickstart, CLOSED, "plan")
    assert "[closed] consultation 2026-TX-014: status open -> closed" in planned.stdout
    assert "- generation 1: retire  [unbound]" in planned.stdout
    run(cli, quickstart, CLOSED, "apply", "--auto-approve")
    held = workstation_files(quickstart)
    assert not any(rel.endswith("commune-exemple.g1.p12") for rel in held)
    assert "shared/backup/commune-exemple.g1.p12" in p12_files(quickstart)
    g1 = state_rows(
        quickstart,
        "SELECT key_sha256, status FROM generations WHERE "
        "entity = 'commune-exemple' AND number = 1",
    )[0]
    assert g1[1] == "retired"
    escrow = Escrow.unlock(folder / ".provisioner" / "escrow", ESCROW_PASSPHRASE)
    assert isinstance(g1[0], str)
    escrow.get(g1[0])
    closed_at = state_rows(quickstart, "SELECT closed_at FROM consultations")[0][0]
    assert isinstance(closed_at, str) and closed_at.startswith("2029-01-20")


def test_invariant_3_bindings_are_definitive(cli: Runner, quickstart: Path) -> None:
    folder = quickstart.parent
    bound_after_the_first_apply(cli, quickstart)
    run(cli, quickstart, IN_WINDOW, "apply", "--auto-approve")  # generation 2 exists now
    before = serial(quickstart)
    files = {p: p.read_bytes() for p in p12_files(quickstart).values()}
    consultations(folder, designation="Commune Exemple (2)")
    for command in (["plan"], ["apply", "--auto-approve"]):
        done = run(cli, quickstart, IN_WINDOW, *command, ok=False)
        assert done.returncode == 1
        assert (
            "consultations.yaml:3:5: consultation 2026-TX-014 is bound to generation 1 "
            '"Commune Exemple"' in done.stdout
        )
        assert 'the file now binds it to generation 2 "Commune Exemple (2)"' in done.stdout
        assert "Plan refused: a guard forbids applying it" in done.stdout
    assert serial(quickstart) == before
    assert {p: p.read_bytes() for p in p12_files(quickstart).values()} == files
    # The database itself refuses a rebinding, whatever the code above it does.
    import sqlite3

    conn = sqlite3.connect(folder / ".provisioner" / "state.db")
    with pytest.raises(sqlite3.DatabaseError, match="definitive"):
        conn.execute("UPDATE consultations SET key_ref = 'designation:x'")
    with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
        conn.execute("DELETE FROM consultations")
    conn.close()


def test_a_consultation_missing_from_a_later_file_keeps_its_status(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    bound_after_the_first_apply(cli, quickstart)
    (folder / "consultations.yaml").write_text("version: 1\nconsultations: []\n")
    planned = run(cli, quickstart, IN_WINDOW, "plan")
    assert "~ generation 1: retain  [bound-to-open-consultation]" in planned.stdout


@pytest.mark.parametrize(
    ("column", "line", "recorded", "new"),
    [
        ("opening", "    opening: 2027-01-10\n", "2027-01-10T00:00:00+01:00", "2027-01-12"),
        (
            "deadline",
            "    deadline: 2026-12-20T12:00:00+01:00\n",
            "2026-12-20T12:00:00+01:00",
            "2026-12-21",
        ),
    ],
)
def test_a_date_the_file_no_longer_gives_keeps_the_recorded_one(
    cli: Runner, quickstart: Path, column: str, line: str, recorded: str, new: str
) -> None:
    """Red team 4, M1: an export without the opening or the deadline (an empty cell, another
    column) must not erase the recorded date that check compares with the key's expiry."""
    bound_after_the_first_apply(cli, quickstart)
    path = quickstart.parent / "consultations.yaml"
    path.write_text(path.read_text().replace(line, ""))
    planned = run(cli, quickstart, CREATED, "plan")
    assert "dates updated" not in planned.stdout, planned.stdout
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    assert state_rows(quickstart, f"SELECT {column} FROM consultations") == [(recorded,)]
    # A new date is taken.
    consultations(quickstart.parent)
    path.write_text(path.read_text().replace(line, line.replace(recorded.split("T")[0], new)))
    assert (
        "    ~ consultation 2026-TX-014: update  [consultation-updated] consultation 2026-TX-014: "
        "title or dates updated\n" in run(cli, quickstart, CREATED, "plan").stdout
    )


def test_deleting_a_bound_entity_or_its_last_workstation_is_refused(
    cli: Runner, quickstart: Path
) -> None:
    bound_after_the_first_apply(cli, quickstart)
    before = serial(quickstart)
    original = quickstart.read_text()
    quickstart.write_text(
        original.replace(
            "    name: Commune d'Exemple\n", "    name: Commune d'Exemple\n    state: absent\n"
        )
    )
    done = run(cli, quickstart, CREATED, "apply", "--auto-approve", ok=False)
    assert done.returncode == 1
    assert (
        'entity commune-exemple is marked absent, but generation 1 "Commune Exemple" is '
        "bound to open consultation 2026-TX-014" in done.stdout
    )
    quickstart.write_text(
        original.replace("workstations: [service-marches, ws-accueil]", "workstations: []")
    )
    done = run(cli, quickstart, CREATED, "apply", "--auto-approve", ok=False)
    assert done.returncode == 1
    assert "declares no workstation any more" in done.stdout
    assert serial(quickstart) == before
    assert len(workstation_files(quickstart)) == 3


def test_unmanaged_key_is_warned_and_adopting_it_resolves_the_binding(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    folder = quickstart.parent
    consultations(folder, designation="Ancienne cle")
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    planned = run(cli, quickstart, CREATED, "plan")
    assert "[unmanaged-key] consultation 2026-TX-014" in planned.stdout
    pfx = openssl_p12(
        tmp_path, "Old-Windows-Pass-1", dt.datetime.fromisoformat(CREATED), days=900, legacy=False
    )
    done = cli(
        "adopt",
        quickstart,
        "commune-exemple",
        pfx,
        "--retained",
        "--password-env",
        "PW",
        env={"PW": "Old-Windows-Pass-1", "PROVISIONER_NOW": CREATED},
    )
    assert done.returncode == 0, done.stderr
    planned = run(cli, quickstart, CREATED, "plan")
    assert "its key is now managed: generation 2" in planned.stdout
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    assert "workstations/ws-accueil/commune-exemple.g2.p12" in workstation_files(quickstart)


def test_unmanaged_key_is_critical_within_days_of_the_opening(
    cli: Runner, quickstart: Path
) -> None:
    """Nothing here holds or observes a key the tool does not manage: a month before the
    opening that is a WARNING to adopt it, a few days before it bids are at risk."""
    consultations(quickstart.parent, designation="Ancienne cle")
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    early = run(cli, quickstart, CREATED, "check", ok=False)
    assert early.returncode == 1, early.stdout
    assert "unmanaged-key" in early.stdout and "bids opened" not in early.stdout
    late = run(cli, quickstart, "2027-01-05T09:00:00+00:00", "check", ok=False)
    assert late.returncode == 2, late.stdout
    line = next(x for x in late.stdout.splitlines() if "[unmanaged-key]" in x)
    assert "consultation 2026-TX-014" in line and "bids opened in 5 days, 2027-01-10" in line


def test_consultations_file_errors_name_their_place(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "version: 1\nconsultations:\n  - reference: A\n    entity: x\n"
        "    status: pending\n    designation: D\n"
    )
    with pytest.raises(ManifestError) as info:
        read_consultations(bad, {"x"})
    assert 'c.yaml:5:13: error: consultations[0].status: "pending" is not one of' in str(info.value)
    csv = tmp_path / "c.csv"
    csv.write_text(
        "reference;title;entity;designation;status;deadline;opening\n"
        "2026-01;Voirie;x;Ville 2026;open;15/12/2026 12:00;16/12/2026\n"
        "2026-02;Ecole;x;Ville 2026;ouvert;;\n"
        "2026-03;Cantine;y;Ville 2026;open;;\n"
        "2026-04;Parc;x;Ville 2026;open;31/02/2026;\n"
    )
    with pytest.raises(ManifestError) as info:
        read_consultations(csv, {"x"})
    text = str(info.value)
    assert f"{csv}:3:28: error: status: 'ouvert' is not one of open, opening, closed" in text
    assert f"{csv}:5:32: error: deadline: '31/02/2026' is not a date" in text
    good = tmp_path / "good.csv"
    good.write_text(
        "reference,entity,designation,status,deadline,opening\n"
        "2026-01,x,Ville 2026,open,15/12/2026 12:00,2026-12-16T10:00:00+01:00\n"
    )
    (item,) = read_consultations(good, {"x"})
    assert item.deadline is not None and item.deadline.isoformat() == "2026-12-15T12:00:00+01:00"
    assert item.key_ref == "designation:Ville 2026"
    dup = tmp_path / "dup.csv"
    dup.write_text("reference,entity,designation,status\nA,x,D,open\nA,x,D,open\n")
    with pytest.raises(ManifestError, match=r"dup.csv:3: error: consultation A: listed twice"):
        read_consultations(dup, {"x"})
    unknown = tmp_path / "u.csv"
    unknown.write_text("reference,entity,designation,status\nA,nobody,D,open\n")
    with pytest.raises(ManifestError, match="unknown entity 'nobody'"):
        read_consultations(unknown, {"x"})


def second_consultation(folder: Path, designation: str) -> None:
    """The platform's export, once the key was renamed there: both consultations name it."""
    path = folder / "consultations.yaml"
    path.write_text(
        path.read_text() + "  - reference: 2026-TX-015\n"
        "    title: Eclairage public\n"
        "    entity: commune-exemple\n"
        f"    designation: {designation}\n"
        "    status: open\n"
        "    deadline: 2027-02-20T12:00:00+01:00\n"
        "    opening: 2027-03-10\n"
    )


def test_a_rename_the_platform_export_already_shows_binds_to_the_renamed_generation(
    cli: Runner, quickstart: Path
) -> None:
    """Issue 27, item 1: the bi-clé renamed on the platform and in the manifest, and the
    export already naming the new designation, in the same apply. The existing consultation
    is the same binding (no refusal); a new one naming the new designation is bound to
    generation 1, not to "a key this tool does not manage"; the renewal keeps generation 1 on
    every workstation while both are open."""
    folder = quickstart.parent
    bound_after_the_first_apply(cli, quickstart)
    quickstart.write_text(
        quickstart.read_text().replace("designation: Commune Exemple", "designation: Ville Exemple")
    )
    consultations(folder, designation="Ville Exemple")
    second_consultation(folder, "Ville Exemple")

    planned = run(cli, quickstart, CREATED, "plan")
    assert "'Commune Exemple' -> 'Ville Exemple'" in planned.stdout
    assert 'consultation 2026-TX-015 is bound to generation 1 "Ville Exemple"' in planned.stdout
    assert "does not manage" not in planned.stdout
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    bound = state_rows(
        quickstart,
        "SELECT c.reference, g.number, g.designation FROM consultations c "
        "JOIN generations g ON g.id = c.generation ORDER BY 1",
    )
    assert bound == [("2026-TX-014", 1, "Ville Exemple"), ("2026-TX-015", 1, "Ville Exemple")]
    again = run(cli, quickstart, CREATED, "plan", "--detailed-exitcode", ok=False)
    assert again.returncode == 0, again.stdout + again.stderr

    run(cli, quickstart, IN_WINDOW, "apply", "--auto-approve")
    held = workstation_files(quickstart)
    for ws in ("ws-accueil", "ws-marches"):
        assert f"workstations/{ws}/commune-exemple.g1.p12" in held, "bound key left " + ws
        assert f"workstations/{ws}/commune-exemple.g2.p12" in held
    checked = run(cli, quickstart, IN_WINDOW, "check", ok=False)
    assert "does not manage" not in checked.stdout


def test_a_rename_made_when_the_renewal_falls_due_renames_the_outgoing_generation(
    cli: Runner, quickstart: Path
) -> None:
    """The bi-clé renamed on the platform and in the manifest (the export names the new
    designation) in the apply that also renews it: the outgoing generation gets the new name
    it has on the platform, so the next plan reads the same file without a refusal, and the
    bound generation stays on every workstation (found by the stateful suite)."""
    folder = quickstart.parent
    bound_after_the_first_apply(cli, quickstart)
    quickstart.write_text(
        quickstart.read_text().replace("designation: Commune Exemple", "designation: Ville Exemple")
    )
    consultations(folder, designation="Ville Exemple")
    second_consultation(folder, "Ville Exemple")

    renewed = run(cli, quickstart, IN_WINDOW, "apply", "--auto-approve")
    assert "'Commune Exemple' -> 'Ville Exemple'" in renewed.stdout, renewed.stdout
    rows = state_rows(
        quickstart,
        "SELECT number, designation FROM generations WHERE entity = 'commune-exemple' ORDER BY 1",
    )
    assert rows == [(1, "Ville Exemple"), (2, "Ville Exemple (2)")]
    bound = state_rows(
        quickstart,
        "SELECT c.reference, g.number FROM consultations c "
        "JOIN generations g ON g.id = c.generation ORDER BY 1",
    )
    assert bound == [("2026-TX-014", 1), ("2026-TX-015", 1)]
    again = run(cli, quickstart, IN_WINDOW, "plan", "--detailed-exitcode", ok=False)
    assert again.returncode == 0, again.stdout + again.stderr
    held = workstation_files(quickstart)
    for ws in ("ws-accueil", "ws-marches"):
        assert f"workstations/{ws}/commune-exemple.g1.p12" in held, "bound key left " + ws


def test_a_binding_recorded_at_the_same_second_as_the_key_still_keeps_it(
    cli: Runner, quickstart: Path
) -> None:
    """Two runs in one second (or at one pinned clock): the key made by the first existed when
    the second recorded a binding to a key this tool does not manage, so it may be that key
    and stays on the workstations through the renewal while the consultation is open (the
    plan says so). Only a generation made by the binding's own run is not before it."""
    done = cli("apply", "--auto-approve", quickstart, env={"PROVISIONER_NOW": CREATED})
    assert done.returncode == 0, done.stdout + done.stderr
    consultations(quickstart.parent, designation="Cle du service marches")
    bound = run(cli, quickstart, CREATED, "apply", "--auto-approve")
    assert "a key this tool does not manage" in bound.stdout
    planned = run(cli, quickstart, IN_WINDOW, "plan")
    assert "since it may be that key: generation 1" in planned.stdout, planned.stdout
    run(cli, quickstart, IN_WINDOW, "apply", "--auto-approve")
    held = workstation_files(quickstart)
    for ws in ("ws-accueil", "ws-marches"):
        assert f"workstations/{ws}/commune-exemple.g1.p12" in held, "may-be key left " + ws


def test_a_new_consultation_in_the_export_leaves_status_ready_with_its_record_to_save(
    cli: Runner, quickstart: Path
) -> None:
    """The platform's export names a new consultation: the keys and copies are as they must
    be, so status says Ready, and that the next apply saves the binding; `plan` shows it."""
    at = {"PROVISIONER_NOW": CREATED}
    assert cli("apply", "--auto-approve", quickstart, env=at).returncode == 0
    c = consultations(quickstart.parent)
    status = cli("status", quickstart, "--consultations", c, env=at)
    assert status.returncode == 0, status.stderr
    assert (
        "commune-exemple (Commune d'Exemple)  Ready: up to date (1 consultation record for the "
        "next apply to save)" in status.stdout
    ), status.stdout
    doc = json.loads(cli("status", "--json", quickstart, "--consultations", c, env=at).stdout)
    assert all(e["ready"] for e in doc["entities"]), doc
    plan = cli("plan", "--detailed-exitcode", quickstart, "--consultations", c, env=at)
    assert plan.returncode == 2 and "+ consultation 2026-TX-014: bind" in plan.stdout
    # A copy missing is not bookkeeping: not ready, whatever the consultations.
    next(iter(p12_files(quickstart).values())).unlink()
    status = cli("status", quickstart, "--consultations", c, env=at)
    assert "Not ready: missing" in status.stdout, status.stdout
