"""Perform a plan: escrow and state first, then targets, each result recorded as it lands.

The executor is the order of operations: `STEPS`, a list of (action kinds, applier). Each
applier (generations.py, copies.py, consultations.py, folders.py) takes the run context and
the plan's actions of its kinds, in plan order, and does exactly what they say.

Order: target folders closed and cleared; missing escrowed keys restored; new generations
(key generation, escrow fsynced, state committed; the copies of each new generation are
written as soon as it is committed and encoded, while the next keys are being made);
consultations bound; generations retained, renamed, their chains updated; the other copies
written (one PKCS#12 encoding per generation shared by all its targets, targets in parallel);
copies removed (never from a target where the replacement failed to land); generations retired
(their keys stay in the escrow). No copy of a key is written before the key is in the escrow
and the state names it. Conflicts have no applier: the planner left their entities alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from provisioner.apply import consultations, copies, folders, generations
from provisioner.apply.context import ApplyResult, Outcome, ProgressFn, RunContext
from provisioner.crypto import certificates
from provisioner.plan.actions import (
    ActionBase,
    BindConsultation,
    ClearLeftover,
    CreateGeneration,
    RemoveCopy,
    RenameGeneration,
    RestoreEscrow,
    RetainGeneration,
    RetireGeneration,
    SecureFolder,
    UpdateChain,
    UpdateConsultation,
    WriteCopy,
)
from provisioner.plan.model import Desired, Plan
from provisioner.state.escrow import Escrow
from provisioner.state.records import Recorded
from provisioner.state.store import StateStore
from provisioner.transports import TransportPool

__all__ = ["STEPS", "ApplyResult", "Executor", "Outcome", "ProgressFn", "Step"]

A = TypeVar("A", bound=ActionBase)


@dataclass(frozen=True)
class Step(Generic[A]):
    """The actions of `kinds` (in plan order) are given to `apply`."""

    kinds: tuple[type[A], ...]
    apply: Callable[[RunContext, Sequence[A]], None]

    def select(self, actions: Sequence[ActionBase]) -> list[A]:
        return [a for a in actions if isinstance(a, self.kinds)]


STEPS: tuple[Step[Any], ...] = (
    Step[SecureFolder | ClearLeftover]((SecureFolder, ClearLeftover), folders.secure_and_clear),
    Step((RestoreEscrow,), generations.restore_escrow),
    Step((CreateGeneration,), generations.create),
    Step[BindConsultation | UpdateConsultation](
        (BindConsultation, UpdateConsultation), consultations.bind
    ),
    Step((RetainGeneration,), generations.retain),
    Step((RenameGeneration,), generations.rename),
    Step((UpdateChain,), generations.update_chain),
    Step((WriteCopy,), copies.write),
    Step((RemoveCopy,), copies.remove),
    Step((RetireGeneration,), generations.retire),
)


class Executor:
    def __init__(
        self,
        *,
        desired: Desired,
        recorded: Recorded,
        db: StateStore,
        escrow: Escrow,
        passwords: dict[str, str],
        plan: Plan,
        now: dt.datetime,
        parallel: int,
        pool: TransportPool,
        issuers: dict[str, certificates.CertificateAuthority],
        progress: ProgressFn | None = None,
    ) -> None:
        """`pool` is the session's: its connections are closed with the session, not here."""
        self.ctx = RunContext(
            desired=desired,
            recorded=recorded,
            db=db,
            escrow=escrow,
            passwords=passwords,
            plan=plan,
            now=now,
            parallel=parallel,
            pool=pool,
            issuers=dict(issuers),  # loaded once, by the caller or on first use
        )
        if progress is not None:
            self.ctx.progress = progress

    def run(self) -> ApplyResult:
        ctx = self.ctx
        try:
            for step in STEPS:
                step.apply(ctx, step.select(ctx.plan.actions))
        finally:
            ctx.workers.close()
            ctx.copies.close()
        return ctx.result
