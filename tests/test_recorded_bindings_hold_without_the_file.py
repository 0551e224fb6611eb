"""A consultation the state recorded keeps its key without the consultations file (a
scheduled run without `--consultations`, an export that no longer lists it): its bound
generation is retained at renewal, its dates still warn, and `plan --json` lists it as
recorded with its generation and dates. A binding to a key this tool does not manage keeps
on the workstations only the generations that may be that key: those that existed when it was
bound, never one made after, and none when it names an unknown certificate.

Pure planner, read as `plan --json` and `plan` show it."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from provisioner import clock
from provisioner.consultations import Consultation
from provisioner.plan.render import plan_json
from provisioner.state.records import RETAINED, RecordedConsultation
from tests.test_plan_json_names_each_action import actions, planned
from tests.test_planner import LOC, NAS, NOW, SPEC, WS1, copy, entity, generation

DEADLINE = NOW + dt.timedelta(days=10)
# What the plan shows of generation 2, made by the renewal of generation 1 (never its password).
RENEWAL = {
    "designation": "Ville (2)",
    "common_name": "Ville (2)",
    "key": "RSA 3072",
    "issuer": "self-signed",
    "valid_until": "2029-02-28",
    "pkcs12_profile": "modern",
    "password": "(sensitive)",
}
OPENING = NOW + dt.timedelta(days=40)


def recorded(
    reference: str,
    key_ref: str,
    generation_id: str | None,
    bound_at: dt.datetime = NOW - dt.timedelta(days=10),
) -> RecordedConsultation:
    return RecordedConsultation(
        reference,
        "ville",
        key_ref,
        generation_id,
        "Cantine",
        "open",
        DEADLINE,
        OPENING,
        bound_at,
        None,
        None,
    )


def test_a_recorded_binding_retains_its_generation_at_renewal_without_the_file() -> None:
    """Generation 1 is renewed (30 days left, 60-day window) and expires before the recorded
    opening of 2027-AO-01: it stays beside generation 2, the plan warns about the opening,
    and the consultation is listed as recorded, bound to generation 1."""
    g1 = generation(1, not_after=NOW + dt.timedelta(days=30))
    result = planned(
        (g1,),
        (copy(NAS), copy(WS1)),
        recorded_consultations=(recorded("2027-AO-01", "designation:Ville", "g1"),),
    )
    (retained,) = actions(result, "retain-generation")
    assert retained["attributes"] == {"designation": "Ville", "consultations": "2027-AO-01"}
    (created,) = actions(result, "create-generation")
    assert (created["symbol"], created["attributes"]) == (
        "+",
        RENEWAL | {"keeps": "generation 1"},
    )
    assert plan_json(result)["consultations"] == [
        {
            "reference": "2027-AO-01",
            "entity": "ville",
            "title": "Cantine",
            "key": "designation:Ville",
            "generation": 1,
            "designation": "Ville",
            "status": "open",
            "deadline": clock.local_iso(DEADLINE),
            "opening": clock.local_iso(OPENING),
            "recorded": True,
        }
    ]
    (warning,) = [w for w in result.warnings if w.code == "expires-before-opening"]
    assert warning.message == (
        f'generation 1 "Ville" expires on {g1.not_after:%Y-%m-%d}, before the opening of '
        f"consultation 2027-AO-01 (Cantine; deadline {clock.day(DEADLINE)}; opening "
        f"{clock.day(OPENING)}) on {clock.day(OPENING)}"
    )
    assert "unmanaged-key" not in {w.code for w in result.warnings}


UNMANAGED_BY_CERTIFICATE = "sha256:" + "9" * 64


def test_an_unknown_certificate_keeps_no_generation_on_the_workstations() -> None:
    """Bound to a certificate this state never saw: adopt it; no generation of ours may be
    it (a fingerprint names one key), so none is kept for it. Listed as recorded, with no
    generation."""
    result = planned(
        (generation(1),),
        (copy(NAS), copy(WS1)),
        recorded_consultations=(recorded("2027-AO-02", UNMANAGED_BY_CERTIFICATE, None),),
    )
    (warning,) = [w for w in result.warnings if w.code == "unmanaged-key"]
    assert warning.message == (
        f"consultation 2027-AO-02 (Cantine; deadline {clock.day(DEADLINE)}; opening "
        f"{clock.day(OPENING)}) is bound to {UNMANAGED_BY_CERTIFICATE}, a key this tool does "
        "not manage: adopt it (provisioner adopt … --retained) so that it is escrowed and "
        "distributed"
    )
    (listed,) = plan_json(result)["consultations"]
    assert (listed["generation"], listed["designation"], listed["recorded"]) == (None, None, True)


def test_an_unmanaged_name_keeps_the_generations_that_existed_when_it_was_bound() -> None:
    """Bound ten days ago to "Ancienne clé", a name no generation had: generation 1 (made
    long before, retained) may be that key and stays on the workstations; generation 2,
    made five days ago, cannot be."""
    g1 = generation(1, RETAINED, created_at=NOW - dt.timedelta(days=400))
    g2 = generation(2, created_at=NOW - dt.timedelta(days=5))
    result = planned(
        (g1, g2),
        (copy(NAS, 1), copy(NAS, 2), copy(WS1, 1), copy(WS1, 2)),
        recorded_consultations=(recorded("2027-AO-03", "designation:Ancienne clé", None),),
    )
    (warning,) = [w for w in result.warnings if w.code == "unmanaged-key"]
    assert warning.message.endswith(
        "; kept on the workstations until it closes, since it may be that key: generation 1 "
        "(if it is one of them, name it in the consultations file by its certificate's "
        "SHA-256 fingerprint to bind it)"
    )
    assert not actions(result, "retire-generation")
    assert not actions(result, "remove-copy")


def test_a_designation_holding_a_colon_still_names_its_generation() -> None:
    """Generation 1 was renamed "Ville: Nord" on the platform and in the manifest; the file
    now names consultation 2027-AO-05, bound by "Ville", with that name: the same key, no
    refusal."""
    g1 = generation(1, designation="Ville: Nord")
    result = planned(
        (g1,),
        (copy(NAS, friendly_name="Ville: Nord"), copy(WS1, friendly_name="Ville: Nord")),
        who=entity(key=replace(SPEC, designation="Ville: Nord")),
        recorded_consultations=(recorded("2027-AO-05", "designation:Ville", "g1"),),
        consultations=(
            Consultation(
                "2027-AO-05", "Cantine", "ville", "Ville: Nord", None, "open", None, None, LOC
            ),
        ),
        designations={"g1": ("Ville", "Ville: Nord")},
    )
    assert not result.refusals
    (listed,) = plan_json(result)["consultations"]
    assert (listed["generation"], listed["designation"]) == (1, "Ville: Nord")


def test_an_unbound_renewal_replaces_the_current_generation() -> None:
    """Without a consultation the renewed generation is retired by its successor: `-/+`,
    and the plan names the generation it replaces, never the password."""
    g1 = generation(1, not_after=NOW + dt.timedelta(days=30))
    result = planned((g1,), (copy(NAS), copy(WS1)))
    (created,) = actions(result, "create-generation")
    assert (created["symbol"], created["attributes"]) == (
        "-/+",
        RENEWAL | {"replaces": "generation 1"},
    )


def test_plan_json_tells_a_recorded_consultation_from_one_the_file_brings() -> None:
    """The file lists 2027-AO-01, recorded ten days ago, and 2027-AO-05, new: `plan --json`
    lists the first as recorded and the second as not (apply will bind it)."""

    def listed(reference: str) -> Consultation:
        return Consultation(
            reference, "Cantine", "ville", "Ville", None, "open", DEADLINE, OPENING, LOC
        )

    result = planned(
        (generation(1),),
        (copy(NAS), copy(WS1)),
        recorded_consultations=(recorded("2027-AO-01", "designation:Ville", "g1"),),
        consultations=(listed("2027-AO-01"), listed("2027-AO-05")),
    )
    bound = [a["attributes"]["reference"] for a in actions(result, "bind-consultation")]
    assert bound == ["2027-AO-05"]
    shown = {
        c["reference"]: (c["generation"], c["recorded"]) for c in plan_json(result)["consultations"]
    }
    assert shown == {"2027-AO-01": (1, True), "2027-AO-05": (1, False)}


def test_an_unmanaged_binding_is_not_refused_for_a_name_another_entity_uses() -> None:
    """2027-AO-07 was bound to "Ancienne clé", a key of ville this tool does not manage; the
    entity syndicat calls one of its own generations by that name. The file lists 2027-AO-07
    for ville as recorded: no refusal (the name is ville's key, as bound), the unmanaged
    key is still warned about."""
    theirs = replace(generation(1), id="s1", entity="syndicat", designation="Ancienne clé")
    result = planned(
        (generation(1), theirs),
        (copy(NAS), copy(WS1)),
        recorded_consultations=(recorded("2027-AO-07", "designation:Ancienne clé", None),),
        consultations=(
            Consultation(
                "2027-AO-07",
                "Cantine",
                "ville",
                "Ancienne clé",
                None,
                "open",
                DEADLINE,
                OPENING,
                LOC,
            ),
        ),
    )
    assert result.refusals == ()
    assert "unmanaged-key" in {w.code for w in result.warnings}


def test_a_consultation_closed_and_retitled_says_both_changes() -> None:
    """The file closes 2027-AO-01 and gives it another title: one update, both changes
    named."""
    result = planned(
        (generation(1),),
        (copy(NAS), copy(WS1)),
        recorded_consultations=(recorded("2027-AO-01", "designation:Ville", "g1"),),
        consultations=(
            Consultation(
                "2027-AO-01",
                "Cantine scolaire",
                "ville",
                "Ville",
                None,
                "closed",
                DEADLINE,
                OPENING,
                LOC,
            ),
        ),
    )
    (update,) = actions(result, "update-consultation")
    assert update["message"] == (
        "consultation 2027-AO-01: status open -> closed; title or dates updated"
    )
