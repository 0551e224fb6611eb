"""The copies: one PKCS#12 encoding per generation (across cores), shared by all its targets,
written in a thread pool of `--parallel` workers, recorded in batches; and removals, never
from a target where the replacement failed to land.

The copies of a new generation start during `create`: its encoding is queued as soon as the
generation is committed, and its copies written as soon as it is encoded, while the next keys
are being made. Results are committed by the main thread (the state connection is its own)."""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner import faults
from provisioner.apply.keygen import EncodeJob
from provisioner.errors import ProvisionerError, TransportError
from provisioner.plan.actions import RemoveCopy, WriteCopy
from provisioner.plan.paths import resolve_target
from provisioner.state.records import RecordedCopy, RecordedGeneration
from provisioner.transports.base import FileFacts, target_spec

if TYPE_CHECKING:
    from provisioner.apply.context import RunContext

FLUSH_EVERY = 200
FLUSH_SECONDS = 0.5

Group = tuple[str, int]  # (entity, generation number): the copies one encoding serves


class CopyPipeline:
    """Encodings, writes in flight and written copies waiting for their state commit."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        # The copies to write, by generation.
        self.planned: dict[Group, list[WriteCopy]] = {}
        for a in ctx.plan.actions:
            if isinstance(a, WriteCopy):
                self.planned.setdefault((a.entity, a.generation), []).append(a)
        # Encodings queued as soon as a new generation is committed (its designation, chain
        # and password are final then), and those of them whose copies are not started yet.
        self.encoding: dict[Group, Future[bytes]] = {}
        self.early: deque[tuple[Group, Future[bytes]]] = deque()
        self.writers: ThreadPoolExecutor | None = None
        self.inflight: dict[Future[FileFacts], tuple[WriteCopy, RecordedCopy]] = {}
        self.finished: queue.SimpleQueue[Future[FileFacts]] = queue.SimpleQueue()
        self.pending: list[tuple[WriteCopy, RecordedCopy]] = []
        self.last_flush = time.monotonic()
        self.written = 0
        self.to_write = sum(len(group) for group in self.planned.values())
        self.started: set[Group] = set()
        # For the progress display: encodings done, and copies left per target.
        self.encoded = 0
        self.left: dict[str, int] = {}
        for group in self.planned.values():
            for a in group:
                self.left[a.target] = self.left.get(a.target, 0) + 1
        self.targets = len(self.left)

    def close(self) -> None:
        if self.writers is not None:
            self.writers.shutdown(wait=True, cancel_futures=True)

    def job(self, g: RecordedGeneration, key: rsa.RSAPrivateKey) -> EncodeJob:
        entity = self.ctx.entity(g.entity)
        password = self.ctx.passwords[g.entity]
        return EncodeJob(key, g.certificate, g.chain, g.designation, password, entity.key.profile)

    # ------------------------------------------------------------ during create

    def encode_early(self, g: RecordedGeneration, key: rsa.RSAPrivateKey) -> None:
        """Queue the encoding of a generation just committed, when copies of it are planned."""
        group = (g.entity, g.number)
        if group in self.planned and g.entity in self.ctx.passwords:
            self.encoding[group] = self.ctx.workers.encode(self.job(g, key))
            self.early.append((group, self.encoding[group]))

    def start_encoded(self) -> None:
        """Start writing the copies whose encoding is done, in order; record finished writes."""
        while self.early and self.early[0][1].done():
            group, encoded = self.early.popleft()
            self.start_writes(group, self.planned[group], encoded)
        self.collect(wait=False)

    # ------------------------------------------------------------ write step

    def encode_groups(
        self, groups: dict[Group, list[WriteCopy]]
    ) -> dict[Group, Future[bytes] | str]:
        """One PKCS#12 per generation, across cores: the encodings queued when the generation
        was created, the others now. A failure (key missing from the escrow...) is returned as
        its message."""
        jobs: dict[Group, EncodeJob] = {}
        failed: dict[Group, str] = {}
        for group in groups:
            g = self.ctx.generations[group]
            try:
                jobs[group] = self.job(g, self.ctx.key_of(g))
            except ProvisionerError as exc:
                failed[group] = str(exc)
        queued = {group: self.encoding[group] for group in jobs if group in self.encoding}
        inline = len(jobs) - len(queued) < 8  # a few are not worth starting worker processes
        out: dict[Group, Future[bytes] | str] = {}
        for group in groups:
            if group in failed:
                out[group] = failed[group]
            else:
                out[group] = queued.get(group) or self.ctx.workers.encode(
                    jobs[group], inline=inline
                )
        return out

    def write(self, actions: Sequence[WriteCopy]) -> None:
        ctx = self.ctx
        groups: dict[Group, list[WriteCopy]] = {}
        for action in actions:
            if action.entity in ctx.skipped_entities:
                ctx.result.failed(action, "its generation failed")
                ctx.failed_targets.add((action.entity, action.target))
                continue
            group = (action.entity, action.generation)
            if group not in self.started:
                groups.setdefault(group, []).append(action)
        ctx.progress("writing copies", self.written, self.to_write)
        ctx.progress("targets", sum(not n for n in self.left.values()), self.targets)
        encoded = self.encode_groups(groups)
        for group, group_actions in groups.items():
            result = encoded[group]
            if isinstance(result, str):
                for action in group_actions:
                    self.record_failure(action, result)
                continue
            self.start_writes(group, group_actions, result)  # in order: early ones are
            self.collect(wait=False)  # written while the others are still being encoded
        self.collect(wait=True)

    def start_writes(self, group: Group, actions: list[WriteCopy], encoding: Future[bytes]) -> None:
        """Write the copies of one generation, in threads, once its PKCS#12 is encoded."""
        ctx = self.ctx
        self.started.add(group)
        entity_id = group[0]
        try:
            data = encoding.result()
        except ProvisionerError as exc:
            for action in actions:
                self.record_failure(action, f"cannot encode the PKCS#12: {exc}")
            return
        finally:
            self.encoded += 1
            ctx.progress("encoding copies", self.encoded, len(self.planned))
        entity = ctx.entity(entity_id)
        g = ctx.generations[group]
        password_id = ctx.escrow.password_id(entity_id, ctx.passwords[entity_id])
        if self.writers is None:
            self.writers = ThreadPoolExecutor(max_workers=ctx.parallel)
        for action in actions:
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
                written_at=ctx.now,
            )
            future = self.writers.submit(self._write_one, action, data)
            self.inflight[future] = (action, template)
            future.add_done_callback(self.finished.put)

    def _write_one(self, action: WriteCopy, data: bytes) -> FileFacts:
        return self.ctx.transport(action.target).write(action.path, data)

    def collect(self, *, wait: bool) -> None:
        """Record the writes that finished (all of them when `wait`), committing the state in
        batches. Runs in the main thread: the state connection is its own."""
        while self.inflight:
            try:
                future = self.finished.get(block=wait)
            except queue.Empty:
                break
            action, template = self.inflight.pop(future)
            self.written += 1
            self.left[action.target] -= 1
            if not self.left[action.target]:
                done = sum(not n for n in self.left.values())
                self.ctx.progress("targets", done, self.targets)
            try:
                facts = future.result()
                faults.reached("mid-distribution")
            except ProvisionerError as exc:
                self.record_failure(action, str(exc))
            else:
                self.pending.append(
                    (action, replace(template, sha256=facts.sha256, size=facts.size))
                )
            if (
                len(self.pending) >= FLUSH_EVERY
                or time.monotonic() - self.last_flush > FLUSH_SECONDS
            ):
                self.flush()
                self.last_flush = time.monotonic()
            self.ctx.progress("writing copies", self.written, self.to_write)
        if wait or not self.inflight:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if not pending:
            return
        ctx = self.ctx
        with ctx.db.change() as change:
            for action, copy in pending:
                target = resolve_target(ctx.desired, ctx.recorded, copy.target)
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
        for action, _ in pending:
            ctx.result.done(action)

    def record_failure(self, action: WriteCopy, message: str) -> None:
        ctx = self.ctx
        ctx.failed_targets.add((action.entity, action.target))
        ctx.failed_generations.add((action.entity, action.generation))
        ctx.result.failed(action, message)
        with ctx.db.change() as change:
            change.audit(
                "copy-failed",
                action.entity,
                target=action.target,
                path=action.path,
                generation=action.generation,
                error=message,
            )


def write(ctx: RunContext, actions: Sequence[WriteCopy]) -> None:
    """Write the copies not yet started during `create`, then wait for every write."""
    ctx.copies.write(actions)


def remove(ctx: RunContext, actions: Sequence[RemoveCopy]) -> None:
    """Remove copies no longer wanted, never from a target where a replacement failed to land
    nor while a copy of that generation failed elsewhere, and only while the file is what the
    plan observed (looked at again just before: a write of this run to the same place under
    another target name, or anyone's since, keeps it). A copy another target holds now loses
    its record only."""
    for action in actions:
        if (action.entity, action.target) in ctx.failed_targets:
            ctx.result.failed(action, "kept: the replacement copy did not land on this target")
            continue
        if (action.entity, action.generation) in ctx.failed_generations:
            ctx.result.failed(action, "kept: a copy of this generation failed elsewhere")
            continue
        if not action.keeps_file:
            try:
                _remove_if_unchanged(ctx, action)
            except ProvisionerError as exc:
                ctx.result.failed(action, str(exc))
                ctx.failed_targets.add((action.entity, action.target))
                continue
        with ctx.db.change() as change:
            change.delete_copy(action.target, action.path)
            faults.reached("after-remove")
            change.audit(
                "copy-forgotten" if action.keeps_file else "copy-removed",
                action.entity,
                target=action.target,
                path=action.path,
                generation=action.generation,
                reason=action.reason,
            )
        ctx.result.done(action)


def _remove_if_unchanged(ctx: RunContext, action: RemoveCopy) -> None:
    transport = ctx.transport(action.target)
    facts = transport.observe(action.path)
    if facts is None:
        return  # gone already: only the record is left to drop
    if facts.symlink or facts.sha256 != action.observed_sha256:
        raise TransportError(
            f"{action.target}: kept {action.path}: it changed since the plan observed it "
            "(another target's copy written there, or someone's file): not this state's to remove"
        )
    transport.remove(action.path)
