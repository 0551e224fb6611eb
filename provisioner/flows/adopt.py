"""Bring an existing bi-clé under management, and hand-export one."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from provisioner import clock
from provisioner.apply.generations import generation_from_certificate
from provisioner.atomic import write_private
from provisioner.bounded import InputFileError, read_regular
from provisioner.crypto import certificates, pkcs12
from provisioner.crypto.keys import certificate_fingerprint, public_key_fingerprint
from provisioner.engine import Session
from provisioner.errors import ProvisionerError
from provisioner.manifest.model import SELF_SIGNED, Entity
from provisioner.state.records import CURRENT, RETAINED, RecordedGeneration


def check_adoptable(
    entity: Entity, cert: x509.Certificate, now: dt.datetime, *, retained: bool
) -> None:
    """Refuse a certificate companies could not encrypt bids to (signing only, expired, not yet
    valid); an expired key is accepted as retained, kept to open the bids already made to it."""
    where = f"entity {entity.id}"
    try:
        usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None  # no key usage extension: every usage is allowed
    if usage is not None and not usage.key_encipherment:
        allowed = [
            name
            for name in ("digital_signature", "content_commitment", "key_cert_sign", "crl_sign")
            if getattr(usage, name)
        ]
        raise ProvisionerError(
            f"{where}: its certificate's key usage has no keyEncipherment (it allows "
            f"{', '.join(allowed) or 'nothing else'}), so companies could not encrypt bids to it; "
            "adopt the encryption bi-clé (bi-clé de chiffrement), not a signing certificate"
        )
    if cert.not_valid_before_utc > now:
        raise ProvisionerError(
            f"{where}: its certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
        )
    if cert.not_valid_after_utc <= now and not retained:
        raise ProvisionerError(
            f"{where}: its certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}, and a "
            "current generation must be one companies can encrypt to. To keep an expired key "
            "for the consultations bound to it, adopt it with --retained"
        )


DesignationSource = Literal["option", "friendly-name", "common-name", "manifest"]


def designation_of(
    entity: Entity,
    number: int,
    year: int,
    bundle: pkcs12.Bundle,
    chosen: str | None,
) -> tuple[str, DesignationSource]:
    """The designation an adopted generation is recorded under, and where it comes from:
    `--designation`, else the name the platform knows the key by (the file's friendly name,
    else its certificate's CN: the platform shows agents that name, and a consultation made
    with this key names it), else the manifest's. Renewals take the manifest's again."""
    if chosen:
        return chosen, "option"
    if bundle.friendly_name and bundle.friendly_name.strip():
        return bundle.friendly_name, "friendly-name"
    cn = certificates.common_name(bundle.certificate)
    if cn.strip():
        return cn, "common-name"
    return entity.key.designation_for(number, year), "manifest"


def run(
    manifest: Path,
    entity_id: str,
    pkcs12_file: Path,
    *,
    password_env: str | None,
    password_file: Path | None,
    designation: str | None,
    retained: bool,
    state_dir: Path | None,
    lock_timeout: float,
    state_backend: str | None = None,
) -> Adopted:
    """`provisioner adopt`: the file is decoded and checked once, before anything is written;
    then, under the lock, its key is escrowed and the generation recorded."""
    from provisioner.engine import load_inputs, open_state
    from provisioner.secrets import from_options
    from provisioner.state.store import hold

    inputs = load_inputs(
        manifest, state_dir, [entity_id], named_by="", targets=False, state_backend=state_backend
    )
    entity = inputs.manifest.entity(entity_id)
    assert entity is not None
    password = from_options(password_env, password_file, "password") or inputs.passwords.get(
        entity_id
    )
    if password is None:
        raise ProvisionerError(
            f"no password for {pkcs12_file}: give --password-env or --password-file"
        )
    try:
        data = read_regular(pkcs12_file, pkcs12.MAX_FILE_BYTES)
    except InputFileError as exc:
        raise ProvisionerError(f"{pkcs12_file}: cannot adopt: {exc}") from None
    now = clock.now()
    try:  # refuse a bad or unusable file before anything is written
        bundle = pkcs12.decode(data, password)
        check_adoptable(entity, bundle.certificate, now, retained=retained)
    except ProvisionerError as exc:
        raise ProvisionerError(f"{pkcs12_file}: cannot adopt: {exc}") from None
    with (
        hold(inputs.location, "adopt", lock_timeout),
        open_state(inputs, create=True) as session,
    ):
        return adopt(session, entity, bundle, designation=designation, retained=retained, now=now)


@dataclass(frozen=True)
class Adopted:
    generation: RecordedGeneration
    source: DesignationSource  # where its designation comes from
    notice: str  # what was recorded under which name, and why


def _notice(
    name: str, source: DesignationSource, friendly_name: str | None, wanted: str, kept: bool
) -> str:
    """One or two sentences for the operator: the name recorded, why, and what became of the
    other names (the file's, the manifest's)."""
    why = {
        "option": "given by --designation",
        "friendly-name": "the file's friendly name, the name the platform knows this key by",
        "common-name": "its certificate's CN, the name the platform knows this key by (the "
        "file has no friendly name)",
        "manifest": "the manifest's designation (the file has no friendly name and its "
        "certificate no CN)",
    }[source]
    text = f'Recorded as "{name}": {why}.'
    if friendly_name and friendly_name != name:
        text += (
            f' The file names it "{friendly_name}": kept as a former designation, so a '
            "consultation naming either refers to this key."
            if kept
            else f' The file names it "{friendly_name}", another generation\'s name: not kept.'
        )
    if source in ("friendly-name", "common-name") and name != wanted:
        text += (
            f' The manifest would name it "{wanted}": its renewals take the manifest\'s '
            "designation; give --designation to record another name for this one."
        )
    return text


def adopt(
    session: Session,
    entity: Entity,
    bundle: pkcs12.Bundle,
    *,
    designation: str | None,
    retained: bool,
    now: dt.datetime,
) -> Adopted:
    """Check the decoded PKCS#12 (not already recorded, usable for encryption, a name of its
    own), escrow its key, record it; the notice says how its designation was chosen."""
    assert session.db is not None and session.escrow is not None
    fingerprint = certificate_fingerprint(bundle.certificate)
    gens = session.recorded.generations_of(entity.id)
    for g in gens:
        if g.cert_sha256 == fingerprint:
            raise ProvisionerError(
                f"entity {entity.id}: this certificate is already generation {g.number}"
            )
    # A key is one entity's: another entity's key adopted here would be written under this
    # entity's password and distributed to its agents.
    key = public_key_fingerprint(bundle.key)
    for g in session.recorded.generations:
        if g.entity != entity.id and (g.key_sha256 == key or g.cert_sha256 == fingerprint):
            raise ProvisionerError(
                f"entity {entity.id}: this key is entity {g.entity}'s generation {g.number} "
                f'("{g.designation}"): a key belongs to one entity'
            )
    current = session.recorded.current(entity.id)
    if current is not None and not retained:
        raise ProvisionerError(
            f"entity {entity.id} already has a current generation ({current.number}, "
            f'"{current.designation}"); use --retained to adopt an older key kept for its '
            "consultations"
        )
    number = max((g.number for g in gens), default=0) + 1
    cert = bundle.certificate
    check_adoptable(entity, cert, now, retained=retained)
    self_signed = cert.issuer == cert.subject
    name, source = designation_of(entity, number, now.year, bundle, designation)
    # A designation names one generation: a consultation naming it must not be ambiguous.
    taken = {d.casefold(): g for g in gens for d in session.recorded.names_of(g)}
    if name.casefold() in taken:
        raise ProvisionerError(
            f'entity {entity.id}: the designation "{name}" is generation '
            f"{taken[name.casefold()].number}'s; give --designation with a name of its own"
        )
    key_sha256 = session.escrow.put(bundle.key, entity.id, session.db.serial())  # escrow first
    generation = generation_from_certificate(
        cert,
        bundle.chain,
        entity=entity.id,
        number=number,
        designation=name,
        issuer=SELF_SIGNED if self_signed else f"external:{cert.issuer.rfc4514_string()}",
        key_sha256=key_sha256,
        status=RETAINED if retained else CURRENT,
        origin="adopted",
        created_at=now,
    )
    former = bundle.friendly_name
    kept = former is not None and former != name and former.casefold() not in taken
    with session.db.change() as change:
        change.add_generation(generation)
        if kept:
            # The name inside the file is one this key had: a consultation naming it refers here.
            change.add_former_designation(generation.id, former or "", now)
        change.audit(
            "generation-adopted",
            entity.id,
            generation=number,
            designation=name,
            cert_sha256=fingerprint,
            key_sha256=key_sha256,
            not_after=generation.not_after.isoformat(),
            status=generation.status,
        )
    wanted = entity.key.designation_for(number, now.year)
    return Adopted(generation, source, _notice(name, source, former, wanted, kept))


def pick_generation(session: Session, entity: Entity, number: int | None) -> RecordedGeneration:
    gens = session.recorded.generations_of(entity.id)
    if number is None:
        current = session.recorded.current(entity.id)
        if current is None:
            raise ProvisionerError(f"entity {entity.id} has no current generation; run apply")
        return current
    for g in gens:
        if g.number == number:
            return g
    raise ProvisionerError(f"entity {entity.id} has no generation {number}")


def export(
    session: Session,
    entity: Entity,
    generation: RecordedGeneration,
    out: Path,
    *,
    kind: str,
    password: str | None,
    profile: str,
) -> None:
    """Write a PKCS#12 (from the escrow, with `password`) or the public certificate."""
    cert = x509.load_der_x509_certificate(generation.certificate)
    if kind == "pem":
        data = certificates.certificate_pem(cert)
    elif kind == "der":
        data = certificates.certificate_der(cert)
    else:
        assert session.escrow is not None and password is not None
        chain = tuple(x509.load_pem_x509_certificates(generation.chain)) if generation.chain else ()
        key = session.escrow.get(generation.key_sha256)
        data = pkcs12.encode(key, cert, chain, generation.designation, password, profile)
    write_private(out, data)
    assert session.db is not None
    session.db.note(
        "exported",
        entity.id,
        generation=generation.number,
        format=kind,
        path=str(out),
        profile=profile if kind == "p12" else None,
    )
