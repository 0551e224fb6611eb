"""plan(desired, recorded, observed, now) -> Plan. Pure: no file, network or clock access.

This module decides each entity's generations (create, rename, retain, retire) and the order
of a plan; copies.py decides the copies and escrow restores, risks.py the warnings about bound
keys, bindings.py the consultations, folders.py the target folders."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from provisioner.codes import WarningCode
from provisioner.manifest.model import Entity, Target
from provisioner.plan.actions import (
    Action,
    BindConsultation,
    Conflict,
    CreateGeneration,
    ReasonCode,
    RemoveCopy,
    RenameGeneration,
    RestoreEscrow,
    RetainGeneration,
    RetireGeneration,
    UpdateChain,
    UpdateConsultation,
    WriteCopy,
)
from provisioner.plan.bindings import designation_among
from provisioner.plan.context import Fresh, Kept, Planning
from provisioner.plan.copies import (
    check_escrow,
    later_path_conflicts,
    next_path_conflicts,
    plan_copies,
)
from provisioner.plan.folders import plan_folders
from provisioner.plan.model import Desired, Observed, Plan, PlanWarning, Unreached
from provisioner.plan.paths import (
    LIVE,
    copy_file_name,
    next_number,
    parse_copy_name,
    paths_to_observe,
    resolve_target,
)
from provisioner.plan.policies import GENERATION_CHECKS, GenerationContext, first_reason
from provisioner.plan.risks import warn, warn_unmanaged
from provisioner.state.records import CURRENT, RETAINED, RETIRED, Recorded, RecordedGeneration
from provisioner.wording import counted

__all__ = [  # where copies go: kept importable from here (engine, recover, rehearse)
    "copy_file_name",
    "next_number",
    "parse_copy_name",
    "paths_to_observe",
    "plan",
    "resolve_target",
]


def one_folder_twice(desired: Desired, observed: Observed) -> list[str]:
    """Two declared targets observed to be one folder (the same device and inode: a bind
    mount, one disk mounted twice), which `validate` cannot see from their paths: a write on
    one replaces the other's copy and a removal on one deletes it."""
    seen: dict[tuple[int, int], Target] = {}
    out = []
    manifest = desired.manifest
    for target in (*manifest.locations.values(), *manifest.workstations.values()):
        facts = observed.folders.get((target.name, target.path))
        if facts is None or facts.identity is None:
            continue
        first = seen.setdefault(facts.identity, target)
        if first is not target:
            out.append(
                f"{target.location}: {target.role} '{target.name}' ({target.path}) is the folder "
                f"of {first.role} '{first.name}' ({first.path}), one folder reached by two "
                "paths (a bind mount, a disk mounted twice): two targets may not share a "
                "folder, a removal on one would delete the other's copy"
            )
    return out


def plan(desired: Desired, recorded: Recorded, observed: Observed, now: dt.datetime) -> Plan:
    """Decide what apply must do to make the targets and state match the manifest."""
    p = Planning(desired, recorded, observed, now)
    # A run limited to some of an entity's targets records no binding for it (below).
    held_bindings = [a for a in p.bindings.actions if desired.partial(a.entity)]
    p.actions.extend(a for a in p.bindings.actions if not desired.partial(a.entity))
    p.refusals.extend(p.bindings.refusals)
    p.refusals.extend(one_folder_twice(desired, observed))
    for entity in desired.manifest.entities:
        if desired.in_scope(entity.id):
            before = len(p.actions)
            if entity.state == "absent":
                absent(p, entity)
            else:
                present(p, entity)
            mine = p.actions[before:]
            if any(isinstance(a, Conflict) for a in mine):
                # Not ours, not touched: the conflicting paths are left alone, and so is
                # everything that rests on the state being current (new generations,
                # retirements, removals). Repairs of known generations' copies at free
                # paths and escrow restores still go ahead: they can lose nothing.
                p.actions[before:] = [a for a in mine if _safe_beside_conflict(a)]
            held: list[Action] = [a for a in held_bindings if a.entity == entity.id]
            copies = 0
            if desired.partial(entity.id):
                wide, copies = hold_for_limit(p, before)
                held += wide
            if held:
                p.warnings.append(limit_held(entity, held, copies))
            elif len(p.actions) == before:
                p.in_sync.append(sync_line(p, entity))
            warn(p, entity, p.actions[before:])
    declared = {e.id for e in desired.manifest.entities}
    for entity_id in sorted({g.entity for g in recorded.generations} - declared):
        bound = [g for g in recorded.generations_of(entity_id) if g.id in p.holders]
        if bound and desired.in_scope(entity_id):
            # Left alone, its bound copies would be neither kept nor restored: refused, as
            # `state: absent` of a bound entity is.
            p.refusals.append(
                f"{desired.manifest.path}: entity {entity_id} is in the state but not in the "
                "manifest, but " + p.at_stake(bound) + ". Put its entity block back; once "
                "those consultations are closed, declare it with `state: absent` to remove "
                "its copies."
            )
        if desired.in_scope(entity_id) and any(
            g.status in LIVE for g in recorded.generations_of(entity_id)
        ):
            p.warnings.append(
                PlanWarning(
                    entity_id,
                    WarningCode.ORPHANED,
                    "in the state but not in the manifest: nothing is changed for it; "
                    "declare it with `state: absent` to remove its copies",
                )
            )
    for name, (folder, mode) in sorted(p.fixed_modes.items()):
        p.warnings.append(
            PlanWarning(
                None,
                WarningCode.MODE_FIXED,
                f"{name}: the filesystem holding {folder} fixes file modes (a CIFS mount's "
                f"file_mode, a FAT disk): its copies show mode {mode:04o}, which chmod "
                "cannot change, so who may read them is neither checked nor set here; "
                "declare the share with `transport: smb` to set and check each copy's ACL",
            )
        )
    if p.moved_away:
        p.warnings.append(
            PlanWarning(
                None,
                WarningCode.COPIED_TREE,
                f"this state was made in {desired.moved_from} and is used from "
                f"elsewhere (a copied or moved tree): {p.moved_away} removal"
                f"{'s or rewrites are' if p.moved_away > 1 else ' or rewrite is'} held "
                "back, since the copies it recorded may be the original tree's. If the "
                "tree was moved, not copied, run `provisioner recover --moved MANIFEST` to "
                "make this its home",
            )
        )
    p.actions.extend(
        plan_folders(desired, observed, lambda name: resolve_target(desired, recorded, name))
    )
    unreached = tuple(
        Unreached(name, reason) for name, reason in sorted(observed.unreachable.items())
    )
    warn_unmanaged(p)
    return Plan(
        now,
        tuple(p.actions),
        tuple(p.warnings),
        unreached,
        tuple(p.in_sync),
        tuple(p.refusals),
        tuple(p.bindings.views),
    )


def absent(p: Planning, entity: Entity) -> None:
    bound = [g for g in p.recorded.generations_of(entity.id) if g.id in p.holders]
    if bound:
        p.refusals.append(
            f"{entity.location}: entity {entity.id} is marked absent, but "
            + p.at_stake(bound)
            + ". Its keys must stay until those consultations are "
            "closed: mark them closed in the consultations file first."
        )
        return
    # A generation whose key the escrow lost keeps every copy it has: they may be the last
    # holders of that key (an absent entity's password is not read, so apply cannot take it
    # back from them; declaring the entity present again does).
    escrowed = p.observed.escrow_keys
    unescrowed = {
        g.id: g
        for g in p.recorded.generations_of(entity.id)
        if escrowed is not None and g.key_sha256 not in escrowed
    }
    for g in unescrowed.values():
        p.warnings.append(
            PlanWarning(
                entity.id,
                WarningCode.ESCROW_MISSING,
                f"generation {g.number}'s private key is missing from the escrow: its copies "
                "are kept although the entity is marked absent; declare it present for one "
                "apply to take the key back, or restore the escrow from a backup",
            )
        )
    for copy in sorted(p.copies_of(entity.id), key=lambda c: (c.target, c.path)):
        if copy.target in p.observed.unreachable or not p.desired.covers(entity.id, copy.target):
            continue
        if p.role_of(copy.target) == "location":
            continue  # shared locations keep every generation, the entity's included
        if copy.generation_id in unescrowed:
            continue
        generation = p.recorded.generation(copy.generation_id)
        number = generation.number if generation else 0
        if not p.removable(entity, copy, number):
            continue
        p.actions.append(
            RemoveCopy(
                entity=entity.id,
                generation=number,
                reason=ReasonCode.ENTITY_ABSENT,
                message="the entity is marked absent (shared locations keep their copies)",
                target=copy.target,
                path=copy.path,
                observed_sha256=p.observed_sha256(copy.target, copy.path),
            )
        )
    for g in p.recorded.generations_of(entity.id):
        if g.status in LIVE:
            p.actions.append(
                RetireGeneration(
                    entity=entity.id,
                    generation=g.number,
                    reason=ReasonCode.ENTITY_ABSENT,
                    message="the entity is marked absent; the key stays in the escrow",
                    designation=g.designation,
                )
            )


def present(p: Planning, entity: Entity) -> None:
    current = p.recorded.current(entity.id)
    reason = first_reason(GENERATION_CHECKS, GenerationContext(entity, current, p.now))
    unseen = [t.name for t in entity.targets if t.name in p.observed.unreachable]
    blind = bool(unseen) and len(unseen) == len(entity.targets)
    if reason is not None and blind and not p.recorded.generations_of(entity.id):
        # Observe, do not assume: a first key is made only when one of the entity's targets
        # was seen (one holding a lost state's copies is a conflict); with none reached, the
        # keys of a lost state may all be out of sight.
        p.warnings.append(
            PlanWarning(
                entity.id,
                WarningCode.FIRST_KEY_HELD,
                "no bi-clé is made while none of its targets is reached ("
                + ", ".join(unseen)
                + "): they may hold the keys of a lost state; apply again when they are",
            )
        )
        reason = None
    keep: list[Fresh | Kept] = []
    retiring: set[str] = set()
    if reason is not None:
        number = next_number(p.recorded, entity.id)
        designation = unique_designation(p, entity, number, p.now.year, None)
        spec = entity.key
        keeps = replaces = None
        if current is not None and current.id in p.holders:
            keeps = current.number
            retain(p, entity, current, "stays beside the new generation")
            # A new designation in the manifest renames the outgoing generation a consultation
            # holds too (its copies rewritten with it): the operator renamed it on the platform
            # as the plan said, and a file exported since names it so (as_renamed binds by it).
            outgoing = current.designation
            if current.origin != "adopted":
                outgoing = rename_current(p, entity, current)
            keep.append(Kept(current, outgoing))
        elif current is not None:
            replaces = current.number
            retiring.add(current.id)
        p.actions.append(
            CreateGeneration(
                entity=entity.id,
                generation=number,
                reason=reason.code,
                message=reason.message,
                designation=designation,
                common_name=designation
                if spec.common_name is None
                else spec.common_name_for(number, p.now.year),
                key_size=spec.size,
                issuer=spec.issuer,
                not_after=p.now + dt.timedelta(days=spec.validity_days),
                profile=spec.profile,
                keeps=keeps,
                replaces=replaces,
            )
        )
        keep.insert(0, Fresh(number, designation))
    elif current is not None:
        wanted = (
            current.designation
            if current.origin == "adopted"
            else rename_current(p, entity, current)
        )
        keep.append(Kept(current, wanted))
    if reason is None:
        next_path_conflicts(p, entity)
    later_path_conflicts(p, entity)
    check_escrow(p, entity)
    keep = [with_new_chain(p, entity, held) for held in keep]
    for g in p.recorded.generations_of(entity.id):
        if g.status == CURRENT:
            continue
        if g.id in p.holders:
            if g.status == RETIRED:
                retain(p, entity, g, "is brought back to the workstations")
            keep.append(with_new_chain(p, entity, Kept(g, g.designation)))
        elif g.status == RETAINED and not any(
            c.generation_id == g.id for c in p.recorded.consultations.values()
        ):
            # Retained, yet no consultation this state records was bound to it: the bindings
            # were lost (a recovered state; bindings given with --consultations only). Observe,
            # do not assume: it stays on the workstations until they are recorded again.
            keep.append(with_new_chain(p, entity, Kept(g, g.designation)))
            p.warnings.append(
                PlanWarning(
                    entity.id,
                    WarningCode.BINDINGS_UNKNOWN,
                    f'generation {g.number} "{g.designation}" is retained, but no consultation '
                    "this state records was ever bound to it (the bindings were lost with a "
                    "state, or given with --consultations to a run this state does not "
                    "remember): it stays on the workstations; give the consultations file "
                    "(the manifest's `consultations:` or --consultations) so that they are "
                    "recorded again",
                )
            )
        elif g.status == RETAINED:
            p.actions.append(
                RetireGeneration(
                    entity=entity.id,
                    generation=g.number,
                    reason=ReasonCode.UNBOUND,
                    message="no open consultation holds this generation any more; the key "
                    "stays in the escrow and on the shared locations",
                    designation=g.designation,
                )
            )
            retiring.add(g.id)
    bound = [h.generation for h in keep if isinstance(h, Kept) and h.generation.id in p.holders]
    if bound:
        for role, label, declared in (
            ("workstation", "workstation", entity.workstations),
            ("location", "shared location", entity.shared_locations),
        ):
            held = any(p.role_of(c.target) == role for c in p.recorded.copies_of(entity.id))
            if not declared and held:
                p.refusals.append(
                    f"{entity.location}: entity {entity.id} declares no {label} any more, "
                    f"but " + p.at_stake(bound) + f". Removing its last {label} is "
                    "refused until those consultations are closed."
                )
                return
    plan_copies(p, entity, keep, retiring)


def rename_current(p: Planning, entity: Entity, current: RecordedGeneration) -> str:
    """The designation the manifest gives the current generation, with the action that
    records it when it differs from the recorded one."""
    wanted = unique_designation(p, entity, current.number, current.created_at.year, current.id)
    if current.designation != wanted:
        p.actions.append(
            RenameGeneration(
                entity=entity.id,
                generation=current.number,
                reason=ReasonCode.FRIENDLY_NAME_CHANGED,
                message=f"designation {current.designation!r} -> {wanted!r}; update it on "
                "the platform too",
                designation=wanted,
            )
        )
    return wanted


def unique_designation(
    p: Planning, entity: Entity, number: int, year: int, itself: str | None
) -> str:
    """The manifest's designation for generation `number`, unique among the entity's names."""
    return designation_among(p.recorded, entity, number, year, itself)


def with_new_chain(p: Planning, entity: Entity, held: Fresh | Kept) -> Fresh | Kept:
    """`held`, with the renewed chain of its issuer when there is one (and the action)."""
    if isinstance(held, Fresh) or held.generation.id not in p.desired.chain_updates:
        return held
    g = held.generation
    pem, digest = p.desired.chain_updates[g.id]
    p.actions.append(
        UpdateChain(
            entity=entity.id,
            generation=g.number,
            reason=ReasonCode.CHAIN_CHANGED,
            message=f"the certificate of issuer {g.issuer} was renewed with the same key: the "
            "copies carry the new chain (same bi-clé, re-encoded)",
            chain_pem=pem,
            chain_sha256=digest,
        )
    )
    return Kept(replace(g, chain=pem, chain_sha256=digest), held.designation)


def retain(p: Planning, entity: Entity, g: RecordedGeneration, what: str) -> None:
    views = p.holders[g.id]
    p.actions.append(
        RetainGeneration(
            entity=entity.id,
            generation=g.number,
            reason=ReasonCode.BOUND_TO_OPEN_CONSULTATION,
            message=f"generation {g.number} {what}: consultations "
            + ", ".join(v.describe() for v in views)
            + " still need it to open their bids",
            designation=g.designation,
            consultations=tuple(v.reference for v in views),
        )
    )


def sync_line(p: Planning, entity: Entity) -> str:
    if entity.state == "absent":
        return (
            f"{entity.id}: absent, on no workstation (its shared locations keep every generation)"
        )
    current = p.recorded.current(entity.id)
    if current is None:
        return f"{entity.id}: no generation and no reachable target"
    days = (current.not_after - p.now).days
    held = sum(
        1
        for c in p.copies_of(entity.id)
        if c.generation_id == current.id and p.desired.covers(entity.id, c.target)
    )
    renew = entity.key.renewal_date(current.not_after)
    return (
        f'{entity.id}: generation {current.number} "{current.designation}" valid until '
        f"{current.not_after:%Y-%m-%d} ({counted(days, 'day')}; renewal from {renew:%Y-%m-%d}), "
        f"{counted(held, 'copy matches', 'copies match')} what was written"
    )


# What concerns every target of an entity: a run limited to some of them does none of it.
ENTITY_WIDE = (
    CreateGeneration,
    RenameGeneration,
    RetainGeneration,
    RetireGeneration,
    UpdateChain,
    BindConsultation,
    UpdateConsultation,
)


def hold_for_limit(p: Planning, before: int) -> tuple[list[Action], int]:
    """For an entity in a --limit through some of its targets only: its entity-wide actions
    (a new generation, a retirement, a rename...) are held back, and with them every copy
    action, planned as though they happened. Conflicts are still shown and escrow restores
    (from a copy within the limit) still done. Returns what is held, and how many copy
    actions with it."""
    mine = p.actions[before:]
    wide: list[Action] = [a for a in mine if isinstance(a, ENTITY_WIDE)]
    if not wide:
        return [], 0
    kept = [a for a in mine if isinstance(a, Conflict | RestoreEscrow)]
    p.actions[before:] = kept
    return wide, len(mine) - len(wide) - len(kept)


def limit_held(entity: Entity, held: list[Action], copies: int) -> PlanWarning:
    what = ", ".join(
        f"{a.kind} {a.reference}"
        if isinstance(a, BindConsultation | UpdateConsultation)
        else f"{a.kind} g{a.generation} [{a.reason}]"
        for a in held
    )
    with_copies = f" (and {counted(copies, 'copy change')} planned with it)" if copies else ""
    return PlanWarning(
        entity.id,
        WarningCode.LIMIT_HELD,
        f"{what}{with_copies}: held back, since --limit names only some of its targets and "
        f"this concerns all of them; run with --limit {entity.id}, or without --limit",
    )


def _safe_beside_conflict(action: Action) -> bool:
    if isinstance(action, Conflict | RestoreEscrow | RenameGeneration):
        return True  # a rename changes the state only
    return isinstance(action, WriteCopy) and action.reason != ReasonCode.NEW_GENERATION
