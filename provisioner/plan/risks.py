"""Warnings about keys and the consultations bound to them: dates that put bids at risk, a
bound generation no workstation holds or missing from a target, a renewal coming. Pure."""

from __future__ import annotations

import datetime as dt

from provisioner import clock
from provisioner.codes import WarningCode
from provisioner.consultations import split_key_ref
from provisioner.manifest.model import Entity, Target
from provisioner.plan.actions import Action, Conflict, CreateGeneration, RemoveCopy, WriteCopy
from provisioner.plan.bindings import names
from provisioner.plan.context import Planning
from provisioner.plan.model import ConsultationView, PlanWarning
from provisioner.plan.paths import copy_file_name
from provisioner.state.records import RecordedGeneration
from provisioner.transports.base import file_path


def warn(p: Planning, entity: Entity, actions: list[Action]) -> None:
    """Warnings about keys and consultations, each with the consultation and its dates;
    `actions` are the entity's own, planned just before."""
    if entity.state != "present":
        return
    planned = {(a.target, a.generation) for a in actions if isinstance(a, WriteCopy)}
    removed = {
        (a.target, a.path) for a in actions if isinstance(a, RemoveCopy) and not a.keeps_file
    }
    for g in p.recorded.generations_of(entity.id):
        views = p.holders.get(g.id, [])
        for view in views:
            warn_dates(p, entity, g, view)
        if views:
            held = any(
                c.generation_id == g.id
                and p.role_of(c.target) == "workstation"
                and (c.target, c.path) not in removed
                for c in p.recorded.copies_of(entity.id)
            ) or any((t.name, g.number) in planned for t in entity.workstations)
            if not held:
                p.warnings.append(
                    PlanWarning(
                        entity.id,
                        WarningCode.BOUND_UNHELD,
                        f'generation {g.number} "{g.designation}" is bound to '
                        + ", ".join(v.describe() for v in views)
                        + " but no workstation holds it: no agent could open those bids",
                    )
                )
            for target in missing_from(p, entity, g) if held else ():
                where = (
                    f"workstation {target.name}: no agent there could open those bids"
                    if target.role == "workstation"
                    else f"shared location {target.name}: the copy that must never be "
                    "lost is not there"
                )
                p.warnings.append(
                    PlanWarning(
                        entity.id,
                        WarningCode.BOUND_MISSING,
                        f'generation {g.number} "{g.designation}" is bound to '
                        + ", ".join(v.describe() for v in views)
                        + f" but is missing from {where} (apply restores it)",
                    )
                )
            for target in changed_on(p, entity, g, actions) if held else ():
                repair = " (apply rewrites it)" if (target.name, g.number) in planned else ""
                p.warnings.append(
                    PlanWarning(
                        entity.id,
                        WarningCode.BOUND_MISSING,
                        f'generation {g.number} "{g.designation}" is bound to '
                        + ", ".join(v.describe() for v in views)
                        + f" but its copy on {target.role} {target.name} changed since it was "
                        f"written: not known to open those bids{repair}",
                    )
                )
    current = p.recorded.current(entity.id)
    renewing = any(isinstance(a, CreateGeneration) for a in actions)
    held = any(isinstance(a, Conflict) for a in actions)
    if current is not None and not renewing:
        renew_on = entity.key.renewal_date(current.not_after)
        if held and renew_on <= p.now:
            p.warnings.append(
                PlanWarning(
                    entity.id,
                    WarningCode.RENEWAL_SOON,
                    f'generation {current.number} "{current.designation}" expires on '
                    f"{current.not_after:%Y-%m-%d} and its renewal date "
                    f"({renew_on:%Y-%m-%d}) has passed, but apply makes no new generation "
                    "while the entity has a conflict: run provisioner recover if the state "
                    "was lost or restored, else move the conflicting files away",
                )
            )
        elif renew_on - p.now <= dt.timedelta(days=p.desired.notice_days):
            p.warnings.append(
                PlanWarning(
                    entity.id,
                    WarningCode.RENEWAL_SOON,
                    f'generation {current.number} "{current.designation}" expires on '
                    f"{current.not_after:%Y-%m-%d}; a new generation will be created "
                    + (
                        f"from {renew_on:%Y-%m-%d}"
                        if renew_on > p.now
                        else "by the next apply (its renewal date, "
                        f"{renew_on:%Y-%m-%d}, has passed)"
                    )
                    + ": plan its upload to the platform",
                )
            )


def missing_from(p: Planning, entity: Entity, g: RecordedGeneration) -> list[Target]:
    """The reachable workstations and shared locations of `entity` observed without
    generation `g`'s copy. Every generation's path is observed on every reachable target a
    run covers (plan/paths.py), retired ones included; what was not looked at is not said
    missing."""
    out = []
    for t in entity.targets:
        if t.name in p.observed.unreachable or not p.desired.covers(entity.id, t.name):
            continue
        key = (t.name, file_path(t, copy_file_name(entity.id, g.number)))
        if key in p.observed.files and p.observed.files[key] is None:
            out.append(t)
    return out


def changed_on(
    p: Planning, entity: Entity, g: RecordedGeneration, actions: list[Action]
) -> list[Target]:
    """The reachable targets of `entity` whose recorded copy of generation `g` changed since
    it was written and is not known to hold its key (emptied, truncated, another copy put
    over it): as good as missing to whoever opens the bids. A file in conflict is reported
    as such (check.py)."""
    conflicts = {(a.target, a.path) for a in actions if isinstance(a, Conflict)}
    ours = {c.sha256 for c in p.recorded.copies_of(entity.id) if c.generation_id == g.id}
    out = []
    for t in entity.targets:
        key = (t.name, file_path(t, copy_file_name(entity.id, g.number)))
        record = p.recorded.copies.get(key)
        facts = p.observed.files.get(key)
        if t.name in p.observed.unreachable or key in conflicts or record is None:
            continue
        if not p.desired.covers(entity.id, t.name):
            continue
        if record.generation_id != g.id or facts is None or facts.sha256 in ours:
            continue
        inside = p.observed.foreign.get(key)
        if inside is None or not (inside.readable and inside.key_sha256 == g.key_sha256):
            out.append(t)
    return out


def warn_dates(p: Planning, entity: Entity, g: RecordedGeneration, view: ConsultationView) -> None:
    """Dates that put a bound generation at risk; the severity is in the code (check.py):
    at risk while bids can be deposited or before the opening, else a reminder."""
    # A date without a time covers its whole day (clock.until).
    deadline = clock.until(view.deadline) if view.deadline is not None else None
    opening = clock.until(view.opening) if view.opening is not None else None
    accepting = view.status == "open" and (deadline is None or p.now < deadline)
    before_opening = opening is not None and p.now < opening
    name = f'generation {g.number} "{g.designation}"'
    if g.not_after <= p.now:
        if accepting:
            code = WarningCode.EXPIRED_ACCEPTING_BIDS
            risk = "still accepts bids: companies cannot encrypt to an expired certificate"
        elif before_opening:
            code, risk = WarningCode.EXPIRED_BEFORE_OPENING, "has not been opened yet"
        else:
            code, risk = WarningCode.EXPIRED_BOUND, f"is still {view.status}"
        p.warnings.append(
            PlanWarning(
                entity.id,
                code,
                f"{name} expired on {g.not_after:%Y-%m-%d}; consultation {view.describe()}, "
                f"bound to it, {risk}. Keep this key to open its bids; new consultations "
                "must use the current generation",
            )
        )
        return
    for code, label, when, live in (
        (WarningCode.EXPIRES_BEFORE_DEADLINE, "deadline for bids", deadline, accepting),
        (WarningCode.EXPIRES_BEFORE_OPENING, "opening", opening, before_opening),
    ):
        if live and when is not None and g.not_after < when:
            p.warnings.append(
                PlanWarning(
                    entity.id,
                    code,
                    f"{name} expires on {g.not_after:%Y-%m-%d}, before the {label} of "
                    f"consultation {view.describe()} on {clock.day(when)}",
                )
            )
            return


def warn_unmanaged(p: Planning) -> None:
    """The consultations not closed bound to a key this tool does not manage, loudly when a key
    of ours has its name: one this apply creates, or one made before and renamed since, is
    never it (the consultation was made with a key that existed then). Also the generations
    kept on the workstations because they may be that key."""
    for view in p.bindings.views:
        if not view.is_open or view.generation_id is not None:
            continue
        kind, value = split_key_ref(view.key_ref)
        created = sorted(
            {
                (a.generation, a.designation)
                for a in p.actions
                if isinstance(a, CreateGeneration)
                and a.entity == view.entity
                and value.casefold() in (a.designation.casefold(), a.common_name.casefold())
            }
        )
        renamed = sorted(
            (g.number, g.designation)
            for g in p.recorded.generations_of(view.entity)
            if kind == "designation" and names(p.recorded, g, view.key_ref)
        )
        kept = sorted(
            g.number
            for g in p.recorded.generations_of(view.entity)
            if any(v.reference == view.reference for v in p.bindings.unsure.get(g.id, ()))
        )
        message = f"consultation {view.describe()} is bound to {view.key_ref}, a key this tool "
        if created:
            message += (
                "does not manage; this apply creates "
                + ", ".join(f'generation {n} "{d}"' for n, d in created)
                + " with that name, which is NOT that key: the consultation was made on the "
                "platform before it existed, so its bids are encrypted to a key of that name "
                "made elsewhere, and the new one cannot open them. Adopt that key "
                "(provisioner adopt … --retained) so that it is escrowed and distributed"
            )
        else:
            message += (
                "does not manage: adopt it (provisioner adopt … --retained) so that it is "
                "escrowed and distributed"
            )
        if renamed:
            message += (
                "; "
                + ", ".join(f'generation {n} "{d}"' for n, d in renamed)
                + (" shares" if len(renamed) == 1 else " share")
                + " the name but got it after the binding: not that key, the bids are "
                "encrypted to the platform's key"
            )
        if kept:
            message += (
                "; kept on the workstations until it closes, since it may be that key: "
                + ", ".join(f"generation {n}" for n in kept)
                + " (if it is one of them, name it in the consultations file by its "
                "certificate's SHA-256 fingerprint to bind it)"
            )
        p.warnings.append(
            PlanWarning(
                view.entity, WarningCode.UNMANAGED_KEY, message, view.opening or view.deadline
            )
        )
