"""`provisioner check`: a monitoring probe with Nagios/Icinga exit codes.

0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the probe itself could not run). The first line is the
summary monitoring systems show; performance data follows `|`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from provisioner import clock
from provisioner.codes import FindingCode, Severity, WarningCode
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.plan.actions import Conflict, ReasonCode, RestoreEscrow
from provisioner.plan.model import ConsultationView, Plan
from provisioner.state.records import Recorded
from provisioner.wording import counted

if TYPE_CHECKING:
    from provisioner.engine import Session
    from provisioner.receipts import StoreState

OK, WARNING, CRITICAL, UNKNOWN = Severity.OK, Severity.WARNING, Severity.CRITICAL, Severity.UNKNOWN
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    entity: str | None
    code: FindingCode | WarningCode | ReasonCode  # check's own, a plan warning's, a folder's
    message: str


@dataclass(frozen=True)
class Thresholds:
    warn_days: int = 30
    critical_days: int = 7


@dataclass(frozen=True)
class Judgement:
    """What `check` answers for a plan, and the page of `report` shows first."""

    code: Severity
    line: str  # the first line: `PROVISIONER STATE - text | perfdata`
    findings: list[Finding]
    stores: list[StoreState]  # the receipts read, for the report's store table


def judge(
    session: Session,
    plan: Plan,
    now: dt.datetime,
    parallel: int,
    limits: Thresholds,
    receipt_max_age: dt.timedelta,
) -> Judgement:
    """The one verdict of `check` and `report`: the plan's findings, the agents' stores
    (their receipts read once), kept to the entities of --limit, and the first line."""
    from provisioner import receipts

    findings = evaluate(
        session.manifest,
        session.recorded,
        plan,
        now,
        session.escrow_listing.named(),  # presence by name: no secret needed
        limits,
    )
    stores = receipts.survey_of(session, plan, parallel, max_age=receipt_max_age)
    findings = with_stores(findings, stores, now, limits.warn_days)
    if session.limit is not None:  # the entities asked for, and what concerns all
        findings = [f for f in findings if f.entity is None or f.entity in session.limit]
    code, line = summary(
        findings,
        session.manifest,
        session.recorded,
        now,
        session.limit,
        limits,
        session.inputs.scope,
    )
    return Judgement(code, line, findings, stores)


def evaluate(
    manifest: Manifest,
    recorded: Recorded,
    plan: Plan,
    now: dt.datetime,
    escrowed: set[str],
    limits: Thresholds,
) -> list[Finding]:
    """Every finding, in the order of the concerns: the plan as a whole, the escrow, bound
    copies, conflicts, each entity's key, target folders, bound keys not escrowed, the plan's
    warnings (`with_stores` adds the agents' stores and puts the most severe first, keeping
    that order within a severity)."""
    pending, conflicts = _pending_and_conflicts(plan)
    return [
        *_refused_and_unreached(plan),
        *_escrow_restores(plan),
        *_bound_copies_missing(manifest, plan),
        *_conflicts(conflicts),
        *_entity_keys(manifest, recorded, now, limits, pending, conflicts),
        *_target_folders(plan),
        *_bound_not_escrowed(recorded, plan, escrowed),
        *_plan_warnings(plan, now, limits),
    ]


def _pending_and_conflicts(plan: Plan) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per entity: the reasons of its pending changes, and the paths of its conflicts."""
    pending: dict[str, list[str]] = {}
    conflicts: dict[str, list[str]] = {}
    for a in plan.actions:
        if isinstance(a, Conflict):
            conflicts.setdefault(a.entity, []).append(f"{a.target}: {a.path}")
        elif not isinstance(a, RestoreEscrow):
            pending.setdefault(a.entity, []).append(a.reason)
    return pending, conflicts


def _refused_and_unreached(plan: Plan) -> Iterator[Finding]:
    for refusal in plan.refusals:
        yield Finding(CRITICAL, None, FindingCode.REFUSED, refusal)
    for error in plan.errors:
        yield Finding(WARNING, None, FindingCode.UNREACHABLE, error)


def _escrow_restores(plan: Plan) -> Iterator[Finding]:
    """Until apply takes it back, the key lives only in the copies."""
    for a in plan.actions:
        if isinstance(a, RestoreEscrow):
            yield Finding(
                CRITICAL,
                a.entity,
                FindingCode.ESCROW_MISSING,
                f"generation {a.generation}'s private key is missing from the escrow and "
                f"lives only in copies such as {a.target}: {a.path}: run provisioner apply "
                "to take it back",
            )


def _bound_copies_missing(manifest: Manifest, plan: Plan) -> Iterator[Finding]:
    """Every open consultation bound to a generation a conflict stands in the way of: each
    one at risk is named."""
    bound: dict[tuple[str, int], list[ConsultationView]] = {}
    for v in plan.consultations:
        if v.is_open and v.generation:
            bound.setdefault((v.entity, v.generation), []).append(v)
    for a in plan.actions:
        views = bound.get((a.entity, a.generation))
        if not isinstance(a, Conflict) or not views:
            continue
        # A workstation's agents, or the shared location that must never lose the key
        # (invariant 2 covers both), are not known to hold the bound key.
        if a.target in manifest.workstations:
            where, risk = f"{a.target}", "the agents there may not be able to open those bids"
        elif a.target in manifest.locations:
            where, risk = (
                f"shared location {a.target}",
                "the copy that must never be lost may be gone",
            )
        else:
            continue
        yield Finding(
            CRITICAL,
            a.entity,
            FindingCode.BOUND_MISSING,
            f"generation {a.generation} bound to consultation"
            f"{'s' * (len(views) > 1)} {', '.join(v.describe() for v in views)}: {where}: "
            f"{a.path} holds a file this state did not write (or that changed since it was "
            f"written), not known to hold that key (check reads no password: `plan` opens it); "
            f"{risk}",
        )


def _conflicts(conflicts: dict[str, list[str]]) -> Iterator[Finding]:
    for entity_id, paths in sorted(conflicts.items()):
        yield Finding(
            WARNING,
            entity_id,
            FindingCode.CONFLICT,
            f"{counted(len(paths), 'file')} this state did not write "
            f"{'stands' if len(paths) == 1 else 'stand'} where its copies go "
            f"({'; '.join(paths[:3])}{'; ...' if len(paths) > 3 else ''}): apply leaves "
            "the entity alone; run provisioner recover if the state was lost or restored, "
            "else move those files away",
        )


def _entity_keys(
    manifest: Manifest,
    recorded: Recorded,
    now: dt.datetime,
    limits: Thresholds,
    pending: dict[str, list[str]],
    conflicts: dict[str, list[str]],
) -> Iterator[Finding]:
    """Each entity present: no key yet, its current key expired or expiring, changes pending."""
    for entity in manifest.entities:
        if entity.state != "present":
            continue
        current = recorded.current(entity.id)
        if current is None:
            yield Finding(
                WARNING, entity.id, FindingCode.NO_KEY, "no bi-clé yet: run provisioner apply"
            )
            continue
        days = (current.not_after - now).days
        # While the entity has a conflict, apply makes no new generation for it.
        todo = (
            "apply makes no new generation while the entity has a conflict (see conflict)"
            if entity.id in conflicts
            else "run provisioner apply"
        )
        if current.not_after <= now:
            yield Finding(
                CRITICAL,
                entity.id,
                FindingCode.EXPIRED,
                f"current generation {current.number} expired on "
                f"{current.not_after:%Y-%m-%d}: {todo}",
            )
        elif days <= limits.critical_days or days <= limits.warn_days:
            yield Finding(
                CRITICAL if days <= limits.critical_days else WARNING,
                entity.id,
                FindingCode.EXPIRING,
                f"current generation {current.number} expires in {counted(days, 'day')} "
                f"({current.not_after:%Y-%m-%d})",
            )
        reasons = pending.get(entity.id)
        if reasons:
            yield Finding(
                WARNING,
                entity.id,
                FindingCode.PENDING,
                f"{counted(len(reasons), 'change')} pending ({', '.join(sorted(set(reasons)))}): "
                "run provisioner apply",
            )


def _target_folders(plan: Plan) -> Iterator[Finding]:
    """A target folder open to others, or leftovers of a write: apply repairs them."""
    for a in plan.actions:
        if not a.entity:
            message = f"{a.target}: {a.path}: {a.message}: run provisioner apply"
            yield Finding(WARNING, None, a.reason, message)


def _bound_not_escrowed(recorded: Recorded, plan: Plan, escrowed: set[str]) -> Iterator[Finding]:
    for view in plan.consultations:
        if not view.is_open or view.generation_id is None:
            continue
        g = recorded.generation(view.generation_id)
        if g is not None and g.key_sha256 not in escrowed:
            yield Finding(
                CRITICAL,
                view.entity,
                FindingCode.NOT_ESCROWED,
                f'generation {g.number} "{g.designation}" bound to consultation '
                f"{view.describe()} is missing from the escrow: restore the escrow from "
                "its backup (docs/RECOVERY.md)",
            )


def _plan_warnings(plan: Plan, now: dt.datetime, limits: Thresholds) -> Iterator[Finding]:
    """The plan's warnings at their code's severity; a key nothing here manages, bound to
    bids opened within --critical-days, is CRITICAL."""
    for w in plan.warnings:
        severity = w.code.severity  # every code has one (codes.py): no default
        left = clock.days_until(w.opening, now) if w.opening is not None else None
        if (
            w.code is WarningCode.UNMANAGED_KEY
            and left is not None
            and left <= limits.critical_days
        ):
            # Bids are opened within days with a key nothing here holds or can observe.
            assert w.opening is not None
            severity = CRITICAL
            when = (
                "today"
                if left == 0
                else f"in {left} day{'s' * (left > 1)}"
                if left > 0
                else f"{-left} day{'s' * (left < -1)} ago"
            )
            w = replace(w, message=f"{w.message} (bids opened {when}, {clock.day(w.opening)})")
        yield Finding(severity, w.entity, w.code, w.message)


def with_stores(
    findings: list[Finding],
    states: list[StoreState],
    now: dt.datetime,
    warn_days: int,
) -> list[Finding]:
    """`findings` and what the key stores' receipts say (`states`, from receipts.survey_of):
    a generation bound to a consultation not closed that an agent's store lacks is CRITICAL
    when its opening (else its deadline) falls within `warn_days`; WARNING otherwise. The
    most severe first; within a severity, in the order given."""
    from provisioner import receipts

    added = list(findings)
    for s in states:
        if s.installed or s.state == receipts.UNREACHABLE:  # unreachable: one finding already
            continue
        dues = [b.due for b in s.bound]
        soon = any(d is None or (d - now).days <= warn_days for d in dues)
        what = f'generation {s.generation} "{s.designation}" {s.target} [{s.user}]: {s.detail}'
        refs = ", ".join(b.reference for b in s.bound)
        if s.state == receipts.NOT_OBSERVED:
            # Installed as last seen, too long ago to count: run the role to look again.
            urgent = bool(s.bound) and soon
            bound_to = f"; bound to {refs}" if urgent else ""
            message = f"{what}{bound_to}: run the agent_stores role to look again"
            added.append(
                Finding(
                    CRITICAL if urgent else WARNING,
                    s.entity,
                    FindingCode.STORE_NOT_OBSERVED,
                    message,
                )
            )
        elif s.bound and soon:
            message = f"{what}; bound to {refs}: the agent could not open those bids"
            added.append(Finding(CRITICAL, s.entity, FindingCode.BOUND_NOT_IN_STORE, message))
        else:
            added.append(Finding(WARNING, s.entity, FindingCode.NOT_IN_STORE, f"{what}: import it"))
    return sorted(added, key=lambda f: -f.severity)


# The first line is what a monitoring screen shows: kept short, the details on the next lines.
LINE_TEXT_MAX = 160


def summary(
    findings: list[Finding],
    manifest: Manifest,
    recorded: Recorded,
    now: dt.datetime,
    limit: frozenset[str] | None = None,
    limits: Thresholds | None = None,
    scope: Scope | None = None,
) -> tuple[Severity, str]:
    """Exit code and the first line: `PROVISIONER STATE - text | perfdata`. The text counts
    the findings and names the most severe by code and entity (every one is on the lines
    that follow); the perfdata carries the thresholds (Nagios ranges). With `limit`, the
    counts are of those entities only (and of the copies within `scope`)."""
    limits = limits or Thresholds()
    code = max((f.severity for f in findings), default=OK)
    declared = [e for e in manifest.entities if limit is None or e.id in limit]
    present = [e for e in declared if e.state == "present"]
    days = [(g.not_after - now).days for e in present if (g := recorded.current(e.id)) is not None]
    crit = sum(f.severity == CRITICAL for f in findings)
    warn = sum(f.severity == WARNING for f in findings)
    if findings:
        text = f"{counted(crit, 'critical', 'critical')}, {counted(warn, 'warning')}: "
        text += _named(findings, CRITICAL if crit else WARNING)
    else:
        copies = sum(
            (limit is None or c.entity in limit)
            and (scope is None or scope.covers(c.entity, c.target))
            for c in recorded.copies.values()
        )
        text = (
            f"{counted(len(present), 'entity', 'entities')}, "
            f"{counted(copies, 'copy', 'copies')} in sync"
            + (f", earliest expiry in {counted(min(days), 'day')}" if days else "")
        )
    perf = (
        f"entities={len(declared)};;;0 present={len(present)};;;0 "
        f"critical={crit};;0;0 warning={warn};0;;0 "
        f"min_days_left={min(days) if days else 'U'};{limits.warn_days}:;{limits.critical_days}:"
    )
    return code, f"PROVISIONER {NAMES[code]} - {text} | {perf}"


def _named(findings: list[Finding], severity: Severity) -> str:
    """The codes of the findings of `severity`, each with its entities, in order, cut to fit
    the first line ("and N more" says what was left out)."""
    by_code: dict[str, list[str]] = {}
    for f in findings:
        if f.severity == severity:
            who = by_code.setdefault(f.code, [])
            if f.entity and f.entity not in who:
                who.append(f.entity)
    parts = [
        f"{c} ({', '.join(who[:3])}{f' and {len(who) - 3} more' if len(who) > 3 else ''})"
        if who
        else c
        for c, who in by_code.items()
    ]
    text = ""
    for i, part in enumerate(parts):
        more = len(parts) - i
        candidate = f"{text}; {part}" if text else part
        if text and len(candidate) > LINE_TEXT_MAX:
            return f"{text}; and {more} more"
        text = candidate
    return text


def to_json(code: Severity, line: str, findings: list[Finding]) -> dict[str, Any]:
    return {
        "status": NAMES[code],
        "exit_code": code,
        "summary": line,
        "findings": [
            {
                "severity": NAMES[f.severity],
                "entity": f.entity,
                "code": f.code,
                "message": f.message,
            }
            for f in findings
        ],
    }
