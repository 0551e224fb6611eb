"""A command's inputs, read and checked before anything is opened or written: the manifest,
the consultations, every secret, and where the state lives. Frozen once loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.consultations import Consultation, read_consultations
from provisioner.errors import Diagnostic, ManifestError, SecretError, UsageError
from provisioner.manifest.loader import read_manifest
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.manifest.scope import resolve as resolve_scope
from provisioner.secrets import policy_problem, resolve, source_stamp
from provisioner.state.location import BACKENDS, SCHEMA_NAME, StateLocation

STATE_ENV = "PROVISIONER_STATE_DIR"
BACKEND_ENV = "PROVISIONER_STATE_BACKEND"
# The DSN of a PostgreSQL state, when not the manifest's (a restored backup in a scratch
# database, the probe's read-only role): an environment variable, never an option (a command
# line is visible to every user of the machine).
DSN_ENV = "PROVISIONER_STATE_DSN"
SCHEMA_ENV = "PROVISIONER_STATE_SCHEMA"
DEFAULT_PARALLEL = 8


def state_dir_for(manifest_path: Path, option: Path | None) -> Path:
    """--state-dir, else $PROVISIONER_STATE_DIR, else `.provisioner/` beside the manifest."""
    if option is not None:
        return option.resolve()
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).resolve()
    return manifest_path.resolve().parent / ".provisioner"


def targets_in_state(manifest: Manifest, folder: Path) -> list[Diagnostic]:
    """A local target whose folder is the state folder or inside it: losing that folder, or
    moving its escrow aside as docs/RECOVERY.md says, would take the copies with it."""
    from provisioner.manifest.transport_kinds import kind_of

    state = os.path.realpath(folder)
    out = []
    for target in (*manifest.locations.values(), *manifest.workstations.values()):
        if not kind_of(target).on_controller:
            continue
        real = os.path.realpath(target.path)
        if real == state or real.startswith(state.rstrip("/") + "/"):
            out.append(
                Diagnostic(
                    "error",
                    target.location,
                    f"{target.role} '{target.name}' ({target.path}) is inside the state folder "
                    f"{folder}: the copies must outlive the state; declare a folder outside it",
                )
            )
    return out


def state_location(
    manifest: Manifest,
    state_dir: Path | None,
    backend: str | None = None,
    *,
    force: str | None = None,
) -> StateLocation:
    """Where the state is: --state-backend (`backend`), else $PROVISIONER_STATE_BACKEND, else
    the manifest's `state` (`force`, when given, wins over all: `state migrate`'s target).
    A PostgreSQL state's DSN is $PROVISIONER_STATE_DSN, else the manifest's reference
    (resolved here: UsageError naming what is missing); its schema
    $PROVISIONER_STATE_SCHEMA, else the manifest's."""
    folder = state_dir_for(manifest.path, state_dir)
    chosen = force or backend or os.environ.get(BACKEND_ENV) or manifest.state.backend
    if chosen not in BACKENDS:
        raise UsageError(
            f"--state-backend/{BACKEND_ENV}: unknown state backend {chosen[:40]!r} (expected "
            + " or ".join(BACKENDS)
            + ")"
        )
    if chosen == "sqlite":
        return StateLocation("sqlite", folder)
    declared = manifest.state
    where = f"{manifest.path}: state"
    if os.environ.get(DSN_ENV):
        dsn, source = os.environ[DSN_ENV], f"env {DSN_ENV}"
    elif declared.dsn is not None:
        dsn, source = resolve(declared.dsn, "state dsn"), declared.dsn.describe()
    else:
        raise UsageError(
            f"{where}: a PostgreSQL state needs its DSN: give `state: {{backend: postgresql, "
            f"dsn: SECRET-REFERENCE, schema: NAME}}` in the manifest, or set {DSN_ENV}"
        )
    schema = os.environ.get(SCHEMA_ENV) or declared.schema
    if not schema:
        raise UsageError(
            f"{where}: a PostgreSQL state needs its schema: give `state: {{backend: "
            f"postgresql, dsn: ..., schema: NAME}}` in the manifest, or set {SCHEMA_ENV}"
        )
    if not SCHEMA_NAME.fullmatch(schema):
        raise UsageError(
            f"{SCHEMA_ENV}: {schema[:70]!r} is not a schema name this tool uses (lower-case "
            "letters, digits and '_', up to 63, not starting with a digit)"
        )
    return StateLocation("postgresql", folder, dsn, schema, source)


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
    state: StateLocation | None = None  # None: the SQLite folder state_dir

    @property
    def escrow_dir(self) -> Path:
        return self.state_dir / "escrow"

    @property
    def location(self) -> StateLocation:
        """Where the state is (a SQLite folder unless the manifest or an option says)."""
        return self.state or StateLocation("sqlite", self.state_dir)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this run holds (hooks must never see one)."""
        return (
            self.escrow_passphrase,
            *self.passwords.values(),
            *self.absent_passwords.values(),
            *((self.state.dsn,) if self.state is not None and self.state.dsn else ()),
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
    state_backend: str | None = None,
) -> Inputs:
    """Read and check the manifest, the limit and every secret (a PostgreSQL state's DSN
    even when `need_secrets` is false: the state cannot be read without it); writes nothing.
    The limit's names are entity ids, or with `targets` workstation, group or shared location
    names too (manifest/scope.py). `named_by` is how the operator gave them (an option, or ""
    for a command's ENTITY argument): an unknown one is reported as typed there."""
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
    location = state_location(manifest, state_dir, state_backend)
    inside = targets_in_state(manifest, location.folder)
    if inside:
        raise ManifestError(inside)
    return Inputs(
        manifest,
        tuple(diagnostics),
        location.folder,
        passphrase,
        passwords,
        entities,
        consultations_path,
        bindings,
        absent_passwords=absent,
        absent_unread=unread,
        password_sources=sources,
        scope=scope,
        state=location,
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
