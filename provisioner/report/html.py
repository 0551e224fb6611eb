"""The report as one self-contained HTML page: inline CSS, inline SVG timelines, one small
inline script (filtering by entity), nothing fetched (a Content-Security-Policy forbids it).

Built with Python's `html.escape` and string joins, not a template engine: every value goes
through `esc` (text and attributes alike), the page has one shape, and at 1,000 entities the
joins keep it fast without a new dependency (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

from provisioner import check
from provisioner.codes import Severity
from provisioner.plan.actions import CreateGeneration, RenameGeneration
from provisioner.report import answer, fr
from provisioner.report.assets import CSS, LEGEND, SCRIPT, csp, esc
from provisioner.report.model import (
    AuditEvent,
    CopyCell,
    EntityReport,
    PlanLine,
)
from provisioner.report.timeline import Scale, axis, page_scale, timeline

# The first bytes of every report: how `report --out` recognises a file it may replace.
GENERATOR = '<meta name="generator" content="provisioner report">'
# ...and its last: a file that starts like a report but goes on with something else (a page
# saved and then edited, notes appended) is not one.
END = "<!-- end of the provisioner report -->\n"

SEVERITY_CLASS = {check.OK: "ok", check.WARNING: "warn", check.CRITICAL: "crit"}
SEVERITY_WORD = {check.OK: "OK", check.WARNING: "WARNING", check.CRITICAL: "CRITICAL"}
SYMBOL_CLASS = {"+": "add", "~": "change", "-": "destroy", "-/+": "replace", "!": "conflict"}
COPY_WORD = {
    "present": "present",
    "missing": "missing",
    "drifted": "drifted",
    "conflict": "conflict",
    "remove": "to remove",
    "planned": "to write",
}
ROLE_WORD = {"workstation": "poste agent", "location": "emplacement partagé", "": "(left)"}


@dataclass(frozen=True)
class PlanView:
    """A saved plan as the report shows it (every line worded by plan/render.py)."""

    path: str
    planned_at: dt.datetime
    summary: str
    stale: str  # "" when the state is still the one it was computed from
    actions: tuple[PlanLine, ...]
    refusals: tuple[str, ...]
    errors: tuple[str, ...]

    @cached_property
    def by_entity(self) -> dict[str, list[PlanLine]]:
        out: dict[str, list[PlanLine]] = {}
        for a in self.actions:
            out.setdefault(a.entity, []).append(a)
        return out


@dataclass(frozen=True)
class Page:
    manifest: str
    state_dir: str
    lineage: str | None
    serial: int
    now: dt.datetime
    check_line: str
    check_code: Severity
    entities: tuple[EntityReport, ...]
    general: tuple[check.Finding, ...]  # findings of no entity (targets, refusals)
    general_audit: tuple[AuditEvent, ...]
    plan: PlanView | None


# ---------------------------------------------------------------- tables


def severity_badge(severity: Severity) -> str:
    return f'<span class="sev {SEVERITY_CLASS[severity]}">{SEVERITY_WORD[severity]}</span>'


def generations_table(e: EntityReport, now: dt.datetime) -> str:
    if not e.generations:
        return ""
    rows = []
    for g in reversed(e.generations):
        left = (g.not_after - now).days
        when = f"in {fr.days(left)}" if left >= 0 else f"{fr.days(-left)} ago"
        former = ", ".join(f"« {d} »" for d in g.designations[:-1])
        rows.append(
            f'<tr class="{esc(g.status)}"><td>g{g.number}</td><td>« {esc(g.designation)} »'
            + (f' <span class="former">formerly {esc(former)}</span>' if former else "")
            + f"</td><td>{esc(g.status)}{' (adopted)' if g.origin == 'adopted' else ''}</td>"
            f"<td>{fr.date(g.not_before)}</td><td>{fr.date(g.not_after)} ({when})</td>"
            f"<td>{fr.date(g.renew_from)}</td><td><code>{esc(g.cert_sha256[:16])}…</code></td></tr>"
        )
    return (
        '<table class="gens"><thead><tr><th>bi-clé</th><th>désignation</th><th>status</th>'
        "<th>valid from</th><th>valid until</th><th>renewal from</th><th>certificate sha256</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


RISK_TD = '<td class="risk">'


def consultations_table(e: EntityReport) -> str:
    if not e.consultations:
        return ""
    rows = []
    for c in e.consultations:
        bound = (
            f"g{c.generation} « {esc(c.designation)} »"
            if c.generation
            else f"{esc(c.key_ref)} (not managed)"
        )
        deadline = fr.date_time(c.deadline) if c.deadline else "—"
        opening = fr.date_time(c.opening) if c.opening else "—"
        risk = "".join(
            f'<div class="{SEVERITY_CLASS.get(f.severity, "crit")}">[{esc(f.code)}]</div>'
            for f in c.findings
        )
        rows.append(
            f'<tr class="{SEVERITY_CLASS.get(c.severity, "crit")}"><td>{esc(c.reference)}</td>'
            f"<td>{esc(c.title)}</td><td>{esc(c.status)}</td>"
            f"{RISK_TD if c.deadline_risk else '<td>'}{deadline}</td>"
            f"{RISK_TD if c.opening_risk else '<td>'}{opening}</td>"
            f"<td>{bound}</td><td>{risk}</td></tr>"
        )
    return (
        '<table class="cons"><thead><tr><th>consultation</th><th>title</th><th>status</th>'
        "<th>date limite de remise des plis</th><th>ouverture des plis</th><th>bi-clé</th>"
        "<th>risk</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def copies_table(e: EntityReport) -> str:
    """Targets down, generations across: what each target holds of each generation."""
    if not e.copies:
        return ""
    numbers = sorted({c.generation for c in e.copies}, reverse=True)
    roles = dict(e.targets)
    names = [n for n, _ in e.targets]
    names += sorted({c.target for c in e.copies} - set(names))
    cells: dict[tuple[str, int], list[CopyCell]] = {}
    for c in e.copies:
        cells.setdefault((c.target, c.generation), []).append(c)
    rows = []
    for name in names:
        role = roles.get(name) or next((c.role for c in e.copies if c.target == name), "")
        tds = []
        for n in numbers:
            found = cells.get((name, n), [])
            if not found:
                tds.append('<td class="copy none">—</td>')
                continue
            c = found[0]
            word = COPY_WORD[c.state] if c.reason in ("ok", c.state) else c.reason
            # A copy in place needs no more words; the target is its row's, the generation its
            # column's (at 1,000 entities each attribute per cell weighs a megabyte).
            title = (
                ""
                if c.state in ("present", "planned")  # the plan section lists where it goes
                else f' title="{esc(c.path)}: {esc(c.detail)}"'
            )
            tds.append(f'<td class="copy {c.state}"{title}>{esc(word)}</td>')
        rows.append(
            f'<tr data-target="{esc(name)}"><th>{esc(name)} '
            f"<small>{ROLE_WORD.get(role, esc(role))}</small></th>" + "".join(tds) + "</tr>"
        )
    head = "".join(f'<th data-generation="{n}">g{n}</th>' for n in numbers)
    return (
        f'<table class="copies"><thead><tr><th>copies by target</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


STORE_WORD = {
    "installed": "in the store",
    "not-imported": "file present, not imported",
    "missing": "missing",
    "other-key": "another key",
    "no-private-key": "no private key",
    "unreadable": "receipt unreadable",
    "unreachable": "unreachable",
}


def stores_table(e: EntityReport) -> str:
    """The agents' key stores (magasins de certificats), as their receipts say: "in the store
    of user X since T" or why not (receipts.py; check's rules colour the consultations)."""
    if not e.stores:
        return ""
    rows = []
    for s in sorted(e.stores, key=lambda s: (s.target, s.user, -s.generation)):
        word = STORE_WORD.get(s.state, s.state)
        if s.installed and s.since is not None:
            word += f" since {fr.date_time(s.since)}"
        bound = ", ".join(b.reference for b in s.bound)
        rows.append(
            f'<tr class="store {esc(s.state)}"><th>{esc(s.target)} <small>{esc(s.user)}</small>'
            f"</th><td>g{s.generation}</td><td>{esc(word)}</td><td>{esc(bound)}</td></tr>"
        )
    return (
        '<table class="stores"><thead><tr><th>key stores (agent)</th><th>generation</th>'
        f"<th>state</th><th>bound to</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def findings_list(findings: tuple[check.Finding, ...]) -> str:
    if not findings:
        return ""
    items = "".join(
        f'<li class="{SEVERITY_CLASS.get(f.severity, "crit")}">{severity_badge(f.severity)} '
        f"<code>[{esc(f.code)}]</code> {esc(f.message)}</li>"
        for f in findings
    )
    return f'<ul class="findings">{items}</ul>'


def audit_table(events: tuple[AuditEvent, ...]) -> str:
    if not events:
        return ""
    rows = []
    for ev in events:
        detail = " ".join(f"{esc(k)}={esc(_short(v))}" for k, v in ev.detail if k != "path")
        try:
            when = fr.date_time(dt.datetime.fromisoformat(ev.at.replace("Z", "+00:00")))
        except ValueError:
            when = ev.at
        rows.append(
            f"<tr><td>{esc(when)}</td><td>{esc(ev.action)}</td><td>{esc(ev.actor)}</td>"
            f"<td><small>{detail}</small></td></tr>"
        )
    return (
        '<h3>Last audit events</h3><table class="audit"><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def _short(value: str) -> str:
    """Fingerprints cut to 12 characters: enough to tell them apart on a page."""
    if len(value) == 64 and all(ch in "0123456789abcdef" for ch in value):
        return value[:12] + "…"
    return value


def action_item(a: PlanLine) -> str:
    attrs = ""
    if a.kind in (CreateGeneration.kind, RenameGeneration.kind) and a.attributes:
        attrs = (
            '<dl class="attrs">'
            + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in a.attributes)
            + "</dl>"
        )
    return (
        f'<li class="act {SYMBOL_CLASS.get(a.symbol, "change")}"><code class="sym">'
        f"{esc(a.symbol)}</code> {esc(a.label)} <code>[{esc(a.reason)}]</code> "
        f"{esc(a.message)}{attrs}</li>"
    )


# ---------------------------------------------------------------- page


def entity_section(e: EntityReport, page: Page, scale: Scale) -> str:
    key = f"{e.id} {e.name}".lower()
    flag = f"Ready: {e.reason}" if e.ready else f"Not ready: {e.reason}"
    at_risk = e.severity >= check.CRITICAL
    if e.ready and at_risk:
        # The copies are as the state wants them, but check sees bids at risk (an agent's
        # store, a date): never a green "ready" under a red badge.
        first = next(f for f in e.findings if f.severity >= check.CRITICAL)
        flag = f"Copies up to date, but at risk: {first.code} (see below)"
    changes = ""
    if page.plan is not None:
        mine = page.plan.by_entity.get(e.id, [])
        changes = (
            '<h3>With the plan</h3><ul class="plan">'
            + "".join(action_item(a) for a in mine)
            + "</ul>"
            if mine
            else '<p class="plan none">The plan changes nothing here.</p>'
        )
    absent = ' <span class="absent">state: absent</span>' if e.state == "absent" else ""
    return (
        f'<section class="entity {SEVERITY_CLASS.get(e.severity, "crit")}" id="e-{esc(e.id)}" '
        f'data-key="{esc(key)}" data-sev="{e.severity}">'
        f'<h2><a href="#e-{esc(e.id)}">{esc(e.id)}</a> <span class="name">{esc(e.name)}</span>'
        f"{absent} {severity_badge(e.severity)}</h2>"
        f'<p class="ready {"yes" if e.ready and not at_risk else "no"}">{esc(flag)}</p>'
        + timeline(e, scale)
        + generations_table(e, page.now)
        + consultations_table(e)
        + copies_table(e)
        + stores_table(e)
        + findings_list(e.findings)
        + changes
        + audit_table(e.audit)
        + '<p class="top"><a href="#index">index</a></p></section>'
    )


def index(page: Page) -> str:
    rows = []
    for e in page.entities:
        current = next((g for g in e.generations if g.status == "current"), None)
        valid = (
            f"g{current.number} until {fr.date(current.not_after)}" if current else "no bi-clé yet"
        )
        if e.state == "absent":
            valid = "state: absent"
        rows.append(
            f'<tr data-key="{esc(f"{e.id} {e.name}".lower())}" data-sev="{e.severity}">'
            f'<td><a href="#e-{esc(e.id)}">{esc(e.id)}</a></td><td>{esc(e.name)}</td>'
            f"<td>{severity_badge(e.severity)}</td><td>{valid}</td>"
            f"<td>{fr.number(len(e.consultations))}</td></tr>"
        )
    return (
        '<nav id="index"><h2>Entities</h2><p class="filter"><label>Filter '
        '<input id="filter" type="search" placeholder="entity id or name" autocomplete="off">'
        '</label> <label><select id="level"><option value="0">all</option>'
        '<option value="1">WARNING and worse</option><option value="2">CRITICAL only</option>'
        '</select></label> <output id="shown"></output></p>'
        '<table class="index"><thead><tr><th>entity</th><th>name</th><th>check</th>'
        "<th>current bi-clé</th><th>consultations</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></nav>"
    )


def plan_section(plan: PlanView) -> str:
    general = plan.by_entity.get("", [])
    parts = [
        '<section id="plan"><h2>With the plan</h2>',
        f"<p>Saved plan <code>{esc(plan.path)}</code>, planned at "
        f"{esc(fr.date_time(plan.planned_at))}.</p>",
    ]
    if plan.stale:
        parts.append(f'<p class="stale crit">{esc(plan.stale)}</p>')
    if plan.refusals:
        parts.append(
            '<ul class="findings">'
            + "".join(f'<li class="crit">Refused: {esc(r)}</li>' for r in plan.refusals)
            + "</ul>"
        )
    if plan.errors:
        parts.append(
            '<ul class="findings">'
            + "".join(f'<li class="warn">Error: {esc(r)}</li>' for r in plan.errors)
            + "</ul>"
        )
    if general:
        parts.append('<ul class="plan">' + "".join(action_item(a) for a in general) + "</ul>")
    parts.append(f'<p class="summary">{esc(plan.summary)}</p>')
    parts.append(
        "<p>Each entity's changes are listed in its section, with the plan's symbols: "
        '<code class="sym add">+</code> create, <code class="sym change">~</code> update, '
        '<code class="sym destroy">-</code> remove, <code class="sym replace">-/+</code> '
        'replace, <code class="sym conflict">!</code> conflict (nothing done).</p></section>'
    )
    return "".join(parts)


def answer_section(page: Page) -> str:
    """The first screen: the verdict in words, one French sentence per risk (which
    consultation, which date, what to do), the warnings folded, the probe's line last."""
    found = answer.risks(page.entities, page.general)
    critical = [r for r in found if r.severity >= check.CRITICAL]
    warnings = [r for r in found if r.severity == check.WARNING]
    code = min(page.check_code, check.CRITICAL)
    if critical:
        n = len(critical)
        title = f"{n} risque{'s' * (n > 1)} critique{'s' * (n > 1)} à traiter maintenant"
    elif warnings:
        n = len(warnings)
        title = f"Rien d'urgent : {n} avertissement{'s' * (n > 1)} à revoir"
    elif page.check_code == check.OK:
        title = "Tout est prêt : chaque bi-clé est en place, aucun pli n'est en risque"
    else:
        title = "La sonde n'a pas pu conclure : voir sa ligne ci-dessous"
    parts = [
        f'<section id="answer" class="{SEVERITY_CLASS.get(page.check_code, "crit")}" lang="fr">'
        f"<h2>{severity_badge(code)} {esc(title)}</h2>"
    ]
    if critical:
        parts.append(
            '<ol class="risks">'
            + "".join(f'<li class="crit">{esc(r.text)}</li>' for r in critical)
            + "</ol>"
        )
    if warnings:
        listed = "".join(f'<li class="warn">{esc(r.text)}</li>' for r in warnings)
        if critical:
            n = len(warnings)
            parts.append(
                f"<details><summary>et {n} avertissement{'s' * (n > 1)} (ce qui peut "
                f'attendre)</summary><ul class="risks">{listed}</ul></details>'
            )
        else:
            parts.append(f'<ul class="risks">{listed}</ul>')
    parts.append(
        f'<p class="probe meta">Sonde de supervision (<code>provisioner check</code>) : '
        f"<code>{esc(page.check_line)}</code></p></section>"
    )
    return "".join(parts)


def render(page: Page) -> str:
    """The whole page."""
    total_copies = sum(len(e.copies) for e in page.entities)
    total_cons = sum(len(e.consultations) for e in page.entities)
    general = findings_list(page.general)
    general_audit = audit_table(page.general_audit)
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        + GENERATOR
        + f'<meta http-equiv="Content-Security-Policy" content="{esc(csp())}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Bi-clés de chiffrement: report of {esc(page.manifest)} "
        f"({fr.date(page.now)})</title><style>{CSS}</style></head><body>"
    )
    header = (
        "<header><h1>Bi-clés de chiffrement: report</h1>"
        f'<p class="meta">Manifest <code>{esc(page.manifest)}</code>, state '
        f"<code>{esc(page.state_dir)}</code>"
        + (
            f" (lineage {esc(page.lineage)}, serial {fr.number(page.serial)})"
            if page.lineage
            else " (no state yet)"
        )
        + f". Made on {esc(fr.date_time(page.now))} (Europe/Paris): "
        f"{fr.number(len(page.entities))} {'entity' if len(page.entities) == 1 else 'entities'}, "
        f"{fr.number(total_cons)} consultation{'s' * (total_cons != 1)}, "
        f"{fr.number(total_copies)} {'copy' if total_copies == 1 else 'copies'}.</p>"
        + answer_section(page)
        + f"{LEGEND}</header>"
    )
    body = [head, header]
    if page.plan is not None:
        body.append(plan_section(page.plan))
    if general or general_audit:
        body.append(
            '<section id="general"><h2>Targets and state</h2>'
            + general
            + general_audit
            + "</section>"
        )
    body.append(index(page))
    body.append("<main>")
    scale = page_scale(page.entities, page.now)
    body.append(axis(scale, page.now))
    body += [entity_section(e, page, scale) for e in page.entities]
    body.append("</main>")
    body.append(
        '<footer><p class="meta">Written by <code>provisioner report</code>: it reads the state '
        "and observes the targets, holds no secret, and fetches nothing.</p></footer>"
    )
    body.append(f"<script>{SCRIPT}</script></body></html>\n{END}")
    return "".join(body)
