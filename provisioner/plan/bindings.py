"""Consultation bindings: merge the consultations file with the state's definitive records.

Pure. A consultation seen for the first time is bound (recorded) by the next apply; a known one
may change status, title or dates but never its key: a different key is a refusal naming both.
A consultation missing from the file keeps its last known status; it is never assumed closed,
and a date the file no longer gives keeps its recorded value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from provisioner.consultations import Consultation, split_key_ref
from provisioner.manifest.model import Entity
from provisioner.plan.actions import BindConsultation, ReasonCode, UpdateConsultation
from provisioner.plan.model import ConsultationView, Desired
from provisioner.state.records import (
    RETIRED,
    Recorded,
    RecordedConsultation,
    RecordedGeneration,
)


@dataclass
class Bindings:
    views: list[ConsultationView] = field(default_factory=list)
    actions: list[BindConsultation | UpdateConsultation] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    # Generation id -> the open consultations bound to a key this tool does not manage that
    # this generation may nevertheless be (it existed when they were bound, see may_hold).
    unsure: dict[str, list[ConsultationView]] = field(default_factory=dict)

    def holders(self) -> dict[str, list[ConsultationView]]:
        """Generation id -> the consultations not closed that keep it alive: those bound to
        it, and the unmanaged bindings it may be the key of."""
        out: dict[str, list[ConsultationView]] = {}
        for view in self.views:
            if view.is_open and view.generation_id is not None:
                out.setdefault(view.generation_id, []).append(view)
        for generation_id, views in self.unsure.items():
            out.setdefault(generation_id, []).extend(views)
        return out


def find_generation(recorded: Recorded, entity: str, key_ref: str) -> RecordedGeneration | None:
    return find_generation_in(
        recorded.generations_of(entity), entity, key_ref, recorded.designations
    )


def find_generation_in(
    generations: Iterable[RecordedGeneration],
    entity: str,
    key_ref: str,
    history: Mapping[str, tuple[str, ...]],
) -> RecordedGeneration | None:
    """The generation of `entity` a key reference (designation or fingerprint) names: by its
    certificate, else by its current designation, else by a designation it had before, else
    by the common name inside its certificate when exactly one generation has it."""
    kind, value = split_key_ref(key_ref)
    ordered = sorted((g for g in generations if g.entity == entity), key=lambda g: g.number)
    for g in ordered:
        if kind == "sha256" and g.cert_sha256 == value:
            return g
        if kind == "designation" and g.designation.casefold() == value.casefold():
            return g
    if kind == "designation":
        for g in ordered:
            if any(d.casefold() == value.casefold() for d in history.get(g.id, ())):
                return g
        # The certificate's own name: a designation renamed while its history was lost (a
        # recovered state) still names the generation whose certificate carries it, if one.
        by_cn = [g for g in ordered if g.common_name.casefold() == value.casefold()]
        if len(by_cn) == 1:
            return by_cn[0]
    return None


def names(recorded: Recorded, g: RecordedGeneration, key_ref: str) -> bool:
    """Whether `key_ref` refers to `g`: its certificate, or any designation it has had."""
    kind, value = split_key_ref(key_ref)
    if kind == "sha256":
        return g.cert_sha256 == value
    return value.casefold() == g.common_name.casefold() or any(
        d.casefold() == value.casefold() for d in recorded.names_of(g)
    )


def bound_generation(recorded: Recorded, rec: RecordedConsultation) -> RecordedGeneration | None:
    """The generation a recorded consultation is bound to: by identity once managed. A binding
    recorded unmanaged (no generation had its key's name then) becomes managed only by its
    certificate's fingerprint, by an adopted key whose certificate existed when it was bound,
    or by the unique generation made before it was bound whose certificate's CN is its name.
    A name a generation gets later (a rename, a new generation) proves nothing: the bids
    are encrypted to the platform's key."""
    if rec.generation_id is not None:
        return recorded.generation(rec.generation_id)
    generations = recorded.generations_of(rec.entity)
    kind, value = split_key_ref(rec.key_ref)
    if kind == "sha256":
        return next((g for g in generations if g.cert_sha256 == value), None)
    adopted = [g for g in generations if g.origin == "adopted" and existed_before(g, rec.bound_at)]
    found = find_generation_in(adopted, rec.entity, rec.key_ref, recorded.designations)
    if found is not None:
        return found
    by_cn = [
        g
        for g in generations
        if g.origin != "adopted"
        and existed_before(g, rec.bound_at)
        and g.common_name.casefold() == value.casefold()
    ]
    return by_cn[0] if len(by_cn) == 1 else None


def existed_before(g: RecordedGeneration, when: dt.datetime) -> bool:
    """Whether `g`'s key existed before `when`: an adopted key since its certificate, a key
    made here since its creation (a generation created by the apply that records a binding
    has the same instant: it is not before)."""
    return (g.not_before if g.origin == "adopted" else g.created_at) < when


def may_hold(
    recorded: Recorded, g: RecordedGeneration, key_ref: str, bound_at: dt.datetime
) -> bool:
    """Whether `g` may be the key of an unmanaged binding recorded at `bound_at`, so that it
    must stay on the workstations while the consultation is not closed: it existed then, and
    it is still live or has had the binding's name (its designations, its certificate's CN).
    A recovered state lost the former designations: existing is enough for a live one."""
    if not existed_before(g, bound_at):
        return False
    if split_key_ref(key_ref)[0] == "sha256":
        return False  # a known fingerprint is matched by bound_generation
    return g.status != RETIRED or names(recorded, g, key_ref)


def same_binding(recorded: Recorded, rec: RecordedConsultation, c: Consultation) -> bool:
    """Whether the file's entry refers to the key the consultation is bound to."""
    if rec.entity != c.entity:
        return False
    if _same_ref(rec.key_ref, c.key_ref):
        return True
    g = bound_generation(recorded, rec)
    return g is not None and names(recorded, g, c.key_ref)


def _named_by_certificate(
    recorded: Recorded, rec: RecordedConsultation, c: Consultation
) -> RecordedGeneration | None:
    """The generation the file now names by its certificate for a binding recorded unmanaged
    (by a name no generation had, or only one it had before a lost state): the operator's
    decision, taken only for a generation that existed when the binding was recorded."""
    if rec.generation_id is not None or rec.entity != c.entity:
        return None
    kind, value = split_key_ref(c.key_ref)
    if kind != "sha256":
        return None
    return next(
        (
            g
            for g in recorded.generations_of(rec.entity)
            if g.cert_sha256 == value and existed_before(g, rec.bound_at)
        ),
        None,
    )


def _same_ref(a: str, b: str) -> bool:
    """A designation in any case; a certificate fingerprint is always lower-case hex (the
    consultations file's is lowered when read), so one comparison does for both."""
    return a.casefold() == b.casefold()


def describe_ref(recorded: Recorded, entity: str, key_ref: str) -> str:
    g = find_generation(recorded, entity, key_ref)
    if g is not None:
        return describe_generation(recorded, g)
    kind, value = split_key_ref(key_ref)
    return f"the key with {kind} {value!r}"


def describe_generation(recorded: Recorded, g: RecordedGeneration) -> str:
    """`generation 1 "Ville B" (formerly "Ville A"; certificate 0123456789abcdef…)`."""
    former = [d for d in recorded.names_of(g) if d != g.designation]
    was = "formerly " + ", ".join(f'"{d}"' for d in former) + "; " if former else ""
    return f'generation {g.number} "{g.designation}" ({was}certificate {g.cert_sha256[:16]}…)'


def _view(rec: RecordedConsultation, recorded: Recorded) -> ConsultationView:
    g = recorded.generation(rec.generation_id) if rec.generation_id else None
    return _view_of(rec, g, recorded=True)


def _view_of(
    c: Consultation | RecordedConsultation, g: RecordedGeneration | None, *, recorded: bool
) -> ConsultationView:
    """How the plan sees consultation `c` bound to `g` (None: a key not managed)."""
    return ConsultationView(
        c.reference,
        c.entity,
        c.title,
        c.key_ref,
        g.id if g else None,
        g.number if g else 0,
        c.status,
        c.deadline,
        c.opening,
        recorded,
        g.designation if g else "",
    )


ConsultationActionT = TypeVar("ConsultationActionT", BindConsultation, UpdateConsultation)


def _news(
    kind: type[ConsultationActionT],
    c: Consultation | RecordedConsultation,
    generation: int,
    reason: ReasonCode,
    message: str,
    key: str | None = None,
) -> ConsultationActionT:
    """What an apply needs to record a consultation (no secret: names and dates); `key` is the
    reference recorded at binding time, which an update keeps."""
    return kind(
        entity=c.entity,
        generation=generation,
        reason=reason,
        message=message,
        reference=c.reference,
        title=c.title,
        key_ref=key or c.key_ref,
        status=c.status,
        deadline=c.deadline,
        opening=c.opening,
    )


def designation_among(
    recorded: Recorded, entity: Entity, number: int, year: int, itself: str | None
) -> str:
    """The manifest's designation for generation `number`, made unique among the names
    the entity's other generations have had (a `{year}` template repeats within a year):
    a consultation naming it must name one generation."""
    name = entity.key.designation_for(number, year)
    taken = {
        d.casefold()
        for g in recorded.generations_of(entity.id)
        if g.id != itself
        for d in recorded.names_of(g)
    }
    return name if name.casefold() not in taken else f"{name} ({number})"


def planned_designation(recorded: Recorded, entity: Entity) -> str | None:
    """The designation the manifest gives the entity's current generation when it differs
    from the recorded one (the plan renames it), else None. An adopted key keeps its name."""
    current = recorded.current(entity.id)
    if current is None or current.origin == "adopted":
        return None
    wanted = designation_among(
        recorded, entity, current.number, current.created_at.year, current.id
    )
    return wanted if wanted != current.designation else None


def as_renamed(desired: Desired, recorded: Recorded) -> Recorded:
    """`recorded` as this plan's renames leave it: a current generation the manifest renames
    has its new designation, its former ones kept in its history. A consultations file
    exported after the operator renamed the key on the platform already names it so: that
    name is the generation's, not a key this tool does not manage. (When the same apply renews
    it, the planner records the new name for the outgoing generation as long as a
    consultation holds it, which one bound by that name does.)"""
    renamed: dict[str, str] = {}
    for entity in desired.manifest.entities:
        if entity.state != "present" or not desired.in_scope(entity.id):
            continue
        wanted = planned_designation(recorded, entity)
        current = recorded.current(entity.id)
        if wanted is not None and current is not None:
            renamed[current.id] = wanted
    if not renamed:
        return recorded
    history = dict(recorded.designations)
    for gid, wanted in renamed.items():
        g = recorded.generation(gid)
        assert g is not None
        history[gid] = (*recorded.names_of(g), wanted)
    return replace(
        recorded,
        generations=tuple(
            replace(g, designation=renamed[g.id]) if g.id in renamed else g
            for g in recorded.generations
        ),
        designations=history,
    )


def merge(desired: Desired, recorded: Recorded) -> Bindings:
    """The consultations of the file over those the state records: what apply binds or
    updates, what is refused (a rebinding, another entity's key), how the plan sees each, and
    which generations an open consultation bound to an unmanaged key may be."""
    recorded = as_renamed(desired, recorded)
    out = Bindings()
    seen: set[str] = set()
    for c in desired.consultations or ():
        if not desired.in_scope(c.entity):
            continue
        seen.add(c.reference)
        _from_file(recorded, c, out)
    _recorded_only(desired, recorded, seen, out)
    _unsure(recorded, out)
    return out


def _from_file(recorded: Recorded, c: Consultation, out: Bindings) -> None:
    """One consultation of the file: refused, bound, updated or as recorded, and its view."""
    rec = recorded.consultations.get(c.reference)
    if rec is not None:
        # A date the file no longer gives (an empty cell, an export without that column)
        # keeps the recorded one: check compares it with the key's expiry.
        c = replace(c, deadline=c.deadline or rec.deadline, opening=c.opening or rec.opening)
    named = _named_by_certificate(recorded, rec, c) if rec is not None else None
    if rec is not None and named is None and not same_binding(recorded, rec, c):
        bound = bound_generation(recorded, rec)
        out.refusals.append(
            f"{c.location}: consultation {c.reference} is bound to "
            + (
                describe_generation(recorded, bound)
                if bound is not None
                else describe_ref(recorded, rec.entity, rec.key_ref)
            )
            + f" of {rec.entity} since {rec.bound_at:%Y-%m-%d}; the file now binds it to "
            f"{describe_ref(recorded, c.entity, c.key_ref)} of {c.entity}. A binding is "
            "definitive: correct the consultations file."
        )
        out.views.append(_view(rec, recorded))
        return
    g = (
        named or bound_generation(recorded, rec)
        if rec is not None
        else find_generation(recorded, c.entity, c.key_ref)
    )
    if rec is None and g is None:
        # A key another entity owns: binding it to this one would guard neither.
        theirs = [
            o
            for o in recorded.generations
            if o.entity != c.entity and names(recorded, o, c.key_ref)
        ]
        if theirs:
            o = theirs[0]
            out.refusals.append(
                f"{c.location}: consultation {c.reference} names entity {c.entity}, but "
                f"{c.certificate_sha256 or c.designation!r} is entity {o.entity}'s "
                f"{describe_generation(recorded, o)}: a consultation is bound to a key of "
                "its own entity. Correct the consultations file (the entity whose key opens "
                "the bids)."
            )
            return
    if rec is None:
        what = (
            f'generation {g.number} "{g.designation}"'
            if g is not None
            else f"{c.key_ref}, a key this tool does not manage"
        )
        out.actions.append(
            _news(
                BindConsultation,
                c,
                g.number if g else 0,
                ReasonCode.NEW_BINDING,
                f"consultation {c.reference} is bound to {what} (definitive)",
            )
        )
    else:
        changes = []
        if rec.generation_id is None and g is not None:
            changes.append(f"its key is now managed: generation {g.number}")
        if rec.status != c.status:
            changes.append(f"status {rec.status} -> {c.status}")
        if (rec.deadline, rec.opening, rec.title) != (c.deadline, c.opening, c.title):
            changes.append("title or dates updated")
        if changes:
            out.actions.append(
                _news(
                    UpdateConsultation,
                    c,
                    g.number if g else 0,
                    ReasonCode.CLOSED
                    if c.status == "closed" and rec.status != "closed"
                    else ReasonCode.CONSULTATION_UPDATED,
                    f"consultation {c.reference}: {'; '.join(changes)}",
                    rec.key_ref,
                )
            )
    out.views.append(_view_of(c, g, recorded=rec is not None))


def _recorded_only(desired: Desired, recorded: Recorded, seen: set[str], out: Bindings) -> None:
    """The consultations the state records that the file no longer gives (in scope): their
    views, and the link to a key managed since they were bound."""
    for reference, rec in sorted(recorded.consultations.items()):
        if reference in seen or not desired.in_scope(rec.entity):
            continue
        view = _view(rec, recorded)
        g = bound_generation(recorded, rec)
        if rec.generation_id is None and g is not None:
            # Bound before its key was managed (adopted or created later): record the link.
            out.actions.append(
                _news(
                    UpdateConsultation,
                    rec,
                    g.number,
                    ReasonCode.CONSULTATION_UPDATED,
                    f"consultation {reference}: its key is now managed: generation {g.number}",
                )
            )
            view = replace(view, generation_id=g.id, generation=g.number, designation=g.designation)
        out.views.append(view)


def _unsure(recorded: Recorded, out: Bindings) -> None:
    """An open consultation bound to a key not managed: each recorded generation that may be
    that key (by a name it had before the binding) is kept as if bound."""
    for view in out.views:
        if view.is_open and view.generation_id is None:
            rec = recorded.consultations.get(view.reference)
            # A binding recorded by this plan's apply: every generation recorded now is older.
            since = rec.bound_at if rec is not None else dt.datetime.max.replace(tzinfo=dt.UTC)
            for g in recorded.generations_of(view.entity):
                if may_hold(recorded, g, view.key_ref, since):
                    out.unsure.setdefault(g.id, []).append(view)
