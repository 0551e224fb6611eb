"""Invariant 11: a binding follows the certificate, not its name; dates as the file gives them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509

from provisioner import clock
from provisioner.crypto import cms, pkcs12
from provisioner.errors import StateError
from provisioner.plan.bindings import find_generation
from provisioner.state.db import MIGRATIONS, SCHEMA_VERSION, StateDB, _statements
from tests.conftest import Runner
from tests.engine_helpers import PASSWORDS, p12_files, serial, state_rows
from tests.test_consultations import (
    CREATED,
    IN_WINDOW,
    bound_after_the_first_apply,
    consultations,
    run,
)

DATA = Path(__file__).parent / "data"
RENAMED = "Commune Nouvelle"


def rename(manifest: Path, designation: str) -> None:
    text = manifest.read_text()
    assert "      designation: Commune Exemple\n" in text
    manifest.write_text(
        text.replace("      designation: Commune Exemple\n", f"      designation: {designation}\n")
    )


def g1_copies(manifest: Path) -> dict[str, Path]:
    return {r: p for r, p in p12_files(manifest).items() if r.endswith("commune-exemple.g1.p12")}


def test_invariant_11_rename_then_renewal_keeps_the_bound_generation_and_its_bids_open(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    bound_after_the_first_apply(cli, quickstart)
    ((cert_der, fingerprint),) = state_rows(
        quickstart,
        "SELECT certificate, cert_sha256 FROM generations WHERE entity = 'commune-exemple'",
    )
    assert isinstance(cert_der, bytes) and isinstance(fingerprint, str)
    bid = cms.encrypt_bid(x509.load_der_x509_certificate(cert_der), b"offre du lot 1")

    # A designation-only change renames generation 1: no new key, no "Commune Nouvelle (2)".
    rename(quickstart, RENAMED)
    planned = run(cli, quickstart, CREATED, "plan")
    assert "~ generation 1: update designation" in planned.stdout
    assert "create" not in planned.stdout.split("Plan:")[0].replace("update designation", "")
    assert f"'Commune Exemple' -> '{RENAMED}'" in planned.stdout
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    assert state_rows(
        quickstart, "SELECT number, designation FROM generations WHERE entity = 'commune-exemple'"
    ) == [(1, RENAMED)]

    # The file still names the old designation: same generation, every guard kept.
    code = cli(
        "check",
        quickstart,
        "--consultations",
        folder / "consultations.yaml",
        env={"PROVISIONER_NOW": CREATED},
    )
    assert code.returncode == 0, code.stdout
    path = folder / "consultations.yaml"
    path.write_text(path.read_text().replace("2027-01-10", "2029-01-10"))
    code = cli("check", quickstart, "--consultations", path, env={"PROVISIONER_NOW": CREATED})
    assert code.returncode == 2, code.stdout
    assert (
        f'CRITICAL: commune-exemple: [expires-before-opening] generation 1 "{RENAMED}" expires on '
        "2028-11-30, before the opening of consultation 2026-TX-014" in code.stdout
    )
    consultations(folder)
    document = json.loads(run(cli, quickstart, CREATED, "status", "--json").stdout)
    assert document["entities"][0]["generations"][0]["designations"] == [
        "Commune Exemple",
        RENAMED,
    ]
    status = run(cli, quickstart, CREATED, "status")
    assert f'g1 current  "{RENAMED}" (formerly "Commune Exemple")' in status.stdout
    assert (
        "2026-TX-014 (Voirie rue des Lilas; deadline 2026-12-20; opening 2027-01-10) -> "
        f'g1 "{RENAMED}"' in status.stdout
    )

    # The platform export now shows the new name, or the fingerprint: accepted, no change.
    for named in (RENAMED, f"{fingerprint}"):
        path = consultations(folder, designation=named)
        if named == fingerprint:
            path.write_text(
                path.read_text().replace(
                    f"designation: {named}", f"certificate_sha256: {fingerprint}"
                )
            )
        planned = run(cli, quickstart, CREATED, "plan", "--detailed-exitcode", ok=False)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert "refused" not in planned.stdout.lower()

    export = folder / "export.csv"  # as the platform exports it, with the new name
    export.write_text(
        "reference;title;entity;designation;status;deadline;opening\n"
        f"2026-TX-014;Voirie rue des Lilas;commune-exemple;{RENAMED};open;"
        "20/12/2026 12:00;10/01/2027\n"
    )
    planned = cli(
        "plan",
        "--detailed-exitcode",
        quickstart,
        "--consultations",
        export,
        env={"PROVISIONER_NOW": CREATED},
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr

    # Renewal: generation 2 beside it; generation 1 stays on every workstation and opens the bid.
    consultations(folder, designation=RENAMED)
    planned = run(cli, quickstart, IN_WINDOW, "plan")
    assert "~ generation 1: retain  [bound-to-open-consultation]" in planned.stdout
    assert "Commune Nouvelle (2)" in planned.stdout
    run(cli, quickstart, IN_WINDOW, "apply", "--auto-approve")
    copies = g1_copies(quickstart)
    assert set(copies) == {
        "shared/backup/commune-exemple.g1.p12",
        "workstations/ws-accueil/commune-exemple.g1.p12",
        "workstations/ws-marches/commune-exemple.g1.p12",
    }
    for path in copies.values():
        bundle = pkcs12.decode(path.read_bytes(), PASSWORDS["commune-exemple"])
        assert bundle.friendly_name == RENAMED
        assert cms.open_bid(bid, bundle.certificate, bundle.key) == b"offre du lot 1"

    # Naming the other generation is still a rebinding, refused; the database refuses it too.
    before = serial(quickstart)
    consultations(folder, designation=f"{RENAMED} (2)")
    done = run(cli, quickstart, IN_WINDOW, "apply", "--auto-approve", ok=False)
    assert done.returncode == 1
    assert (
        f'consultation 2026-TX-014 is bound to generation 1 "{RENAMED}" (formerly '
        '"Commune Exemple"; certificate' in done.stdout
    )
    assert f'the file now binds it to generation 2 "{RENAMED} (2)"' in done.stdout
    assert serial(quickstart) == before
    conn = sqlite3.connect(folder / ".provisioner" / "state.db")
    g2 = conn.execute("SELECT id, cert_sha256 FROM generations WHERE number = 2").fetchone()
    for statement, args in (
        ("UPDATE consultations SET generation = ?, cert_sha256 = ?", g2),
        ("UPDATE consultations SET cert_sha256 = ?", (g2[1],)),
        ("DELETE FROM designations", ()),
    ):
        with pytest.raises(sqlite3.DatabaseError, match=r"definitive|certificate|kept"):
            conn.execute(statement, args)
    conn.close()


def test_a_designation_only_change_with_a_template_renames_and_never_makes_a_key(
    cli: Runner, quickstart: Path
) -> None:
    run_plain = {"PROVISIONER_NOW": CREATED}
    assert cli("apply", "--auto-approve", quickstart, env=run_plain).returncode == 0
    text = quickstart.read_text()
    quickstart.write_text(text.replace("Syndicat Eaux Val {year}", "Syndicat du Val {year}"))
    planned = cli("plan", quickstart, env=run_plain)
    assert "~ generation 1: update designation" in planned.stdout
    assert "'Syndicat Eaux Val 2026' -> 'Syndicat du Val 2026'" in planned.stdout
    assert "spec-changed" not in planned.stdout and "(2)" not in planned.stdout
    assert cli("apply", "--auto-approve", quickstart, env=run_plain).returncode == 0
    assert state_rows(
        quickstart, "SELECT number, designation FROM generations WHERE entity = 'syndicat-eaux'"
    ) == [(1, "Syndicat du Val 2026")]


def test_a_version_2_state_migrates_to_bindings_by_certificate(tmp_path: Path) -> None:
    """tests/data/state-v2.sql is a state written by the code before schema version 3."""
    state = tmp_path / ".provisioner"
    state.mkdir()
    conn = sqlite3.connect(state / "state.db")
    conn.executescript((DATA / "state-v2.sql").read_text())
    conn.close()
    with pytest.raises(StateError, match="schema version 2; run `provisioner apply` once"):
        StateDB.open(state, create=False)
    db = StateDB.open(state, create=True)
    assert db is not None
    try:
        recorded = db.snapshot()
        binding = recorded.consultations["2026-TX-014"]
        assert binding.generation_id is not None
        g = recorded.generation(binding.generation_id)
        assert g is not None and g.designation == "Commune Exemple"
        assert binding.cert_sha256 == g.cert_sha256
        assert binding.key_ref == "designation:Commune Exemple"
        assert [recorded.names_of(x) for x in recorded.generations] == [
            ("Commune Exemple",),
            ("Syndicat Eaux Val 2026",),
        ]
        # The file's `opening: 2027-01-10` was stored as 2027-01-09T23:00:00Z: the calendar day
        # it was is back.
        assert binding.opening is not None and clock.day(binding.opening) == "2027-01-10"
        stored = db.conn.execute("SELECT deadline, opening FROM consultations").fetchone()
        assert stored == ("2026-12-20T12:00:00+01:00", "2027-01-10T00:00:00+01:00")
        version = db.conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION == 3
        # A rename on the migrated state keeps the former name pointing at the same generation.
        with db.change() as change:
            change.set_designation(g.id, RENAMED)
        recorded = db.snapshot()
        assert recorded.names_of(recorded.generations[0]) == ("Commune Exemple", RENAMED)
        found = find_generation(recorded, "commune-exemple", "designation:commune exemple")
        assert found is not None and found.id == g.id
        with pytest.raises(sqlite3.DatabaseError, match="definitive"):
            other = recorded.generations[1]
            db.conn.execute(
                "UPDATE consultations SET generation = ?, cert_sha256 = ?",
                (other.id, other.cert_sha256),
            )
    finally:
        db.close()


def test_date_only_dates_are_that_calendar_day_in_paris_everywhere(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    first = cli("apply", "--auto-approve", quickstart, env={"PROVISIONER_NOW": CREATED})
    assert first.returncode == 0, first.stdout  # the key first, then the consultation
    path = consultations(folder)
    path.write_text(path.read_text().replace("opening: 2027-01-10", "opening: 2028-08-03"))
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    assert state_rows(quickstart, "SELECT opening FROM consultations") == [
        ("2028-08-03T00:00:00+02:00",)
    ]
    status = run(cli, quickstart, CREATED, "status")
    assert "opening 2028-08-03) -> g1" in status.stdout
    assert "2028-08-02" not in status.stdout
    document = json.loads(run(cli, quickstart, CREATED, "status", "--json").stdout)
    assert document["consultations"][0]["opening"] == "2028-08-03T00:00:00+02:00"
    assert document["consultations"][0]["deadline"] == "2026-12-20T12:00:00+01:00"
    assert document["consultations"][0]["designation"] == "Commune Exemple"
    # A refusal names the consultation with the day the file gave.
    quickstart.write_text(
        quickstart.read_text().replace(
            "    name: Commune d'Exemple\n", "    name: Commune d'Exemple\n    state: absent\n"
        )
    )
    done = run(cli, quickstart, CREATED, "plan", ok=False)
    assert done.returncode == 1
    assert "deadline 2026-12-20; opening 2028-08-03)" in done.stdout


def downgrade_to_version_2(state_db: Path) -> None:
    """Turn a state back into what schema version 2 wrote (UTC dates, no identity columns)."""
    v2_trigger = next(s for s in _statements(MIGRATIONS[1]) if "TRIGGER binding_is_definitive" in s)
    conn = sqlite3.connect(state_db)
    for trigger in (
        "binding_names_its_certificate_on_insert",
        "binding_names_its_certificate",
        "designations_are_kept",
        "binding_is_definitive",
    ):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE designations")
    conn.execute("ALTER TABLE consultations DROP COLUMN cert_sha256")
    conn.execute(v2_trigger)
    conn.execute(
        "UPDATE consultations SET deadline = '2026-12-20T11:00:00Z', "
        "opening = '2027-01-09T23:00:00Z'"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_apply_migrates_a_version_2_state_in_place_and_a_rename_then_keeps_the_binding(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    bound_after_the_first_apply(cli, quickstart)
    downgrade_to_version_2(folder / ".provisioner" / "state.db")
    refused = run(cli, quickstart, CREATED, "status", ok=False)
    assert refused.returncode == 1
    assert "the state uses schema version 2; run `provisioner apply` once" in refused.stderr
    done = run(cli, quickstart, CREATED, "apply", "--auto-approve")
    assert "No changes." in done.stdout, done.stdout
    assert state_rows(quickstart, "PRAGMA user_version") == [(3,)]
    assert state_rows(
        quickstart,
        "SELECT c.key_ref, c.cert_sha256 = g.cert_sha256, c.opening FROM consultations c "
        "JOIN generations g ON g.id = c.generation",
    ) == [("designation:Commune Exemple", 1, "2027-01-10T00:00:00+01:00")]
    rename(quickstart, RENAMED)
    run(cli, quickstart, CREATED, "apply", "--auto-approve")
    consultations(folder, designation=RENAMED)
    assert run(cli, quickstart, CREATED, "plan", "--detailed-exitcode", ok=False).returncode == 0
    status = run(cli, quickstart, CREATED, "status")
    assert f'g1 current  "{RENAMED}" (formerly "Commune Exemple")' in status.stdout
    assert f'opening 2027-01-10) -> g1 "{RENAMED}"' in status.stdout
