"""The engine: load inputs, observe targets, plan, and apply, for the CLI's commands."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.consultations import Consultation, read_consultations
from provisioner.errors import (
    Diagnostic,
    Location,
    ManifestError,
    ProvisionerError,
    SecretError,
    UnitError,
)
from provisioner.manifest.loader import read_manifest
from provisioner.manifest.model import Manifest
from provisioner.plan.model import Desired, Foreign, Observed, Plan
from provisioner.plan.planner import parse_copy_name, paths_to_observe, plan, resolve_target
from provisioner.secrets import policy_problem, resolve
from provisioner.state.db import DB_NAME, StateDB
from provisioner.state.escrow import KEYRING, Escrow
from provisioner.state.records import Recorded
from provisioner.transports import TransportPool
from provisioner.transports.base import FileFacts, FolderFacts, folder_of, target_from_spec

STATE_ENV = "PROVISIONER_STATE_DIR"
DEFAULT_PARALLEL = 8


def state_dir_for(manifest_path: Path, option: Path | None) -> Path:
    """--state-dir, else $PROVISIONER_STATE_DIR, else `.provisioner/` beside the manifest."""
    if option is not None:
        return option.resolve()
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).resolve()
    return manifest_path.resolve().parent / ".provisioner"


@dataclass
class Session:
    """Everything a command needs, loaded and checked before anything is written."""

    manifest: Manifest
    diagnostics: list[Diagnostic]
    state_dir: Path
    escrow_passphrase: str
    passwords: dict[str, str]
    limit: frozenset[str] | None
    consultations_path: Path | None = None
    consultations: tuple[Consultation, ...] | None = None
    notice_days: int = 30
    db: StateDB | None = None
    escrow: Escrow | None = None
    recorded: Recorded = field(default_factory=lambda: Recorded(None, 0))
    pool: TransportPool = field(default_factory=TransportPool)
    moved_from: str | None = None  # the state's home, when it is used from elsewhere
    created: list[Path] = field(default_factory=list)  # what open_state created this run
    _chains: dict[str, tuple[bytes, str]] | None = None

    @property
    def escrow_dir(self) -> Path:
        return self.state_dir / "escrow"

    def chain_updates(self) -> dict[str, tuple[bytes, str]]:
        """Generations whose issuer certificate file now holds a renewed certificate with the
        same key and subject: their copies get the new chain (public files only are read)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        from provisioner.apply.executor import chain_digest

        out: dict[str, tuple[bytes, str]] = {}
        for name, issuer in self.manifest.issuers.items():
            try:
                certs = tuple(x509.load_pem_x509_certificates(issuer.certificate.read_bytes()))
            except (OSError, ValueError):
                continue  # reported when a generation is created with it
            digest = chain_digest(certs)
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
            for g in self.recorded.generations:
                if g.issuer != name or not g.chain or g.chain_sha256 == digest:
                    continue
                old = x509.load_pem_x509_certificates(g.chain)[0]
                if old.subject == certs[0].subject and old.public_key() == certs[0].public_key():
                    out[g.id] = (pem, digest)
        return out

    def desired(self) -> Desired:
        if self._chains is None:
            self._chains = self.chain_updates() if self.manifest.issuers else {}
        ids: dict[str, str | None] = {
            entity: (self.escrow.password_id(entity, pw) if self.escrow else None)
            for entity, pw in self.passwords.items()
        }
        return Desired(
            self.manifest,
            ids,
            limit=self.limit,
            consultations=self.consultations,
            notice_days=self.notice_days,
            chain_updates=self._chains,
            moved_from=self.moved_from,
        )

    def open_state(self, *, create: bool, unlock: bool = True, recovering: bool = False) -> None:
        """Open the state database and unlock the escrow (creating them when `create`).

        State and escrow are one unit: a missing keyring beside sealed keys, an escrow of
        another lineage, or an escrow missing while the state records generations is refused
        (StateError naming what to do), never started over; `recovering` lets `recover`
        through to rebuild. The escrow's scrypt (about 0.1 s, outside the GIL) runs in a
        thread while this one reads the state snapshot."""
        db_path = self.state_dir / DB_NAME
        had_db = db_path.exists()
        had_escrow = self.escrow_dir.exists()
        with ThreadPoolExecutor(max_workers=1) as background:
            unlocking = (
                background.submit(Escrow.unlock, self.escrow_dir, self.escrow_passphrase)
                if unlock and Escrow.exists(self.escrow_dir)
                else None
            )
            # Sealed keys without a state: a lost state, never a new start (nothing created).
            fresh = recovering or not Escrow.sealed_files(self.escrow_dir)
            self.db = StateDB.open(self.state_dir, create=create and fresh, migrate=create)
            if self.db is not None:
                self.recorded = self.db.snapshot()
                if not had_db:
                    self.created.append(db_path)
            if unlocking is not None:
                self.escrow = unlocking.result()
        if not recovering:
            self.check_unit()
        if self.db is not None:
            self._chains = None  # computed again against this snapshot
            self.settle_home(create=create)
            if create and self.escrow is not None and self.escrow.needs_upgrade:
                # Once, under the lock: old key files get the entity sealed in, the state's.
                self.escrow.upgrade({g.key_sha256: g.entity for g in self.recorded.generations})
        if unlock and create and self.escrow is None and not recovering:
            self.escrow = Escrow.create(
                self.escrow_dir, self.escrow_passphrase, self.recorded.lineage
            )
            self.created.append(self.escrow_dir if not had_escrow else self.escrow_dir / KEYRING)
        elif (
            self.escrow is not None
            and self.escrow.lineage is None
            and create
            and self.recorded.lineage is not None
        ):
            self.escrow.set_lineage(self.recorded.lineage)

    def settle_home(self, *, create: bool) -> None:
        """The state's home is the folder it was made in. Found elsewhere (a copied or moved
        tree), removals are held back (`moved_from`) until `recover --moved` says it moved. A
        state from before homes were recorded is taken for copied when a declared local
        target's recorded folder is the same path under another root."""
        assert self.db is not None
        here = str(self.state_dir.resolve())
        home = self.recorded.home
        if home is None:
            home = self._legacy_home()
            if home is None and create:
                self.db.set_meta("home", here)
                return
        if home is not None and home != here:
            self.moved_from = home

    def _legacy_home(self) -> str | None:
        root = str(self.manifest.path.resolve().parent)
        for name, spec in sorted(self.recorded.targets.items()):
            declared = self.manifest.workstations.get(name) or self.manifest.locations.get(name)
            if declared is None or declared.transport != "local":
                continue
            recorded = target_from_spec(spec).path
            now = declared.path
            if recorded == now or not now.startswith(root + os.sep):
                continue
            tail = now[len(root) :]
            if recorded.endswith(tail):
                return recorded[: -len(tail)]
        return None

    def discard_created(self) -> None:
        """Remove what this run created and nothing else (a refused or declined run leaves
        no state and no keyring behind)."""
        if self.db is not None:
            self.db.close()
            self.db = None
        for path in self.created:
            for item in (
                path,
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                if item.is_dir():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)
        self.created.clear()

    def check_unit(self) -> None:
        """Refuse a state and an escrow that are not one unit (invariant 9)."""
        folder = self.escrow_dir
        recover = f"run `provisioner recover {self.manifest.path}` (docs/RECOVERY.md)"
        sealed = Escrow.sealed_files(folder)
        if not Escrow.exists(folder):
            if sealed:
                raise UnitError(
                    f"{folder}: keyring.json is missing but {len(sealed)} sealed key file(s) are "
                    "there: a new keyring would never open them. Restore keyring.json from the "
                    "backup of this state folder; if it is lost for good, move the escrow folder "
                    f"aside and {recover} to rebuild it from the copies"
                )
            if self.recorded.generations:
                raise UnitError(
                    f"{folder}: the escrow is missing while the state records "
                    f"{len(self.recorded.generations)} generations; restore it from the backup "
                    f"of this state folder, or {recover} to rebuild it from the copies"
                )
            return
        lineage = self.escrow.lineage if self.escrow is not None else Escrow.read_lineage(folder)
        if self.db is None or not self.recorded.lineage:
            if sealed:
                raise UnitError(
                    f"{self.state_dir}: there is no state, but the escrow holds {len(sealed)} "
                    "key(s): the state was lost or moved. Nothing is created over it: point "
                    f"--state-dir at the right folder, or {recover} to rebuild the state from "
                    "the escrow and the copies"
                )
            return
        if lineage is not None and lineage != self.recorded.lineage:
            raise UnitError(
                f"{folder}: the escrow belongs to another state (lineage {lineage}; the state "
                f"is {self.recorded.lineage}): state and escrow must come from the same backup. "
                f"Restore them together, or {recover} to rebuild the state around this escrow"
            )
        known = {g.key_sha256 for g in self.recorded.generations}
        newer = [
            fp
            for fp in sorted(Escrow.list_keys(folder) - known)
            # The serial as committed now: a key an apply sealed while this snapshot was read
            # is not newer than the state (plan takes no lock).
            if (Escrow.sealed_serial(folder, fp) or 0) > (self.db.serial() if self.db else 0)
        ]
        if newer:
            raise UnitError(
                f"{folder}: the escrow holds {len(newer)} key(s) sealed after this state's last "
                f"change (serial {self.recorded.serial}) that the state does not know: the state "
                f"is older than its escrow (restored from a backup?). {recover} to take the "
                "newer generations back"
            )

    def close(self) -> None:
        self.pool.close()
        if self.db is not None:
            self.db.close()


def load_session(
    manifest_path: Path,
    state_dir: Path | None,
    limit: list[str] | None = None,
    *,
    need_secrets: bool = True,
    consultations: Path | None = None,
) -> Session:
    """Read and check the manifest, the limit and every secret; writes nothing."""
    manifest, diagnostics = read_manifest(manifest_path)
    declared = {e.id for e in manifest.entities}
    unknown = [name for name in (limit or []) if name not in declared]
    if unknown:
        raise ManifestError(
            [
                Diagnostic(
                    "error",
                    Location(str(manifest_path)),
                    f"--limit: unknown entit{'ies' if len(unknown) > 1 else 'y'} "
                    + ", ".join(unknown),
                )
            ]
        )
    scope = frozenset(limit) if limit else None
    consultations_path = consultations.resolve() if consultations else manifest.consultations
    bindings = None
    if consultations_path is not None:
        bindings = tuple(
            read_consultations(
                consultations_path, declared, manifest.consultations_format, diagnostics
            )
        )
    passphrase = resolve(manifest.escrow_passphrase, "escrow passphrase") if need_secrets else ""
    passwords: dict[str, str] = {}
    problems: list[str] = []
    # A reference shared by several entities (one password file for a whole region, one
    # command) is read once per run.
    known: dict[tuple[str, object, Path], str] = {}
    if need_secrets:
        for entity in manifest.entities:
            if entity.state != "present" or (scope is not None and entity.id not in scope):
                continue
            ref = entity.password
            source = (ref.kind, ref.value, ref.base_dir)
            password = known.get(source)
            if password is None:
                try:
                    password = resolve(ref, f"entity {entity.id} password", (passphrase,))
                except SecretError as exc:
                    problems.append(str(exc))
                    continue
                known[source] = password
            problem = policy_problem(password, entity.password_policy)
            if problem:
                problems.append(
                    f"{entity.password.location}: entity {entity.id}: the password "
                    f"from {entity.password.describe()} is refused: {problem}"
                )
                continue
            passwords[entity.id] = password
    if problems:
        raise SecretError("\n".join(problems))
    return Session(
        manifest,
        diagnostics,
        state_dir_for(manifest_path, state_dir),
        passphrase,
        passwords,
        scope,
        consultations_path,
        bindings,
    )


def observe(session: Session, parallel: int = DEFAULT_PARALLEL) -> Observed:
    """Checksums of every file the planner will ask about; one worker per target at a time."""
    desired = session.desired()
    wanted = paths_to_observe(desired, session.recorded)
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
                folders[(name, folder)] = transport.observe_folder(folder)
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
    escrow_keys = (
        Escrow.list_keys(session.escrow_dir) if Escrow.exists(session.escrow_dir) else None
    )
    if escrow_keys is not None and session.escrow is not None:
        # Unlocked (plan, apply): each key's AEAD tag is checked, so a damaged key file is
        # taken back from a copy like a missing one. Status and check see presence only.
        checked = {g.key_sha256 for g in session.recorded.generations if desired.in_scope(g.entity)}
        escrow_keys = frozenset(
            fp for fp in escrow_keys if fp not in checked or session.escrow.intact(fp)
        )
    return Observed(files, unreachable, folders, foreign, escrow_keys)


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
    from provisioner.errors import CorruptFileError, CryptoError

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
        parsed = parse_copy_name(path.replace("\\", "/").rsplit("/", 1)[-1])
        password = session.passwords.get(parsed[0]) if parsed else None
        target = resolve_target(desired, session.recorded, name)
        if target is None:
            continue
        try:
            data = session.pool.get(target).read(path)
        except ProvisionerError as exc:
            unreachable[name] = str(exc).removeprefix(f"{name}: ")
            continue
        if password is None:
            out[(name, path)] = Foreign(pkcs12=_is_pkcs12(data), readable=False, tried=False)
            continue
        try:
            bundle = pkcs12.decode(data, password)
        except CorruptFileError:
            out[(name, path)] = Foreign(pkcs12=_is_pkcs12(data), readable=False)
            continue
        except CryptoError:
            out[(name, path)] = Foreign(pkcs12=True, readable=False)
            continue
        key_sha256 = public_key_fingerprint(bundle.key)
        out[(name, path)] = Foreign(
            pkcs12=True,
            readable=True,
            cert_sha256=certificate_fingerprint(bundle.certificate),
            key_sha256=key_sha256,
            designation=bundle.friendly_name,
            escrowed=Escrow.has_key(session.escrow_dir, key_sha256),
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
    return target is not None and target.transport == "local"


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
        session.recorded = session.db.snapshot()
        session._chains = None
    return observed, result


# ---------------------------------------------------------------- saved plan identity


def inputs_digest(session: Session, salt: bytes) -> str:
    """A digest of the manifest, the files it references and the secrets' values, keyed by the
    escrow passphrase so the plan file holds nothing that could be brute-forced."""
    h = hashlib.sha256()
    files = [session.manifest.path]
    for issuer in session.manifest.issuers.values():
        files += [issuer.certificate, issuer.private_key]
    if session.consultations_path is not None:
        files.append(session.consultations_path)
    for path in files:
        h.update(str(path).encode() + b"\0")
        try:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            h.update(b"(unreadable)")
    key = hashlib.scrypt(session.escrow_passphrase.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for entity, password in sorted(session.passwords.items()):
        mac.update(entity.encode() + b"\0" + password.encode() + b"\0")
    h.update(mac.digest())
    h.update(repr(sorted(session.limit or ())).encode())
    return h.hexdigest()


def observed_digest(observed: Observed) -> str:
    h = hashlib.sha256()
    for (target, path), facts in sorted(observed.files.items()):
        h.update(f"{target}\0{path}\0".encode())
        h.update(
            b"-"
            if facts is None
            else f"{facts.sha256}:{facts.size}:{facts.mode}:{facts.symlink}".encode()
        )
    for (target, folder), found in sorted(observed.folders.items()):
        h.update(f"folder\0{target}\0{folder}\0".encode())
        if found is not None:
            h.update(f"{found.mode}:{[(x.name, x.final_exists) for x in found.leftovers]}".encode())
    for name, reason in sorted(observed.unreachable.items()):
        h.update(f"unreachable\0{name}\0{reason}".encode())
    return h.hexdigest()
