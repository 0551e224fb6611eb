"""How a consultation names its key, held across runs: by designation (in any case), by the
certificate's SHA-256 fingerprint, and a binding recorded for a key nothing managed that
the file later names by certificate. A binding is definitive: a file that names another key
for a recorded binding is refused, never followed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from provisioner.crypto import pkcs12
from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import PASSWORDS, lose_state, openssl_p12, state_rows

RENEWED = TEST_CLOCK + dt.timedelta(days=690)  # generation 2 made


def at(when: dt.datetime) -> dict[str, str]:
    return {"PROVISIONER_NOW": when.isoformat()}


def listed(manifest: Path, key: str) -> tuple[str, Path]:
    path = manifest.parent / "c.yaml"
    path.write_text(
        "version: 1\nconsultations:\n  - {reference: C-1, entity: commune-exemple, "
        f"{key}, status: open, deadline: 2029-06-10}}\n"
    )
    return "--consultations", path


def cert_of(manifest: Path, number: int) -> str:
    [(cert,)] = state_rows(
        manifest,
        "SELECT cert_sha256 FROM generations "
        f"WHERE entity = 'commune-exemple' AND number = {number}",
    )
    return str(cert)


def bound_to(manifest: Path) -> list[tuple[object, ...]]:
    return state_rows(
        manifest,
        "SELECT g.number FROM consultations c JOIN generations g ON g.id = c.generation "
        "WHERE c.reference = 'C-1'",
    )


def applied(cli: Runner, manifest: Path, *args: str | Path, when: dt.datetime = TEST_CLOCK) -> None:
    done = cli("apply", "--auto-approve", "-q", *args, manifest, env=at(when))
    assert done.returncode == 0, done.stdout + done.stderr


def settled(cli: Runner, manifest: Path, *args: str | Path, when: dt.datetime) -> None:
    done = cli("plan", "--detailed-exitcode", *args, manifest, env=at(when))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_binding_by_certificate_stays_settled(cli: Runner, quickstart: Path) -> None:
    applied(cli, quickstart)
    given = listed(quickstart, f"certificate_sha256: {cert_of(quickstart, 1)}")
    applied(cli, quickstart, *given)
    assert bound_to(quickstart) == [(1,)]
    settled(cli, quickstart, *given, when=TEST_CLOCK)


def test_a_designation_written_in_another_case_names_the_same_key(
    cli: Runner, quickstart: Path
) -> None:
    applied(cli, quickstart)
    applied(cli, quickstart, *listed(quickstart, "designation: Commune Exemple"))
    assert bound_to(quickstart) == [(1,)]
    settled(cli, quickstart, *listed(quickstart, "designation: COMMUNE EXEMPLE"), when=TEST_CLOCK)


def test_an_unmanaged_binding_named_later_by_certificate_takes_that_generation(
    cli: Runner, quickstart: Path
) -> None:
    """Generations 1 and 2 exist when C-1 is recorded under a name neither has; the file then
    names generation 2 by its certificate: the binding takes generation 2, not the first
    generation that existed then."""
    applied(cli, quickstart)
    applied(cli, quickstart, when=RENEWED)
    applied(cli, quickstart, *listed(quickstart, "designation: Nom Inconnu"), when=RENEWED)
    assert bound_to(quickstart) == []
    given = listed(quickstart, f"certificate_sha256: {cert_of(quickstart, 2)}")
    later = RENEWED + dt.timedelta(days=1)
    planned = cli("plan", *given, quickstart, env=at(later))
    assert "consultation C-1: its key is now managed: generation 2" in planned.stdout, (
        planned.stdout
    )
    applied(cli, quickstart, *given, when=later)
    assert bound_to(quickstart) == [(2,)]


def test_a_recorded_binding_is_not_moved_to_the_certificate_the_file_names_later(
    cli: Runner, quickstart: Path
) -> None:
    applied(cli, quickstart)
    applied(cli, quickstart, when=RENEWED)
    applied(cli, quickstart, *listed(quickstart, "designation: Commune Exemple"), when=RENEWED)
    assert bound_to(quickstart) == [(1,)]
    given = listed(quickstart, f"certificate_sha256: {cert_of(quickstart, 2)}")
    later = RENEWED + dt.timedelta(days=1)
    planned = cli("plan", *given, quickstart, env=at(later))
    assert planned.returncode == 1, planned.stdout
    assert "A binding is definitive: correct the consultations file." in planned.stdout
    done = cli("apply", "--auto-approve", *given, quickstart, env=at(later))
    assert done.returncode == 1, done.stdout
    assert bound_to(quickstart) == [(1,)]


def test_an_unmanaged_binding_holds_when_the_file_repeats_it(cli: Runner, quickstart: Path) -> None:
    """C-1 recorded for a key nothing here manages named by a designation (written later in
    another case), C-2 by a certificate of no generation here: the next runs keep both,
    never refuse either as a different key."""
    applied(cli, quickstart)
    path = quickstart.parent / "c.yaml"

    def write(designation: str) -> tuple[str, Path]:
        path.write_text(
            "version: 1\nconsultations:\n"
            f"  - {{reference: C-1, entity: commune-exemple, designation: {designation}, "
            "status: open, deadline: 2027-06-10}\n"
            f"  - {{reference: C-2, entity: commune-exemple, certificate_sha256: {'ab' * 32}, "
            "status: open, deadline: 2027-06-10}\n"
        )
        return "--consultations", path

    applied(cli, quickstart, *write("Nom Inconnu"))
    for designation in ("Nom Inconnu", "NOM INCONNU"):
        planned = cli("plan", *write(designation), quickstart, env=at(TEST_CLOCK))
        assert planned.returncode == 0, planned.stdout
        assert "Refused" not in planned.stdout, planned.stdout
        assert planned.stdout.count("[unmanaged-key]") == 2, planned.stdout


def renamed(manifest: Path) -> None:
    """commune-exemple's key renamed in the manifest: generation 1 is "Commune Exemple: 2026"
    from now on (a colon in it), its certificate still says "Commune Exemple"."""
    text = manifest.read_text()
    manifest.write_text(
        text.replace("designation: Commune Exemple\n", 'designation: "Commune Exemple: 2026"\n', 1)
    )


def test_a_renamed_generation_is_named_by_its_designation_now(
    cli: Runner, quickstart: Path
) -> None:
    applied(cli, quickstart)
    renamed(quickstart)
    applied(cli, quickstart)
    applied(cli, quickstart, *listed(quickstart, 'designation: "Commune Exemple: 2026"'))
    assert bound_to(quickstart) == [(1,)]


def test_after_a_lost_state_the_certificates_name_still_names_its_generation(
    cli: Runner, quickstart: Path
) -> None:
    """Renamed, then the state lost and recovered (the names it had are gone with it): a
    consultation naming the key by the name inside its certificate binds generation 1."""
    applied(cli, quickstart)
    renamed(quickstart)
    applied(cli, quickstart)
    lose_state(quickstart)
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    applied(cli, quickstart, *listed(quickstart, "designation: Commune Exemple"))
    assert bound_to(quickstart) == [(1,)]


def test_a_binding_to_a_certificate_nothing_managed_is_bound_once_that_key_is_adopted(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """C-1 was launched with a key made elsewhere and names it by its certificate; once the
    operator adopts that key (`adopt --retained`), the binding holds it, as the platform
    does: the adopted generation is kept on the workstations for C-1."""
    applied(cli, quickstart)
    pfx = openssl_p12(tmp_path, PASSWORDS["commune-exemple"], TEST_CLOCK)
    cert = pkcs12.decode(pfx.read_bytes(), PASSWORDS["commune-exemple"]).certificate
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    given = listed(quickstart, f"certificate_sha256: {fingerprint}")
    applied(cli, quickstart, *given)
    assert bound_to(quickstart) == []  # a key nothing here manages yet
    adopted = cli("adopt", quickstart, "commune-exemple", pfx, "--retained")
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    applied(cli, quickstart, *given)
    assert bound_to(quickstart) == [(2,)]
    settled(cli, quickstart, *given, when=TEST_CLOCK)


def test_a_binding_by_certificate_holds_a_key_whose_certificate_is_dated_after_it(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The fingerprint is proof whatever the dates say: C-1 names by its certificate a key
    whose certificate is dated a day after the binding was recorded (made on a machine whose
    clock runs ahead). Once that key is adopted, C-1 is bound to it, as the platform's bids
    are; a name in common proves nothing there, a fingerprint does."""
    applied(cli, quickstart)
    ahead = TEST_CLOCK + dt.timedelta(days=1)
    pfx = openssl_p12(tmp_path, PASSWORDS["commune-exemple"], ahead)
    cert = pkcs12.decode(pfx.read_bytes(), PASSWORDS["commune-exemple"]).certificate
    assert cert.not_valid_before_utc > TEST_CLOCK
    given = listed(quickstart, f"certificate_sha256: {cert.fingerprint(hashes.SHA256()).hex()}")
    applied(cli, quickstart, *given)
    assert bound_to(quickstart) == []
    later = TEST_CLOCK + dt.timedelta(days=2)
    adopted = cli("adopt", quickstart, "commune-exemple", pfx, "--retained", env=at(later))
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    applied(cli, quickstart, *given, when=later)
    assert bound_to(quickstart) == [(2,)]
    settled(cli, quickstart, *given, when=later)


def test_a_name_a_generation_gets_after_the_binding_proves_nothing(
    cli: Runner, quickstart: Path
) -> None:
    """C-1 was recorded for "Nom Inconnu", a name no key here had; generation 1 renamed so
    afterwards is not the key the bids are encrypted to: C-1 stays unmanaged."""
    applied(cli, quickstart)
    applied(cli, quickstart, *listed(quickstart, "designation: Nom Inconnu"))
    text = quickstart.read_text()
    quickstart.write_text(
        text.replace("designation: Commune Exemple\n", "designation: Nom Inconnu\n", 1)
    )
    later = TEST_CLOCK + dt.timedelta(days=1)
    done = cli(
        "apply",
        "--auto-approve",
        *listed(quickstart, "designation: Nom Inconnu"),
        quickstart,
        env=at(later),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[unmanaged-key] consultation C-1" in done.stdout, done.stdout
    assert bound_to(quickstart) == []
    again = cli("plan", *listed(quickstart, "designation: Nom Inconnu"), quickstart, env=at(later))
    assert "[unmanaged-key] consultation C-1" in again.stdout, again.stdout


def test_a_binding_moved_to_another_entity_under_the_same_name_is_refused(
    cli: Runner, quickstart: Path
) -> None:
    """C-1 recorded for commune-exemple under a name no key here has; the file then gives
    C-1 to syndicat-eaux under that same name: a binding is definitive, the plan refuses,
    naming both entities, and apply changes nothing."""
    applied(cli, quickstart)
    applied(cli, quickstart, *listed(quickstart, "designation: Nom Inconnu"))
    moved = listed(quickstart, "designation: Nom Inconnu")[1]
    moved.write_text(moved.read_text().replace("entity: commune-exemple", "entity: syndicat-eaux"))
    done = cli("apply", "--auto-approve", "--consultations", moved, quickstart, env=at(TEST_CLOCK))
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said
    assert "consultation C-1 is bound to" in said and "of commune-exemple since" in said, said
    assert "of syndicat-eaux. A binding is definitive: correct the consultations file." in said
    rows = state_rows(quickstart, "SELECT entity FROM consultations WHERE reference = 'C-1'")
    assert rows == [("commune-exemple",)]


def test_a_consultations_record_keeps_its_binding_through_updates_and_dates_its_closing(
    cli: Runner, quickstart: Path
) -> None:
    """C-1 bound by designation, then its title changed, then named by its certificate (the
    same key), then closed, then its title changed again: the state keeps the key reference,
    generation, certificate and binding instant of the first run, records the closing at the
    run that saw it and keeps that instant; the audit log says each run, with the file's
    entry."""
    applied(cli, quickstart)
    entry = "designation: Commune Exemple"
    day = [TEST_CLOCK + dt.timedelta(days=n) for n in range(6)]
    applied(cli, quickstart, *listed(quickstart, entry), when=day[1])

    def retitled(title: str, status: str = "open", key: str = entry) -> tuple[str, Path]:
        option, path = listed(quickstart, key)
        path.write_text(
            path.read_text().replace("status: open", f"status: {status}, title: {title}")
        )
        return option, path

    applied(cli, quickstart, *retitled("Voirie"), when=day[2])
    by_cert = f"certificate_sha256: {cert_of(quickstart, 1)}"
    applied(cli, quickstart, *retitled("Voirie 2", key=by_cert), when=day[3])
    applied(cli, quickstart, *retitled("Voirie 2", "closed"), when=day[4])
    applied(cli, quickstart, *retitled("Voirie 3", "closed"), when=day[5])

    [row] = state_rows(
        quickstart,
        "SELECT c.entity, c.key_ref, g.number, c.cert_sha256, c.title, c.status, c.bound_at, "
        "c.closed_at FROM consultations c JOIN generations g ON g.id = c.generation "
        "WHERE c.reference = 'C-1'",
    )
    assert row == (
        "commune-exemple",
        "designation:Commune Exemple",
        1,
        cert_of(quickstart, 1),
        "Voirie 3",
        "closed",
        day[1].strftime("%Y-%m-%dT%H:%M:%SZ"),
        day[4].strftime("%Y-%m-%dT%H:%M:%SZ"),
    ), row
    audit = cli("audit", "--json", "--action", "consultation-bound", "--action",
                "consultation-updated", quickstart, env=at(day[5]))  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    records = [
        (r["at"][:10], r["action"], r["entity"], r["detail"])
        for r in json.loads(audit.stdout)["records"]
    ]
    said = {
        "generation": 1,
        "key": "designation:Commune Exemple",
        "reference": "C-1",
        "status": "open",
    }
    assert records == [
        (f"{day[1]:%Y-%m-%d}", "consultation-bound", "commune-exemple", said),
        (f"{day[2]:%Y-%m-%d}", "consultation-updated", "commune-exemple", said),
        (f"{day[3]:%Y-%m-%d}", "consultation-updated", "commune-exemple", said),
        (f"{day[4]:%Y-%m-%d}", "consultation-updated", "commune-exemple",
         {**said, "status": "closed"}),
        (f"{day[5]:%Y-%m-%d}", "consultation-updated", "commune-exemple",
         {**said, "status": "closed"}),
    ], records  # fmt: skip
