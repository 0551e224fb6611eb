"""Where copies go: their file names, the paths a plan observes, targets by name. Pure."""

from __future__ import annotations

from pathlib import PureWindowsPath

from provisioner.manifest.model import Target
from provisioner.plan.model import Desired
from provisioner.state.records import CURRENT, RETAINED, Recorded
from provisioner.transports.base import file_path, target_from_spec

LIVE = (CURRENT, RETAINED)


def copy_file_name(entity: str, number: int) -> str:
    """The PKCS#12 file name of generation `number` of `entity` on every target."""
    return f"{entity}.g{number}.p12"


def next_number(recorded: Recorded, entity: str) -> int:
    return max((g.number for g in recorded.generations_of(entity)), default=0) + 1


def file_name(path: str) -> str:
    """The file name at the end of a copy's path, "/" or "\\" separated (a Windows target's)."""
    return PureWindowsPath(path).name


def parse_copy_name(name: str) -> tuple[str, int] | None:
    """(entity, number) from a copy's file name `<entity>.g<number>.p12`, else None."""
    if not name.endswith(".p12"):
        return None
    entity, sep, number = name[: -len(".p12")].rpartition(".g")
    if not sep or not entity or not number.isdigit() or number != str(int(number)):
        return None
    return entity, int(number)


def paths_to_observe(desired: Desired, recorded: Recorded) -> dict[str, set[str]]:
    """Per target name, the paths the planner will ask about: every generation's and the next
    one's on every target a run covers, and every recorded copy."""
    wanted: dict[str, set[str]] = {}
    for entity in desired.manifest.entities:
        if not desired.in_scope(entity.id):
            continue
        generations = recorded.generations_of(entity.id)
        every = [g.number for g in generations] + [next_number(recorded, entity.id)]
        if entity.state == "present":
            for target in entity.targets:
                if not desired.covers(entity.id, target.name):
                    continue  # outside a --limit that names targets: not looked at
                paths = wanted.setdefault(target.name, set())
                # Every generation's path, retired ones included: one brought back for a
                # consultation must not be written over a file someone put there since.
                for n in every:
                    paths.add(file_path(target, copy_file_name(entity.id, n)))
    for copy in recorded.copies.values():
        known = desired.manifest.entity(copy.entity) is not None
        if known and desired.covers(copy.entity, copy.target):
            wanted.setdefault(copy.target, set()).add(copy.path)
    return wanted


def next_numbers(desired: Desired, recorded: Recorded) -> dict[str, dict[str, int]]:
    """Per target name, the next generation number of each present entity declaring it: a
    copy found there named beyond it is observed too (planner: later_path_conflicts)."""
    out: dict[str, dict[str, int]] = {}
    for entity in desired.manifest.entities:
        if entity.state != "present" or not desired.in_scope(entity.id):
            continue
        number = next_number(recorded, entity.id)
        for target in entity.targets:
            out.setdefault(target.name, {})[entity.id] = number
    return out


def resolve_target(desired: Desired, recorded: Recorded, name: str) -> Target | None:
    """A target by name: from the manifest, else as last recorded in the state."""
    manifest = desired.manifest
    declared = manifest.workstations.get(name) or manifest.locations.get(name)
    if declared is not None:
        return declared  # the manifest's, never the state's older record of it
    spec = recorded.targets.get(name)
    return target_from_spec(spec) if spec is not None else None
