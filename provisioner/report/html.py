"""The report as one self-contained HTML page: inline CSS, inline SVG timelines, one small
inline script (filtering by entity), nothing fetched (a Content-Security-Policy forbids it).

Built with Python's `html.escape` and string joins, not a template engine: every value goes
through `esc` (text and attributes alike), the page has one shape, and at 1,000 entities the
joins keep it fast without a new dependency (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import cached_property
from html import escape

from provisioner import check
from provisioner.clock import PARIS
from provisioner.plan.actions import CreateGeneration, RenameGeneration
from provisioner.report import fr
from provisioner.report.model import (
    AuditEvent,
    ConsultationMarker,
    CopyCell,
    EntityReport,
    GenerationView,
    PlanLine,
)

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

# Timeline geometry, in SVG user units (the drawing scales to the page's width).
WIDTH = 1000
LEFT = 8
RIGHT = 8
AXIS = 22
GEN_ROW = 24
CONS_ROW = 20
BAR = 14
GRID_DEPTH = 4000  # below the tallest timeline (a generation or consultation row is 20-24)


def esc(value: object) -> str:
    return escape(str(value), quote=True)


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
    check_code: int
    entities: tuple[EntityReport, ...]
    general: tuple[check.Finding, ...]  # findings of no entity (targets, refusals)
    general_audit: tuple[AuditEvent, ...]
    plan: PlanView | None


# ---------------------------------------------------------------- timeline (SVG)


class Scale:
    """Dates to x positions over a span of moments and today, padded."""

    def __init__(self, moments: list[dt.datetime], now: dt.datetime) -> None:
        first = min([*moments, now])
        last = max([*moments, now])
        span = last - first
        if span < dt.timedelta(days=90):
            pad = (dt.timedelta(days=90) - span) / 2 + dt.timedelta(days=15)
        else:
            pad = span * 0.04
        self.start = first - pad
        self.end = last + pad
        self.seconds = (self.end - self.start).total_seconds()

    def x(self, when: dt.datetime) -> float:
        return LEFT + (when - self.start).total_seconds() / self.seconds * (WIDTH - LEFT - RIGHT)


def _n(value: float) -> str:
    """A coordinate: whole units (a thousandth of the width) are finer than print shows."""
    return str(round(value))


def ticks(scale: Scale) -> list[tuple[dt.datetime, bool]]:
    """Month starts in Paris time (every 1, 3, 6 or 12 months as the span allows), each
    with whether it opens a year."""
    months = scale.seconds / (30.44 * 86400)
    step = next((s for s in (1, 3, 6, 12, 24, 60) if months / s <= 12), 120)
    start = fr.paris(scale.start)
    year, month = start.year, start.month
    out: list[tuple[dt.datetime, bool]] = []
    while True:
        month += 1
        if month > 12:
            year, month = year + 1, 1
        if (year * 12 + month - 1) % step:
            continue
        when = dt.datetime(year, month, 1, tzinfo=PARIS)
        if when >= scale.end:
            return out
        out.append((when, month == 1))


def page_scale(entities: tuple[EntityReport, ...], now: dt.datetime) -> Scale:
    """One time axis for every entity, so that a reader scanning down the page compares them:
    the live generations' validity and every consultation's dates (retired generations are
    history: their bars may run off the left edge; the table gives their dates)."""
    moments: list[dt.datetime] = []
    retired: list[dt.datetime] = []
    for e in entities:
        for g in e.generations:
            (retired if g.status == "retired" else moments).extend((g.not_before, g.not_after))
        for c in e.consultations:
            moments += [d for d in (c.deadline, c.opening) if d is not None]
    return Scale(moments or retired, now)


def axis(scale: Scale, now: dt.datetime) -> str:
    """The grid, its labels and today's line, defined once and drawn in every timeline by
    `<use>` (at 1,000 entities, one copy per timeline weighed a megabyte). Lines run down to
    GRID_DEPTH; each timeline's viewBox cuts them at its height."""
    labels: list[str] = []
    grid: dict[bool, list[str]] = {False: [], True: []}
    for when, year in ticks(scale):
        x = _n(scale.x(when))
        grid[year].append(f"M{x} {AXIS - 4}V{GRID_DEPTH}")
        label = str(when.year) if year else fr.month(when)
        labels.append(f'<text class="tick" x="{x}" y="{AXIS - 8}">{esc(label)}</text>')
    paths = "".join(
        f'<path class="tick{" year" if year else ""}" d="{"".join(moves)}"/>'
        for year, moves in grid.items()
        if moves
    )
    x = _n(scale.x(now))
    return (
        '<svg class="defs" aria-hidden="true"><defs>'
        f'<g id="grid">{"".join(labels)}{paths}</g>'
        f'<g id="today" class="today" data-date="{fr.date(now)}"><line x1="{x}" x2="{x}" '
        f'y1="{AXIS - 4}" y2="{GRID_DEPTH}"/><title>today {esc(fr.date_time(now))}</title></g>'
        "</defs></svg>"
    )


def timeline(e: EntityReport, scale: Scale) -> str:
    rows = len(e.generations) + len(e.consultations)
    height = AXIS + len(e.generations) * GEN_ROW + len(e.consultations) * CONS_ROW + 8
    if not rows:
        height = AXIS + GEN_ROW
    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{esc(e.id)}: timeline"><use href="#grid"/>'
    ]
    bar_y: dict[int, float] = {}
    for i, g in enumerate(e.generations):
        y = AXIS + i * GEN_ROW + 4
        bar_y[g.number] = y + BAR / 2
        parts.append(generation_bar(g, scale, y))
    top = AXIS + len(e.generations) * GEN_ROW
    for j, c in enumerate(e.consultations):
        parts.append(consultation_row(c, scale, top + j * CONS_ROW + CONS_ROW / 2, bar_y))
    if not rows:
        parts.append(
            f'<text class="none" x="{WIDTH // 2}" y="{AXIS + 15}">no bi-clé recorded yet</text>'
        )
    parts.append('<use class="today" href="#today"/></svg>')
    return "".join(parts)


def generation_bar(g: GenerationView, scale: Scale, y: float) -> str:
    x0, x1 = scale.x(g.not_before), scale.x(g.not_after)
    r0 = max(scale.x(g.renew_from), x0)
    label = f"g{g.number} « {g.designation} » until {fr.date(g.not_after)}"
    if x1 < LEFT + 40:  # a retired generation before the axis: named at its left edge
        label = "◂ " + label
    if x0 > WIDTH * 0.6:
        text = f'<text x="{_n(x1 - 4)}" y="{_n(y + BAR - 3)}" class="end">{esc(label)}</text>'
    else:
        text = f'<text x="{_n(max(x0, LEFT) + 4)}" y="{_n(y + BAR - 3)}">{esc(label)}</text>'
    title = (
        f"g{g.number} {g.status}, valid {fr.date(g.not_before)} – {fr.date(g.not_after)}, "
        f"renewal from {fr.date(g.renew_from)}"
    )
    return (
        f'<g class="gen {esc(g.status)}" data-generation="{g.number}" '
        f'data-not-before="{fr.date(g.not_before)}" data-not-after="{fr.date(g.not_after)}">'
        f"<title>{esc(title)}</title>"
        f'<rect class="bar" x="{_n(x0)}" y="{_n(y)}" width="{_n(max(x1 - x0, 1))}" '
        f'height="{BAR}" rx="2"/>'
        f'<rect class="renew" x="{_n(r0)}" y="{_n(y)}" width="{_n(max(x1 - r0, 0))}" '
        f'height="{BAR}"/>{text}</g>'
    )


def consultation_row(c: ConsultationMarker, scale: Scale, y: float, bar_y: dict[int, float]) -> str:
    risk = " risk" if c.severity >= check.CRITICAL else " warn" if c.severity else ""
    attrs = (
        f'class="cons {esc(c.status)}{risk}" data-reference="{esc(c.reference)}" '
        f'data-generation="{c.generation}"'
    )
    if c.deadline:
        attrs += f' data-deadline="{esc(fr.date_time(c.deadline))}"'
    if c.opening:
        attrs += f' data-opening="{esc(fr.date_time(c.opening))}"'
    bound = f"g{c.generation} « {c.designation} »" if c.generation else f"{c.key_ref} (not managed)"
    parts = [f"<g {attrs}><title>{esc(c.reference)} → {esc(bound)}</title>"]
    xs = [scale.x(d) for d in (c.deadline, c.opening) if d is not None]
    if len(xs) == 2:
        parts.append(
            f'<line class="span" x1="{_n(xs[0])}" x2="{_n(xs[1])}" y1="{_n(y)}" y2="{_n(y)}"/>'
        )
    link_y = bar_y.get(c.generation)
    if link_y is not None and xs:
        link = " risk" if c.binding_risk else ""
        parts.append(
            f'<line class="link{link}" x1="{_n(xs[0])}" x2="{_n(xs[0])}" y1="{_n(link_y)}" '
            f'y2="{_n(y)}"/>'
        )
    if c.deadline:
        x = scale.x(c.deadline)
        cls = " risk" if c.deadline_risk or c.binding_risk else ""
        parts.append(f'<path class="deadline{cls}" d="M{_n(x)} {_n(y - 6)}l6 6-6 6-6-6z"/>')
    if c.opening:
        x = scale.x(c.opening)
        cls = " risk" if c.opening_risk or c.binding_risk else ""
        parts.append(f'<circle class="opening{cls}" cx="{_n(x)}" cy="{_n(y)}" r="5"/>')
    if xs:
        right = max(xs)
        if right > WIDTH * 0.7:
            parts.append(
                f'<text class="end" x="{_n(min(xs) - 9)}" y="{_n(y + 4)}">{esc(c.reference)}</text>'
            )
        else:
            parts.append(f'<text x="{_n(right + 9)}" y="{_n(y + 4)}">{esc(c.reference)}</text>')
    parts.append("</g>")
    return "".join(parts)


# ---------------------------------------------------------------- tables


def severity_badge(severity: int) -> str:
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
    flag = "Ready: up to date" if e.ready else f"Not ready: {e.reason}"
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
        f'<p class="ready {"yes" if e.ready else "no"}">{esc(flag)}</p>'
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


LEGEND = (
    '<svg class="legend" viewBox="0 0 1000 24" role="img" aria-label="legend">'
    '<g class="gen current"><rect class="bar" x="0" y="5" width="40" height="14"/></g>'
    '<text x="46" y="16">current</text>'
    '<g class="gen retained"><rect class="bar" x="110" y="5" width="40" height="14"/></g>'
    '<text x="156" y="16">retained</text>'
    '<g class="gen retired"><rect class="bar" x="230" y="5" width="40" height="14"/></g>'
    '<text x="276" y="16">retired</text>'
    '<rect class="renew" x="340" y="5" width="40" height="14"/>'
    '<text x="386" y="16">renewal window</text>'
    '<path class="deadline" d="M510 6l6 6-6 6-6-6z"/>'
    '<text x="522" y="16">date limite de remise des plis</text>'
    '<circle class="opening" cx="722" cy="12" r="5"/><text x="733" y="16">ouverture des plis</text>'
    '<path class="deadline risk" d="M865 6l6 6-6 6-6-6z"/><text x="877" y="16">at risk</text>'
    '<g class="today"><line x1="950" x2="950" y1="2" y2="22"/></g>'
    '<text x="956" y="16">today</text></svg>'
)

CSS = """
:root{--cur:#2a6fb0;--ret:#d08b16;--old:#9aa0a6;--crit:#c62828;--warn:#b26a00;--ok:#2e7d32;
--line:#d5d9de;color-scheme:light}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0 auto;max-width:1100px;padding:0 16px 40px;color:#1c1f23;background:#fff}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:17px;margin:0 0 4px}
h3{font-size:14px;margin:8px 0 2px}
a{color:#1a5593}code{font:12px ui-monospace,Menlo,Consolas,monospace}
table{border-collapse:collapse;margin:6px 0;width:100%;font-size:12.5px}
th,td{border-bottom:1px solid var(--line);padding:2px 6px;text-align:left;vertical-align:top}
thead th{background:#f3f5f7;font-weight:600}
.sev{display:inline-block;border-radius:3px;padding:0 5px;font-size:11px;font-weight:700;color:#fff}
.sev.ok{background:var(--ok)}.sev.warn{background:var(--warn)}.sev.crit{background:var(--crit)}
.summary{font-weight:600}.meta{color:#555;margin:0}
section.entity{border-top:2px solid var(--line);padding:10px 0 6px;content-visibility:auto;
contain-intrinsic-size:auto 520px}
section.entity:target{outline:3px solid #7aa7d8;outline-offset:4px}
.ready.yes{color:var(--ok);margin:0}.ready.no{color:var(--warn);margin:0}
.name{font-weight:400;color:#444}.absent{font-size:12px;color:#777}.former{color:#777}
svg.timeline{width:100%;height:auto;display:block;margin:6px 0}
svg.defs{position:absolute;width:0;height:0;overflow:hidden}
svg{font:12px system-ui,"DejaVu Sans",sans-serif}svg.legend{width:100%;height:auto;max-height:28px}
svg text{fill:#1c1f23}svg text.end{text-anchor:end}text.tick{font-size:10px;fill:#666}
svg text.none{text-anchor:middle;fill:#777}
path.tick{stroke:#eceff2;fill:none}path.tick.year{stroke:#c9ced4}
.gen .bar{fill:var(--cur);fill-opacity:.28;stroke:var(--cur)}
.gen.retained .bar{fill:var(--ret);stroke:var(--ret)}
.gen.retired .bar{fill:var(--old);stroke:var(--old)}
.renew{fill:rgba(0,0,0,.16);stroke:none}
.today line{stroke:#6a1b9a;stroke-width:2;stroke-dasharray:4 3}
.cons line.span{stroke:#555;stroke-width:1.5}
.cons line.link{stroke:#555;stroke-dasharray:2 2}
.cons line.link.risk{stroke:var(--crit);stroke-width:1.5}
.deadline{fill:#fff;stroke:#333;stroke-width:1.5}.opening{fill:#333}
.deadline.risk{fill:var(--crit);stroke:var(--crit)}.opening.risk{fill:var(--crit);stroke:var(--crit)}
.cons.risk text{fill:var(--crit);font-weight:700}.cons.warn text{fill:var(--warn)}
.cons.closed{opacity:.55}
td.copy{text-align:center;font-weight:600}
td.copy.present{color:var(--ok)}td.copy.missing,td.copy.conflict{color:#fff;background:var(--crit)}
td.copy.drifted{color:#000;background:#ffe08a}
td.copy.remove{color:#777;text-decoration:line-through}
td.copy.none{color:#bbb}td.copy.planned{color:#1a5593}td.risk{color:var(--crit);font-weight:700}
tr.store.installed td{color:var(--ok)}
tr.store:not(.installed):not(.unreachable) td{color:var(--crit);font-weight:600}
tr.crit td:first-child{border-left:3px solid var(--crit)}
tr.warn td:first-child{border-left:3px solid var(--warn)}
ul.findings{margin:6px 0;padding-left:18px}ul.plan{margin:6px 0;padding-left:0;list-style:none}
li.crit{color:var(--crit)}li.warn{color:#6b4200}
code.sym{font-weight:700;display:inline-block;min-width:2.2em;text-align:right}
.add .sym,code.sym.add{color:#1b7f2a}.change .sym,code.sym.change{color:#a06800}
.destroy .sym,code.sym.destroy{color:var(--crit)}.replace .sym,code.sym.replace{color:#8e24aa}
.conflict .sym,code.sym.conflict{color:#a06800}
dl.attrs{display:grid;grid-template-columns:max-content auto;gap:0 8px;margin:2px 0 4px 3em;
font-size:12px}
dl.attrs dt{color:#555}dl.attrs dd{margin:0}
.stale{padding:4px 8px;border:1px solid var(--crit);color:var(--crit)}
table.audit{font-size:11.5px;color:#444}
p.top{text-align:right;margin:0;font-size:12px}
p.filter input{font:inherit;padding:2px 6px;width:22em}
@media print{
@page{size:A4;margin:12mm 10mm}
body{max-width:none;padding:0;font-size:10.5pt}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
p.filter,p.top{display:none}
section.entity{content-visibility:visible;break-inside:auto}
section.entity[hidden]{display:none}
h2,h3{break-after:avoid}svg,table,tr{break-inside:avoid}
a{color:inherit;text-decoration:none}
}
"""

SCRIPT = """(function(){
var f=document.getElementById("filter"),l=document.getElementById("level"),
o=document.getElementById("shown"),
s=document.querySelectorAll("section.entity,#index tbody tr");
function apply(){var q=f.value.trim().toLowerCase(),m=+l.value,n=0,i,e,h;
for(i=0;i<s.length;i++){e=s[i];
h=(q&&e.getAttribute("data-key").indexOf(q)<0)||+e.getAttribute("data-sev")<m;
e.hidden=!!h;if(!h&&e.tagName==="SECTION")n++;}
o.textContent=(q||m)?n+" shown":"";}
f.addEventListener("input",apply);l.addEventListener("change",apply);
var m=/^#filter=(.*)$/.exec(location.hash);if(m){f.value=decodeURIComponent(m[1]);apply();}
document.documentElement.setAttribute("data-ready","1");
})();"""


def csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def render(page: Page) -> str:
    """The whole page."""
    total_copies = sum(len(e.copies) for e in page.entities)
    total_cons = sum(len(e.consultations) for e in page.entities)
    check_class = SEVERITY_CLASS.get(page.check_code, "crit")
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
        f"{fr.number(len(page.entities))} entities, {fr.number(total_cons)} consultations, "
        f"{fr.number(total_copies)} copies.</p>"
        f'<p class="summary {check_class}">{severity_badge(min(page.check_code, 2))} '
        f"{esc(page.check_line)}</p>{LEGEND}</header>"
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
