"""`state: absent`: the entity's copies leave the workstations (its shared locations keep
every generation), its live generations are retired, their keys stay in the escrow. Each
removal goes ahead whatever stands before it in the plan's order: an unreachable
workstation, a generation whose escrowed key is lost (its copies are kept, with a warning),
or a copy held back because the state is used away from its home (each one counted).

Pure planner, read as `plan` prints it."""

from __future__ import annotations

from pathlib import Path

from provisioner.manifest.model import Manifest, SecretRef
from provisioner.plan.model import Desired, Observed, Plan
from provisioner.plan.planner import plan
from provisioner.plan.render import render_plan
from provisioner.state.records import RETIRED, Recorded, RecordedCopy
from provisioner.transports.base import FileFacts
from tests.test_planner import LOC, NAS, NOW, WS1, WS2, copy, entity, generation

G1 = generation(1, RETIRED)
G2 = generation(2)
# Sorted as the planner walks them: ws1 before ws2, g1 before g2.
COPIES = (copy(NAS, 1), copy(NAS, 2), copy(WS1, 1), copy(WS1, 2), copy(WS2, 2))
REMOVED = "[entity-absent] the entity is marked absent (shared locations keep their copies)"
RETIRE = (
    "- generation 2: retire  [entity-absent] the entity is marked absent; the key stays in "
    "the escrow"
)


def absent_plan(
    copies: tuple[RecordedCopy, ...] = COPIES,
    *,
    unreachable: dict[str, str] | None = None,
    escrow_keys: frozenset[str] | None = frozenset({"k1", "k2"}),
    moved_from: str | None = None,
) -> Plan:
    manifest = Manifest(
        Path("/m.yaml"),
        Path("/"),
        SecretRef("env", "E", Path("/"), LOC),
        {},
        {"ws1": WS1, "ws2": WS2},
        {},
        {"nas": NAS},
        (entity(state="absent"),),
        None,
    )
    observed: dict[tuple[str, str], FileFacts | None] = {
        (c.target, c.path): FileFacts(c.size, c.sha256, 0o600) for c in copies
    }
    return plan(
        Desired(manifest, {"ville": "pw1"}, moved_from=moved_from),
        Recorded("lineage", 3, (G1, G2), {(c.target, c.path): c for c in copies}),
        Observed(observed, unreachable or {}, escrow_keys=escrow_keys),
        NOW,
    )


def lines(result: Plan) -> list[str]:
    return [
        line.strip()
        for line in render_plan(result).splitlines()
        if line.strip().startswith(("+", "~", "-", "!"))
    ]


def test_every_workstation_copy_is_removed_and_the_live_generation_retired() -> None:
    assert lines(absent_plan()) == [
        f"- remove g1 on ws1: /srv/ws1/ville.g1.p12  {REMOVED}",
        f"- remove g2 on ws1: /srv/ws1/ville.g2.p12  {REMOVED}",
        f"- remove g2 on ws2: /srv/ws2/ville.g2.p12  {REMOVED}",
        RETIRE,
    ]


def test_an_unreachable_workstation_does_not_stop_the_removals_after_it() -> None:
    result = absent_plan(unreachable={"ws1": "timed out"})
    assert lines(result) == [
        "! ws1: cannot observe the target: timed out",
        f"- remove g2 on ws2: /srv/ws2/ville.g2.p12  {REMOVED}",
        RETIRE,
    ]


def test_copies_of_a_key_lost_from_the_escrow_are_kept_with_a_warning() -> None:
    """Generation 1's key is no longer in the escrow: its workstation copy may be the last
    holder of it, so it stays (the absent entity's password is not read: apply cannot take
    the key back); generation 2's copies after it are still removed."""
    result = absent_plan(escrow_keys=frozenset({"k2"}))
    assert lines(result) == [
        f"- remove g2 on ws1: /srv/ws1/ville.g2.p12  {REMOVED}",
        f"- remove g2 on ws2: /srv/ws2/ville.g2.p12  {REMOVED}",
        RETIRE,
        "! ville: [escrow-missing] generation 1's private key is missing from the escrow: its "
        "copies are kept although the entity is marked absent; declare it present for one "
        "apply to take the key back, or restore the escrow from a backup",
    ]


def test_away_from_its_home_every_held_back_removal_is_counted() -> None:
    """A copied tree: the recorded copies may be the original tree's, none is removed, and
    the warning counts each removal held back."""
    result = absent_plan(moved_from="/srv/original")
    assert [line for line in lines(result) if not line.startswith("!")] == [RETIRE]
    (warning,) = [w for w in result.warnings if w.code == "copied-tree"]
    assert "this state was made in /srv/original and is used from elsewhere" in warning.message
    assert "3 removals or rewrites are held back" in warning.message


def test_an_absent_entity_without_copies_on_workstations_only_retires() -> None:
    result = absent_plan((copy(NAS, 1), copy(NAS, 2)))
    assert lines(result) == [RETIRE]
