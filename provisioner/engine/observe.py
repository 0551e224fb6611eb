"""Observation of the targets and the escrow, and planning against them."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from provisioner.engine.inputs import DEFAULT_PARALLEL
from provisioner.engine.session import Session
from provisioner.errors import ProvisionerError
from provisioner.manifest.model import Target
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.model import Desired, Foreign, Observed, Plan
from provisioner.plan.paths import file_name, next_numbers
from provisioner.plan.planner import parse_copy_name, paths_to_observe, plan, resolve_target
from provisioner.state.escrow import Escrow
from provisioner.state.records import Recorded
from provisioner.transports.base import (
    MAX_READ_BYTES,
    FileFacts,
    FolderFacts,
    file_path,
    folder_of,
)


def observe(session: Session, parallel: int = DEFAULT_PARALLEL) -> Observed:
    """Checksums of every file the planner will ask about; one worker per target at a time."""
    desired = session.desired()
    wanted = paths_to_observe(desired, session.recorded)
    nexts = next_numbers(desired, session.recorded)
    files: dict[tuple[str, str], FileFacts | None] = {}
    folders: dict[tuple[str, str], FolderFacts | None] = {}
    unreachable: dict[str, str] = {}

    def one_target(name: str) -> None:
        target = resolve_target(desired, session.recorded, name)
        if target is None:
            unreachable[name] = "not in the manifest and not recorded in the state"
            return
        try:
            transport = session.pool.get(target)
            for path in sorted(wanted[name]):
                files[(name, path)] = transport.observe(path)
            # The folders holding them: mode and leftovers, one stat and one listing each.
            for folder in sorted({folder_of(target, path) for path in wanted[name]}):
                found = folders[(name, folder)] = transport.observe_folder(folder)
                # A copy named beyond an entity's next generation: a state older than its
                # targets (planner: later_path_conflicts). Observed, so that it is opened
                # and named like any file the state did not write.
                for later in _later_copies(target, folder, found, nexts.get(name, {})):
                    if (name, later) not in files:
                        files[(name, later)] = transport.observe(later)
        except ProvisionerError as exc:
            unreachable[name] = str(exc).removeprefix(f"{name}: ")

    names = sorted(wanted)
    remote = [n for n in names if not _is_local(desired, session.recorded, n)]
    # Local folders are read in this thread (the disk cache answers faster than threads
    # hand over); remote hosts are observed `parallel` at a time.
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(one_target, n) for n in remote]
        for name in names:
            if name not in remote:
                one_target(name)
        for future in futures:
            future.result()
    foreign = inspect_foreign(session, desired, files, unreachable)
    listing = session.escrow_listing
    escrow_keys = listing.keys if listing.keyring else None
    if escrow_keys is not None and session.escrow is not None:
        # Unlocked (plan, apply): each key's AEAD tag is checked, so a damaged key file is
        # taken back from a copy like a missing one. Status and check see presence only.
        checked = {g.key_sha256 for g in session.recorded.generations if desired.in_scope(g.entity)}
        escrow_keys = frozenset(
            fp for fp in escrow_keys if fp not in checked or session.escrow.intact(fp)
        )
    return Observed(files, unreachable, folders, foreign, escrow_keys)


def _later_copies(
    target: Target, folder: str, found: FolderFacts | None, nexts: dict[str, int]
) -> list[str]:
    """The paths in `folder` of copies named beyond their entity's next generation."""
    out = []
    for copy_name in found.copies if found is not None and nexts else ():
        parsed = parse_copy_name(copy_name)
        if parsed is None or parsed[0] not in nexts or parsed[1] <= nexts[parsed[0]]:
            continue
        path = file_path(target, copy_name)
        if folder_of(target, path) == folder:
            out.append(path)
    return out


def inspect_foreign(
    session: Session,
    desired: Desired,
    files: dict[tuple[str, str], FileFacts | None],
    unreachable: dict[str, str],
) -> dict[tuple[str, str], Foreign]:
    """Open, with the entity's password, each file the state did not write or that changed
    since it was written: the planner must know whether replacing it could lose a key. Copies
    that match their record (a no-op run) are never opened."""
    from provisioner.crypto import pkcs12
    from provisioner.crypto.keys import certificate_fingerprint, public_key_fingerprint
    from provisioner.errors import CorruptFileError, CryptoError, TooCostlyError

    out: dict[tuple[str, str], Foreign] = {}
    written: set[str] | None = None
    known: set[str] | None = None
    for (name, path), facts in sorted(files.items()):
        if facts is None or facts.symlink or name in unreachable:
            continue
        record = session.recorded.copies.get((name, path))
        if record is not None and record.sha256 == facts.sha256:
            continue
        if written is None or known is None:
            written = {c.sha256 for c in session.recorded.copies.values()}
            known = {g.key_sha256 for g in session.recorded.generations}
        if facts.sha256 in written:
            out[(name, path)] = Foreign(pkcs12=True, readable=False, written_here=True)
            continue
        parsed = parse_copy_name(file_name(path))
        password = (
            session.passwords.get(parsed[0]) or session.inputs.absent_passwords.get(parsed[0])
            if parsed
            else None
        )
        target = resolve_target(desired, session.recorded, name)
        if target is None:
            continue
        if facts.size > MAX_READ_BYTES:  # not a copy: never read whole
            out[(name, path)] = Foreign(
                pkcs12=True, readable=False, refused=f"larger than {MAX_READ_BYTES} bytes"
            )
            continue
        try:
            data = session.pool.get(target).read(path)
        except ProvisionerError as exc:
            unreachable[name] = str(exc).removeprefix(f"{name}: ")
            continue
        if password is None:
            out[(name, path)] = Foreign(pkcs12=_is_pkcs12(data), readable=False, tried=False)
            continue
        assert parsed is not None  # a password is found only for a copy's name
        tried_with = session.escrow.password_id(parsed[0], password) if session.escrow else None
        try:
            bundle = pkcs12.decode(data, password)
        except CorruptFileError:
            out[(name, path)] = Foreign(
                pkcs12=_is_pkcs12(data), readable=False, tried_with=tried_with
            )
            continue
        except TooCostlyError as exc:
            out[(name, path)] = Foreign(pkcs12=True, readable=False, refused=str(exc))
            continue
        except CryptoError:
            out[(name, path)] = Foreign(pkcs12=True, readable=False, tried_with=tried_with)
            continue
        key_sha256 = public_key_fingerprint(bundle.key)
        out[(name, path)] = Foreign(
            pkcs12=True,
            readable=True,
            cert_sha256=certificate_fingerprint(bundle.certificate),
            key_sha256=key_sha256,
            designation=bundle.friendly_name,
            escrowed=Escrow.has_key(session.escrow_blobs, key_sha256),
            known=key_sha256 in known,
        )
    return out


def _is_pkcs12(data: bytes) -> bool:
    from provisioner.crypto import pkcs12
    from provisioner.errors import CorruptFileError

    try:
        pkcs12.inspect(data)
    except CorruptFileError:
        return False
    return True


def _is_local(desired: Desired, recorded: Recorded, name: str) -> bool:
    target = resolve_target(desired, recorded, name)
    return target is not None and kind_of(target).on_controller


def make_plan(session: Session, observed: Observed, now: dt.datetime) -> Plan:
    return plan(session.desired(), session.recorded, observed, now)


def observe_and_plan(session: Session, parallel: int, now: dt.datetime) -> tuple[Observed, Plan]:
    """Observe and plan without the lock (plan, status, check): when an apply commits while
    the targets are read, files can be newer than the snapshot and look like conflicts; the
    snapshot is then read again and the targets observed again (three tries)."""
    for _ in range(3):
        observed = observe(session, parallel)
        result = make_plan(session, observed, now)
        if not result.conflicts or session.db is None:
            break
        if session.db.serial() == session.recorded.serial:
            break
        session.refresh()
    return observed, result
