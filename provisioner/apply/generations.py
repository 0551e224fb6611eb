"""The generations: created (keys in a process pool, certificate, escrow write and fsync, then
one state transaction that retires or retains the previous one), retained, renamed, their
chain updated, retired, and a missing escrowed key restored from an intact copy.

Escrow first: no generation is recorded, and no copy of it written, before its key is in
the escrow."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner import faults
from provisioner.bounded import MAX_PEM_BYTES, InputFileError, read_regular
from provisioner.crypto import certificates
from provisioner.crypto.certificates import chain_digest
from provisioner.crypto.keys import certificate_fingerprint
from provisioner.errors import ProvisionerError
from provisioner.manifest.model import SELF_SIGNED, Entity, Issuer
from provisioner.plan.actions import (
    CreateGeneration,
    RenameGeneration,
    RestoreEscrow,
    RetainGeneration,
    RetireGeneration,
    UpdateChain,
)
from provisioner.secrets import resolve
from provisioner.state.records import CURRENT, RETAINED, RETIRED, Origin, RecordedGeneration, Status

if TYPE_CHECKING:
    from provisioner.apply.context import RunContext


def generation_from_certificate(
    cert: x509.Certificate,
    chain: tuple[x509.Certificate, ...],
    *,
    entity: str,
    number: int,
    designation: str,
    issuer: str,
    key_sha256: str,
    status: Status,
    origin: Origin,
    created_at: dt.datetime,
    subject: tuple[str | None, str | None, str | None] | None = None,
) -> RecordedGeneration:
    """The record of a generation whose key is `key_sha256` (already in the escrow) and whose
    certificate is `cert`: names, fingerprints, dates and chain are the certificate's.
    `subject`: the O/OU/C the manifest asked for (a created key), else the certificate's.
    One maker for `create`, `adopt` and `recover`."""
    return RecordedGeneration(
        id=uuid.uuid4().hex,
        entity=entity,
        number=number,
        designation=designation,
        common_name=certificates.common_name(cert),
        issuer=issuer,
        key_size=_key_size(cert),
        subject=subject if subject is not None else certificates.subject_triple(cert),
        certificate=certificates.certificate_der(cert),
        chain=b"".join(certificates.certificate_pem(c) for c in chain),
        cert_sha256=certificate_fingerprint(cert),
        key_sha256=key_sha256,
        chain_sha256=chain_digest(chain),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        status=status,
        origin=origin,
        created_at=created_at,
    )


def _key_size(cert: x509.Certificate) -> int:
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)  # adopt and recover refuse other keys first
    return public.key_size


def load_issuer(issuer: Issuer) -> certificates.CertificateAuthority:
    password = (
        resolve(issuer.password, f"issuer {issuer.name} password") if issuer.password else None
    )
    try:
        cert_pem = read_regular(issuer.certificate, MAX_PEM_BYTES)
        key_pem = read_regular(issuer.private_key, MAX_PEM_BYTES)
    except InputFileError as exc:
        raise ProvisionerError(f"{issuer.location}: issuer {issuer.name}: {exc}") from None
    try:
        return certificates.load_certificate_authority(
            cert_pem, key_pem, password.encode() if password else None
        )
    except ProvisionerError as exc:
        raise ProvisionerError(f"{issuer.location}: issuer {issuer.name}: {exc}") from None


def restore_escrow(ctx: RunContext, actions: Sequence[RestoreEscrow]) -> None:
    """Take a missing escrowed key back from an intact copy: read through its transport,
    opened with the entity's password, checked against the recorded key fingerprint."""
    from provisioner.crypto import pkcs12
    from provisioner.crypto.keys import public_key_fingerprint

    for action in actions:
        g = ctx.generations[(action.entity, action.generation)]
        try:
            data = ctx.transport(action.target).read(action.path)
            key = pkcs12.decode(data, ctx.passwords[action.entity]).key
            if public_key_fingerprint(key) != g.key_sha256:
                raise ProvisionerError(
                    f"{action.target}: {action.path} does not hold generation {g.number}'s key"
                )
            ctx.escrow.put(key, action.entity, ctx.db.serial())
        except ProvisionerError as exc:
            ctx.result.failed(action, str(exc))
            # Its copies may be the key's last holders: none is removed by this run.
            ctx.failed_generations.add((action.entity, action.generation))
            continue
        with ctx.db.change() as change:
            change.audit(
                "escrow-restored",
                action.entity,
                generation=g.number,
                key_sha256=g.key_sha256,
                source=f"{action.target}:{action.path}",
            )
        ctx.result.done(action)


def create(ctx: RunContext, actions: Sequence[CreateGeneration]) -> None:
    """Make the planned generations: keys in the process pool, each escrowed and committed as
    it comes, its copies queued for encoding and written while the next keys are made."""
    if not actions:
        return
    ready: list[tuple[CreateGeneration, Entity, certificates.CertificateAuthority | None]] = []
    for action in actions:
        entity = ctx.entity(action.entity)
        name = action.issuer
        try:
            if name != SELF_SIGNED and name not in ctx.issuers:
                ctx.issuers[name] = load_issuer(ctx.desired.manifest.issuers[name])
        except ProvisionerError as exc:
            fail_entity(ctx, action, str(exc))
            continue
        ready.append((action, entity, ctx.issuers.get(name)))
    ctx.progress("generating keys", 0, len(ready))
    keys = ctx.workers.keys([action.key_size for action, _, _ in ready])
    for i, ((action, entity, ca), key) in enumerate(zip(ready, keys, strict=True)):
        if i == 0:
            faults.reached("after-keygen")
        try:
            g = create_one(ctx, action, entity, ca, key)
        except ProvisionerError as exc:
            fail_entity(ctx, action, str(exc))
        else:
            ctx.copies.encode_early(g, key)
        ctx.copies.start_encoded()
        ctx.progress("generating keys", i + 1, len(ready))


def fail_entity(ctx: RunContext, action: CreateGeneration, message: str) -> None:
    ctx.result.failed(action, message)
    ctx.skipped_entities.add(action.entity)
    with ctx.db.change() as change:
        change.audit(
            "generation-failed", action.entity, generation=action.generation, error=message
        )


def create_one(
    ctx: RunContext,
    action: CreateGeneration,
    entity: Entity,
    ca: certificates.CertificateAuthority | None,
    key: rsa.RSAPrivateKey,
) -> RecordedGeneration:
    """One generation: certificate, escrow (fsynced), then one state transaction."""
    spec = entity.key
    subject = (spec.subject.organization, spec.subject.organizational_unit, spec.subject.country)
    cert = certificates.build_certificate(
        key,
        certificates.CertificateSpec(action.common_name, spec.validity_days, *subject),
        ctx.now,
        ca,
        lineage=ctx.recorded.lineage,
    )
    chain = (ca.certificate, *ca.chain) if ca else ()
    # Escrow first: the key is durable before the state names it or a target receives it.
    key_sha256 = ctx.escrow.put(key, entity.id, ctx.db.serial())
    faults.reached("after-escrow")
    generation = generation_from_certificate(
        cert,
        chain,
        entity=entity.id,
        number=action.generation,
        designation=action.designation,
        issuer=action.issuer,
        key_sha256=key_sha256,
        status=CURRENT,
        origin="generated",
        created_at=ctx.now,
        subject=subject,
    )
    previous = ctx.recorded.current(entity.id)
    with ctx.db.change() as change:
        if previous is not None:
            status: Status = RETAINED if action.keeps == previous.number else RETIRED
            ctx.record_status(change, previous, status, replaced_by=generation.number)
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
    ctx.generations[(entity.id, generation.number)] = generation
    ctx.fresh_keys[generation.id] = key
    ctx.result.created.append(generation)
    faults.reached("after-commit")
    ctx.result.done(action)
    return generation


def retain(ctx: RunContext, actions: Sequence[RetainGeneration]) -> None:
    """Keep generations bound to open consultations: a generation replaced in this run was
    already marked retained with its replacement; a retired one is brought back."""
    for action in actions:
        g = ctx.generations.get((action.entity, action.generation))
        if g is not None and g.status == RETIRED:
            ctx.set_status(g, RETAINED, consultations=", ".join(action.consultations))
        ctx.result.done(action)


def rename(ctx: RunContext, actions: Sequence[RenameGeneration]) -> None:
    for action in actions:
        g = ctx.generations[(action.entity, action.generation)]
        with ctx.db.change() as change:
            change.set_designation(g.id, action.designation)
            change.audit(
                "designation-updated",
                action.entity,
                generation=g.number,
                old=g.designation,
                new=action.designation,
            )
        ctx.generations[(action.entity, action.generation)] = replace(
            g, designation=action.designation
        )
        ctx.result.done(action)


def update_chain(ctx: RunContext, actions: Sequence[UpdateChain]) -> None:
    for action in actions:
        g = ctx.generations[(action.entity, action.generation)]
        with ctx.db.change() as change:
            change.set_chain(g.id, action.chain_pem, action.chain_sha256)
            change.audit(
                "chain-updated",
                action.entity,
                generation=g.number,
                chain_sha256=action.chain_sha256,
            )
        ctx.generations[(action.entity, action.generation)] = replace(
            g, chain=action.chain_pem, chain_sha256=action.chain_sha256
        )
        ctx.result.done(action)


def retire(ctx: RunContext, actions: Sequence[RetireGeneration]) -> None:
    for action in actions:
        g = ctx.generations.get((action.entity, action.generation))
        if g is None:
            continue
        ctx.set_status(g, RETIRED, reason=action.reason)
        ctx.result.done(action)
