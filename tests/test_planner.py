"""Planner as a table: desired + recorded + observed in, expected actions out. No I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from provisioner.errors import Location
from provisioner.manifest.model import (
    Entity,
    KeySpec,
    Manifest,
    PasswordPolicy,
    SecretRef,
    Subject,
    Target,
)
from provisioner.plan.model import Desired, Foreign, Observed
from provisioner.plan.planner import plan
from provisioner.state.records import (
    CURRENT,
    RETIRED,
    Recorded,
    RecordedCopy,
    RecordedGeneration,
)
from provisioner.transports.base import FileFacts

NOW = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
LOC = Location("m.yaml", 1, 1)
NAS = Target("nas", "location", "/srv/nas", LOC)
WS1 = Target("ws1", "workstation", "/srv/ws1", LOC)
WS2 = Target("ws2", "workstation", "/srv/ws2", LOC)
SPEC = KeySpec("Ville", None, "self-signed", 3072, 730, 60, "modern", Subject())


def entity(**changes: object) -> Entity:
    base = Entity(
        "ville",
        "Ville",
        "present",
        SPEC,
        SecretRef("env", "PW", Path("/"), LOC),
        PasswordPolicy(),
        (NAS,),
        (WS1,),
        LOC,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def generation(number: int = 1, status: str = CURRENT, **changes: object) -> RecordedGeneration:
    base = RecordedGeneration(
        id=f"g{number}",
        entity="ville",
        number=number,
        designation="Ville" if number == 1 else f"Ville ({number})",
        common_name="Ville" if number == 1 else f"Ville ({number})",
        issuer="self-signed",
        key_size=3072,
        subject=(None, None, None),
        certificate=b"",
        chain=b"",
        cert_sha256=f"c{number}",
        key_sha256=f"k{number}",
        chain_sha256="e3b0",
        not_before=NOW - dt.timedelta(days=30),
        not_after=NOW + dt.timedelta(days=700),
        status=status,
        origin="generated",
        created_at=NOW - dt.timedelta(days=30),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def copy(target: Target, number: int = 1, **changes: object) -> RecordedCopy:
    base = RecordedCopy(
        entity="ville",
        generation_id=f"g{number}",
        target=target.name,
        path=f"{target.path}/ville.g{number}.p12",
        sha256=f"sha-{target.name}-{number}",
        size=2700,
        profile="modern",
        password_id="pw1",
        friendly_name="Ville" if number == 1 else f"Ville ({number})",
        chain_sha256="e3b0",
        written_at=NOW - dt.timedelta(days=30),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def facts_for(c: RecordedCopy) -> FileFacts:
    return FileFacts(c.size, c.sha256, 0o600)


@dataclass
class Case:
    name: str
    entity: Entity = field(default_factory=entity)
    generations: tuple[RecordedGeneration, ...] = ()
    copies: tuple[RecordedCopy, ...] = ()
    observed: dict[tuple[str, str], FileFacts | None] | None = None  # default: as recorded
    password_id: str | None = "pw1"
    unreachable: dict[str, str] = field(default_factory=dict)
    foreign: dict[tuple[str, str], Foreign] = field(default_factory=dict)
    escrow_keys: frozenset[str] | None = None
    moved_from: str | None = None
    now: dt.datetime = NOW
    expect: list[str] = field(default_factory=list)  # "symbol kind reason target"


def in_sync() -> tuple[tuple[RecordedGeneration, ...], tuple[RecordedCopy, ...]]:
    return (generation(),), (copy(NAS), copy(WS1))


GENS, COPIES = in_sync()
CASES = [
    Case(
        "first run creates a generation and writes every copy",
        expect=[
            "+ create-generation missing -",
            "+ write-copy new-generation nas",
            "+ write-copy new-generation ws1",
        ],
    ),
    Case("in sync: nothing to do", entity(), GENS, COPIES),
    Case(
        "deleted copy is written again",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): None},
        expect=["+ write-copy missing ws1"],
    ),
    Case(
        "altered copy is rewritten",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): FileFacts(10, "other", 0o600)},
        expect=["~ write-copy drifted ws1"],
    ),
    Case(
        "readable copy is rewritten",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): FileFacts(2700, COPIES[1].sha256, 0o644)},
        expect=["~ write-copy permissions ws1"],
    ),
    Case(
        "a file the state did not write holding this generation's key is re-encoded",
        entity(),
        GENS,
        (COPIES[0],),
        observed={(WS1.name, COPIES[1].path): FileFacts(10, "x", 0o600)},
        foreign={(WS1.name, COPIES[1].path): Foreign(True, True, "c1", "k1", "Ville", True)},
        expect=["~ write-copy unrecorded ws1"],
    ),
    Case(
        "not ours: a file the state did not write, with another key, is a conflict",
        entity(),
        GENS,
        (COPIES[0],),
        observed={(WS1.name, COPIES[1].path): FileFacts(10, "x", 0o600)},
        foreign={(WS1.name, COPIES[1].path): Foreign(True, True, "c9", "k9", "Autre", False)},
        expect=["! conflict conflict ws1"],
    ),
    Case(
        "not ours: a file that does not open with the password is a conflict; other copies "
        "are still repaired",
        entity(),
        GENS,
        (COPIES[0],),
        observed={
            (WS1.name, COPIES[1].path): FileFacts(10, "x", 0o600),
            (NAS.name, COPIES[0].path): None,
        },
        foreign={(WS1.name, COPIES[1].path): Foreign(True, False)},
        expect=["+ write-copy missing nas", "! conflict conflict ws1"],
    ),
    Case(
        "not ours: a file where the first generation goes is a conflict, nothing is created",
        observed={(NAS.name, "/srv/nas/ville.g1.p12"): FileFacts(10, "x", 0o600)},
        foreign={(NAS.name, "/srv/nas/ville.g1.p12"): Foreign(True, True, "c1", "k1", "V")},
        expect=["! conflict conflict nas"],
    ),
    Case(
        "not ours: a file where the next generation will go is reported before renewal",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, "/srv/ws1/ville.g2.p12"): FileFacts(10, "x", 0o600)},
        expect=["! conflict conflict ws1"],
    ),
    Case(
        "a recorded copy replaced by another PKCS#12 is a conflict, not rewritten",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): FileFacts(10, "other", 0o600)},
        foreign={(WS1.name, COPIES[1].path): Foreign(True, False)},
        expect=["! conflict conflict ws1"],
    ),
    Case(
        "a recorded copy damaged in place (its size, no longer opening) is repaired",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): FileFacts(2700, "other", 0o600)},
        foreign={(WS1.name, COPIES[1].path): Foreign(True, False, tried_with="pw1")},
        expect=["~ write-copy drifted ws1"],
    ),
    Case(
        "after a password change, a file of the copy's size that does not open with the new "
        "password may be anybody's key under the old one: a conflict, never overwritten",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): FileFacts(2700, "other", 0o600)},
        foreign={(WS1.name, COPIES[1].path): Foreign(True, False, tried_with="pw2")},
        password_id="pw2",
        expect=["~ write-copy password-changed nas", "! conflict conflict ws1"],
    ),
    Case(
        "a recorded copy damaged beyond PKCS#12 is repaired",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): FileFacts(10, "other", 0o600)},
        foreign={(WS1.name, COPIES[1].path): Foreign(False, False)},
        expect=["~ write-copy drifted ws1"],
    ),
    Case(
        "a copy of a retired generation replaced by someone's PKCS#12 is not removed: conflict",
        entity(),
        (generation(1, RETIRED), generation(2)),
        (copy(NAS), copy(WS1), copy(NAS, 2), copy(WS1, 2)),
        observed={(WS1.name, copy(WS1).path): FileFacts(10, "other", 0o600)},
        foreign={(WS1.name, copy(WS1).path): Foreign(True, False)},
        expect=["! conflict conflict ws1"],
    ),
    Case(
        "a copy of a retired generation damaged in place is removed",
        entity(),
        (generation(1, RETIRED), generation(2)),
        (copy(NAS), copy(WS1), copy(NAS, 2), copy(WS1, 2)),
        observed={(WS1.name, copy(WS1).path): FileFacts(2700, "other", 0o600)},
        foreign={(WS1.name, copy(WS1).path): Foreign(True, False, tried_with="pw1")},
        expect=["- remove-copy retired ws1"],
    ),
    Case(
        "a retired generation's copy gone from the shared location is written again",
        entity(),
        (generation(1, RETIRED), generation(2)),
        (copy(NAS), copy(NAS, 2), copy(WS1, 2)),
        observed={(NAS.name, copy(NAS).path): None},
        expect=["+ write-copy missing nas"],
    ),
    Case(
        "a new shared location receives every generation, retired ones included",
        entity(),
        (generation(1, RETIRED), generation(2)),
        (copy(WS1, 2),),
        observed={(NAS.name, copy(NAS).path): None, (NAS.name, copy(NAS, 2).path): None},
        expect=["+ write-copy missing nas", "+ write-copy missing nas"],
    ),
    Case(
        "a missing escrowed key is taken back from an intact copy",
        entity(),
        GENS,
        COPIES,
        escrow_keys=frozenset(),
        expect=["+ restore-escrow escrow-missing nas"],
    ),
    Case(
        "copied tree: copies under the state's old home are not removed as moved",
        entity(workstations=(replace(WS1, path="/new/ws1"),), shared_locations=(NAS,)),
        GENS,
        (COPIES[0], copy(WS1, path="/old/ws1/ville.g1.p12")),
        observed={("ws1", "/new/ws1/ville.g1.p12"): None},
        moved_from="/old",
        expect=["+ write-copy missing ws1"],
    ),
    Case(
        "password change re-encodes, never a new key",
        entity(),
        GENS,
        COPIES,
        password_id="pw2",
        expect=["~ write-copy password-changed nas", "~ write-copy password-changed ws1"],
    ),
    Case(
        "unknown password (no escrow yet) is not a change", entity(), GENS, COPIES, password_id=None
    ),
    Case(
        "profile change re-encodes",
        entity(key=replace(SPEC, profile="legacy")),
        GENS,
        COPIES,
        expect=["~ write-copy profile-changed nas", "~ write-copy profile-changed ws1"],
    ),
    Case(
        "designation change renames and re-encodes",
        entity(key=replace(SPEC, designation="Ville Nouvelle", common_name="Ville")),
        GENS,
        COPIES,
        expect=[
            "~ update-designation friendly-name-changed -",
            "~ write-copy friendly-name-changed nas",
            "~ write-copy friendly-name-changed ws1",
        ],
    ),
    Case(
        "designation change with a CN that follows it renames: no new key, no 'Ville (2)'",
        entity(key=replace(SPEC, designation="Ville Nouvelle")),
        GENS,
        COPIES,
        expect=[
            "~ update-designation friendly-name-changed -",
            "~ write-copy friendly-name-changed nas",
            "~ write-copy friendly-name-changed ws1",
        ],
    ),
    Case(
        "an explicit common name change still forces a new generation",
        entity(key=replace(SPEC, common_name="Ville Nouvelle")),
        GENS,
        COPIES,
        expect=[
            "-/+ create-generation spec-changed -",
            "+ write-copy new-generation nas",
            "+ write-copy new-generation ws1",
            "- remove-copy retired ws1",
        ],
    ),
    Case(
        "renewal window creates a new generation beside the old one",
        entity(),
        GENS,
        COPIES,
        now=GENS[0].not_after - dt.timedelta(days=59),
        expect=[
            "-/+ create-generation renewal-due -",
            "+ write-copy new-generation nas",
            "+ write-copy new-generation ws1",
            "- remove-copy retired ws1",
        ],
    ),
    Case(
        "expired key is replaced",
        entity(),
        GENS,
        COPIES,
        now=GENS[0].not_after + dt.timedelta(days=1),
        expect=[
            "-/+ create-generation expired -",
            "+ write-copy new-generation nas",
            "+ write-copy new-generation ws1",
            "- remove-copy retired ws1",
        ],
    ),
    Case(
        "key size change forces a new generation",
        entity(key=replace(SPEC, size=4096)),
        GENS,
        COPIES,
        expect=[
            "-/+ create-generation spec-changed -",
            "+ write-copy new-generation nas",
            "+ write-copy new-generation ws1",
            "- remove-copy retired ws1",
        ],
    ),
    Case(
        "adopted key is kept whatever the spec",
        entity(key=replace(SPEC, size=4096)),
        (generation(origin="adopted"),),
        COPIES,
    ),
    Case(
        "workstation no longer declared loses its copy",
        entity(workstations=(WS2,)),
        GENS,
        COPIES,
        expect=["+ write-copy missing ws2", "- remove-copy decommissioned ws1"],
    ),
    Case(
        "shared location keeps retired generations",
        entity(),
        (generation(1, RETIRED), generation(2)),
        (copy(NAS, 1), copy(NAS, 2), copy(WS1, 2)),
    ),
    Case(
        "retired generation copy on a workstation is removed",
        entity(),
        (generation(1, RETIRED), generation(2)),
        (copy(NAS, 1), copy(WS1, 1), copy(NAS, 2), copy(WS1, 2)),
        expect=["- remove-copy retired ws1"],
    ),
    Case(
        "absent entity: copies removed from workstations, shared locations keep theirs",
        entity(state="absent"),
        GENS,
        COPIES,
        expect=[
            "- remove-copy entity-absent ws1",
            "- retire-generation entity-absent -",
        ],
    ),
    Case(
        "unreachable target is skipped, not planned blind",
        entity(),
        GENS,
        COPIES,
        observed={(WS1.name, COPIES[1].path): None},
        unreachable={"ws1": "timed out"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_planner(case: Case) -> None:
    manifest = Manifest(
        Path("/m.yaml"),
        Path("/"),
        SecretRef("env", "E", Path("/"), LOC),
        {},
        {"ws1": WS1, "ws2": WS2},
        {},
        {"nas": NAS},
        (case.entity,),
        None,
    )
    observed = {(c.target, c.path): facts_for(c) for c in case.copies}
    observed.update(case.observed or {})
    result = plan(
        Desired(manifest, {"ville": case.password_id}, moved_from=case.moved_from),
        Recorded("lineage", 3, case.generations, {(c.target, c.path): c for c in case.copies}),
        Observed(observed, case.unreachable, foreign=case.foreign, escrow_keys=case.escrow_keys),
        case.now,
    )
    got = [f"{a.symbol} {a.kind} {a.reason} {a.target or '-'}" for a in result.actions]
    assert got == case.expect
    if not case.expect:
        assert result.in_sync and not result.changes
    if case.unreachable:
        assert result.errors == ("ws1: cannot observe the target: timed out",)
