"""A file this state did not write, standing where a copy goes, is said for what it is: the
operator decides from those words whether it is a key to keep (recover, adopt) or debris to
move away. `plan` opens it with the entity's password; `status` and `check` read no password
and say so."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from provisioner.plan.model import Foreign
from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import PASSWORDS, dated_certificate, out_of_reach

IN_THE_WAY = "workstations/ws-accueil/commune-exemple.g1.p12"


def foreign_pkcs12(password: str, name: str = "Cle etrangere") -> bytes:
    """A bi-clé made elsewhere (not by this state), dated by the test's clock."""
    key = rsa.generate_private_key(65537, 2048)
    cert = dated_certificate(key, name, TEST_CLOCK)
    return pkcs12.serialize_key_and_certificates(
        name.encode(), key, cert, None, BestAvailableEncryption(password.encode())
    )


def put_in_the_way(quickstart: Path, content: bytes) -> Path:
    path = quickstart.parent / "demo-out" / IN_THE_WAY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def conflict_line(output: str) -> str:
    lines = [x for x in output.splitlines() if "conflict" in x and "ws-accueil" in x]
    assert lines, output
    return lines[0]


def test_debris_is_not_a_pkcs12(cli: Runner, quickstart: Path) -> None:
    path = put_in_the_way(quickstart, b"\x00 not a key at all \xff" * 4)
    planned = cli("plan", quickstart)
    assert planned.returncode == 1, planned.stderr  # a conflict is an error to settle
    line = conflict_line(planned.stdout)
    assert "a file this state did not write stands where its new copy goes" in line
    assert "(not a PKCS#12 file): left as it is" in line
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1 and "Left alone: commune-exemple" in done.stderr, done.stderr
    assert path.read_bytes() == b"\x00 not a key at all \xff" * 4  # never replaced


def test_a_pkcs12_under_another_password_is_said_so_and_status_says_it_did_not_look(
    cli: Runner, quickstart: Path
) -> None:
    content = foreign_pkcs12("Another-Password-77!")
    path = put_in_the_way(quickstart, content)
    line = conflict_line(cli("plan", quickstart).stdout)
    assert "(a PKCS#12 that does not open with the entity's password): left as it is" in line
    assert cli("apply", "--auto-approve", quickstart).returncode == 1
    assert path.read_bytes() == content
    shown = cli("status", quickstart)
    assert (
        "(a PKCS#12, not opened: this command reads no password; `plan` says more)" in shown.stdout
    ), shown.stdout


def test_a_key_of_the_entity_the_escrow_never_sealed_is_named_by_its_certificate(
    cli: Runner, quickstart: Path
) -> None:
    """Opens with the entity's password, yet neither the escrow nor the state knows it: an
    agent's own export, another tool's key. The words say both, and the certificate."""
    put_in_the_way(quickstart, foreign_pkcs12(PASSWORDS["commune-exemple"]))
    line = conflict_line(cli("plan", quickstart).stdout)
    assert "holds certificate sha256:" in line and '"Cle etrangere"' in line, line
    assert "key NOT in the escrow, unknown to this state): left as it is" in line


@pytest.mark.parametrize(
    ("foreign", "said"),
    [
        (
            Foreign(pkcs12=True, readable=True, written_here=True),
            "a copy this state wrote for another place",
        ),
        (Foreign(pkcs12=False, readable=False), "not a PKCS#12 file"),
        (
            Foreign(pkcs12=True, readable=False, refused="600001 iterations"),
            "not opened: 600001 iterations",
        ),
        (
            Foreign(pkcs12=True, readable=False, tried=False),
            "a PKCS#12, not opened: this command reads no password; `plan` says more",
        ),
        (
            Foreign(pkcs12=True, readable=False),
            "a PKCS#12 that does not open with the entity's password",
        ),
        (
            Foreign(
                pkcs12=True,
                readable=True,
                cert_sha256="ab" * 32,
                designation="Commune Exemple",
                escrowed=True,
                known=True,
            ),
            'holds certificate sha256:abababababababab "Commune Exemple", key in the escrow, '
            "a generation this state records",
        ),
        (
            Foreign(pkcs12=True, readable=True, cert_sha256="cd" * 32, designation=None),
            'holds certificate sha256:cdcdcdcdcdcdcdcd "", key NOT in the escrow, '
            "unknown to this state",
        ),
    ],
)
def test_each_kind_of_foreign_file_has_its_words(foreign: Foreign, said: str) -> None:
    """The words the plan puts in brackets after a conflict, one per kind of file (the first
    that applies): what the operator reads before deciding."""
    assert foreign.describe() == said


def test_every_file_in_the_way_of_a_new_generation_is_said_not_only_the_first(
    cli: Runner, quickstart: Path
) -> None:
    """Debris where commune-exemple's first copy goes on the backup share and on ws-accueil:
    the plan names both (the operator moves both away at once), writes nothing of the entity,
    and syndicat-eaux goes ahead."""
    out = quickstart.parent / "demo-out"
    in_the_way = [out / "shared/backup/commune-exemple.g1.p12", out / IN_THE_WAY]
    for path in in_the_way:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a key")
    planned = cli("plan", quickstart)
    assert planned.returncode == 1, planned.stdout
    said = [line.strip() for line in planned.stdout.splitlines() if "! conflict g1 on" in line]
    assert [line.split(":")[0] for line in said] == [
        "! conflict g1 on backup-share",
        "! conflict g1 on ws-accueil",
    ], planned.stdout
    assert "+ write g1 on ws-marches: " + str(
        out / "workstations/ws-marches/syndicat-eaux.g1.p12"
    ) in (planned.stdout)
    assert "commune-exemple.g1.p12  [new-generation]" not in planned.stdout


def test_a_copy_named_beyond_the_next_generation_holds_its_entity_whatever_comes_before_it(
    cli: Runner, quickstart: Path
) -> None:
    """commune-exemple, first in the manifest, declared absent; a file named as syndicat-eaux's
    generation 5 on ws-marches (its next is 2): the state is older than its targets, the plan
    says so, naming the file, and holds syndicat-eaux (exit 1)."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    quickstart.write_text(
        quickstart.read_text().replace(
            "  - id: commune-exemple\n", "  - id: commune-exemple\n    state: absent\n"
        )
    )
    later = quickstart.parent / "demo-out/workstations/ws-marches/syndicat-eaux.g5.p12"
    later.write_bytes(b"a copy from a later state")
    planned = cli("plan", quickstart)
    assert planned.returncode == 1, planned.stdout
    said = [line.strip() for line in planned.stdout.splitlines() if "! conflict" in line]
    assert said == [
        f"! conflict g5 on ws-marches: {later}  [conflict] a file this state did not write "
        "stands named as generation 5, a number this state never gave (its next is 2: the "
        "state is older than its targets) (not a PKCS#12 file): left as it is"
    ], planned.stdout
    assert "apply leaves syndicat-eaux alone" in planned.stdout, planned.stdout


def test_a_key_put_over_a_copy_on_a_workstation_taken_off_the_entity_is_not_removed(
    cli: Runner, quickstart: Path
) -> None:
    """ws-accueil taken off commune-exemple's workstations, and someone's own bi-clé put
    over the copy there: the copy to remove is no longer what this state wrote, so the plan
    says so and apply leaves the file, whose key may exist nowhere else."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    quickstart.write_text(
        quickstart.read_text().replace(
            "workstations: [service-marches, ws-accueil]", "workstations: [service-marches]"
        )
    )
    theirs = foreign_pkcs12(PASSWORDS["commune-exemple"])
    path = put_in_the_way(quickstart, theirs)
    planned = cli("plan", quickstart)
    assert f"- remove g1 on ws-accueil: {path}" not in planned.stdout, planned.stdout
    assert "stands where a copy to remove was" in conflict_line(planned.stdout), planned.stdout
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert path.read_bytes() == theirs


@pytest.mark.parametrize("escrowed", [True, False], ids=["escrowed", "escrowed-key-lost"])
def test_a_copy_re_encoded_with_its_own_key_on_a_workstation_taken_off_is_removed(
    cli: Runner, quickstart: Path, escrowed: bool
) -> None:
    """ws-accueil taken off commune-exemple's workstations, and its copy re-encoded in place
    with the same key and password (other bytes: a PKCS#12 tool run over it): the file
    changed, but it holds generation 1's own key, so nothing can be lost by removing it
    once that key is in the escrow (taken back from the shared location first when the
    escrow lost it). The plan removes it, no conflict is said, apply removes it."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    if not escrowed:
        with sqlite3.connect(quickstart.parent / ".provisioner" / "state.db") as db:
            (kept,) = db.execute(
                "SELECT key_sha256 FROM generations WHERE entity = 'commune-exemple'"
            ).fetchone()
        (quickstart.parent / ".provisioner" / "escrow" / f"{kept}.key").unlink()
    path = quickstart.parent / "demo-out" / IN_THE_WAY
    password = PASSWORDS["commune-exemple"].encode()
    key, cert, _ = pkcs12.load_key_and_certificates(path.read_bytes(), password)
    assert isinstance(key, rsa.RSAPrivateKey) and cert is not None
    again = pkcs12.serialize_key_and_certificates(
        b"Commune Exemple", key, cert, None, BestAvailableEncryption(password)
    )
    assert again != path.read_bytes()
    path.write_bytes(again)
    quickstart.write_text(
        quickstart.read_text().replace(
            "workstations: [service-marches, ws-accueil]", "workstations: [service-marches]"
        )
    )
    planned = cli("plan", quickstart)
    assert f"- remove g1 on ws-accueil: {path}" in planned.stdout, planned.stdout
    assert "conflict" not in planned.stdout, planned.stdout
    restore = "+ generation 1: restore escrowed key from backup-share"
    assert (restore in planned.stdout) is not escrowed, planned.stdout
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not path.exists()


def test_a_copy_named_beyond_the_next_generation_is_said_though_a_target_before_it_is_unreachable(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    backup = quickstart.parent / "demo-out" / "shared" / "backup"
    out_of_reach(backup, tmp_path / "backup-away")
    later = quickstart.parent / "demo-out/workstations/ws-marches/syndicat-eaux.g5.p12"
    later.write_bytes(b"a copy from a later state")
    planned = cli("plan", quickstart)
    assert "backup-share: cannot observe the target" in planned.stdout, planned.stdout
    assert f"! conflict g5 on ws-marches: {later}" in planned.stdout, planned.stdout


def test_every_copy_to_remove_that_changed_is_said_not_only_the_first(
    cli: Runner, quickstart: Path
) -> None:
    """The renewal would take generation 1 off both workstations, but someone put their own
    bi-clé over each of those copies: the plan names both files (the operator sees them all
    at once) and apply leaves both."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    out = quickstart.parent / "demo-out" / "workstations"
    theirs = foreign_pkcs12(PASSWORDS["commune-exemple"])
    changed = [out / "ws-accueil/commune-exemple.g1.p12", out / "ws-marches/commune-exemple.g1.p12"]
    for path in changed:
        path.write_bytes(theirs)
    renewal = {"PROVISIONER_NOW": "2028-10-15T10:00:00Z"}
    planned = cli("plan", quickstart, env=renewal)
    said = [
        line.strip().split("  ")[0]
        for line in planned.stdout.splitlines()
        if "stands where a copy to remove was" in line
    ]
    assert said == [f"! conflict g1 on {p.parent.name}: {p}" for p in changed], planned.stdout
    assert cli("apply", "--auto-approve", quickstart, env=renewal).returncode == 1
    assert all(path.read_bytes() == theirs for path in changed)


def test_what_apply_still_does_for_an_entity_in_conflict_is_said_not_denied(
    cli: Runner, quickstart: Path
) -> None:
    """An entity with a conflict is held back from everything that rests on the state being
    current, but a copy of a known generation where no file stands is still written (it can
    lose nothing). The plan says so; it once said "Nothing of commune-exemple is changed"
    above a write it then did (an outside review, 2026-12-07)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    out = quickstart.parent / "demo-out"
    shared = out / "shared/backup/commune-exemple.g1.p12"
    shared.unlink()
    foreign = foreign_pkcs12(PASSWORDS["commune-exemple"])
    in_the_way = out / IN_THE_WAY
    in_the_way.write_bytes(foreign)
    planned = cli("plan", quickstart)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert f"+ write g1 on backup-share: {shared}  [missing]" in planned.stdout, planned.stdout
    assert "Nothing of commune-exemple is changed" not in planned.stdout
    said = " ".join(planned.stdout.split())
    assert (
        "For commune-exemple, apply does only what can lose nothing (a known generation's copy "
        "where no file stands, an escrow restore, a new name, the consultations file's "
        "records): no new generation, no retirement or removal, no file replaced."
    ) in said, said
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1 and "Left alone: commune-exemple" in done.stderr, done.stderr
    assert "only what can lose nothing was done" in done.stderr, done.stderr
    assert shared.is_file() and in_the_way.read_bytes() == foreign
