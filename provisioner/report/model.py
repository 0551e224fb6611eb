"""What the report shows, gathered from what `status` and `check` already decide.

Nothing here judges a key or a consultation: the copies' states come from `status.build`, the
risks from `check.evaluate` (the rules of the monitoring probe), the plan's lines from
`plan/render.py`. This module only arranges them per entity for the page."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from provisioner import check, status
from provisioner.codes import Severity
from provisioner.errors import ProvisionerError
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.plan.actions import RemoveCopy
from provisioner.plan.model import ConsultationView, Plan
from provisioner.plan.render import line_label
from provisioner.receipts import StoreState
from provisioner.state.records import Recorded
from provisioner.state.store import StateStore

AUDIT_PER_ENTITY = 3
AUDIT_GLOBAL = 10

# Finding codes (check.py) that put a consultation's date, or its binding, at risk.
DEADLINE_CODES = frozenset({"expires-before-deadline", "expired-accepting-bids"})
OPENING_CODES = frozenset({"expires-before-opening", "expired-before-opening"})
BINDING_CODES = frozenset({"bound-missing", "bound-unheld", "not-escrowed", "expired-bound"})


@dataclass(frozen=True)
class GenerationView:
    number: int
    designation: str
    designations: tuple[str, ...]  # every name it has had, oldest first
    status: str  # current | retained | retired
    not_before: dt.datetime
    not_after: dt.datetime
    renew_from: dt.datetime  # not_after minus the entity's renewal window
    cert_sha256: str
    origin: str


@dataclass(frozen=True)
class ConsultationMarker:
    reference: str
    title: str
    status: str
    key_ref: str
    generation: int  # 0: bound to a key this tool does not manage
    designation: str
    deadline: dt.datetime | None
    opening: dt.datetime | None
    severity: Severity  # check's: OK, WARNING or CRITICAL, the worst finding that names it
    deadline_risk: bool
    opening_risk: bool
    binding_risk: bool
    findings: tuple[check.Finding, ...]


@dataclass(frozen=True)
class CopyCell:
    target: str
    role: str  # workstation | location | "" (a target no longer in the manifest)
    path: str
    generation: int
    state: str  # present | missing | drifted | conflict | remove | planned
    reason: str  # status's word: "ok" or the reason of the pending action
    detail: str


@dataclass(frozen=True)
class AuditEvent:
    at: str
    actor: str
    action: str
    entity: str | None
    detail: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EntityReport:
    id: str
    name: str
    state: str  # present | absent
    ready: bool
    reason: str
    severity: Severity  # check's worst finding for the entity
    renew_before_days: int
    targets: tuple[tuple[str, str], ...]  # (name, role) the manifest gives it, in order
    generations: tuple[GenerationView, ...]
    consultations: tuple[ConsultationMarker, ...]
    copies: tuple[CopyCell, ...]
    findings: tuple[check.Finding, ...]
    audit: tuple[AuditEvent, ...]
    stores: tuple[StoreState, ...] = ()  # the agents' key stores, where the manifest names one


def mentions(message: str, view: ConsultationView) -> bool:
    """Whether a finding's message names this consultation (check's messages quote
    `view.describe()`, which starts with the reference): a reference that is a prefix of
    another does not count."""
    described = view.describe()
    start = message.find(described)
    while start >= 0:
        end = start + len(described)
        before, after = message[start - 1 : start], message[end : end + 1]
        if before in ("", " ") and (after == "" or not (after.isalnum() or after in "-_./")):
            return True
        start = message.find(described, start + 1)
    return False


def marker(view: ConsultationView, findings: list[check.Finding]) -> ConsultationMarker:
    named = tuple(f for f in findings if f.entity == view.entity and mentions(f.message, view))
    critical = {f.code for f in named if f.severity >= check.CRITICAL}
    return ConsultationMarker(
        reference=view.reference,
        title=view.title,
        status=view.status,
        key_ref=view.key_ref,
        generation=view.generation,
        designation=view.designation,
        deadline=view.deadline,
        opening=view.opening,
        severity=max((f.severity for f in named), default=check.OK),
        deadline_risk=bool(critical & DEADLINE_CODES),
        opening_risk=bool(critical & OPENING_CODES),
        binding_risk=bool(critical & BINDING_CODES),
        findings=named,
    )


def copy_cells(
    manifest: Manifest, entity_status: status.EntityStatus, removals: set[tuple[str, str]]
) -> tuple[CopyCell, ...]:
    recorded = {g.number for g in entity_status.generations}
    cells = []
    for c in entity_status.copies:
        role = (
            "workstation"
            if c.target in manifest.workstations
            else "location"
            if c.target in manifest.locations
            else ""
        )
        if c.state == "ok":
            state = "present"
        elif c.generation not in recorded:
            state = "planned"  # a copy of the generation the next apply creates
        elif (c.target, c.path) in removals:
            state = "remove"
        elif c.state in ("missing", "conflict"):
            state = c.state
        else:
            state = "drifted"
        cells.append(CopyCell(c.target, role, c.path, c.generation, state, c.state, c.detail))
    return tuple(cells)


def build(
    manifest: Manifest,
    recorded: Recorded,
    plan: Plan,
    findings: list[check.Finding],
    audit: dict[str | None, list[AuditEvent]],
    now: dt.datetime,
    stores: list[StoreState] | None = None,
    scope: Scope | None = None,
) -> list[EntityReport]:
    """One report per entity of the manifest (of `scope`, when --limit gave one), in its
    order; `stores` is what the agents' key stores' receipts say (receipts.survey)."""
    in_stores: dict[str, list[StoreState]] = {}
    for state in stores or ():
        in_stores.setdefault(state.entity, []).append(state)
    statuses = {s.id: s for s in status.build(manifest, recorded, plan, now, scope)}
    removals = {
        (a.target, a.path)
        for a in plan.actions
        if isinstance(a, RemoveCopy) and not a.keeps_file  # (only a record forgotten)
    }
    by_entity: dict[str, list[check.Finding]] = {}
    for f in findings:
        if f.entity is not None:
            by_entity.setdefault(f.entity, []).append(f)
    views: dict[str, list[ConsultationView]] = {}
    for v in plan.consultations:
        views.setdefault(v.entity, []).append(v)
    out = []
    for entity in manifest.entities:
        if entity.id not in statuses:
            continue  # outside --limit
        s = statuses[entity.id]
        own = by_entity.get(entity.id, [])
        generations = tuple(
            GenerationView(
                g.number,
                g.designation,
                recorded.names_of(g),
                g.status,
                g.not_before,
                g.not_after,
                entity.key.renewal_date(g.not_after),
                g.cert_sha256,
                g.origin,
            )
            for g in recorded.generations_of(entity.id)
        )
        markers = tuple(
            marker(v, own)
            for v in sorted(
                views.get(entity.id, []),
                key=lambda v: (v.deadline or v.opening or now, v.reference),
            )
        )
        out.append(
            EntityReport(
                id=entity.id,
                name=entity.name,
                state=entity.state,
                ready=s.ready,
                reason=s.reason,
                severity=max((f.severity for f in own), default=check.OK),
                renew_before_days=entity.key.renew_before_days,
                targets=tuple((t.name, t.role) for t in entity.targets),
                generations=generations,
                consultations=markers,
                copies=copy_cells(manifest, s, removals),
                findings=tuple(own),
                audit=tuple(audit.get(entity.id, ())),
                stores=tuple(in_stores.get(entity.id, ())),
            )
        )
    return out


def read_audit(db: StateStore) -> dict[str | None, list[AuditEvent]]:
    """The last events of each entity, and the last ones of no entity (key `None`), newest
    first (a read: the report never writes to the state)."""
    try:
        rows = db.audit_recent(AUDIT_PER_ENTITY, AUDIT_GLOBAL)
    except ProvisionerError:
        return {}
    out: dict[str | None, list[AuditEvent]] = {}
    for _, at, actor, action, entity, detail in rows:
        out.setdefault(entity, []).append(AuditEvent(at, actor, action, entity, _detail(detail)))
    for events in out.values():
        events.sort(key=lambda e: e.at, reverse=True)
    return out


def _detail(text: str) -> tuple[tuple[str, str], ...]:
    try:
        value = json.loads(text)
    except ValueError:
        return (("detail", text),)
    if not isinstance(value, dict):
        return (("detail", str(value)),)
    return tuple((str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in value.items())


@dataclass(frozen=True)
class PlanLine:
    """One action of a saved plan as its JSON keeps it (the plan's typed actions are the
    planner's; a saved plan is shown, not carried out, so its lines are enough)."""

    kind: str
    symbol: str
    entity: str
    generation: int
    reason: str
    message: str
    target: str | None
    path: str | None
    attributes: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """Worded by plan/render.py, as `plan` worded it."""
        reference = dict(self.attributes).get("reference", "")
        return line_label(
            self.kind, self.generation, self.symbol, self.target, self.path, reference
        )


def actions_from_json(document: dict[str, object]) -> tuple[PlanLine, ...]:
    """A saved plan's actions as `plan --json` wrote them."""
    raw = document.get("actions")
    if not isinstance(raw, list):
        return ()
    return tuple(
        PlanLine(
            kind=str(a["kind"]),
            symbol=str(a["symbol"]),
            entity=str(a["entity"]),
            generation=int(a["generation"]),
            reason=str(a["reason"]),
            message=str(a["message"]),
            target=a.get("target"),
            path=a.get("path"),
            attributes=tuple((str(k), str(v)) for k, v in (a.get("attributes") or {}).items()),
        )
        for a in raw
    )
