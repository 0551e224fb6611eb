"""The engine: load inputs, observe targets, plan, and apply, for the CLI's commands."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
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
)
from provisioner.manifest.loader import read_manifest
from provisioner.manifest.model import Manifest
from provisioner.plan.model import Desired, Observed, Plan
from provisioner.plan.planner import paths_to_observe, plan, resolve_target
from provisioner.secrets import policy_problem, resolve
from provisioner.state.db import StateDB
from provisioner.state.escrow import Escrow
from provisioner.state.records import Recorded
from provisioner.transports import TransportPool
from provisioner.transports.base import FileFacts

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
        )

    def open_state(self, *, create: bool, unlock: bool = True) -> None:
        """Open the state database and unlock the escrow (creating them when `create`).

        The escrow's scrypt (about 0.1 s, outside the GIL) runs in a thread while this one
        reads the state snapshot."""
        with ThreadPoolExecutor(max_workers=1) as background:
            unlocking = (
                background.submit(Escrow.unlock, self.escrow_dir, self.escrow_passphrase)
                if unlock and Escrow.exists(self.escrow_dir)
                else None
            )
            self.db = StateDB.open(self.state_dir, create=create)
            if self.db is not None:
                self.recorded = self.db.snapshot()
            if unlocking is not None:
                self.escrow = unlocking.result()
            elif unlock and create:
                self.escrow = Escrow.create(self.escrow_dir, self.escrow_passphrase)
        if self.db is not None:
            self._chains = None  # computed again against this snapshot
            if create and self.escrow is not None and self.escrow.needs_upgrade:
                # Once, under the lock: old key files get the entity sealed in, the state's.
                self.escrow.upgrade({g.key_sha256: g.entity for g in self.recorded.generations})
            if unlock and self.escrow is None and self.recorded.generations:
                raise ProvisionerError(
                    f"{self.escrow_dir}: the escrow is missing while the state records "
                    f"{len(self.recorded.generations)} generations; see docs/RECOVERY.md"
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
        bindings = tuple(read_consultations(consultations_path, declared))
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
    return Observed(files, unreachable)


def _is_local(desired: Desired, recorded: Recorded, name: str) -> bool:
    target = resolve_target(desired, recorded, name)
    return target is not None and target.transport == "local"


def make_plan(session: Session, observed: Observed, now: dt.datetime) -> Plan:
    return plan(session.desired(), session.recorded, observed, now)


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
    for name, reason in sorted(observed.unreachable.items()):
        h.update(f"unreachable\0{name}\0{reason}".encode())
    return h.hexdigest()
