"""`check`: the monitoring probe's verdict (its findings are `provisioner/check.py`'s)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner import clock
from provisioner.codes import FindingCode, Severity
from provisioner.engine import Inputs, load_inputs, observe_and_plan, open_state
from provisioner.errors import (
    NoStateError,
    ProvisionerError,
    UnitError,
)

if TYPE_CHECKING:  # imported where used: `plan` loads neither the probe nor the receipts
    from provisioner.check import Finding


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
