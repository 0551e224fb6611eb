"""What the appliers of one apply share: the inputs, the open state and escrow, the results,
and what earlier steps learnt (generations made or changed, failed targets)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner.apply.keygen import Workers
from provisioner.crypto import certificates
from provisioner.errors import TransportError
from provisioner.manifest.model import Entity
from provisioner.plan.actions import Action
from provisioner.plan.model import Desired, Plan
from provisioner.plan.paths import resolve_target
from provisioner.state.escrow import Escrow
from provisioner.state.records import Recorded, RecordedGeneration, Status
from provisioner.state.store import StateChange, StateStore
from provisioner.transports import TransportPool
from provisioner.transports.base import Transport

if TYPE_CHECKING:
    from provisioner.apply.copies import CopyPipeline

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Outcome:
    action: Action
    ok: bool
    error: str | None = None


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)
    created: list[RecordedGeneration] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def succeeded(self) -> int:
        return sum(o.ok for o in self.outcomes)

    def done(self, action: Action) -> None:
        self.outcomes.append(Outcome(action, True))

    def failed(self, action: Action, error: str) -> None:
        self.outcomes.append(Outcome(action, False, error))


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


@dataclass
class RunContext:
    """One apply's inputs (the reviewed plan, the manifest, passwords), its open state and
    escrow, its pools, and its results. `now` stamps what happens (audit, created_at,
    bound_at, the certificate's validity); every decision comes from the plan's actions."""

    desired: Desired
    recorded: Recorded
    db: StateStore
    escrow: Escrow
    passwords: dict[str, str]
    plan: Plan
    now: dt.datetime
    parallel: int = 8
    progress: ProgressFn = _no_progress
    pool: TransportPool = field(default_factory=TransportPool)
    issuers: dict[str, certificates.CertificateAuthority] = field(default_factory=dict)
    workers: Workers = field(default_factory=Workers)
    result: ApplyResult = field(default_factory=ApplyResult)
    # Every generation by (entity, number), as this run leaves it (created, renamed...).
    generations: dict[tuple[str, int], RecordedGeneration] = field(default_factory=dict)
    fresh_keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)  # by generation id
    failed_targets: set[tuple[str, str]] = field(default_factory=set)  # (entity, target)
    # (entity, generation) a write failed for, anywhere: its other copies are not removed
    # (a bound key moving to a workstation that cannot be written stays where it is).
    failed_generations: set[tuple[str, int]] = field(default_factory=set)
    skipped_entities: set[str] = field(default_factory=set)  # their new generation failed
    copies: CopyPipeline = field(init=False)

    def __post_init__(self) -> None:
        from provisioner.apply.copies import CopyPipeline

        self.parallel = max(1, self.parallel)
        if not self.generations:
            self.generations = {(g.entity, g.number): g for g in self.recorded.generations}
        self.copies = CopyPipeline(self)

    def entity(self, entity_id: str) -> Entity:
        entity = self.desired.manifest.entity(entity_id)
        assert entity is not None
        return entity

    def transport(self, name: str) -> Transport:
        target = resolve_target(self.desired, self.recorded, name)
        if target is None:
            raise TransportError(f"{name}: unknown target")
        return self.pool.get(target)

    def key_of(self, g: RecordedGeneration) -> rsa.RSAPrivateKey:
        return self.fresh_keys.get(g.id) or self.escrow.get(g.key_sha256)

    def set_status(self, g: RecordedGeneration, status: Status, **detail: object) -> None:
        """Record a generation's new status, with its audit record, in one transaction."""
        with self.db.change() as change:
            self.record_status(change, g, status, **detail)

    def record_status(
        self, change: StateChange, g: RecordedGeneration, status: Status, **detail: object
    ) -> None:
        """A generation's new status and its audit record, inside `change`."""
        change.set_status(g.id, status, self.now)
        change.audit(
            f"generation-{status}",
            g.entity,
            generation=g.number,
            designation=g.designation,
            **detail,
        )
        self.generations[(g.entity, g.number)] = replace(g, status=status)
