"""`provisioner check --json`: each finding a monitoring system receives (severity, entity,
code, message), in the order it receives them, and the exit code, for what an operator or a
disk breaks on a site of two entities: commune-exemple on a shared location and three
workstations, syndicat-eaux on the shared location and ws-1. Dates are the pinned clock's; the
keys expire on 2028-11-29 at 09:00 UTC.

docs/RUNBOOK.md has the severity table these findings follow."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from provisioner.wording import counted
from tests.conftest import EXAMPLES, Runner, run_cli
from tests.engine_helpers import state_rows
from tests.manifests import Manifest


def secret(entity: str) -> dict[str, str]:
    return {"file": f"secrets/{entity}.pass"}


def site_inventory() -> Manifest:
    """The site's manifest before its entities: a shared location and three workstations."""
    m = Manifest(escrow={"passphrase": {"file": "secrets/escrow.pass"}})
    m.location("share", path="out/share")
    for ws in ("ws-1", "ws-2", "ws-3"):
        m.workstation(ws, path=f"out/{ws}")
    return m


def site_entities(m: Manifest) -> Manifest:
    """commune-exemple on the shared location and the three workstations, syndicat-eaux on
    the shared location and ws-1."""
    m.entity(
        "commune-exemple",
        name="Commune",
        designation="Commune Exemple",
        password=secret("commune-exemple"),
        shared_locations=["share"],
        workstations=["ws-1", "ws-2", "ws-3"],
    )
    return m.entity(
        "syndicat-eaux",
        name="Syndicat",
        designation="Syndicat Eaux",
        password=secret("syndicat-eaux"),
        shared_locations=["share"],
        workstations=["ws-1"],
    )


# Consultations the platform made with the keys: two open and one closed on commune-exemple's,
# one open and one closed on syndicat-eaux's (check binds them from the file, as apply would).
CONSULTATIONS = """version: 1
consultations:
  - {reference: AO-1, title: Voirie, entity: commune-exemple, designation: Commune Exemple,
     status: open, deadline: '2026-12-20T12:00:00+01:00', opening: '2027-01-10'}
  - {reference: AO-2, title: Ecoles, entity: commune-exemple, designation: Commune Exemple,
     status: open, deadline: '2026-12-22T12:00:00+01:00', opening: '2027-01-12'}
  - {reference: AO-3, title: Eau, entity: syndicat-eaux, designation: Syndicat Eaux,
     status: closed, deadline: '2026-10-22T12:00:00+01:00', opening: '2026-11-12'}
  - {reference: AO-4, title: Reseau, entity: syndicat-eaux, designation: Syndicat Eaux,
     status: open, deadline: '2026-12-22T12:00:00+01:00', opening: '2027-01-12'}
  - {reference: AO-5, title: Parc, entity: commune-exemple, designation: Commune Exemple,
     status: closed, deadline: '2026-10-22T12:00:00+01:00', opening: '2026-11-12'}
"""
AO_1 = "AO-1 (Voirie; deadline 2026-12-20; opening 2027-01-10)"
AO_2 = "AO-2 (Ecoles; deadline 2026-12-22; opening 2027-01-12)"
AO_4 = "AO-4 (Reseau; deadline 2026-12-22; opening 2027-01-12)"
CHANGED = (
    "holds a file this state did not write (or that changed since it was written), not known to "
    "hold that key (check reads no password: `plan` opens it)"
)
CONFLICT = (
    "apply leaves the entity alone; run provisioner recover if the state was lost or restored, "
    "else move those files away"
)

Finding = tuple[str, str | None, str, str]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The site applied once, and a pristine copy of it."""
    folder = tmp_path_factory.mktemp("findings") / "site"
    (folder / "secrets").mkdir(parents=True)
    for name in ("escrow.pass", "commune-exemple.pass", "syndicat-eaux.pass"):
        shutil.copy(EXAMPLES / "secrets" / name, folder / "secrets" / name)
    site_entities(site_inventory()).write(folder / "m.yaml")
    done = run_cli("apply", "--auto-approve", folder / "m.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    pristine = folder.parent / "pristine"
    shutil.copytree(folder, pristine, symlinks=True)
    return folder, pristine


@pytest.fixture
def site(applied: tuple[Path, Path]) -> Path:
    """The site as its apply left it, in place (the state records absolute paths)."""
    folder, pristine = applied
    shutil.rmtree(folder)
    shutil.copytree(pristine, folder, symlinks=True)
    return folder


def pending(entity: str, count: int, reasons: str) -> Finding:
    return (
        "WARNING",
        entity,
        "pending",
        f"{counted(count, 'change')} pending ({reasons}): run provisioner apply",
    )


def check(cli: Runner, site: Path, *args: str, at: str | None = None) -> tuple[int, list[Finding]]:
    """Exit code and findings of `check --json` (at the pinned clock unless `at`)."""
    env = {"PROVISIONER_NOW": at} if at else None
    done = cli("check", "--json", site / "m.yaml", *args, env=env)
    assert not done.stderr, done.stderr
    document = json.loads(done.stdout)
    assert document["exit_code"] == done.returncode
    findings: list[Finding] = []
    for f in document["findings"]:
        assert set(f) == {"severity", "entity", "code", "message"}, f
        findings.append((f["severity"], f["entity"], f["code"], f["message"]))
    return done.returncode, findings


def garble(path: Path) -> None:
    """One byte of a copy flipped in place: same size, not the bytes this state wrote."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def consultations(site: Path) -> str:
    path = site / "consultations.yaml"
    path.write_text(CONSULTATIONS)
    return str(path)


def test_bound_copies_changed_in_place_are_critical_on_each_target_of_an_open_consultation(
    cli: Runner, site: Path
) -> None:
    """Every copy of commune-exemple (bound to AO-1 and AO-2) and syndicat-eaux's on the
    shared location (bound to AO-4; AO-3 is closed) changed in place: each target is named
    CRITICAL with the open consultations at risk, and each entity's conflicts once (three paths
    shown at most)."""
    out = site / "out"
    for target in ("share", "ws-1", "ws-2", "ws-3"):
        garble(out / target / "commune-exemple.g1.p12")
    garble(out / "share" / "syndicat-eaux.g1.p12")
    code, findings = check(cli, site, "--consultations", consultations(site))
    assert code == 2
    commune = f"generation 1 bound to consultations {AO_1}, {AO_2}"
    agents = "the agents there may not be able to open those bids"
    path = {t: out / t / "commune-exemple.g1.p12" for t in ("share", "ws-1", "ws-2", "ws-3")}
    syndicat = out / "share" / "syndicat-eaux.g1.p12"
    assert findings == [
        (
            "CRITICAL",
            "commune-exemple",
            "bound-missing",
            f"{commune}: shared location share: {path['share']} {CHANGED}; the copy that "
            "must never be lost may be gone",
        ),
        *[
            (
                "CRITICAL",
                "commune-exemple",
                "bound-missing",
                f"{commune}: {t}: {path[t]} {CHANGED}; {agents}",
            )
            for t in ("ws-1", "ws-2", "ws-3")
        ],
        (
            "CRITICAL",
            "syndicat-eaux",
            "bound-missing",
            f"generation 1 bound to consultation {AO_4}: shared location share: {syndicat} "
            f"{CHANGED}; the copy that must never be lost may be gone",
        ),
        (
            "WARNING",
            "commune-exemple",
            "conflict",
            "4 files this state did not write stand where its copies go (share: "
            f"{path['share']}; ws-1: {path['ws-1']}; ws-2: {path['ws-2']}; ...): {CONFLICT}",
        ),
        (
            "WARNING",
            "syndicat-eaux",
            "conflict",
            f"1 file this state did not write stands where its copies go (share: {syndicat}): "
            f"{CONFLICT}",
        ),
        pending("commune-exemple", 3, "new-binding"),
        pending("syndicat-eaux", 2, "new-binding"),
    ]


def test_two_or_three_conflicts_are_all_named(cli: Runner, site: Path) -> None:
    out = site / "out"
    for target in ("share", "ws-1", "ws-2"):
        garble(out / target / "commune-exemple.g1.p12")
    code, findings = check(cli, site)
    assert code == 1
    path = {t: out / t / "commune-exemple.g1.p12" for t in ("share", "ws-1", "ws-2")}
    assert findings == [
        (
            "WARNING",
            "commune-exemple",
            "conflict",
            "3 files this state did not write stand where its copies go (share: "
            f"{path['share']}; ws-1: {path['ws-1']}; ws-2: {path['ws-2']}): {CONFLICT}",
        )
    ]


def test_a_lost_escrow_key_and_a_target_out_of_reach_are_named(cli: Runner, site: Path) -> None:
    """commune-exemple's escrowed key deleted (its copies intact), ws-3's folder replaced by a
    symlink: the key is CRITICAL once as missing from the escrow and once per open consultation
    bound to it (not the closed AO-5); ws-3 is a WARNING of its own, with no entity."""
    ((key,),) = state_rows(
        site / "m.yaml", "SELECT key_sha256 FROM generations WHERE entity = 'commune-exemple'"
    )
    (site / ".provisioner" / "escrow" / f"{key}.key").unlink()
    (site / "out" / "ws-3").rename(site / "out" / "ws-3-real")
    (site / "out" / "ws-3").symlink_to("ws-3-real")
    code, findings = check(cli, site, "--consultations", consultations(site))
    assert code == 2
    missing = (
        'generation 1 "Commune Exemple" bound to consultation {} is missing from the escrow: '
        "restore the escrow from its backup (docs/RECOVERY.md)"
    )
    assert findings == [
        (
            "CRITICAL",
            "commune-exemple",
            "escrow-missing",
            "generation 1's private key is missing from the escrow and lives only in copies "
            f"such as share: {site / 'out' / 'share' / 'commune-exemple.g1.p12'}: run "
            "provisioner apply to take it back",
        ),
        ("CRITICAL", "commune-exemple", "not-escrowed", missing.format(AO_1)),
        ("CRITICAL", "commune-exemple", "not-escrowed", missing.format(AO_2)),
        (
            "WARNING",
            None,
            "unreachable",
            f"ws-3: cannot observe the target: the target folder {site / 'out' / 'ws-3'} is a "
            "symlink; declare the folder it points to instead",
        ),
        pending("commune-exemple", 3, "new-binding"),
        pending("syndicat-eaux", 2, "new-binding"),
    ]


def expiring(entity: str, days: int, severity: str) -> Finding:
    return (
        severity,
        entity,
        "expiring",
        f"current generation 1 expires in {days} days (2028-11-29)",
    )


NOT_AFTER = dt.datetime(2028, 11, 29, 9, 0, tzinfo=dt.UTC)
DAYS_100 = (NOT_AFTER - dt.timedelta(days=100)).isoformat()


def both(days: int, severity: str) -> list[Finding]:
    """The expiring finding of each entity (their keys were made in the same apply)."""
    return [expiring(e, days, severity) for e in ("commune-exemple", "syndicat-eaux")]


EXPIRED = "current generation 1 expired on 2028-11-29"
LAST_MINUTE = (NOT_AFTER - dt.timedelta(minutes=1)).isoformat()


@pytest.mark.parametrize(
    ("at", "limits", "code", "expected"),
    [
        (DAYS_100, ("--warn-days", "100"), 1, both(100, "WARNING")),
        (DAYS_100, ("--warn-days", "99"), 1, []),
        (DAYS_100, ("--warn-days", "100", "--critical-days", "100"), 2, both(100, "CRITICAL")),
        (DAYS_100, ("--warn-days", "100", "--critical-days", "99"), 1, both(100, "WARNING")),
        (LAST_MINUTE, (), 2, both(0, "CRITICAL")),
        (
            NOT_AFTER.isoformat(),
            (),
            2,
            [
                ("CRITICAL", "commune-exemple", "expired", f"{EXPIRED}: run provisioner apply"),
                (
                    "CRITICAL",
                    "syndicat-eaux",
                    "expired",
                    f"{EXPIRED}: apply makes no new generation while the entity has a conflict "
                    "(see conflict)",
                ),
            ],
        ),
    ],
    ids=[
        "warn-days",
        "a-day-before-warn-days",
        "critical-days",
        "a-day-before-critical-days",
        "last-minute",
        "expired",
    ],
)
def test_the_current_keys_expiry_at_the_edges_of_warn_days_and_critical_days(
    cli: Runner,
    site: Path,
    at: str,
    limits: tuple[str, ...],
    code: int,
    expected: list[Finding],
) -> None:
    """A key expiring in N days is CRITICAL with --critical-days N, a WARNING with
    --warn-days N, nothing a day before; at its last minute it expires in 0 days, from its
    expiry on it is expired. syndicat-eaux has a conflict (a copy changed in place on ws-1):
    apply makes it no new key, and its expired finding says so."""
    garble(site / "out" / "ws-1" / "syndicat-eaux.g1.p12")
    exit_code, findings = check(cli, site, *limits, at=at)
    assert exit_code == code
    assert [f for f in findings if f[2] in ("expiring", "expired")] == expected
    conflicts = [f[:3] for f in findings if f[2] == "conflict"]
    assert conflicts == [("WARNING", "syndicat-eaux", "conflict")]


def test_a_new_entity_without_a_key_and_pending_changes_of_several_kinds(
    cli: Runner, site: Path
) -> None:
    """A new entity (ccas) not applied yet: no key. syndicat-eaux: one copy deleted, one
    overwritten: two changes pending, their reasons once each. An entity declared absent
    before them (agglo, never applied) gives nothing."""
    m = site_inventory().entity(
        "agglo",
        name="Agglo",
        state="absent",
        password=secret("commune-exemple"),
        shared_locations=["share"],
    )
    site_entities(m).entity(
        "ccas",
        name="CCAS",
        password=secret("commune-exemple"),
        shared_locations=["share"],
        workstations=["ws-2"],
    )
    m.write(site / "m.yaml")
    (site / "out" / "ws-1" / "syndicat-eaux.g1.p12").unlink()
    (site / "out" / "share" / "syndicat-eaux.g1.p12").write_bytes(b"x")
    code, findings = check(cli, site)
    assert code == 1
    assert findings == [
        pending("syndicat-eaux", 2, "drifted, missing"),
        ("WARNING", "ccas", "no-key", "no bi-clé yet: run provisioner apply"),
    ]


def test_a_target_folder_open_to_others_is_a_warning_of_no_entity(cli: Runner, site: Path) -> None:
    folder = site / "out" / "ws-2"
    folder.chmod(0o755)
    code, findings = check(cli, site)
    assert code == 1
    assert findings == [
        (
            "WARNING",
            None,
            "folder-permissions",
            f"ws-2: {folder}: folder mode 0755 lets others reach the copies: set to 0700: run "
            "provisioner apply",
        )
    ]


# Consultations bound by designation to a key the platform knows and this state does not.
OPENINGS = {
    "U-0": ("commune-exemple", "2026-11-30"),
    "U-1": ("commune-exemple", "2026-12-01"),
    "U-2": ("commune-exemple", "2026-12-02"),
    "U-7": ("commune-exemple", "2026-12-07"),
    "U-8": ("commune-exemple", "2026-12-08"),
    "U-9": ("commune-exemple", None),
    "V-1": ("syndicat-eaux", "2026-11-29"),
    "V-2": ("syndicat-eaux", "2026-11-28"),
}
UNMANAGED = "is bound to designation:Ancienne Cle, a key this tool does not manage"
MAYBE = (
    "since it may be that key: generation 1 (if it is one of them, name it in the "
    "consultations file by its certificate's SHA-256 fingerprint to bind it)"
)


def test_a_key_nothing_here_manages_is_critical_within_critical_days_of_its_opening(
    cli: Runner, site: Path
) -> None:
    """Consultations bound to a key the platform knows and this state does not: CRITICAL from
    --critical-days (7) before their opening on, with when the bids are (were) opened; a
    WARNING a day earlier, or without an opening date."""
    path = site / "unmanaged.yaml"
    lines = ["version: 1", "consultations:"]
    for reference, (entity, opening) in OPENINGS.items():
        day = f", opening: '{opening}'" if opening else ""
        lines.append(
            f"  - {{reference: {reference}, entity: {entity}, designation: Ancienne Cle, "
            f"status: open{day}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    code, findings = check(cli, site, "--consultations", str(path))
    assert code == 2
    unmanaged = [(f[0], f[1], f[3]) for f in findings if f[2] == "unmanaged-key"]
    suffixes = {
        "U-8": "",
        "U-9": "",
        "U-0": "(bids opened today, 2026-11-30)",
        "U-1": "(bids opened in 1 day, 2026-12-01)",
        "U-2": "(bids opened in 2 days, 2026-12-02)",
        "U-7": "(bids opened in 7 days, 2026-12-07)",
        "V-1": "(bids opened 1 day ago, 2026-11-29)",
        "V-2": "(bids opened 2 days ago, 2026-11-28)",
    }
    assert [(s, e, m.split(" ")[1]) for s, e, m in unmanaged] == [
        ("CRITICAL", "commune-exemple", "U-0"),
        ("CRITICAL", "commune-exemple", "U-1"),
        ("CRITICAL", "commune-exemple", "U-2"),
        ("CRITICAL", "commune-exemple", "U-7"),
        ("CRITICAL", "syndicat-eaux", "V-1"),
        ("CRITICAL", "syndicat-eaux", "V-2"),
        ("WARNING", "commune-exemple", "U-8"),
        ("WARNING", "commune-exemple", "U-9"),
    ]
    for _, _, message in unmanaged:
        reference = message.split(" ")[1]
        assert UNMANAGED in message
        assert message.endswith(f"{MAYBE} {suffixes[reference]}".rstrip()), message
