"""The copies an entity's targets must hold, and the escrow they can restore. Pure.

Live generations go to every declared target, every generation ever made to the shared
locations; a copy check (policies.py) decides each path; copies no longer wanted are removed
while they are what was written. A missing escrowed key is taken back from an intact copy."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from provisioner.codes import WarningCode
from provisioner.manifest.model import Entity, Target
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.actions import ReasonCode, RemoveCopy, RestoreEscrow, WriteCopy
from provisioner.plan.context import Fresh, Kept, Planning
from provisioner.plan.model import PlanWarning
from provisioner.plan.paths import copy_file_name, file_name, next_number, resolve_target
from provisioner.plan.policies import COPY_CHECKS, CopyContext, first_reason
from provisioner.state.records import RETIRED, RecordedCopy
from provisioner.transports.base import file_path, folder_of


def next_path_conflicts(p: Planning, entity: Entity) -> None:
    """A file where the next generation's copy will go is not ours (a state older than
    its targets, a copied tree): say so now, not on renewal day."""
    number = next_number(p.recorded, entity.id)
    for target in entity.targets:
        if not p.desired.covers(entity.id, target.name):
            continue
        path = file_path(target, copy_file_name(entity.id, number))
        facts = p.observed.files.get((target.name, path))
        if facts is not None and not _written_here(p, entity, target.name, path, facts.sha256):
            p.conflict(entity, number, target.name, path, "where its next generation goes")


def _written_here(p: Planning, entity: Entity, target: str, path: str, sha256: str) -> bool:
    """The file is a copy this state recorded there (a copy renamed on a workstation and taken
    back by recover), unchanged since: this state's, removed as written when unwanted and
    replaced by the generation whose name it carries, never somebody else's key."""
    return any(
        c.target == target and c.path == path and c.sha256 == sha256 for c in p.copies_of(entity.id)
    )


def later_path_conflicts(p: Planning, entity: Entity) -> None:
    """A copy named after a generation beyond the next one (a number this state never gave)
    on one of the entity's targets: the state is older than its targets (lost, restored from
    an older backup, a copied tree's). Making keys as if it were not would start over beside
    that lineage's keys (invariant 9): the entity is held, naming the file, until `recover`
    takes it back or the operator moves it away."""
    after = next_number(p.recorded, entity.id)
    for target in entity.targets:
        if target.name in p.observed.unreachable:
            continue
        folder = folder_of(target, file_path(target, copy_file_name(entity.id, after)))
        for number in p.numbered(target.name, folder).get(entity.id, ()):
            path = file_path(target, copy_file_name(entity.id, number))
            facts = p.observed.files.get((target.name, path))
            if (
                number > after
                and facts is not None
                and not _written_here(p, entity, target.name, path, facts.sha256)
            ):
                p.conflict(
                    entity,
                    number,
                    target.name,
                    path,
                    f"named as generation {number}, a number this state never gave (its "
                    f"next is {after}: the state is older than its targets)",
                )


def check_escrow(p: Planning, entity: Entity) -> None:
    """Every generation's key must be in the escrow: one that is missing is taken back
    from an intact copy that opens with the current password, else reported."""
    present = p.observed.escrow_keys
    if present is None:
        return
    password_id = p.desired.password_ids.get(entity.id)
    for g in p.recorded.generations_of(entity.id):
        if g.key_sha256 in present:
            continue
        source = next(
            (
                c
                for c in sorted(p.copies_of(entity.id), key=lambda c: (c.target, c.path))
                if c.generation_id == g.id
                and (password_id is None or c.password_id == password_id)
                and c.target not in p.observed.unreachable
                and (facts := p.observed.files.get((c.target, c.path))) is not None
                and facts.sha256 == c.sha256
            ),
            None,
        )
        if source is not None:
            p.actions.append(
                RestoreEscrow(
                    entity=entity.id,
                    generation=g.number,
                    reason=ReasonCode.ESCROW_MISSING,
                    message="the escrowed private key is missing: taken back from the copy on "
                    f"{source.target}",
                    target=source.target,
                    path=source.path,
                )
            )
        else:
            unseen = (
                " (only the copies within --limit were looked at: run without a target "
                "limit to take it back from another)"
                if p.desired.partial(entity.id)
                else ""
            )
            p.warnings.append(
                PlanWarning(
                    entity.id,
                    WarningCode.ESCROW_MISSING,
                    f'generation {g.number} "{g.designation}": its private key is missing '
                    "from the escrow and no intact copy that opens with the current password "
                    f"was observed{unseen}; restore the escrow from a backup, or run "
                    "`provisioner recover` (docs/RECOVERY.md)",
                )
            )


def plan_copies(p: Planning, entity: Entity, keep: list[Fresh | Kept], retiring: set[str]) -> None:
    """Write the copies of the kept generations to every declared target where a copy check
    fires (every generation to shared locations), and remove the copies no longer wanted."""
    wanted_paths: set[tuple[str, str]] = set()
    password_id = p.desired.password_ids.get(entity.id)
    # Shared locations keep every generation ever made, retired ones included: each is
    # checked like a live copy and written again when it is missing.
    kept = {held.number for held in keep}
    archive: list[Fresh | Kept] = [
        Kept(g, g.designation) for g in p.recorded.generations_of(entity.id) if g.number not in kept
    ]
    for target in entity.targets:
        if target.name in p.observed.unreachable or not p.desired.covers(entity.id, target.name):
            continue
        for held in keep + archive if target.role == "location" else keep:
            number = held.number
            path = file_path(target, copy_file_name(entity.id, number))
            wanted_paths.add((target.name, path))
            if isinstance(held, Fresh):
                there = p.observed.files.get((target.name, path))
                if there is not None and not _written_here(
                    p, entity, target.name, path, there.sha256
                ):
                    p.conflict(entity, number, target.name, path, "where its new copy goes")
                    continue
                # This state's own copy of an older generation, renamed on the target to the
                # new one's name and taken back by `recover`: its key is in the escrow, so the
                # new copy goes over it (the record at that path becomes the new copy's).
                over = (
                    ", over this state's copy of an older generation renamed to its name "
                    "(that key stays in the escrow)"
                    if there is not None
                    else ""
                )
                p.actions.append(
                    WriteCopy(
                        entity=entity.id,
                        generation=number,
                        reason=ReasonCode.NEW_GENERATION,
                        message=f"copy of the new generation{over}",
                        target=target.name,
                        path=path,
                        role=target.role,
                    )
                )
                continue
            ctx = CopyContext(
                target=target,
                path=path,
                generation=held.generation,
                observed=p.observed.files.get((target.name, path)),
                recorded=_recorded_here(p, entity, target, path),
                profile=entity.key.profile,
                password_id=password_id,
                friendly_name=held.designation,
                foreign=p.observed.foreign.get((target.name, path)),
                source_changed=entity.id in p.desired.password_sources_changed,
            )
            reason = first_reason(COPY_CHECKS, ctx)
            facts = ctx.observed
            if facts is not None and facts.mode_fixed:
                p.fixed_modes.setdefault(target.name, (target.path, facts.mode))
            if reason is not None and reason.code == ReasonCode.CONFLICT:
                p.conflict_action(entity, number, target.name, path, reason.message)
            elif (
                reason is not None
                and p.desired.moved_from is not None
                and reason.code != ReasonCode.MISSING
            ):
                # Away from home, a file at a recorded path may be the original tree's
                # copy (absolute target paths): it is not rewritten either.
                p.moved_away += 1
            elif reason is not None:
                p.actions.append(
                    WriteCopy(
                        entity=entity.id,
                        generation=number,
                        reason=reason.code,
                        message=reason.message,
                        target=target.name,
                        path=path,
                        role=target.role,
                    )
                )
    places = WantedPlaces(lambda: _wanted_places(p, entity, keep, archive))
    remove_unwanted(p, entity, places, wanted_paths, retiring)


def remove_unwanted(
    p: Planning,
    entity: Entity,
    places: WantedPlaces,
    wanted_paths: set[tuple[str, str]],
    retiring: set[str],
) -> None:
    """Remove the recorded copies no longer wanted, while they are what was written. Never
    a file another declared target holds as its copy (`places`: a target renamed, a folder
    spelt through a symlink): only the old record goes; and never a live copy while a target
    of its role that would hold it instead was not observed (it stays until that one is)."""
    declared = {t.name: t for t in entity.targets}
    unseen: dict[str, list[str]] = {}  # role -> its declared targets not observed
    for t in entity.targets:
        if t.name in p.observed.unreachable:
            unseen.setdefault(t.role, []).append(t.name)
    held_back = 0
    for copy in sorted(p.copies_of(entity.id), key=lambda c: (c.target, c.path)):
        if (copy.target, copy.path) in wanted_paths or copy.target in p.observed.unreachable:
            continue
        if not p.desired.covers(entity.id, copy.target):
            continue  # outside the --limit: not observed, never removed
        generation = p.recorded.generation(copy.generation_id)
        number = generation.number if generation else 0
        old = generation is None or generation.status == RETIRED or generation.id in retiring
        holder = declared.get(copy.target)
        if holder is not None and holder.role == "location" and old:
            continue  # shared locations keep every generation: the copy that is never lost
        if holder is None:
            code = ReasonCode.DECOMMISSIONED
            message = "the target is no longer declared for the entity"
        elif old:
            code = ReasonCode.RETIRED
            message = "the generation is retired; the key stays in the escrow"
        elif file_name(copy.path) != copy_file_name(entity.id, number):
            code = ReasonCode.MOVED
            message = (
                f"a copy of generation {number} under another name (renamed on the target?): "
                "the copy under its own name holds its key"
            )
        else:
            code, message = ReasonCode.MOVED, "the target's folder changed"
        where = _record_place(p, copy)
        owner = places.get(where) if where is not None else None
        if owner is not None and owner != (copy.target, copy.path):
            p.actions.append(
                RemoveCopy(
                    entity=entity.id,
                    generation=number,
                    reason=ReasonCode.SAME_FILE,
                    message=f"the file is {owner[0]}'s copy at {owner[1]} now (one file under "
                    "another target name or path): only this record goes, the file stays",
                    target=copy.target,
                    path=copy.path,
                    observed_sha256=p.observed_sha256(copy.target, copy.path),
                    keeps_file=True,
                )
            )
            continue
        if not p.removable(entity, copy, number):
            continue
        role = p.role_of(copy.target)
        if role is not None and unseen.get(role) and (role == "location" or not old):
            held_back += 1
            continue
        p.actions.append(
            RemoveCopy(
                entity=entity.id,
                generation=number,
                reason=code,
                message=message,
                target=copy.target,
                path=copy.path,
                observed_sha256=p.observed_sha256(copy.target, copy.path),
            )
        )
    if held_back:
        names = sorted({n for names in unseen.values() for n in names})
        p.warnings.append(
            PlanWarning(
                entity.id,
                WarningCode.REMOVALS_HELD,
                f"{held_back} removal{'s' if held_back > 1 else ''} held back while "
                + ", ".join(names)
                + " could not be observed: the old copies stay until the targets that "
                "should hold them instead are seen",
            )
        )


Place = tuple[object, ...]


def _recorded_here(p: Planning, entity: Entity, target: Target, path: str) -> RecordedCopy | None:
    """The record of the copy at `path`: under this target's name, else, for a file this
    state wrote under another name for the same place (a target renamed, its folder spelt
    anew) that changed since, that record: the file is this state's, and the change is drift
    to repair, not a file someone else put there."""
    found = p.recorded.copies.get((target.name, path))
    facts = p.observed.files.get((target.name, path))
    if found is not None or facts is None:
        return found
    here = _place(p, target, path)
    for c in p.copies_of(entity.id):
        # As written: `unrecorded` rewrites it under this name (one apply, no drift to say).
        if _record_place(p, c) == here and c.sha256 != facts.sha256:
            return c
    return None


def _record_place(p: Planning, copy: RecordedCopy) -> Place | None:
    """Where a recorded copy is, its target as the manifest declares it now, else as the
    state last recorded it (None: a target known to neither)."""
    was = resolve_target(p.desired, p.recorded, copy.target)
    return _place(p, was, copy.path) if was is not None else None


class WantedPlaces:
    """Where the entity's declared targets hold their copies -> (target, path), worked out
    at the first question: a plan with nothing to remove (a no-op plan) never asks."""

    def __init__(self, make: Callable[[], dict[Place, tuple[str, str]]]) -> None:
        self._make = make
        self._found: dict[Place, tuple[str, str]] | None = None

    def get(self, place: Place) -> tuple[str, str] | None:
        if self._found is None:
            self._found = self._make()
        return self._found.get(place)


def _place(p: Planning, target: Target, path: str) -> Place:
    """Where a file is, whatever the target is called: its folder's identity (the device and
    inode a local folder was observed with; else host, port, share and the normalised path)
    and its name."""
    facts = p.observed.folders.get((target.name, folder_of(target, path)))
    if facts is not None and facts.identity is not None:
        return ("inode", *facts.identity, file_name(path))
    kind = kind_of(target)
    folder = replace(target, path=kind.dirname(path))
    return (*kind.folder_key(folder, os.path.normpath), file_name(path))


def _wanted_places(
    p: Planning, entity: Entity, keep: list[Fresh | Kept], archive: list[Fresh | Kept]
) -> dict[Place, tuple[str, str]]:
    """The place of every copy the entity's declared targets hold -> (target, path)."""
    out: dict[Place, tuple[str, str]] = {}
    for target in entity.targets:
        for h in keep + archive if target.role == "location" else keep:
            path = file_path(target, copy_file_name(entity.id, h.number))
            out[_place(p, target, path)] = (target.name, path)
    return out
