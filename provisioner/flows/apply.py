"""The apply command's flow: lock, open state, plan (or check a saved plan), confirm, execute."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioner import clock
from provisioner.apply.executor import ApplyResult, Executor, ProgressFn
from provisioner.apply.generations import load_issuer
from provisioner.crypto.certificates import CertificateAuthority
from provisioner.engine import (
    Inputs,
    Session,
    inputs_digest,
    load_inputs,
    make_plan,
    observe,
    observed_digest,
    open_state,
)
from provisioner.errors import StalePlanError
from provisioner.exit_codes import targets_in_scope
from provisioner.manifest.model import SELF_SIGNED
from provisioner.plan import saved as saved_plans
from provisioner.plan.actions import CreateGeneration
from provisioner.plan.model import Observed, Plan
from provisioner.plan.render import plan_json
from provisioner.state.records import PASSWORD_SOURCE, Recorded
from provisioner.state.store import hold, state_exists


@dataclass
class ApplyRun:
    plan: Plan
    result: ApplyResult | None  # None when nothing was done (no changes or not confirmed)
    lock_note: str | None = None
    in_scope: frozenset[str] = frozenset()  # the targets the run observes (exit_codes.py)


def _load_issuers(session: Session, plan: Plan) -> dict[str, CertificateAuthority]:
    """Load every issuer a new generation needs before anything is written; the executor
    signs with these (their password sources run once)."""
    needed = set()
    for action in plan.actions:
        if isinstance(action, CreateGeneration) and action.issuer != SELF_SIGNED:
            needed.add(action.issuer)
    return {name: load_issuer(session.manifest.issuers[name]) for name in sorted(needed)}


def execute_plan(
    session: Session,
    plan: Plan,
    parallel: int,
    progress: ProgressFn | None,
    issuers: dict[str, CertificateAuthority],
) -> ApplyResult:
    assert session.db is not None and session.escrow is not None
    return Executor(
        desired=session.desired(),
        recorded=session.recorded,
        db=session.db,
        escrow=session.escrow,
        passwords=session.passwords,
        plan=plan,
        now=run_instant(session.recorded, clock.now()),
        parallel=parallel,
        progress=progress,
        pool=session.pool,
        issuers=issuers,
    ).run()


def run_instant(recorded: Recorded, now: dt.datetime) -> dt.datetime:
    """The instant an apply records things at: `now`, or just after the latest instant the
    state records when `now` ties with it at the second the state stores (two runs within one
    second, or at one pinned clock). A binding is guarded by the generations that existed
    before it, and one made by the same run is not: a tie between two runs must not read as
    the same run."""
    instants = [g.created_at for g in recorded.generations]
    instants += [c.bound_at for c in recorded.consultations.values()]
    latest = max(instants, default=None)
    second = now.replace(microsecond=0)
    if latest is not None and second <= latest < second + dt.timedelta(seconds=2):
        return latest.replace(microsecond=0) + dt.timedelta(seconds=1)
    return now


def _every_entity_conflicts(session: Session, plan: Plan) -> bool:
    present = {
        e.id
        for e in session.manifest.entities
        if e.state == "present" and session.desired().in_scope(e.id)
    }
    return bool(present) and present <= set(plan.conflicted_entities())


def apply_manifest(
    inputs: Inputs,
    *,
    confirm: Callable[[Plan], bool],
    lock_timeout: float,
    parallel: int,
    progress: ProgressFn | None = None,
    asks: bool = False,
) -> ApplyRun:
    """Plan under the lock, ask `confirm`, then execute; the state is closed on every path.

    `asks`: `confirm` may ask the operator (or refuse because nobody can answer). Where there
    is no state yet, nothing is written before the answer: the plan is made without creating
    the state, approved, then made again under the lock, and must be the same."""
    approved = None
    if asks and not state_exists(inputs.location):
        with open_state(inputs, create=False) as session:
            observed = observe(session, parallel)
            approved = make_plan(session, observed, clock.now())
            scope = targets_in_scope(session)
            lost = _every_entity_conflicts(session, approved)
        if not approved.actionable or approved.refusals or lost or not confirm(approved):
            return ApplyRun(approved, None, None, scope)
    with (
        hold(inputs.location, "apply", lock_timeout) as note,
        open_state(inputs, create=True) as session,
    ):
        observed = observe(session, parallel)
        plan = make_plan(session, observed, approved.now if approved else clock.now())
        scope = targets_in_scope(session)
        lost = bool(session.created) and _every_entity_conflicts(session, plan)
        if approved is not None and plan_json(plan)["actions"] != plan_json(approved)["actions"]:
            session.discard_created()
            raise StalePlanError(
                "the state or the targets changed while the plan waited for approval; nothing "
                "was done: run apply again"
            )
        if not plan.actionable or plan.refusals or lost:
            # A run that does nothing leaves no new state behind; nor does a new state that
            # meets files it did not write for every entity (the state was lost: `recover`,
            # not a new start).
            if not plan.actionable and not plan.refusals and not session.created:
                note_password_sources(session, observed, None)
            session.discard_created()
            return ApplyRun(plan, None, note, scope)
        issuers = _load_issuers(session, plan)
        if approved is None:
            try:
                approval = confirm(plan)
            except BaseException:  # refused (no terminal, --json) or Ctrl-C: nothing is kept
                session.discard_created()
                raise
            if not approval:
                session.discard_created()
                return ApplyRun(plan, None, note, scope)
        result = execute_plan(session, plan, parallel, progress, issuers)
        note_password_sources(session, observed, result)
        return ApplyRun(plan, result, note, scope)


def apply_saved(
    path: Path,
    *,
    lock_timeout: float,
    parallel: int,
    progress: ProgressFn | None = None,
) -> tuple[Inputs, ApplyRun]:
    """Execute a saved plan exactly, or refuse it as stale; the state is closed on every
    path (the inputs are returned for the hooks)."""
    saved = saved_plans.read(path)
    inputs = load_inputs(
        saved.manifest,
        saved.state_dir,
        saved.limit,
        consultations=saved.consultations,
        state_backend=saved.state_backend,
    )
    if inputs_digest(inputs, saved.salt) != saved.inputs_sha256:
        raise StalePlanError(
            f"stale plan {path}: the manifest, a file it references or a secret changed since "
            "the plan was made; make a new plan"
        )
    with (
        hold(inputs.location, f"apply {path}", lock_timeout) as note,
        open_state(inputs, create=True) as session,
    ):
        recorded = session.recorded
        if saved.lineage is not None and recorded.lineage != saved.lineage:
            raise StalePlanError(
                f"stale plan {path}: it was made for another state (lineage {saved.lineage}, "
                f"this state is {recorded.lineage})"
            )
        if recorded.serial != saved.serial:
            raise StalePlanError(
                f"stale plan {path}: the state changed since the plan was made (serial "
                f"{saved.serial}, now {recorded.serial}); make a new plan"
            )
        observed = observe(session, parallel)
        if observed_digest(observed) != saved.observed_sha256:
            raise StalePlanError(
                f"stale plan {path}: files on the targets changed since the plan was made; "
                "make a new plan"
            )
        plan = make_plan(session, observed, saved.now)
        if not saved_plans.same_actions(saved, plan):
            raise StalePlanError(f"stale plan {path}: the plan no longer matches; make a new plan")
        scope = targets_in_scope(session)
        if not plan.actionable or plan.refusals:
            return inputs, ApplyRun(plan, None, note, scope)
        issuers = _load_issuers(session, plan)
        result = execute_plan(session, plan, parallel, progress, issuers)
        note_password_sources(session, observed, result)
        return inputs, ApplyRun(plan, result, note, scope)


def note_password_sources(session: Session, observed: Observed, result: ApplyResult | None) -> None:
    """Record, for each entity whose password this apply read, the stamp of that password's
    source (secrets.source_stamp), once every copy of the entity is known to be under that
    password: none of its actions failed and every one of its targets was observed. Commands
    that read no secret compare it (a password file changed since: re-encodings pending)."""
    assert session.db is not None
    failed = {o.action.entity for o in result.failures} if result is not None else set()
    recorded = session.recorded.password_sources
    for entity in session.manifest.entities:
        stamp = session.inputs.password_sources.get(entity.id)
        if (
            stamp is None
            or entity.id not in session.passwords
            or recorded.get(entity.id) == stamp
            or entity.id in failed
            or any(t.name in observed.unreachable for t in entity.targets)
        ):
            continue
        session.db.set_meta(PASSWORD_SOURCE + entity.id, stamp)


def save_plan(session: Session, plan: Plan, observed_sha256: str, path: Path) -> None:
    salt = saved_plans.new_salt()
    saved_plans.write(
        path,
        saved_plans.SavedPlan(
            manifest=session.manifest.path,
            state_dir=session.state_dir,
            state_backend=session.location.backend,
            lineage=session.recorded.lineage,
            serial=session.recorded.serial,
            salt=salt,
            inputs_sha256=inputs_digest(session.inputs, salt),
            observed_sha256=observed_sha256,
            # The names as given: a target in --limit limits the saved plan's run the same way.
            limit=list(session.inputs.scope.names) if session.inputs.scope else None,
            consultations=session.consultations_path,
            plan=plan_json(plan),
        ),
    )
