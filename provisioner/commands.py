"""The flows of the commands that have no module of their own: one function per command,
taking plain arguments and returning what the CLI renders (or raising ProvisionerError, which
the CLI prints as `Error: ...` with exit 1). No output, no prompt and no exit code here.

Bigger commands keep their flow beside their concern: `apply/run.py` (apply), `recover/`
(recover), `adopt.py` (adopt), `transports/trust.py` (trust)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner import clock
from provisioner.codes import FindingCode, Severity
from provisioner.engine import Inputs, load_inputs, observe_and_plan, observed_digest, open_state
from provisioner.errors import (
    NoStateError,
    ProvisionerError,
    SecretError,
    StateError,
    UnitError,
    UsageError,
)
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.plan.model import Plan
from provisioner.state.records import Recorded, RecordedGeneration

if TYPE_CHECKING:  # imported where used: `plan` loads neither the probe nor the receipts
    from provisioner.check import Finding
    from provisioner.receipts import StoreState
    from provisioner.rehearse import CopyResult


def plan(inputs: Inputs, *, parallel: int, out: Path | None) -> tuple[Plan, frozenset[str]]:
    """Observe and plan without the lock; save the plan to `out` unless it is refused.
    Returns the plan and the targets it observes (for the exit code, exit_codes.py)."""
    from provisioner.exit_codes import targets_in_scope

    with open_state(inputs, create=False) as session:
        observed, result = observe_and_plan(session, parallel, clock.now())
        if out is not None and not result.refusals:
            from provisioner.apply.run import save_plan

            save_plan(session, result, observed_digest(observed), out)
        return result, targets_in_scope(session)


@dataclass(frozen=True)
class Observation:
    """What status and rehearse render: the plan against the recorded state at `now`."""

    now: dt.datetime
    manifest: Manifest
    recorded: Recorded
    plan: Plan
    stores: list[StoreState]  # what the agents' key stores' receipts say (receipts.py)
    scope: Scope | None = None  # what --limit named (the copies outside it are not observed)


def status(
    manifest: Path,
    state_dir: Path | None,
    limit: list[str] | None = None,
    *,
    parallel: int,
    consultations: Path | None,
    state_backend: str | None = None,
) -> Observation:
    inputs = load_inputs(
        manifest,
        state_dir,
        limit,
        need_secrets=False,
        consultations=consultations,
        state_backend=state_backend,
    )
    with open_state(inputs, create=False, unlock=False) as session:
        now = clock.now()
        _, result = observe_and_plan(session, parallel, now)
        from provisioner import receipts

        stores = receipts.survey_of(session, result, parallel, session.limit)
        return Observation(
            now, session.manifest, session.recorded, result, stores, session.inputs.scope
        )


@dataclass(frozen=True)
class Verdict:
    """A monitoring probe's answer: its exit code, first line and findings."""

    code: Severity
    line: str
    findings: list[Finding]
    inconclusive: bool = False  # the probe itself failed (UNKNOWN, or CRITICAL for the unit)


def check(
    manifest: Path,
    state_dir: Path | None,
    limit: list[str] | None = None,
    *,
    parallel: int,
    consultations: Path | None,
    warn_days: int,
    critical_days: int,
    receipt_max_age_days: int = 7,
    timeout: float = 0,
    state_backend: str | None = None,
) -> Verdict:
    """The probe's verdict; a probe that cannot conclude says UNKNOWN, whatever the cause,
    and a broken state/escrow unit is CRITICAL (every bound key rests on it). With `timeout`
    (seconds, 0: none), UNKNOWN when no verdict came by then (a target or the state that does
    not answer): the monitoring hears from the probe before it gives up on it."""
    import threading

    from provisioner import check as probe

    def judge() -> Verdict:
        return _check(
            manifest,
            state_dir,
            limit,
            parallel=parallel,
            consultations=consultations,
            warn_days=warn_days,
            critical_days=critical_days,
            receipt_max_age_days=receipt_max_age_days,
            state_backend=state_backend,
        )

    if timeout <= 0:
        return judge()
    answers: list[Verdict | BaseException] = []

    def worker() -> None:
        try:
            answers.append(judge())
        except BaseException as exc:  # handed to the caller's thread as it is
            answers.append(exc)

    # The work runs on a daemon thread: one stuck in a read it cannot interrupt does not keep
    # the probe from answering (the process ends when the command does).
    thread = threading.Thread(target=worker, name="check", daemon=True)
    thread.start()
    thread.join(timeout)
    if not answers:
        line = (
            f"PROVISIONER UNKNOWN - no verdict within {timeout:g} s (-t/--timeout): a target or "
            "the state did not answer in time; run provisioner status to see which"
        )
        return Verdict(probe.UNKNOWN, line, [], inconclusive=True)
    answer = answers[0]
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _check(
    manifest: Path,
    state_dir: Path | None,
    limit: list[str] | None = None,
    *,
    parallel: int,
    consultations: Path | None,
    warn_days: int,
    critical_days: int,
    receipt_max_age_days: int,
    state_backend: str | None,
) -> Verdict:
    from provisioner import check as probe

    inputs: Inputs | None = None
    try:
        inputs = load_inputs(
            manifest,
            state_dir,
            limit,
            need_secrets=False,
            consultations=consultations,
            state_backend=state_backend,
        )
        with open_state(inputs, create=False, unlock=False) as session:
            if session.db is None:
                raise NoStateError(session.location, "nothing can be judged")
            now = clock.now()
            _, result = observe_and_plan(session, parallel, now)
            verdict = probe.judge(
                session,
                result,
                now,
                parallel,
                probe.Thresholds(warn_days, critical_days),
                dt.timedelta(days=receipt_max_age_days),
            )
    except Exception as exc:
        if not isinstance(exc, ProvisionerError) and os.environ.get("PROVISIONER_DEBUG"):
            raise
        if isinstance(exc, UnitError):
            line = f"PROVISIONER CRITICAL - {str(exc).splitlines()[0]}"
            at_risk = _open_while_broken(inputs) if inputs is not None else []
            return Verdict(probe.CRITICAL, line, at_risk, inconclusive=True)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, ProvisionerError):
            first = f"internal error: {type(exc).__name__}: {first}"
        return Verdict(probe.UNKNOWN, f"PROVISIONER UNKNOWN - {first}", [], inconclusive=True)
    return Verdict(verdict.code, verdict.line, verdict.findings)


def _open_while_broken(inputs: Inputs) -> list[Finding]:
    """The consultations not closed (the file's, and the state's as it can be read) while the
    state and escrow are not one unit: nothing is checked or repaired for them until it is."""
    from provisioner import check as probe
    from provisioner.state.store import open_store

    views: dict[str, tuple[str, dt.datetime | None]] = {}
    for c in inputs.consultations or ():
        if c.status != "closed":
            views[c.reference] = (c.entity, c.opening or c.deadline)
    try:
        db = open_store(inputs.location, create=False, migrate=False)
        if db is not None:
            try:
                for rec in db.snapshot().consultations.values():
                    if rec.status != "closed" and rec.reference not in views:
                        views[rec.reference] = (rec.entity, rec.opening or rec.deadline)
            finally:
                db.close()
    except ProvisionerError:
        pass  # the file's consultations are still named
    out = []
    for reference, (entity, when) in sorted(views.items()):
        if inputs.limit is not None and entity not in inputs.limit:
            continue
        day = f" (opening, else deadline, {clock.day(when)})" if when else ""
        out.append(
            probe.Finding(
                probe.CRITICAL,
                entity,
                FindingCode.UNIT_BROKEN,
                f"consultation {reference}{day}: its key can be neither checked nor repaired "
                "until the state and its escrow are one unit again",
            )
        )
    return out


def rehearse(
    manifest: Path,
    state_dir: Path | None,
    limit: list[str] | None,
    *,
    parallel: int,
    consultations: Path | None,
    state_backend: str | None = None,
) -> tuple[list[CopyResult], list[StoreState]]:
    """Rehearse the opening of bids with every copy and escrowed key (see rehearse.py), and
    what the agents' key stores' receipts say."""
    from provisioner import rehearse as rehearsal

    inputs = load_inputs(
        manifest, state_dir, limit, consultations=consultations, state_backend=state_backend
    )
    with open_state(inputs, create=False) as session:
        if session.db is None:
            raise NoStateError(session.location, "no copy to rehearse")
        now = clock.now()
        _, result = observe_and_plan(session, parallel, now)
        results = rehearsal.rehearse(
            session.manifest,
            session.recorded,
            result,
            dict(session.passwords),
            session.pool,
            now,
            session.limit,
            session.escrow,
            session.inputs.scope,
        )
        from provisioner import receipts

        stores = receipts.survey_of(session, result, parallel, session.limit)
        return results, stores


def rekey(
    manifest: Path,
    state_dir: Path | None,
    new: str,
    *,
    lock_timeout: float,
    state_backend: str | None = None,
) -> str:
    """Rotate the escrow passphrase (the manifest's is the current one); returns the escrow,
    as messages name it."""
    from provisioner.secrets import resolve
    from provisioner.state import rekey as rotation
    from provisioner.state.store import hold

    rotation.check_new_passphrase(new)
    inputs = load_inputs(manifest, state_dir, need_secrets=False, state_backend=state_backend)
    current = resolve(inputs.manifest.escrow_passphrase, "escrow passphrase")
    if new == current:
        raise SecretError("the new passphrase is the current one")
    if inputs.location.is_sqlite and not inputs.escrow_dir.is_dir():
        raise StateError(f"no escrow in {inputs.state_dir}: nothing to rekey")
    inputs = _with_passphrase(inputs, current)
    with (
        hold(inputs.location, "rekey", lock_timeout),
        open_state(inputs, create=False) as session,
    ):
        if session.escrow is None or session.db is None:
            raise StateError(f"no escrow in {session.escrow_blobs.where()}")
        rotation.rotate(session.escrow, session.db, new)
        return session.escrow_blobs.where()


def _with_passphrase(inputs: Inputs, passphrase: str) -> Inputs:
    from dataclasses import replace

    return replace(inputs, escrow_passphrase=passphrase)


@dataclass(frozen=True)
class Exported:
    generation: RecordedGeneration
    what: str  # "PKCS#12" or "certificate (PEM)"...


def export(
    manifest: Path,
    entity: str,
    out: Path,
    *,
    fmt: str,
    generation: int | None,
    profile: str | None,
    password_env: str | None,
    password_file: Path | None,
    force: bool,
    state_dir: Path | None,
    state_backend: str | None = None,
) -> Exported:
    """Hand-export a PKCS#12 (from the escrow; the password from --password-env or
    --password-file, else the entity's) or the public certificate of one generation."""
    from provisioner.adopt import export as write_export
    from provisioner.adopt import pick_generation
    from provisioner.secrets import from_options, policy_problem

    if fmt not in ("p12", "pem", "der"):
        raise UsageError(f"--format must be p12, pem or der, not {fmt!r}")
    if profile is not None and profile not in ("modern", "legacy"):
        raise UsageError(f"--profile must be modern or legacy, not {profile!r}")
    if out.exists() and not force:
        raise ProvisionerError(f"{out} exists; add --force to overwrite it")
    inputs = load_inputs(
        manifest,
        state_dir,
        [entity],
        need_secrets=fmt == "p12",
        named_by="",
        targets=False,
        state_backend=state_backend,
    )
    target = inputs.manifest.entity(entity)
    assert target is not None
    password = None
    if fmt == "p12":
        password = from_options(password_env, password_file, "password") or inputs.passwords.get(
            entity
        )
        if password is None:
            raise ProvisionerError(
                f"entity {entity} is absent: give --password-env or --password-file"
            )
        problem = policy_problem(password, target.password_policy)
        if problem:
            raise SecretError(f"the export password is refused: {problem}")
    with open_state(inputs, create=False, unlock=fmt == "p12") as session:
        if session.db is None:
            raise NoStateError(session.location, "no generation to export")
        g = pick_generation(session, target, generation)
        write_export(
            session,
            target,
            g,
            out,
            kind=fmt,
            password=password,
            profile=profile or target.key.profile,
        )
    return Exported(g, "PKCS#12" if fmt == "p12" else f"certificate ({fmt.upper()})")
