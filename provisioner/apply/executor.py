"""Perform a plan: escrow and state first, then targets, each result recorded as it lands.

Order: new generations (key generation, escrow fsynced, state committed; the copies of each
new generation are written as soon as it is committed and encoded, while the next keys are
being made), designation updates, the other copies written (one PKCS#12 encoding per
generation shared by all its targets, targets in parallel), copies removed (never from a
target where the replacement failed to land), then generations retired (their keys stay in the
escrow). No copy of a key is written before the key is in the escrow and the state names it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import queue
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner import clock, faults
from provisioner.apply.keygen import EncodeJob, Workers
from provisioner.crypto import certificates
from provisioner.crypto.keys import certificate_fingerprint
from provisioner.errors import ProvisionerError, TransportError
from provisioner.manifest.model import SELF_SIGNED, Entity, Issuer
from provisioner.plan.bindings import find_generation_in
from provisioner.plan.model import (
    BIND,
    CHAIN,
    CLEAR,
    CONSULT,
    CREATE,
    ESCROW,
    REMOVE,
    RENAME,
    RETAIN,
    RETIRE,
    SECURE,
    WRITE,
    Action,
    Desired,
    Plan,
)
from provisioner.plan.planner import resolve_target
from provisioner.secrets import resolve
from provisioner.state.escrow import Escrow
from provisioner.state.records import (
    CURRENT,
    RETAINED,
    RETIRED,
    Recorded,
    RecordedConsultation,
    RecordedCopy,
    RecordedGeneration,
)
from provisioner.state.store import StateChange, StateStore
from provisioner.transports import TransportPool
from provisioner.transports.base import (
    FileFacts,
    Transport,
    as_leftover,
    folder_of,
    target_spec,
)

FLUSH_EVERY = 200
FLUSH_SECONDS = 0.5


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


ProgressFn = Callable[[str, int, int], None]


def chain_digest(chain: tuple[x509.Certificate, ...]) -> str:
    return hashlib.sha256(b"".join(certificates.certificate_der(c) for c in chain)).hexdigest()


def load_issuer(issuer: Issuer) -> certificates.CertificateAuthority:
    password = (
        resolve(issuer.password, f"issuer {issuer.name} password") if issuer.password else None
    )
    try:
        cert_pem = issuer.certificate.read_bytes()
        key_pem = issuer.private_key.read_bytes()
    except OSError as exc:
        raise ProvisionerError(f"{issuer.location}: issuer {issuer.name}: {exc}") from None
    try:
        return certificates.load_certificate_authority(
            cert_pem, key_pem, password.encode() if password else None
        )
    except ProvisionerError as exc:
        raise ProvisionerError(f"{issuer.location}: issuer {issuer.name}: {exc}") from None


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
        parallel: int = 8,
        progress: ProgressFn | None = None,
        pool: TransportPool | None = None,
        issuers: dict[str, certificates.CertificateAuthority] | None = None,
    ) -> None:
        self.desired = desired
        self.recorded = recorded
        self.db = db
        self.escrow = escrow
        self.passwords = passwords
        self.plan = plan
        self.now = now
        self.parallel = max(1, parallel)
        self.progress = progress or (lambda phase, done, total: None)
        self.result = ApplyResult()
        self.generations: dict[tuple[str, int], RecordedGeneration] = {
            (g.entity, g.number): g for g in recorded.generations
        }
        self.fresh_keys: dict[str, rsa.RSAPrivateKey] = {}
        self.workers = Workers()
        # PKCS#12 encodings queued as soon as a new generation is committed (its designation,
        # chain and password are final then): (entity, number) -> bytes to come.
        self.encoding: dict[tuple[str, int], Future[bytes]] = {}
        # The copies to write, by generation: (entity, number) -> write actions.
        self._writes: dict[tuple[str, int], list[Action]] = {}
        for a in plan.actions:
            if a.kind == WRITE:
                self._writes.setdefault((a.entity, a.generation), []).append(a)
        # Writes in flight (threads) and written copies waiting for their state commit; the
        # copies of a new generation start as soon as its encoding is done, during `create`.
        self._writers: ThreadPoolExecutor | None = None
        self._inflight: dict[Future[FileFacts], tuple[Action, RecordedCopy]] = {}
        self._finished: queue.SimpleQueue[Future[FileFacts]] = queue.SimpleQueue()
        self._pending: list[tuple[Action, RecordedCopy]] = []
        self._last_flush = time.monotonic()
        self._written = 0
        self._to_write = sum(len(group) for group in self._writes.values())
        self._started: set[tuple[str, int]] = set()
        self.issuers = dict(issuers or {})  # loaded once, by the caller or on first use
        self.pool = pool or TransportPool()
        self.own_pool = pool is None
        self.failed_targets: set[tuple[str, str]] = set()  # (entity, target) where a write failed
        # (entity, generation) a write failed for, anywhere: its other copies are not removed
        # (a bound key moving to a workstation that cannot be written stays where it is).
        self.failed_generations: set[tuple[str, int]] = set()
        self.skipped_entities: set[str] = set()

    # ------------------------------------------------------------------ run

    def run(self) -> ApplyResult:
        by_kind: dict[str, list[Action]] = {}
        for action in self.plan.actions:
            by_kind.setdefault(action.kind, []).append(action)
        try:
            self.folders(by_kind.get(SECURE, []) + by_kind.get(CLEAR, []))
            # Conflicts are not actions: the planner left their entities alone.
            self.restore_escrow(by_kind.get(ESCROW, []))
            self.create(by_kind.get(CREATE, []), by_kind.get(RETAIN, []))
            self.bind(by_kind.get(BIND, []) + by_kind.get(CONSULT, []))
            self.retain(by_kind.get(RETAIN, []))
            self.rename(by_kind.get(RENAME, []))
            self.update_chains(by_kind.get(CHAIN, []))
            self.write(by_kind.get(WRITE, []))
            self.remove(by_kind.get(REMOVE, []))
            self.retire(by_kind.get(RETIRE, []))
        finally:
            self.workers.close()
            if self._writers is not None:
                self._writers.shutdown(wait=True, cancel_futures=True)
            if self.own_pool:
                self.pool.close()
        return self.result

    def restore_escrow(self, actions: list[Action]) -> None:
        """Take a missing escrowed key back from an intact copy: read through its transport,
        opened with the entity's password, checked against the recorded key fingerprint."""
        from provisioner.crypto import pkcs12
        from provisioner.crypto.keys import public_key_fingerprint

        for action in actions:
            assert action.target is not None and action.path is not None
            g = self.generations[(action.entity, action.generation)]
            try:
                data = self.transport(action.target).read(action.path)
                key = pkcs12.decode(data, self.passwords[action.entity]).key
                if public_key_fingerprint(key) != g.key_sha256:
                    raise ProvisionerError(
                        f"{action.target}: {action.path} does not hold generation {g.number}'s key"
                    )
                self.escrow.put(key, action.entity, self.db.serial())
            except ProvisionerError as exc:
                self.result.outcomes.append(Outcome(action, False, str(exc)))
                continue
            with self.db.change() as change:
                change.audit(
                    "escrow-restored",
                    action.entity,
                    generation=g.number,
                    key_sha256=g.key_sha256,
                    source=f"{action.target}:{action.path}",
                )
            self.result.outcomes.append(Outcome(action, True))

    def entity(self, entity_id: str) -> Entity:
        entity = self.desired.manifest.entity(entity_id)
        assert entity is not None
        return entity

    # ------------------------------------------------------------------ target folders

    def folders(self, actions: list[Action]) -> None:
        """Close target folders others may enter and clear what interrupted writes left, before
        anything is written there (a put-back copy may then be replaced as planned)."""
        for action in actions:
            assert action.target is not None and action.path is not None
            try:
                transport = self.transport(action.target)
                if action.kind == SECURE:
                    transport.secure_folder(action.path)
                    event = "folder-secured"
                else:
                    folder = folder_of(transport.target, action.path)
                    name = action.path[len(folder) :].lstrip("/\\")
                    leftover = as_leftover(name)
                    assert leftover is not None
                    transport.clear_leftover(folder, leftover)
                    event = "leftover-cleared"
            except ProvisionerError as exc:
                self.result.outcomes.append(Outcome(action, False, str(exc)))
                continue
            self.db.note(event, None, target=action.target, path=action.path)
            self.result.outcomes.append(Outcome(action, True))

    # ------------------------------------------------------------------ consultations

    def bind(self, actions: list[Action]) -> None:
        """Record new bindings and consultation news in one transaction (after new generations,
        so that a binding names a key created by this very run)."""
        if not actions:
            return
        with self.db.change() as change:
            for action in actions:
                attrs = dict(action.attributes)
                reference = attrs["reference"]
                g = self.generations.get((action.entity, action.generation))
                if not action.generation:  # bound by name to a key this run may have created
                    g = find_generation_in(
                        self.generations.values(),
                        action.entity,
                        attrs["key"],
                        self.recorded.designations,
                    )
                rec = self.recorded.consultations.get(reference)
                if rec is not None and rec.generation_id is not None:
                    g = self.recorded.generation(rec.generation_id)  # bound by identity
                status = attrs["status"]
                closed_at = None
                if status == "closed":
                    closed_at = rec.closed_at if rec and rec.closed_at else self.now
                change.put_consultation(
                    RecordedConsultation(
                        reference=reference,
                        entity=action.entity,
                        key_ref=rec.key_ref if rec else attrs["key"],
                        generation_id=g.id if g else (rec.generation_id if rec else None),
                        cert_sha256=g.cert_sha256 if g else (rec.cert_sha256 if rec else None),
                        title=attrs.get("title", ""),
                        status=status,
                        deadline=clock.parse(attrs["deadline"]) if "deadline" in attrs else None,
                        opening=clock.parse(attrs["opening"]) if "opening" in attrs else None,
                        bound_at=rec.bound_at if rec else self.now,
                        closed_at=closed_at,
                    )
                )
                change.audit(
                    "consultation-bound" if action.kind == BIND else "consultation-updated",
                    action.entity,
                    reference=reference,
                    key=attrs["key"],
                    generation=action.generation,
                    status=status,
                )
        self.result.outcomes.extend(Outcome(a, True) for a in actions)

    # ------------------------------------------------------------------ generations

    def retain(self, actions: list[Action]) -> None:
        """Keep generations bound to open consultations: a generation replaced in this run was
        already marked retained with its replacement; a retired one is brought back."""
        for action in actions:
            g = self.generations.get((action.entity, action.generation))
            if g is not None and g.status == RETIRED:
                self.set_status(g, RETAINED, consultations=action.attribute("consultations"))
            self.result.outcomes.append(Outcome(action, True))

    def set_status(self, g: RecordedGeneration, status: str, **detail: object) -> None:
        """Record a generation's new status, with its audit record, in one transaction."""
        with self.db.change() as change:
            self.record_status(change, g, status, **detail)

    def record_status(
        self, change: StateChange, g: RecordedGeneration, status: str, **detail: object
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

    def create(self, actions: list[Action], retains: list[Action]) -> None:
        if not actions:
            return
        retained = {(a.entity, a.generation) for a in retains}
        issuers = self.issuers
        ready: list[tuple[Action, Entity, certificates.CertificateAuthority | None]] = []
        for action in actions:
            entity = self.entity(action.entity)
            name = entity.key.issuer
            try:
                if name != SELF_SIGNED and name not in issuers:
                    issuers[name] = load_issuer(self.desired.manifest.issuers[name])
            except ProvisionerError as exc:
                self.fail_entity(action, str(exc))
                continue
            ready.append((action, entity, issuers.get(name)))
        self.progress("generating keys", 0, len(ready))
        # The copies of each new generation: its PKCS#12 is queued for encoding between the
        # key generations as soon as the generation is committed (escrow, then state), and its
        # copies are written as soon as it is encoded, while later keys are being made.
        encoding: deque[tuple[tuple[str, int], Future[bytes]]] = deque()
        keys = self.workers.keys([entity.key.size for _, entity, _ in ready])
        for i, ((action, entity, ca), key) in enumerate(zip(ready, keys, strict=True)):
            if i == 0:
                faults.reached("after-keygen")
            try:
                g = self.create_one(action, entity, ca, key, retained)
            except ProvisionerError as exc:
                self.fail_entity(action, str(exc))
            else:
                group = (entity.id, g.number)
                if group in self._writes and entity.id in self.passwords:
                    self.encoding[group] = self.workers.encode(self.encode_job(g, key))
                    encoding.append((group, self.encoding[group]))
            while encoding and encoding[0][1].done():
                group, encoded = encoding.popleft()
                self.start_writes(group, self._writes[group], encoded)
            self.collect(wait=False)
            self.progress("generating keys", i + 1, len(ready))

    def fail_entity(self, action: Action, message: str) -> None:
        self.result.outcomes.append(Outcome(action, False, message))
        self.skipped_entities.add(action.entity)
        with self.db.change() as change:
            change.audit(
                "generation-failed", action.entity, generation=action.generation, error=message
            )

    def create_one(
        self,
        action: Action,
        entity: Entity,
        ca: certificates.CertificateAuthority | None,
        key: rsa.RSAPrivateKey,
        retained: set[tuple[str, int]],
    ) -> RecordedGeneration:
        spec = entity.key
        common_name = action.attribute("common_name") or spec.common_name_for(
            action.generation, self.now.year
        )
        cert = certificates.build_certificate(
            key,
            certificates.CertificateSpec(
                common_name,
                spec.validity_days,
                spec.subject.organization,
                spec.subject.organizational_unit,
                spec.subject.country,
            ),
            self.now,
            ca,
        )
        chain = (ca.certificate, *ca.chain) if ca else ()
        # Escrow first: the key is durable before the state names it or a target receives it.
        key_sha256 = self.escrow.put(key, entity.id, self.db.serial())
        faults.reached("after-escrow")
        generation = RecordedGeneration(
            id=uuid.uuid4().hex,
            entity=entity.id,
            number=action.generation,
            designation=action.attribute("designation")
            or spec.designation_for(action.generation, self.now.year),
            common_name=common_name,
            issuer=spec.issuer,
            key_size=spec.size,
            subject=(
                spec.subject.organization,
                spec.subject.organizational_unit,
                spec.subject.country,
            ),
            certificate=certificates.certificate_der(cert),
            chain=b"".join(certificates.certificate_pem(c) for c in chain),
            cert_sha256=certificate_fingerprint(cert),
            key_sha256=key_sha256,
            chain_sha256=chain_digest(chain),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            status=CURRENT,
            origin="generated",
            created_at=self.now,
        )
        previous = self.recorded.current(entity.id)
        with self.db.change() as change:
            if previous is not None:
                status = RETAINED if (entity.id, previous.number) in retained else RETIRED
                self.record_status(change, previous, status, replaced_by=generation.number)
            change.add_generation(generation)
            change.audit(
                "generation-created",
                entity.id,
                generation=generation.number,
                designation=generation.designation,
                cert_sha256=generation.cert_sha256,
                key_sha256=key_sha256,
                not_after=generation.not_after.isoformat(),
                reason=action.reason,
            )
        self.generations[(entity.id, generation.number)] = generation
        self.fresh_keys[generation.id] = key
        self.result.created.append(generation)
        faults.reached("after-commit")
        self.result.outcomes.append(Outcome(action, True))
        return generation

    def update_chains(self, actions: list[Action]) -> None:
        for action in actions:
            g = self.generations[(action.entity, action.generation)]
            pem, digest = self.desired.chain_updates[g.id]
            with self.db.change() as change:
                change.set_chain(g.id, pem, digest)
                change.audit(
                    "chain-updated", action.entity, generation=g.number, chain_sha256=digest
                )
            self.generations[(action.entity, action.generation)] = replace(
                g, chain=pem, chain_sha256=digest
            )
            self.result.outcomes.append(Outcome(action, True))

    def rename(self, actions: list[Action]) -> None:
        for action in actions:
            g = self.generations[(action.entity, action.generation)]
            designation = action.attribute("designation") or g.designation
            with self.db.change() as change:
                change.set_designation(g.id, designation)
                change.audit(
                    "designation-updated",
                    action.entity,
                    generation=g.number,
                    old=g.designation,
                    new=designation,
                )
            self.generations[(action.entity, action.generation)] = replace(
                g, designation=designation
            )
            self.result.outcomes.append(Outcome(action, True))

    # ------------------------------------------------------------------ copies

    def transport(self, name: str) -> Transport:
        target = resolve_target(self.desired, self.recorded, name)
        if target is None:
            raise TransportError(f"{name}: unknown target")
        return self.pool.get(target)

    def key_of(self, g: RecordedGeneration) -> rsa.RSAPrivateKey:
        return self.fresh_keys.get(g.id) or self.escrow.get(g.key_sha256)

    def encode_job(self, g: RecordedGeneration, key: rsa.RSAPrivateKey) -> EncodeJob:
        entity = self.entity(g.entity)
        password = self.passwords[g.entity]
        return (key, g.certificate, g.chain, g.designation, password, entity.key.profile)

    def encode_groups(
        self, groups: dict[tuple[str, int], list[Action]]
    ) -> dict[tuple[str, int], tuple[Future[bytes], str] | str]:
        """One PKCS#12 per generation, across cores: the encodings queued when the generation
        was created, the others now. A failure (key missing from the escrow...) is returned as
        its message."""
        jobs: dict[tuple[str, int], EncodeJob] = {}
        failed: dict[tuple[str, int], str] = {}
        for group in groups:
            g = self.generations[group]
            try:
                jobs[group] = self.encode_job(g, self.key_of(g))
            except ProvisionerError as exc:
                failed[group] = str(exc)
        queued = {group: self.encoding[group] for group in jobs if group in self.encoding}
        inline = len(jobs) - len(queued) < 8  # a few are not worth starting worker processes
        out: dict[tuple[str, int], tuple[Future[bytes], str] | str] = {}
        for group in groups:
            if group in failed:
                out[group] = failed[group]
                continue
            job = jobs[group]
            encoding = queued.get(group) or self.workers.encode(job, inline=inline)
            out[group] = (encoding, self.escrow.password_id(group[0], job[4]))
        return out

    def write(self, actions: list[Action]) -> None:
        groups: dict[tuple[str, int], list[Action]] = {}
        for action in actions:
            if action.entity in self.skipped_entities:
                self.result.outcomes.append(Outcome(action, False, "its generation failed"))
                self.failed_targets.add((action.entity, action.target or ""))
                continue
            group = (action.entity, action.generation)
            if group not in self._started:
                groups.setdefault(group, []).append(action)
        self.progress("writing copies", self._written, self._to_write)
        encoded = self.encode_groups(groups)
        for group, group_actions in groups.items():
            result = encoded[group]
            if isinstance(result, str):
                for action in group_actions:
                    self.record_failure(action, result)
                continue
            self.start_writes(group, group_actions, result[0])  # in order: early ones are
            self.collect(wait=False)  # written while the others are still being encoded
        self.collect(wait=True)

    def start_writes(
        self, group: tuple[str, int], actions: list[Action], encoding: Future[bytes]
    ) -> None:
        """Write the copies of one generation, in threads, once its PKCS#12 is encoded."""
        self._started.add(group)
        entity_id = group[0]
        try:
            data = encoding.result()
        except ProvisionerError as exc:
            for action in actions:
                self.record_failure(action, f"cannot encode the PKCS#12: {exc}")
            return
        entity = self.entity(entity_id)
        g = self.generations[group]
        password_id = self.escrow.password_id(entity_id, self.passwords[entity_id])
        if self._writers is None:
            self._writers = ThreadPoolExecutor(max_workers=self.parallel)
        for action in actions:
            assert action.target is not None and action.path is not None
            template = RecordedCopy(
                entity=entity_id,
                generation_id=g.id,
                target=action.target,
                path=action.path,
                sha256="",
                size=0,
                profile=entity.key.profile,
                password_id=password_id,
                friendly_name=g.designation,
                chain_sha256=g.chain_sha256,
                written_at=self.now,
            )
            future = self._writers.submit(self._write_one, action, data)
            self._inflight[future] = (action, template)
            future.add_done_callback(self._finished.put)

    def collect(self, *, wait: bool) -> None:
        """Record the writes that finished (all of them when `wait`), committing the state in
        batches. Runs in the main thread: the state connection is its own."""
        while self._inflight:
            try:
                future = self._finished.get(block=wait)
            except queue.Empty:
                break
            action, template = self._inflight.pop(future)
            self._written += 1
            try:
                facts = future.result()
                faults.reached("mid-distribution")
            except ProvisionerError as exc:
                self.record_failure(action, str(exc))
            else:
                self._pending.append(
                    (action, replace(template, sha256=facts.sha256, size=facts.size))
                )
            if (
                len(self._pending) >= FLUSH_EVERY
                or time.monotonic() - self._last_flush > FLUSH_SECONDS
            ):
                self.flush(self._pending)
                self._pending = []
                self._last_flush = time.monotonic()
            self.progress("writing copies", self._written, self._to_write)
        if wait or not self._inflight:
            self.flush(self._pending)
            self._pending = []

    def _write_one(self, action: Action, data: bytes) -> FileFacts:
        assert action.target is not None and action.path is not None
        return self.transport(action.target).write(action.path, data)

    def flush(self, pending: list[tuple[Action, RecordedCopy]]) -> None:
        if not pending:
            return
        with self.db.change() as change:
            for action, copy in pending:
                target = resolve_target(self.desired, self.recorded, copy.target)
                if target is not None:
                    change.put_target(copy.target, target_spec(target))
                change.put_copy(copy)
                change.audit(
                    "copy-written",
                    copy.entity,
                    target=copy.target,
                    path=copy.path,
                    generation=action.generation,
                    sha256=copy.sha256,
                    profile=copy.profile,
                    reason=action.reason,
                )
        self.result.outcomes.extend(Outcome(action, True) for action, _ in pending)

    def record_failure(self, action: Action, message: str) -> None:
        self.failed_targets.add((action.entity, action.target or ""))
        self.failed_generations.add((action.entity, action.generation))
        self.result.outcomes.append(Outcome(action, False, message))
        with self.db.change() as change:
            change.audit(
                "copy-failed",
                action.entity,
                target=action.target,
                path=action.path,
                generation=action.generation,
                error=message,
            )

    def remove(self, actions: list[Action]) -> None:
        for action in actions:
            assert action.target is not None and action.path is not None
            if (action.entity, action.target) in self.failed_targets:
                self.result.outcomes.append(
                    Outcome(action, False, "kept: the replacement copy did not land on this target")
                )
                continue
            if (action.entity, action.generation) in self.failed_generations:
                self.result.outcomes.append(
                    Outcome(action, False, "kept: a copy of this generation failed elsewhere")
                )
                continue
            try:
                self.transport(action.target).remove(action.path)
            except ProvisionerError as exc:
                self.result.outcomes.append(Outcome(action, False, str(exc)))
                self.failed_targets.add((action.entity, action.target))
                continue
            with self.db.change() as change:
                change.delete_copy(action.target, action.path)
                faults.reached("after-remove")
                change.audit(
                    "copy-removed",
                    action.entity,
                    target=action.target,
                    path=action.path,
                    generation=action.generation,
                    reason=action.reason,
                )
            self.result.outcomes.append(Outcome(action, True))

    def retire(self, actions: list[Action]) -> None:
        for action in actions:
            g = self.generations.get((action.entity, action.generation))
            if g is None:
                continue
            self.set_status(g, RETIRED, reason=action.reason)
            self.result.outcomes.append(Outcome(action, True))
