"""What `status` reports: per entity its generations, validity and copies, and whether it is
ready (cert-manager's manner: "Ready: up to date", or the reason it is not)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from provisioner import clock
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.plan.actions import (
    Action,
    ClearLeftover,
    Conflict,
    ConsultationAction,
    RemoveCopy,
    SecureFolder,
    WriteCopy,
)
from provisioner.plan.model import Plan
from provisioner.state.records import Recorded
from provisioner.wording import counted


@dataclass(frozen=True)
class CopyStatus:
    target: str
    path: str
    generation: int
    state: str  # "ok" or the reason of the pending action
    detail: str


@dataclass(frozen=True)
class GenerationStatus:
    number: int
    designation: str
    status: str
    origin: str
    not_after: dt.datetime
    days_left: int
    cert_sha256: str
    designations: tuple[str, ...]  # every name it has had, oldest first, the current one last


@dataclass(frozen=True)
class EntityStatus:
    id: str
    name: str
    state: str
    ready: bool
    reason: str
    generations: tuple[GenerationStatus, ...]
    copies: tuple[CopyStatus, ...]


def build(
    manifest: Manifest, recorded: Recorded, plan: Plan, now: dt.datetime, scope: Scope | None = None
) -> list[EntityStatus]:
    """Per entity (those of `scope`, when --limit gave one): its generations, the copies the
    plan observed (within the scope) and whether it is ready."""
    out = []
    held = {w.entity: w.message for w in plan.warnings if w.code == "limit-held"}
    by_entity: dict[str, list[Action]] = {}
    for a in plan.actions:
        by_entity.setdefault(a.entity, []).append(a)
    errors_by_target = {e.split(":", 1)[0]: e for e in plan.errors}
    for entity in manifest.entities:
        if scope is not None and entity.id not in scope.entities:
            continue
        actions = by_entity.get(entity.id, [])
        generations = tuple(
            GenerationStatus(
                g.number,
                g.designation,
                g.status,
                g.origin,
                g.not_after,
                (g.not_after - now).days,
                g.cert_sha256,
                recorded.names_of(g),
            )
            for g in recorded.generations_of(entity.id)
        )
        number_of = {g.id: g.number for g in recorded.generations_of(entity.id)}
        pending = {
            (a.target, a.path): a
            for a in actions
            if isinstance(a, WriteCopy | RemoveCopy | Conflict)
        }
        copies: dict[tuple[str, str], CopyStatus] = {}
        for c in recorded.copies_of(entity.id):
            if scope is not None and not scope.covers(entity.id, c.target):
                continue  # outside --limit: not observed, so not reported
            found = pending.get((c.target, c.path))
            error = errors_by_target.get(c.target)
            if error is not None:  # not looked at: never reported "ok"
                state, detail = "unreachable", error.split(": ", 1)[-1]
            elif found is not None:
                state, detail = found.reason, found.message
            else:
                state, detail = "ok", f"written {c.written_at:%Y-%m-%d %H:%M}"
            copies[(c.target, c.path)] = CopyStatus(
                c.target, c.path, number_of.get(c.generation_id, 0), state, detail
            )
        for (target, path), a in pending.items():
            if (target, path) not in copies and target is not None and path is not None:
                copies[(target, path)] = CopyStatus(target, path, a.generation, a.reason, a.message)
        # Recording a consultation's binding or status (the platform's export changed) is
        # bookkeeping the next apply does: the keys and copies are what "ready" is about.
        keys = [a for a in actions if not isinstance(a, ConsultationAction)]
        books = len(actions) - len(keys)
        ready = not keys
        # A conflict is what the operator must decide first: it leads.
        first = next((a for a in keys if isinstance(a, Conflict)), keys[0] if keys else None)
        reason = "up to date" if first is None else f"{first.reason}: {first.message}"
        if ready and books:
            reason += (
                f" ({books} consultation record{'s' * (books > 1)} for the next apply to save)"
            )
        if entity.id in held:
            ready, reason = False, f"limit-held: {held[entity.id]}"
        unreached = [t.name for t in entity.targets if t.name in errors_by_target]
        if unreached:
            ready = False  # the reasons are listed once, under "Targets not reached"
            reason = f"not reached: {', '.join(unreached)}"
        out.append(
            EntityStatus(
                entity.id,
                entity.name,
                entity.state,
                ready,
                reason,
                generations,
                tuple(sorted(copies.values(), key=lambda c: (c.target, c.path))),
            )
        )
    return out


def to_json(statuses: list[EntityStatus]) -> list[dict[str, Any]]:
    return [
        {
            "id": s.id,
            "name": s.name,
            "state": s.state,
            "ready": s.ready,
            "reason": s.reason,
            "generations": [
                {
                    "number": g.number,
                    "designation": g.designation,
                    "status": g.status,
                    "origin": g.origin,
                    "not_after": clock.iso(g.not_after),
                    "days_left": g.days_left,
                    "cert_sha256": g.cert_sha256,
                    "designations": list(g.designations),
                }
                for g in s.generations
            ],
            "copies": [
                {
                    "target": c.target,
                    "path": c.path,
                    "generation": c.generation,
                    "state": c.state,
                    "detail": c.detail,
                }
                for c in s.copies
            ],
        }
        for s in statuses
    ]


def render(statuses: list[EntityStatus]) -> str:
    lines = []
    for s in statuses:
        flag = f"Ready: {s.reason}" if s.ready else f"Not ready: {s.reason}"
        lines.append(f"{s.id} ({s.name}){' [absent]' if s.state == 'absent' else ''}  {flag}")
        for g in s.generations:
            former = ", ".join(f'"{d}"' for d in g.designations[:-1])
            lines.append(
                f'  g{g.number} {g.status:<8} "{g.designation}"'
                + (f" (formerly {former})" if former else "")
                + "  valid until "
                f"{g.not_after:%Y-%m-%d} ({counted(g.days_left, 'day')})  "
                f"cert {g.cert_sha256[:16]}…"
                f"{'  (adopted)' if g.origin == 'adopted' else ''}"
            )
        if not s.generations:
            lines.append("  no generation yet")
        for c in s.copies:
            lines.append(f"    {c.state:<12} g{c.generation} {c.target}: {c.path}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def folder_actions(plan: Plan) -> list[Action]:
    """The pending actions on target folders: permissions to close, leftovers to clear."""
    return [a for a in plan.actions if isinstance(a, SecureFolder | ClearLeftover)]


def folders_json(plan: Plan) -> list[dict[str, Any]]:
    return [
        {"target": a.target, "path": a.path, "state": a.reason, "detail": a.message}
        for a in folder_actions(plan)
    ]


def render_unreachable(plan: Plan) -> str:
    """Each target the run could not observe, once, with the reason."""
    if not plan.errors:
        return ""
    return (
        "\n".join(
            [
                "Targets not reached (tried again at the next run):",
                *(f"  {error}" for error in plan.errors),
                "",
            ]
        )
        + "\n"
    )


def render_folders(plan: Plan) -> str:
    """Target folders needing the next apply (group/other access, leftovers of writes)."""
    actions = folder_actions(plan)
    if not actions:
        return ""
    lines = ["Target folders:"]
    for a in actions:
        lines.append(f"  {a.reason:<18} {a.target}: {a.path}  ({a.message})")
    lines.append("")
    return "\n".join(lines) + "\n"


def render_consultations(plan: Plan) -> str:
    """Consultations and the generation each is bound to, then the plan's warnings."""
    lines = []
    if plan.consultations:
        lines.append("Consultations:")
        for v in sorted(plan.consultations, key=lambda v: (v.entity, v.reference)):
            key = (
                f'g{v.generation} "{v.designation}"'
                if v.generation
                else f"{v.key_ref} (not managed)"
            )
            lines.append(f"  {v.status:<8} {v.entity} {v.describe()} -> {key}")
        lines.append("")
    if plan.warnings:
        lines.append("Warnings:")
        for w in plan.warnings:
            who = f"{w.entity}: " if w.entity else ""
            lines.append(f"  ! {who}[{w.code}] {w.message}")
        lines.append("")
    return "\n".join(lines)
