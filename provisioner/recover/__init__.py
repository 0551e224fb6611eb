"""Rebuild a lost, empty or older state (and a lost escrow) from the copies on the targets.

The copies are the evidence: each PKCS#12 found on a declared target (shared locations first,
then workstations) is opened with its entity's password; its certificate names the generation,
its key goes back into the escrow when the escrow lacks it, and the file is recorded as a copy
this state wrote, so the next plan neither re-creates nor overwrites it. Generations the state
already records are kept as they are; newer ones found on the targets are taken back under the
number their file names carry, never re-created. Nothing is removed anywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
from statistics import mode

from cryptography import x509

from provisioner.apply.generations import generation_from_certificate
from provisioner.bounded import MAX_PEM_BYTES, InputFileError, read_regular
from provisioner.crypto import pkcs12
from provisioner.crypto.certificates import chain_digest, lineage_tag, serial_mark
from provisioner.crypto.keys import certificate_fingerprint, public_key_fingerprint
from provisioner.engine import Session
from provisioner.errors import CryptoError, ProvisionerError, WrongPasswordError
from provisioner.manifest.model import SELF_SIGNED, Entity, Target
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.paths import file_name
from provisioner.plan.planner import parse_copy_name, resolve_target
from provisioner.recover.report import FoundCopy, Recovery, render
from provisioner.state.escrow import Escrow
from provisioner.state.records import (
    CURRENT,
    RETAINED,
    RETIRED,
    Origin,
    Recorded,
    RecordedCopy,
    RecordedGeneration,
    Status,
)
from provisioner.state.store import holds_state
from provisioner.transports.base import file_path, target_spec


def _issuer_name(session: Session, cert: x509.Certificate) -> tuple[str, Origin]:
    """(issuer name as the manifest calls it, origin) for a found certificate.

    A certificate this tool made carries its mark in the serial number (the mark of a
    lineage: the state that made it may be the one lost); one without it was adopted, and is
    recorded as `adopt` records it (self-signed or `external:ISSUER`, origin adopted), so that
    the manifest's certificate settings do not force a new generation over the key the
    platform knows, as they did not before the state was lost."""
    self_signed = cert.issuer == cert.subject
    external = f"external:{cert.issuer.rfc4514_string()}"
    if serial_mark(cert) is None:
        return (SELF_SIGNED if self_signed else external), "adopted"
    if self_signed:
        return SELF_SIGNED, "generated"
    for name, issuer in session.manifest.issuers.items():
        try:
            pem = read_regular(issuer.certificate, MAX_PEM_BYTES)
            ca = x509.load_pem_x509_certificates(pem)[0]
        except (InputFileError, ValueError, IndexError):
            continue
        if ca.subject == cert.issuer:
            return name, "generated"
    # Made here by an issuer the manifest no longer declares: the next plan says so.
    return external, "generated"


def _targets_of(session: Session, entity: Entity) -> list[Target]:
    """Declared targets (shared locations first), then targets the state recorded copies on."""
    out = {t.name: t for t in sorted(entity.targets, key=lambda t: t.role != "location")}
    desired = session.desired()
    for copy in session.recorded.copies_of(entity.id):
        if copy.target not in out:
            target = resolve_target(desired, session.recorded, copy.target)
            if target is not None:
                out[copy.target] = target
    return list(out.values())


def scan(
    session: Session,
    now: dt.datetime,
    *,
    moved: bool,
    previous_password: str | None,
) -> Recovery:
    """Read every copy of every entity in scope and decide what to record. Writes nothing.

    The state's home becomes this state folder only when it has none and does not look
    copied, or when the operator says the tree was `moved`: re-homing a copied tree would let
    it remove the original's files."""
    assert session.db is not None, "recover opens or creates the state"
    assert session.escrow is not None, "and the escrow"
    recorded = session.recorded
    out = Recovery()
    if session.escrow.lineage and session.escrow.lineage != recorded.lineage:
        out.lineage = session.escrow.lineage
    here = session.db.home()
    # (moved_from is the recorded home when that is not here: a copied or moved tree, or one
    # from before homes were recorded that looks copied; engine/session.py _settle_home.)
    old_home = recorded.home or session.moved_from
    if moved and old_home is not None and old_home != here:
        still = holds_state(old_home)
        if still is not None:
            # A copied tree, not a moved one: once this state's home, its `[moved]` removals
            # would take every copy at the old paths from the tree still in use there.
            out.refusal = (
                f"--moved: the state's home {old_home} still holds a state ({still}): "
                "this tree was copied, not moved, and the tree there may still be in use. "
                "If that tree is retired, move its state folder away (keep it as a backup), "
                "then run `recover --moved` again; if both trees stay in use, run this one "
                "without --moved (its removals stay held back)"
            )
            return out
    if recorded.home != here and (moved or session.moved_from is None):
        out.home = here
    by_cert = {g.cert_sha256: g for g in recorded.generations}
    escrowed = session.escrow_listing.keys
    # The state is lost but its escrow was kept: every key this state made is in it (keys are
    # sealed before any copy is written), so a key it lacks is not this state's.
    kept = bool(escrowed) and not recorded.generations
    marks = lineage_marks(recorded)
    inputs = session.inputs
    for entity in session.manifest.entities:
        if not session.desired().in_scope(entity.id):
            continue
        # An entity declared absent is still read: its copies hold keys of this lineage that
        # the escrow may have lost, and a later `state: present` must find them recorded.
        password = session.passwords.get(entity.id) or inputs.absent_passwords.get(entity.id)
        if password is None:
            if entity.id in inputs.absent_unread:
                out.unreadable.append(
                    f"{entity.id} (state: absent): its copies were not read: "
                    + inputs.absent_unread[entity.id]
                )
            continue
        listed: dict[str, set[str]] = {}
        found = _found_copies(session, entity, password, out, listed, previous_password)
        _take_back(
            session,
            entity,
            found,
            by_cert,
            escrowed,
            kept,
            password,
            now,
            out,
            previous_password,
            marks,
        )
        _forget_removed(session, entity, listed, out)
    declared = {e.id for e in session.manifest.entities}
    for g in recorded.generations:
        # An entity the state records but the manifest no longer declares: its copies are not
        # read, so a key it lost from the escrow is not taken back; say so.
        orphaned = g.entity not in declared and session.desired().in_scope(g.entity)
        if orphaned and g.key_sha256 not in escrowed:
            out.lost.append(
                f'{g.entity}: generation {g.number} "{g.designation}": its key is not in the '
                "escrow, and the entity is not in the manifest, so its copies were not read: "
                "put its block back and run recover again"
            )
    known_keys = {g.key_sha256 for g in recorded.generations} | {
        g.key_sha256 for g in out.generations
    }
    out.orphans = sorted(escrowed - known_keys)
    newest = max(
        (Escrow.sealed_serial(session.escrow_blobs, fp) or 0 for fp in escrowed), default=0
    )
    if newest > session.db.serial():
        out.serial = newest
    return out


def _forget_removed(
    session: Session, entity: Entity, listed: dict[str, set[str]], out: Recovery
) -> None:
    retiring = {g.id for g, status in out.statuses if status == RETIRED}
    for c in session.recorded.copies_of(entity.id):
        g = session.recorded.generation(c.generation_id)
        names = listed.get(c.target)
        if g is None or names is None or file_name(c.path) in names:
            continue
        target = resolve_target(session.desired(), session.recorded, c.target)
        if (
            target is not None
            and target.role == "workstation"
            and (g.status == RETIRED or g.id in retiring)
        ):
            out.dropped.append(c)


def _found_copies(
    session: Session,
    entity: Entity,
    password: str,
    out: Recovery,
    listed: dict[str, set[str]],
    previous_password: str | None,
) -> list[FoundCopy]:
    found: list[FoundCopy] = []
    for target in _targets_of(session, entity):
        if (
            target.role == "location"
            and kind_of(target).on_controller
            and not os.path.isdir(target.path)
        ):
            # An unmounted share reads as a missing (or empty) folder: seeing no copy there
            # proves nothing, and shared locations hold every generation.
            out.blocking.append(f"{target.name}: {target.path} does not exist (not mounted?)")
            continue
        try:
            transport = session.pool.get(target)
            names = transport.names()
        except ProvisionerError as exc:
            if target.role == "location":
                out.blocking.append(str(exc))
            else:
                out.unreachable.append(str(exc))
            continue
        listed[target.name] = set(names)
        for name in names:
            parsed = parse_copy_name(name)
            if parsed is None or parsed[0] != entity.id:
                continue
            path = file_path(target, name)
            previous = False
            try:
                data = transport.read(path)
                try:
                    bundle = pkcs12.decode(data, password)
                except WrongPasswordError:
                    if previous_password is None or previous_password == password:
                        raise
                    # The password before its change: taken back, re-encoded by the next apply.
                    bundle = pkcs12.decode(data, previous_password)
                    previous = True
            except (ProvisionerError, CryptoError) as exc:
                out.unreadable.append(f"{target.name}: {path}: {exc}")
                continue
            found.append(
                FoundCopy(
                    entity.id,
                    parsed[1],
                    target,
                    path,
                    hashlib.sha256(data).hexdigest(),
                    len(data),
                    bundle,
                    certificate_fingerprint(bundle.certificate),
                    public_key_fingerprint(bundle.key),
                    previous,
                )
            )
    return found


def _take_back(
    session: Session,
    entity: Entity,
    found: list[FoundCopy],
    by_cert: dict[str, RecordedGeneration],
    escrowed: frozenset[str],
    kept: bool,
    password: str,
    now: dt.datetime,
    out: Recovery,
    previous_password: str | None,
    marks: frozenset[bytes | None],
) -> None:
    """What `found` (the copies of `entity` that open with its password) gives back: the
    generations the state lost, their statuses, every copy as written, the keys for the
    escrow, and what is left as it is or lost, each said in `out`."""
    assert session.escrow is not None
    gens = {g.number: g for g in session.recorded.generations_of(entity.id)}
    by_cert_copies: dict[str, list[FoundCopy]] = {}
    for f in found:
        by_cert_copies.setdefault(f.cert_sha256, []).append(f)
    new = _claim_generations(
        session, entity, by_cert_copies, by_cert, escrowed, kept, now, out, marks, gens
    )
    if new:
        _settle_statuses(session.recorded, entity, gens, new, by_cert_copies, out)
    current_id = session.escrow.password_id(entity.id, password)
    previous_id = (
        session.escrow.password_id(entity.id, previous_password)
        if previous_password is not None
        else current_id
    )
    _record_copies(
        session.recorded,
        entity,
        found,
        {**by_cert, **new},
        escrowed,
        current_id,
        previous_id,
        now,
        out,
    )
    _report_lost(session.recorded, entity, gens, escrowed, out)


def _claim_generations(
    session: Session,
    entity: Entity,
    by_cert_copies: dict[str, list[FoundCopy]],
    by_cert: dict[str, RecordedGeneration],
    escrowed: frozenset[str],
    kept: bool,
    now: dt.datetime,
    out: Recovery,
    marks: frozenset[bytes | None],
    gens: dict[int, RecordedGeneration],
) -> dict[str, RecordedGeneration]:
    """The generations found that the state does not record, by certificate (added to
    `gens`); a certificate that is not this state's, or that clashes with a recorded number,
    is left as it is and said in `out.clashes`."""
    recorded = session.recorded
    new: dict[str, RecordedGeneration] = {}
    # When two certificates claim one number, the escrow's own key wins, then the one more
    # copies hold, then the one on a shared location; the other is left as it is.
    certs = sorted(
        by_cert_copies,
        key=lambda c: (
            by_cert_copies[c][0].key_sha256 not in escrowed,
            -len(by_cert_copies[c]),
            not any(f.target.role == "location" for f in by_cert_copies[c]),
            c,
        ),
    )
    for cert_sha256 in certs:
        copies = by_cert_copies[cert_sha256]
        if cert_sha256 in by_cert:
            continue
        number = mode(f.number for f in copies)  # (the first seen of the most common)
        where = ", ".join(f"{f.target.name}:{f.path}" for f in copies)
        key = copies[0].key_sha256
        if (
            not kept
            and recorded.generations
            and key not in escrowed
            and serial_mark(copies[0].bundle.certificate) not in marks
        ):
            # The state is there: every generation it made since is either recorded (the
            # state is intact) or, when it was restored from an older backup, carries this
            # lineage's mark in its serial number (or the mark of the generations a rebuilt
            # state took back: a state rebuilt from copies has a new lineage). This one does
            # neither: it is not ours.
            out.clashes.append(
                f"{entity.id}: {where} holds a certificate (sha256:{cert_sha256[:16]}) this "
                "state does not record, whose key the escrow never sealed and whose serial "
                "number carries no mark of this state's lineage: not a generation this state "
                "made (an agent's own export, another tool's or another tree's key?): left as "
                "it is, never current. If it is this organisation's key, `provisioner adopt` "
                "takes it in"
            )
            continue
        if kept and key not in escrowed:
            out.clashes.append(
                f"{entity.id}: {where} holds a key the escrow never sealed "
                f"(sha256:{key[:16]}); the escrow was kept when the state was lost and holds "
                "every key this state made, so this is not one of them (a copy from another "
                "tree?): left as it is. If it is this organisation's key, "
                "`provisioner adopt` takes it in"
            )
            continue
        if number in gens:
            message = (
                f"{entity.id}: {where} holds a certificate (sha256:{cert_sha256[:16]}) that is "
                f"not generation {number} as the state records it: left as it is"
            )
            if not escrowed and key not in out.escrow_keys:
                # No escrow survived: a key that opens with the entity's password may be this
                # organisation's only copy of it, so it is kept, whichever certificate won.
                out.escrow_keys[key] = (entity.id, copies[0].bundle.key)
                message += "; its key goes into the escrow (it may be the only other copy)"
            out.clashes.append(message)
            continue
        g = _generation(session, entity, copies[0], number, now)
        gens[number] = g
        new[cert_sha256] = g
    return new


def _settle_statuses(
    recorded: Recorded,
    entity: Entity,
    gens: dict[int, RecordedGeneration],
    new: dict[str, RecordedGeneration],
    by_cert_copies: dict[str, list[FoundCopy]],
    out: Recovery,
) -> None:
    """The newest generation is current; a state that was older than its targets retires its
    current for the newer one found (bound ones come back through the planner's guards).
    `new` is updated with each generation's status."""
    # An entity declared absent has no current generation: what is found is retired.
    newest = max(gens.values(), key=lambda g: g.number) if entity.state == "present" else None
    for g in recorded.generations_of(entity.id):
        # (an absent entity's recorded current is retired by the next apply, as declared)
        if g.status == CURRENT and newest is not None and g is not newest:
            out.statuses.append((g, RETIRED))
    for cert_sha256, g in new.items():
        # Workstations hold only live generations: an older one found on a workstation
        # was kept there (for a consultation), so it stays live until the planner says.
        on_workstation = any(f.target.role == "workstation" for f in by_cert_copies[cert_sha256])
        live: Status = RETAINED if on_workstation and entity.state == "present" else RETIRED
        status: Status = CURRENT if g is newest else live
        new[cert_sha256] = g = _with_status(g, status)
        out.generations.append(g)


def _record_copies(
    recorded: Recorded,
    entity: Entity,
    found: list[FoundCopy],
    known: dict[str, RecordedGeneration],
    escrowed: frozenset[str],
    current_id: str,
    previous_id: str,
    now: dt.datetime,
    out: Recovery,
) -> None:
    """Each copy of a known generation as the state records a written copy (one under the
    previous password recorded so: the next plan re-encodes it), and its key for the escrow
    when the escrow lacks it."""
    for f in found:
        password_id = previous_id if f.previous else current_id
        g = known.get(f.cert_sha256)
        if g is None:
            continue
        if g.key_sha256 not in escrowed and g.key_sha256 not in out.escrow_keys:
            out.escrow_keys[g.key_sha256] = (entity.id, f.bundle.key)
        record = recorded.copies.get((f.target.name, f.path))
        if (
            record is not None
            and record.sha256 == f.sha256
            and record.generation_id == g.id
            and record.password_id == password_id
        ):
            continue  # (a rebuilt escrow derives other password ids: they are recorded anew)
        info = f.bundle.info
        out.copies.append(
            RecordedCopy(
                entity=entity.id,
                generation_id=g.id,
                target=f.target.name,
                path=f.path,
                sha256=f.sha256,
                size=f.size,
                profile=(info.profile if info else None) or "unknown",
                password_id=password_id,
                friendly_name=f.bundle.friendly_name or "",
                chain_sha256=chain_digest(f.bundle.chain),
                written_at=now,
            )
        )
        out.targets[f.target.name] = f.target


def _report_lost(
    recorded: Recorded,
    entity: Entity,
    gens: dict[int, RecordedGeneration],
    escrowed: frozenset[str],
    out: Recovery,
) -> None:
    """A recorded generation whose key is neither escrowed nor taken back, and a number no
    surviving copy holds: lost, said in `out.lost`."""
    for g in recorded.generations_of(entity.id):
        if g.key_sha256 not in escrowed and g.key_sha256 not in out.escrow_keys:
            out.lost.append(
                f'{entity.id}: generation {g.number} "{g.designation}": its key is in neither '
                "the escrow nor any copy that opens with the current password"
            )
    top = max(gens, default=0)
    for number in range(1, top + 1):
        if number not in gens:
            out.lost.append(
                f"{entity.id}: generation {number}: no surviving copy holds it (its key is lost "
                "unless an older backup of the escrow has it)"
            )


def lineage_marks(recorded: Recorded) -> frozenset[bytes | None]:
    """The lineage marks a generation of this state may carry: its lineage's, and those of
    the generations it records (a state rebuilt by `recover` after everything was lost got
    a new lineage; the certificates it took back carry the old one). Never None."""
    marks: set[bytes | None] = {lineage_tag(recorded.lineage)} if recorded.lineage else set()
    for g in recorded.generations:
        with contextlib.suppress(ValueError):
            marks.add(serial_mark(x509.load_der_x509_certificate(g.certificate)))
    marks.discard(None)
    return frozenset(marks)


def _generation(
    session: Session, entity: Entity, f: FoundCopy, number: int, now: dt.datetime
) -> RecordedGeneration:
    cert = f.bundle.certificate
    issuer, origin = _issuer_name(session, cert)
    not_before = cert.not_valid_before_utc
    return generation_from_certificate(
        cert,
        f.bundle.chain,
        entity=entity.id,
        number=number,
        designation=f.bundle.friendly_name or entity.key.designation_for(number, now.year),
        issuer=issuer,
        key_sha256=f.key_sha256,
        status=RETIRED,
        origin=origin,
        # Certificates are backdated five minutes: this gives back the creation instant.
        created_at=not_before + dt.timedelta(minutes=5),
    )


def _with_status(g: RecordedGeneration, status: Status) -> RecordedGeneration:
    from dataclasses import replace

    return replace(g, status=status)


def record(session: Session, recovery: Recovery, now: dt.datetime) -> None:
    """Escrow first (fsynced), then one state transaction; nothing on the targets changes."""
    assert session.db is not None
    assert session.escrow is not None
    for key_sha256, (entity, key) in sorted(recovery.escrow_keys.items()):
        stored = session.escrow.put(key, entity, session.db.serial())
        assert stored == key_sha256
    with session.db.change() as change:
        if recovery.lineage is not None:
            change.set_meta("lineage", recovery.lineage)
        if recovery.home is not None:
            if session.recorded.home is not None:
                change.set_meta("previous_home", session.recorded.home)
            change.set_meta("home", recovery.home)
        if recovery.serial is not None:
            change.set_meta("serial", str(recovery.serial))  # bumped once more on commit
        # Retire first: one current generation per entity, enforced by an index.
        for g, status in recovery.statuses:
            change.set_status(g.id, status, now)
        for g in sorted(recovery.generations, key=lambda g: g.status == CURRENT):
            change.add_generation(g)
        for name, target in sorted(recovery.targets.items()):
            change.put_target(name, target_spec(target))
        for c in recovery.copies:
            change.put_copy(c)
        for c in recovery.dropped:
            change.delete_copy(c.target, c.path)
        change.audit(
            "state-recovered",
            None,
            generations=[
                f"{g.entity} g{g.number} sha256:{g.cert_sha256}" for g in recovery.generations
            ],
            retired=[f"{g.entity} g{g.number}" for g, _ in recovery.statuses],
            copies=len(recovery.copies),
            forgotten=[f"{c.target}:{c.path}" for c in recovery.dropped],
            escrow_restored=sorted(recovery.escrow_keys),
            lineage=recovery.lineage,
            lost=recovery.lost,
        )
    # (The escrow already has the lineage the state now records: open_state gave a created or
    # older escrow the state's, and scan() gives the state a kept escrow's.)


def bind(session: Session, parallel: int, now: dt.datetime) -> int:
    """Record the consultations' bindings again from the consultations file, as the next
    apply would, so that a bound generation keeps its guard even if that apply is run without
    the file; and record as retained every generation a consultation not closed holds (one
    that a restored state had current, retired by a newer one found on the targets), so that
    status reads what is and the next plan has no bookkeeping left. Returns how many
    bindings were recorded."""
    from dataclasses import replace

    from provisioner.engine import make_plan, observe
    from provisioner.flows.apply import execute_plan
    from provisioner.plan.actions import BindConsultation, RetainGeneration, UpdateConsultation

    assert session.db is not None
    assert session.escrow is not None
    session.refresh()
    plan = make_plan(session, observe(session, parallel), now)
    kinds = (
        (BindConsultation, UpdateConsultation, RetainGeneration)
        if session.inputs.consultations is not None
        else (RetainGeneration,)
    )
    actions = tuple(a for a in plan.actions if isinstance(a, kinds))
    if plan.refusals:
        return 0
    if not actions:
        return 0
    # Only the bindings of the plan are carried out: nothing is written to any target.
    execute_plan(session, replace(plan, actions=actions), parallel, None, {})
    return sum(isinstance(a, BindConsultation) for a in actions)


__all__ = ["FoundCopy", "Recovery", "bind", "record", "render", "scan"]
