"""`provisioner report`: one self-contained HTML page for a review or an opening day.

It loads what `status` loads (no secret), observes the targets as `status` and `check` do,
judges with `check.judge` (the verdict `check` gives, --limit included) and words a saved plan
with `plan/render.py`; it reads the state
(the audit table through a read-only connection) and writes nothing but the page, atomically,
and only over a file that is absent or a previous report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioner import check as probe
from provisioner import clock, receipts
from provisioner.codes import Severity
from provisioner.errors import ProvisionerError, StalePlanError
from provisioner.plan.actions import Conflict
from provisioner.plan.render import summary_text
from provisioner.plan.saved import SavedPlan
from provisioner.report import html, model
from provisioner.state.records import Recorded

HEAD_BYTES = 4096


@dataclass(frozen=True)
class Written:
    path: Path
    size: int
    entities: int
    check_code: Severity
    check_line: str


def refuse_overwrite(out: Path) -> None:
    """Raise unless `out` is absent (in an existing folder) or a report this command wrote:
    a typo in --out must never replace a manifest, a state or someone's document."""
    if out.is_symlink():
        raise ProvisionerError(f"{out}: is a symlink: the report is not written through it")
    if not out.exists():
        if not out.parent.is_dir():
            raise ProvisionerError(f"{out.parent}: no such folder for the report")
        return
    if not out.is_file():
        raise ProvisionerError(f"{out}: not a regular file: the report is not written there")
    try:
        with out.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
            handle.seek(max(0, out.stat().st_size - len(html.END)))
            tail = handle.read()
    except OSError as exc:
        raise ProvisionerError(f"{out}: cannot read it to check what it is: {exc}") from None
    if html.GENERATOR.encode() not in head or tail != html.END.encode():
        raise ProvisionerError(
            f"{out}: exists and is not a report written by `provisioner report`: it is left "
            "as it is; choose another --out, or move that file away"
        )


def write_report(
    manifest_path: Path,
    out: Path,
    *,
    plan_path: Path | None = None,
    state_dir: Path | None = None,
    parallel: int = 8,
    consultations: Path | None = None,
    limit: list[str] | None = None,
    state_backend: str | None = None,
) -> Written:
    """Observe, judge and write the report of `manifest_path` to `out`."""
    from provisioner.atomic import write_private
    from provisioner.engine import load_inputs, observe_and_plan, open_state
    from provisioner.plan import saved as saved_plans

    refuse_overwrite(out)
    saved = saved_plans.read(plan_path) if plan_path is not None else None
    inputs = load_inputs(
        manifest_path,
        state_dir,
        limit,
        need_secrets=False,
        consultations=consultations,
        state_backend=state_backend,
    )
    with open_state(inputs, create=False, unlock=False) as session:
        now = clock.now()
        _, result = observe_and_plan(session, parallel, now)
        # check's own verdict, at its default thresholds; the receipts are read once: the
        # page's store table and the store findings both come from them.
        verdict = probe.judge(session, result, now, parallel, probe.Thresholds(), receipts.MAX_AGE)
        code, line, findings, stores = (
            verdict.code,
            verdict.line,
            verdict.findings,
            verdict.stores,
        )
        audit = model.read_audit(session.db) if session.db is not None else {}
        scope = session.inputs.scope
        entities = model.build(
            session.manifest, session.recorded, result, findings, audit, now, stores, scope
        )
        plan_view = None
        if saved is not None and plan_path is not None:
            plan_view = _plan_view(saved, plan_path, session.state_dir, session.recorded)
        page = html.Page(
            manifest=str(manifest_path),
            state_dir=str(session.location),
            lineage=session.recorded.lineage,
            serial=session.recorded.serial,
            now=now,
            check_line=line,
            check_code=code,
            entities=tuple(entities),
            general=tuple(f for f in findings if f.entity is None),
            general_audit=tuple(audit.get(None, ())),
            plan=plan_view,
        )
    data = html.render(page).encode()
    refuse_overwrite(out)  # again: the observation may have taken a while
    try:
        write_private(out, data)
    except OSError as exc:
        raise ProvisionerError(f"{out}: cannot write the report: {exc}") from None
    return Written(out, len(data), len(entities), code, line)


def _plan_view(
    saved: SavedPlan, plan_path: Path, state_dir: Path, recorded: Recorded
) -> html.PlanView:
    if saved.state_dir.resolve() != state_dir.resolve():
        raise ProvisionerError(
            f"{plan_path}: the plan was computed for the state {saved.state_dir}, not "
            f"{state_dir}: report it with --state-dir {saved.state_dir}"
        )
    if saved.lineage is not None and recorded.lineage not in (None, saved.lineage):
        raise ProvisionerError(
            f"{plan_path}: the plan belongs to another state (lineage {saved.lineage}; the "
            f"state is {recorded.lineage})"
        )
    document = saved.plan
    try:
        actions = model.actions_from_json(document)
        raw = document.get("summary")
        figures = raw if isinstance(raw, dict) else {}
        refusals = tuple(str(e) for e in document.get("refusals", []))
        errors = tuple(str(e) for e in document.get("errors", []))
        summary = summary_text(
            refusals=len(refusals),
            counts=(int(figures["create"]), int(figures["update"]), int(figures["remove"])),
            conflicts=int(figures.get("conflicts", 0)),
            conflicted=sorted({a.entity for a in actions if a.kind == Conflict.kind}),
            errors=len(errors),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StalePlanError(f"{plan_path}: unreadable plan file: {exc!r}") from None
    stale = ""
    if saved.serial != recorded.serial or saved.lineage != recorded.lineage:
        stale = (
            f"The state changed since this plan was computed (serial {saved.serial}, now "
            f"{recorded.serial}): `provisioner apply {plan_path}` would refuse it as stale; "
            "plan again to review what an apply would do now."
        )
    return html.PlanView(
        path=str(plan_path),
        planned_at=saved.now,
        summary=summary,
        stale=stale,
        actions=actions,
        refusals=refusals,
        errors=errors,
    )
