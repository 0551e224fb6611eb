"""A command's inputs, read and checked before anything is opened or written: the manifest,
the consultations, every secret, and where the state lives. Frozen once loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.consultations import Consultation, read_consultations
from provisioner.errors import Diagnostic, SecretError
from provisioner.manifest.loader import read_manifest
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.manifest.scope import resolve as resolve_scope
from provisioner.secrets import policy_problem, resolve, source_stamp

STATE_ENV = "PROVISIONER_STATE_DIR"
DEFAULT_PARALLEL = 8


def state_dir_for(manifest_path: Path, option: Path | None) -> Path:
    """--state-dir, else $PROVISIONER_STATE_DIR, else `.provisioner/` beside the manifest."""
    if option is not None:
        return option.resolve()
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).resolve()
    return manifest_path.resolve().parent / ".provisioner"


@dataclass(frozen=True)
class Inputs:
    """Everything a command reads before it opens the state; never changed afterwards."""

    manifest: Manifest
    diagnostics: tuple[Diagnostic, ...]
    state_dir: Path
    escrow_passphrase: str
    passwords: dict[str, str]  # entity -> password (never changed once loaded)
    limit: frozenset[str] | None  # the entities in scope (None: every one)
    consultations_path: Path | None = None
    consultations: tuple[Consultation, ...] | None = None
    notice_days: int = 30
    # Entities declared `state: absent`, whose copies are still the lineage's: their passwords
    # open those copies (recover takes them back; plan tells a copy damaged in place from
    # someone's file before removing it). entity -> password, entity -> why it is not read.
    absent_passwords: dict[str, str] = field(default_factory=dict)
    absent_unread: dict[str, str] = field(default_factory=dict)
    # entity -> what tells that its password's source changed (secrets.source_stamp), taken
    # before the password is read; read by every command, those that read no secret too.
    password_sources: dict[str, str] = field(default_factory=dict)
    # What --limit named (`limit` is its entities): with a workstation, group or shared
    # location, only the copies there (manifest/scope.py).
    scope: Scope | None = None

    @property
    def escrow_dir(self) -> Path:
        return self.state_dir / "escrow"

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this run holds (hooks must never see one)."""
        return (
            self.escrow_passphrase,
            *self.passwords.values(),
            *self.absent_passwords.values(),
        )


def load_inputs(
    manifest_path: Path,
    state_dir: Path | None,
    limit: list[str] | None = None,
    *,
    need_secrets: bool = True,
    consultations: Path | None = None,
    absent_too: bool = True,
    named_by: str = "--limit",
    targets: bool = True,
) -> Inputs:
    """Read and check the manifest, the limit and every secret; writes nothing. The limit's
    names are entity ids, or with `targets` workstation, group or shared location names too
    (manifest/scope.py). `named_by` is how the operator gave them (an option, or "" for a
    command's ENTITY argument): an unknown one is reported as typed there."""
    manifest, diagnostics = read_manifest(manifest_path)
    declared = {e.id for e in manifest.entities}
    scope = resolve_scope(manifest, limit, named_by=named_by, targets=targets) if limit else None
    entities = scope.entities if scope is not None else None
    consultations_path = consultations.resolve() if consultations else manifest.consultations
    bindings = None
    if consultations_path is not None:
        bindings = tuple(
            read_consultations(
                consultations_path, declared, manifest.consultations_format, diagnostics
            )
        )
    sources = {
        e.id: stamp
        for e in manifest.entities
        if e.state == "present"
        and (entities is None or e.id in entities)
        and (stamp := source_stamp(e.password)) is not None
    }
    passphrase = resolve(manifest.escrow_passphrase, "escrow passphrase") if need_secrets else ""
    passwords = _passwords(manifest, entities, passphrase) if need_secrets else {}
    absent: dict[str, str] = {}
    unread: dict[str, str] = {}
    if need_secrets and absent_too:
        absent, unread = _absent_passwords(manifest, entities, passphrase)
    return Inputs(
        manifest,
        tuple(diagnostics),
        state_dir_for(manifest_path, state_dir),
        passphrase,
        passwords,
        entities,
        consultations_path,
        bindings,
        absent_passwords=absent,
        absent_unread=unread,
        password_sources=sources,
        scope=scope,
    )


def _passwords(manifest: Manifest, scope: frozenset[str] | None, passphrase: str) -> dict[str, str]:
    """Every present entity's password in scope, checked against its policy; all problems are
    reported at once (SecretError)."""
    passwords: dict[str, str] = {}
    problems: list[str] = []
    # A reference shared by several entities (one password file for a whole region, one
    # command) is read once per run.
    known: dict[tuple[str, object, Path], str] = {}
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
    return passwords


def _absent_passwords(
    manifest: Manifest, scope: frozenset[str] | None, passphrase: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The passwords of the entities declared absent, for reading their copies back: a
    password that cannot be read is reported, not fatal (the entity is being removed), and no
    policy applies (the copies were written under the policy of their day)."""
    passwords: dict[str, str] = {}
    unread: dict[str, str] = {}
    for entity in manifest.entities:
        if entity.state != "absent" or (scope is not None and entity.id not in scope):
            continue
        try:
            passwords[entity.id] = resolve(
                entity.password, f"entity {entity.id} password", (passphrase,)
            )
        except SecretError as exc:
            unread[entity.id] = str(exc)
    return passwords, unread
