"""A binding is definitive: a consultations file that now names another key for a known
consultation is refused, and the refusal names both keys as the operator knows them: the
bound generation with every designation it had and the start of its certificate's
fingerprint, and the key the file names (a generation, or a name no generation has, quoted
whole even when it holds a colon)."""

from __future__ import annotations

import datetime as dt

from provisioner.consultations import Consultation
from provisioner.state.records import RETIRED, RecordedConsultation, RecordedGeneration
from tests.test_plan_json_names_each_action import planned
from tests.test_planner import LOC, NAS, WS1, copy, generation

BOUND_AT = dt.datetime(2027, 2, 9, 10, 0, tzinfo=dt.UTC)
G1 = generation(1, RETIRED, cert_sha256="0123456789abcdef" + "a" * 48)
G2 = generation(2, cert_sha256="fedcba9876543210" + "b" * 48)


def recorded(reference: str, g: RecordedGeneration, key_ref: str) -> RecordedConsultation:
    return RecordedConsultation(
        reference, "ville", key_ref, g.id, "Travaux", "open", None, None, BOUND_AT, None, None
    )


def in_file(reference: str, designation: str) -> Consultation:
    return Consultation(reference, "Travaux", "ville", designation, None, "open", None, None, LOC)


def refusals(*pairs: tuple[RecordedConsultation, Consultation]) -> tuple[str, ...]:
    return planned(
        (G1, G2),
        (copy(NAS, 1), copy(NAS, 2), copy(WS1, 1), copy(WS1, 2)),
        recorded_consultations=[rec for rec, _ in pairs],
        consultations=[c for _, c in pairs],
        # Generation 1 was "Ville A", then "Ville B", before its current "Ville".
        designations={"g1": ("Ville A", "Ville B", "Ville")},
    ).refusals


def test_a_renamed_bound_generation_is_named_with_its_former_designations() -> None:
    """Bound to generation 1 when it was "Ville A"; the file now names a key no generation
    has ever been called, whose name holds a colon."""
    (refusal,) = refusals(
        (recorded("2027-AO-01", G1, "designation:Ville A"), in_file("2027-AO-01", "Lot 2: voirie"))
    )
    assert refusal == (
        'm.yaml:1:1: consultation 2027-AO-01 is bound to generation 1 "Ville" (formerly '
        '"Ville A", "Ville B"; certificate 0123456789abcdef…) of ville since 2027-02-09; the '
        "file now binds it to the key with designation 'Lot 2: voirie' of ville. A binding is "
        "definitive: correct the consultations file."
    )


def test_a_generation_never_renamed_is_named_by_its_designation_and_certificate() -> None:
    """Bound to generation 2; the file now names generation 1 by a designation it had."""
    (refusal,) = refusals(
        (recorded("2027-AO-02", G2, "designation:Ville (2)"), in_file("2027-AO-02", "Ville B"))
    )
    assert refusal == (
        'm.yaml:1:1: consultation 2027-AO-02 is bound to generation 2 "Ville (2)" (certificate '
        "fedcba9876543210…) of ville since 2027-02-09; the file now binds it to generation 1 "
        '"Ville" (formerly "Ville A", "Ville B"; certificate 0123456789abcdef…) of ville. A '
        "binding is definitive: correct the consultations file."
    )
