"""What `plan --json` (and a saved plan, which `provisioner report` reads) says of each action
beside its line: the attributes a script or a reviewer reads. The generation kept for its
consultations and which consultations hold it, the generation retired, the issuer chain a
generation now carries, the role of the target a copy goes to, the consultation bound or
updated with its dates, and the copy name a leftover is put back as.

The planner is pure: these run it on recorded and observed facts (no key is made) and read
its plan as `plan --json` prints it (render.plan_json) and as `plan` prints it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from provisioner.consultations import Consultation
from provisioner.manifest.model import Entity, Manifest, SecretRef
from provisioner.plan.model import Desired, Observed, Plan
from provisioner.plan.planner import plan
from provisioner.plan.render import plan_json, render_plan
from provisioner.state.records import (
    RETAINED,
    RETIRED,
    Recorded,
    RecordedConsultation,
    RecordedCopy,
    RecordedGeneration,
)
from provisioner.transports.base import FileFacts, FolderFacts, Leftover
from tests.test_planner import LOC, NAS, NOW, SPEC, WS1, WS2, copy, entity, generation

PARIS = dt.timezone(dt.timedelta(hours=1))


def planned(
    generations: Sequence[RecordedGeneration] = (),
    copies: Sequence[RecordedCopy] = (),
    *,
    who: Entity | None = None,
    recorded_consultations: Sequence[RecordedConsultation] = (),
    consultations: Sequence[Consultation] | None = None,
    folders: dict[tuple[str, str], FolderFacts | None] | None = None,
    chain_updates: dict[str, tuple[bytes, str]] | None = None,
    designations: dict[str, tuple[str, ...]] | None = None,
) -> Plan:
    """The plan for entity `ville` (ws1, nas) with its copies observed as recorded."""
    manifest = Manifest(
        Path("/m.yaml"),
        Path("/"),
        SecretRef("env", "E", Path("/"), LOC),
        {},
        {"ws1": WS1, "ws2": WS2},
        {},
        {"nas": NAS},
        (who or entity(),),
        None,
    )
    observed: dict[tuple[str, str], FileFacts | None] = {
        (c.target, c.path): FileFacts(c.size, c.sha256, 0o600) for c in copies
    }
    return plan(
        Desired(
            manifest,
            {"ville": "pw1"},
            consultations=tuple(consultations) if consultations is not None else None,
            chain_updates=chain_updates or {},
        ),
        Recorded(
            "lineage",
            3,
            tuple(generations),
            {(c.target, c.path): c for c in copies},
            consultations={c.reference: c for c in recorded_consultations},
            designations=designations or {},
        ),
        Observed(observed, folders=folders or {}),
        NOW,
    )


def bound(reference: str, g: RecordedGeneration, status: str = "open") -> RecordedConsultation:
    return RecordedConsultation(
        reference=reference,
        entity="ville",
        key_ref=f"designation:{g.designation}",
        generation_id=g.id,
        title=f"Travaux {reference}",
        status=status,
        deadline=None,
        opening=None,
        bound_at=NOW - dt.timedelta(days=20),
        closed_at=None,
        cert_sha256=g.cert_sha256,
    )


def actions(result: Plan, kind: str) -> list[dict[str, Any]]:
    return [a for a in plan_json(result)["actions"] if a["kind"] == kind]


def test_renewal_of_a_bound_generation_shows_what_it_keeps_retires_and_re_encodes() -> None:
    """Generation 2 is in its renewal window and bound to two open consultations: it is
    retained beside generation 3 (the JSON names both consultations), its issuer's renewed
    certificate is carried in its copies (the chain's digest), and generation 1, retained
    until now but its one consultation closed since, is retired (its designation named)."""
    g1 = generation(1, RETAINED)
    g2 = generation(2, not_after=NOW + dt.timedelta(days=30))
    result = planned(
        (g1, g2),
        (copy(NAS, 1), copy(NAS, 2), copy(WS1, 2)),
        recorded_consultations=(
            bound("2026-AO-09", g1, "closed"),
            bound("2027-AO-01", g2),
            bound("2027-AO-02", g2),
        ),
        chain_updates={"g2": (b"-----BEGIN CERTIFICATE-----", "5e1f" * 16)},
    )
    assert not result.refusals
    (retained,) = actions(result, "retain-generation")
    assert (retained["generation"], retained["reason"]) == (2, "bound-to-open-consultation")
    assert retained["attributes"] == {
        "designation": "Ville (2)",
        "consultations": "2027-AO-01, 2027-AO-02",
    }
    (retired,) = actions(result, "retire-generation")
    assert (retired["generation"], retired["reason"]) == (1, "unbound")
    assert retired["attributes"] == {"designation": "Ville"}
    (chain,) = actions(result, "update-chain")
    assert chain["generation"] == 2
    assert chain["attributes"] == {"chain_sha256": "5e1f" * 16}
    written = actions(result, "write-copy")
    assert {(a["target"], a["generation"], a["attributes"]["role"]) for a in written} >= {
        ("nas", 3, "location"),
        ("ws1", 3, "workstation"),
    }
    assert all(a["attributes"] == {"role": "location"} for a in written if a["target"] == "nas")
    assert all(a["attributes"] == {"role": "workstation"} for a in written if a["target"] == "ws1")


def test_consultations_bound_and_updated_show_reference_title_key_status_and_dates() -> None:
    g1 = generation(1)
    known = bound("2027-AO-07", g1)
    deadline = dt.datetime(2027, 3, 20, 12, 0, tzinfo=PARIS)
    opening = dt.datetime(2027, 3, 22, 9, 30, tzinfo=PARIS)
    result = planned(
        (g1,),
        (copy(NAS), copy(WS1)),
        recorded_consultations=(known,),
        consultations=(
            Consultation(
                "2027-AO-09", "Cantine", "ville", "Ville", None, "open", deadline, opening, LOC
            ),
            Consultation(
                "2027-AO-07",
                "Travaux 2027-AO-07",
                "ville",
                "Ville",
                None,
                "closed",
                None,
                None,
                LOC,
            ),
        ),
    )
    (bind,) = actions(result, "bind-consultation")
    assert bind["attributes"] == {
        "reference": "2027-AO-09",
        "title": "Cantine",
        "key": "designation:Ville",
        "status": "open",
        "deadline": "2027-03-20T12:00:00+01:00",
        "opening": "2027-03-22T09:30:00+01:00",
    }
    (update,) = actions(result, "update-consultation")
    assert update["reason"] == "closed"
    assert update["attributes"] == {
        "reference": "2027-AO-07",
        "title": "Travaux 2027-AO-07",
        "key": "designation:Ville",
        "status": "closed",
    }


def test_leftovers_of_interrupted_writes_say_what_is_removed_and_what_is_put_back() -> None:
    """A temporary, a moved-aside copy whose name holds the new copy (removed), and one
    whose name is free (put back under it): each line says which, the JSON names the copy."""
    folder = "/srv/ws1"
    leftovers = (
        Leftover(".provisioner-tmp-ville.g1.p12.0a1b2c3d", "ville.g1.p12", False, True),
        Leftover("ville.g1.p12.old-0a1b2c3d", "ville.g1.p12", True, True),
        Leftover("ville.g2.p12.old-89abcdef", "ville.g2.p12", True, False),
    )
    result = planned(
        (generation(1),),
        (copy(NAS), copy(WS1)),
        folders={("ws1", folder): FolderFacts(0o700, leftovers)},
    )
    cleared = actions(result, "clear-leftover")
    assert [(a["symbol"], a["path"], a["attributes"]) for a in cleared] == [
        ("-", f"{folder}/{leftovers[0].name}", {"final": "ville.g1.p12"}),
        ("-", f"{folder}/{leftovers[1].name}", {"final": "ville.g1.p12"}),
        ("~", f"{folder}/{leftovers[2].name}", {"final": "ville.g2.p12"}),
    ]
    text = render_plan(result)
    assert (
        f"- remove leftover on ws1: {folder}/{leftovers[0].name}  [leftover] temporary of an "
        "interrupted write of ville.g1.p12: removed"
    ) in text
    assert (
        f"- remove leftover on ws1: {folder}/{leftovers[1].name}  [leftover] previous copy "
        "moved aside by an interrupted replace of ville.g1.p12, which is in place: removed"
    ) in text
    assert (
        f"~ put back leftover on ws1: {folder}/{leftovers[2].name}  [leftover] previous copy "
        "moved aside by an interrupted replace: put back as ville.g2.p12, a name nothing holds"
    ) in text


def test_refusing_an_absent_entity_names_every_bound_generation_and_its_consultations() -> None:
    """`state: absent` while keys are bound: the refusal names each generation at stake with
    the open consultations that hold it ("consultation" for one, "consultations" for two)."""
    g1 = generation(1, RETIRED)
    g2 = generation(2)
    result = planned(
        (g1, g2),
        (copy(NAS, 1), copy(NAS, 2), copy(WS1, 2)),
        who=entity(state="absent"),
        recorded_consultations=(
            bound("2027-AO-01", g1),
            bound("2027-AO-02", g1),
            bound("2027-AO-03", g2),
        ),
    )
    assert result.refusals == (
        'm.yaml:1:1: entity ville is marked absent, but generation 1 "Ville" is bound to open '
        "consultations 2027-AO-01 (Travaux 2027-AO-01), 2027-AO-02 (Travaux 2027-AO-02); "
        'generation 2 "Ville (2)" is bound to open consultation 2027-AO-03 (Travaux '
        "2027-AO-03). Its keys must stay until those consultations are closed: mark them "
        "closed in the consultations file first.",
    )
    assert not result.actions


def test_a_new_designation_shows_the_name_the_generation_takes() -> None:
    """The manifest renames the key: the plan line says so, with the new designation below
    it as `plan` shows a new generation's, and the JSON carries it."""
    result = planned(
        (generation(1),),
        (copy(NAS), copy(WS1)),
        who=entity(key=replace(SPEC, designation="Ville Nord")),
    )
    (renamed,) = actions(result, "update-designation")
    assert renamed["attributes"] == {"designation": "Ville Nord"}
    assert (
        "~ generation 1: update designation  [friendly-name-changed] designation 'Ville' -> "
        "'Ville Nord'; update it on the platform too\n"
        '        designation = "Ville Nord"\n'
    ) in render_plan(result)
