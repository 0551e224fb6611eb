"""The report's timelines: one inline SVG per entity on a time axis shared by all entities,
each generation's validity as a bar (renewal window shaded), today's line, each consultation's
deadline and opening as markers linked to the generation it is bound to."""

from __future__ import annotations

import datetime as dt

from provisioner import check
from provisioner.clock import PARIS
from provisioner.report import fr
from provisioner.report.assets import esc
from provisioner.report.model import ConsultationMarker, EntityReport, GenerationView

# Timeline geometry, in SVG user units (the drawing scales to the page's width).
WIDTH = 1000
LEFT = 8
RIGHT = 8
AXIS = 22
GEN_ROW = 24
CONS_ROW = 20
BAR = 14
GRID_DEPTH = 4000  # below the tallest timeline (a generation or consultation row is 20-24)


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
    ends = {g.number: g.not_after for g in e.generations}
    for i, g in enumerate(e.generations):
        y = AXIS + i * GEN_ROW + 4
        bar_y[g.number] = y + BAR / 2
        parts.append(generation_bar(g, scale, y))
    top = AXIS + len(e.generations) * GEN_ROW
    for j, c in enumerate(e.consultations):
        row_y = top + j * CONS_ROW + CONS_ROW / 2
        parts.append(consultation_row(c, scale, row_y, bar_y, ends.get(c.generation)))
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


def consultation_row(
    c: ConsultationMarker,
    scale: Scale,
    y: float,
    bar_y: dict[int, float],
    key_ends: dt.datetime | None = None,
) -> str:
    """A consultation's row: its deadline (diamond) and opening (dot), linked to the bar of
    its generation; where that key expires before a date at risk, a red tick at the expiry
    on the row and the label says by how many days (at a page's scale, a few days are one
    point: the words tell which comes first)."""
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
    label = esc(c.reference)
    at_risk = c.deadline if c.deadline_risk else c.opening if c.opening_risk else None
    if key_ends is not None and at_risk is not None and key_ends <= at_risk:
        x = scale.x(key_ends)
        parts.append(
            f'<line class="expires-first" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(y - 7)}" '
            f'y2="{_n(y + 7)}"/>'
        )
        days = (at_risk - key_ends).days
        what = "deadline" if at_risk is c.deadline else "opening"
        label += (
            f' <tspan class="expires-first">|◂ its bi-clé expires {fr.days(days)} before '
            f"the {what} ({fr.date(key_ends)})</tspan>"
        )
    if xs:
        right = max(xs)
        if right > WIDTH * 0.7:
            parts.append(f'<text class="end" x="{_n(min(xs) - 9)}" y="{_n(y + 4)}">{label}</text>')
        else:
            parts.append(f'<text x="{_n(right + 9)}" y="{_n(y + 4)}">{label}</text>')
    parts.append("</g>")
    return "".join(parts)
