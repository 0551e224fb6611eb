"""The desired model: frozen dataclasses built from a validated manifest."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Final, Literal, TypeVar

from provisioner.errors import Location
from provisioner.platform_csv import DEFAULT_FORMAT, ExportFormat

DEFAULT_KEY_SIZE = 3072
DEFAULT_VALIDITY_DAYS = 730
DEFAULT_RENEW_BEFORE_DAYS = 60
DEFAULT_PROFILE = "modern"
DEFAULT_MIN_LENGTH = 12
DEFAULT_MIN_CLASSES = 2
SELF_SIGNED = "self-signed"


@dataclass(frozen=True, slots=True)
class ChildEnvironment:
    """What a program this tool starts may see of its environment besides the minimal set
    (`children.BASE`): the names the manifest passes; never those a secret reference names."""

    passed: tuple[str, ...] = ()
    withheld: frozenset[str] = frozenset()


MINIMAL_ENVIRONMENT = ChildEnvironment()


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret comes from; never the secret itself."""

    kind: str  # "env" | "file" | "command"
    value: str | tuple[str, ...]
    base_dir: Path
    location: Location
    child_env: ChildEnvironment = MINIMAL_ENVIRONMENT  # of a `command` source

    def describe(self) -> str:
        """A safe, human description (names the source, never the value)."""
        if self.kind == "command":
            assert isinstance(self.value, tuple)
            return f"command {self.value[0]}"
        return f"{self.kind} {self.value}"


Backend = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class StateSettings:
    """The manifest's `state`: where the state and its escrow are kept (the DSN a reference,
    resolved when a command opens the state)."""

    backend: Backend = "sqlite"
    dsn: SecretRef | None = None
    schema: str | None = None


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    min_length: int = DEFAULT_MIN_LENGTH
    min_classes: int = DEFAULT_MIN_CLASSES


@dataclass(frozen=True, slots=True)
class Subject:
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Issuer:
    """A CA that signs bi-clé certificates."""

    name: str
    certificate: Path
    private_key: Path
    password: SecretRef | None
    location: Location


# The closed sets of the manifest (its schema's enums), as types.
Store = Literal["file", "windows", "nss"]
Role = Literal["workstation", "location"]
Transport = Literal["local", "ssh", "smb"]
EntityState = Literal["present", "absent"]
Profile = Literal["modern", "legacy"]

STORE_FILE: Final = "file"
STORE_WINDOWS: Final = "windows"
STORE_NSS: Final = "nss"
DEFAULT_NSS_DATABASE = "/home/{user}/.pki/nssdb"  # Chromium's (and Firefox's on some distros)


@dataclass(frozen=True, slots=True)
class Install:
    """Where a workstation's agents must find the key, beyond the PKCS#12 file: `file` (the
    copy only), `windows` (the certificate store of each agent user, or LocalMachine), `nss`
    (each agent's NSS database, Firefox/Chromium). The tool writes the copy; a distribution
    engine (the Ansible role in ansible/) imports it and leaves a receipt the tool reads."""

    store: Store = STORE_FILE
    users: tuple[str, ...] = ()
    windows_location: str = "CurrentUser"  # or "LocalMachine"
    exportable: bool = False
    nss_database: str = DEFAULT_NSS_DATABASE  # {user} is replaced by each agent user

    @property
    def in_store(self) -> bool:
        return self.store != STORE_FILE

    def store_users(self) -> tuple[str, ...]:
        """Whose store must hold the key: each agent, or the machine's store once."""
        if self.store == STORE_WINDOWS and self.windows_location == "LocalMachine":
            return ("LocalMachine",)
        return self.users


FILE_ONLY = Install()


@dataclass(frozen=True, slots=True)
class LocalSpec:
    """A folder of this machine (or a share mounted on it): nothing beyond the path."""

    kind: ClassVar[Literal["local"]] = "local"


@dataclass(frozen=True, slots=True)
class SshSpec:
    """An SFTP server: where it is, who logs in and how its host key is checked."""

    host: str
    user: str
    known_hosts: Path | None
    port: int = 22
    key_file: Path | None = None  # None: the SSH agent
    key_passphrase: SecretRef | None = None
    connect_timeout: float = 10.0
    kind: ClassVar[Literal["ssh"]] = "ssh"


@dataclass(frozen=True, slots=True)
class SmbSpec:
    """An SMB2/3 share: where it is, who logs in, and who else may read the copies."""

    host: str
    user: str
    share: str
    password: SecretRef | None  # None only in a state record that lost it
    port: int = 445
    connect_timeout: float = 10.0
    readers: str | None = None  # SID of the group that may read the copies
    encrypt: bool = True  # SMB3 encryption required
    kind: ClassVar[Literal["smb"]] = "smb"


# What a target's transport needs beyond its name, role and path: one record per transport
# (manifest/transport_kinds.py reads each from the manifest and the state).
TransportSpec = LocalSpec | SshSpec | SmbSpec
LOCAL = LocalSpec()

S = TypeVar("S", LocalSpec, SshSpec, SmbSpec)


@dataclass(frozen=True, slots=True)
class Target:
    """A workstation or shared location reached through a transport."""

    name: str
    role: Role
    path: str  # local: absolute path; ssh: remote path; smb: folder in the share, "/" first
    location: Location
    spec: TransportSpec = LOCAL
    install: Install = FILE_ONLY  # workstations only

    @property
    def transport(self) -> Transport:
        return self.spec.kind

    def spec_of(self, kind: type[S]) -> S:
        """The transport's own fields, for the code of that transport alone."""
        if not isinstance(self.spec, kind):
            raise TypeError(f"{self.name} is a {self.transport} target, not {kind.kind}")
        return self.spec

    @property
    def address(self) -> str:
        """Human name of where files land (a local path, `user@host:port/path`, a share)."""
        from provisioner.manifest.transport_kinds import kind_of

        return kind_of(self).address(self)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How an entity's key generations are made."""

    designation: str  # template: may hold {n} and {year}
    common_name: str | None  # template; None means same as the designation
    issuer: str  # issuer name or SELF_SIGNED
    size: int
    validity_days: int
    renew_before_days: int
    profile: Profile
    subject: Subject

    def designation_for(self, n: int, year: int) -> str:
        """The désignation of generation `n` created in `year`; unique per generation."""
        return _render(self.designation, n, year)

    def common_name_for(self, n: int, year: int) -> str:
        if self.common_name is None:
            return self.designation_for(n, year)
        return _render(self.common_name, n, year)

    def renewal_date(self, not_after: dt.datetime) -> dt.datetime:
        """When a generation expiring at `not_after` is renewed: `renew_before_days` before it.
        The one rule the planner (renewal due, the warning, the in-sync line) and the report
        (the timeline's shaded window) follow."""
        return not_after - dt.timedelta(days=self.renew_before_days)


def _render(template: str, n: int, year: int) -> str:
    if "{n}" in template or "{year}" in template:
        return template.replace("{n}", str(n)).replace("{year}", str(year))
    return template if n == 1 else f"{template} ({n})"


@dataclass(frozen=True, slots=True)
class Entity:
    """An organisation owning a bi-clé, with the targets that must hold it."""

    id: str
    name: str
    state: EntityState
    key: KeySpec
    password: SecretRef
    password_policy: PasswordPolicy
    shared_locations: tuple[Target, ...]
    workstations: tuple[Target, ...]
    location: Location

    @property
    def targets(self) -> tuple[Target, ...]:
        """Shared locations first (the copy that must never be lost), then workstations."""
        return self.shared_locations + self.workstations


@dataclass(frozen=True)
class Manifest:
    """A whole validated manifest."""

    path: Path
    base_dir: Path
    escrow_passphrase: SecretRef
    issuers: dict[str, Issuer]
    workstations: dict[str, Target]
    groups: dict[str, tuple[str, ...]]
    locations: dict[str, Target]
    entities: tuple[Entity, ...]
    consultations: Path | None
    hooks: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    child_env: ChildEnvironment = MINIMAL_ENVIRONMENT
    consultations_format: ExportFormat = DEFAULT_FORMAT  # a platform export's own names
    state: StateSettings = StateSettings()

    @cached_property
    def _entities(self) -> dict[str, Entity]:
        return {e.id: e for e in self.entities}

    def entity(self, entity_id: str) -> Entity | None:
        return self._entities.get(entity_id)
