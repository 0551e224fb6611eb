"""The actions of a plan: a closed union of frozen dataclasses, one per kind, each with its
typed fields (dates as datetimes, generation numbers, profiles, a reason code). The planner
makes them, the renderers show them (`attributes()`), the executor applies them as they are."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import ClassVar

from provisioner.consultations import ConsultationStatus
from provisioner.transports.base import Leftover

SENSITIVE = "(sensitive)"  # what the plan shows of a password


class Change(Enum):
    """What an action does to the world, Terraform's way: its symbol, and how it is counted."""

    CREATE = "+"
    UPDATE = "~"
    REMOVE = "-"
    REPLACE = "-/+"
    CONFLICT = "!"  # nothing is done: the entity is left alone

    @property
    def symbol(self) -> str:
        return self.value


class ReasonCode(StrEnum):
    """The code of the check that fired, carried to the plan output and the JSON."""

    # generation checks (policies.py)
    MISSING = "missing"
    EXPIRED = "expired"
    RENEWAL_DUE = "renewal-due"
    SPEC_CHANGED = "spec-changed"
    # copy checks (policies.py)
    NEW_GENERATION = "new-generation"
    UNRECORDED = "unrecorded"
    DRIFTED = "drifted"
    PERMISSIONS = "permissions"
    PASSWORD_CHANGED = "password-changed"
    PROFILE_CHANGED = "profile-changed"
    FRIENDLY_NAME_CHANGED = "friendly-name-changed"
    CHAIN_CHANGED = "chain-changed"
    # A file this state did not write stands where a copy goes (or a recorded copy changed
    # under us): never replaced or removed; apply leaves the whole entity alone.
    CONFLICT = "conflict"
    # removals and retirements
    DECOMMISSIONED = "decommissioned"
    RETIRED = "retired"
    MOVED = "moved"
    ENTITY_ABSENT = "entity-absent"
    UNBOUND = "unbound"
    # The file is the copy another declared target holds now (one folder under a new name):
    # only the old target's record goes.
    SAME_FILE = "same-file"
    # guards, escrow, consultations
    BOUND_TO_OPEN_CONSULTATION = "bound-to-open-consultation"
    ESCROW_MISSING = "escrow-missing"
    NEW_BINDING = "new-binding"
    CONSULTATION_UPDATED = "consultation-updated"
    CLOSED = "closed"
    # target folders (folders.py)
    FOLDER_PERMISSIONS = "folder-permissions"
    LEFTOVER = "leftover"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a check fired: a short code carried to the plan and JSON, and a sentence."""

    code: ReasonCode
    message: str


Attributes = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionBase:
    """What every action says: the entity ("" for a target folder's), the number of the
    generation concerned (0: none, or a key not managed), the reason and its sentence.

    Each kind is a frozen subclass with its own typed fields; `attributes()` is what the plan
    shows of them (text and JSON), never a secret."""

    kind: ClassVar[str]
    entity: str
    generation: int
    reason: ReasonCode
    message: str

    @property
    def change(self) -> Change:
        raise NotImplementedError

    @property
    def symbol(self) -> str:
        return self.change.symbol

    def attributes(self) -> Attributes:
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OnGeneration(ActionBase):
    """An action on the state and escrow only: no target, no path."""

    @property
    def target(self) -> str | None:
        return None

    @property
    def path(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class OnPath(ActionBase):
    """An action at one path on one target (a copy, a file in the way, a folder)."""

    target: str
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateGeneration(OnGeneration):
    """A new key, certificate and escrow record; `-/+` when it replaces the current one."""

    kind: ClassVar[str] = "create-generation"
    designation: str
    common_name: str
    key_size: int
    issuer: str
    not_after: dt.datetime
    profile: str
    keeps: int | None = None  # the current generation, kept beside it (bound)
    replaces: int | None = None  # the current generation, retired by it

    @property
    def change(self) -> Change:
        return Change.REPLACE if self.replaces is not None else Change.CREATE

    def attributes(self) -> Attributes:
        shown = [
            ("designation", self.designation),
            ("common_name", self.common_name),
            ("key", f"RSA {self.key_size}"),
            ("issuer", self.issuer),
            ("valid_until", f"{self.not_after:%Y-%m-%d}"),
            ("pkcs12_profile", self.profile),
            ("password", SENSITIVE),
        ]
        if self.keeps is not None:
            shown.append(("keeps", f"generation {self.keeps}"))
        if self.replaces is not None:
            shown.append(("replaces", f"generation {self.replaces}"))
        return tuple(shown)


@dataclass(frozen=True, slots=True, kw_only=True)
class RenameGeneration(OnGeneration):
    """The generation's designation becomes the manifest's (the state only)."""

    kind: ClassVar[str] = "update-designation"
    designation: str  # the new one

    @property
    def change(self) -> Change:
        return Change.UPDATE

    def attributes(self) -> Attributes:
        return (("designation", self.designation),)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetainGeneration(OnGeneration):
    """A generation bound to consultations not closed stays live (brought back if retired)."""

    kind: ClassVar[str] = "retain-generation"
    designation: str
    consultations: tuple[str, ...]  # references of the consultations that hold it

    @property
    def change(self) -> Change:
        return Change.UPDATE

    def attributes(self) -> Attributes:
        return (("designation", self.designation), ("consultations", ", ".join(self.consultations)))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetireGeneration(OnGeneration):
    """A live generation is retired; its key stays in the escrow."""

    kind: ClassVar[str] = "retire-generation"
    designation: str

    @property
    def change(self) -> Change:
        return Change.REMOVE

    def attributes(self) -> Attributes:
        return (("designation", self.designation),)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateChain(OnGeneration):
    """The issuer's certificate was renewed with the same key: the generation records the new
    chain, and its copies are re-encoded with it (same key)."""

    kind: ClassVar[str] = "update-chain"
    chain_pem: bytes  # public certificates; shown by its digest
    chain_sha256: str

    @property
    def change(self) -> Change:
        return Change.UPDATE

    def attributes(self) -> Attributes:
        return (("chain_sha256", self.chain_sha256),)


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteCopy(OnPath):
    """A PKCS#12 copy of the generation written at `path` on `target` (`+` where none is)."""

    kind: ClassVar[str] = "write-copy"
    role: str  # the target's: "workstation" or "location"

    @property
    def change(self) -> Change:
        fresh = self.reason in (ReasonCode.NEW_GENERATION, ReasonCode.MISSING)
        return Change.CREATE if fresh else Change.UPDATE

    def attributes(self) -> Attributes:
        return (("role", self.role),)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveCopy(OnPath):
    """A recorded copy removed from `target` (only while it is what was written); with
    `keeps_file`, only its record (`~`): the file is another declared target's copy now."""

    kind: ClassVar[str] = "remove-copy"
    # The file's SHA-256 as the plan observed it ("": none was there): apply removes the file
    # only while it is still that (never a file another target's write put there since).
    observed_sha256: str
    keeps_file: bool = False

    @property
    def change(self) -> Change:
        return Change.UPDATE if self.keeps_file else Change.REMOVE


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreEscrow(OnPath):
    """A generation's missing escrowed key, taken back from the intact copy at `path`."""

    kind: ClassVar[str] = "restore-escrow"

    @property
    def change(self) -> Change:
        return Change.CREATE


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict(OnPath):
    """A file this state did not write (or changed since) at `path`: left as it is, and so is
    the entity (nothing is done)."""

    kind: ClassVar[str] = "conflict"

    @property
    def change(self) -> Change:
        return Change.CONFLICT


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsultationAction(OnGeneration):
    """What an apply records of a consultation (names and dates, no secret)."""

    reference: str
    title: str
    key_ref: str  # the reference recorded at binding time, which an update keeps
    status: ConsultationStatus
    deadline: dt.datetime | None
    opening: dt.datetime | None

    def attributes(self) -> Attributes:
        shown = [
            ("reference", self.reference),
            ("title", self.title),
            ("key", self.key_ref),
            ("status", self.status),
        ]
        if self.deadline:
            shown.append(("deadline", self.deadline.isoformat()))
        if self.opening:
            shown.append(("opening", self.opening.isoformat()))
        return tuple(shown)


@dataclass(frozen=True, slots=True, kw_only=True)
class BindConsultation(ConsultationAction):
    """A consultation seen for the first time is bound, for ever, to its generation."""

    kind: ClassVar[str] = "bind-consultation"

    @property
    def change(self) -> Change:
        return Change.CREATE


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateConsultation(ConsultationAction):
    """News of a known consultation: status, title, dates, or its key now managed."""

    kind: ClassVar[str] = "update-consultation"

    @property
    def change(self) -> Change:
        return Change.UPDATE


@dataclass(frozen=True, slots=True, kw_only=True)
class SecureFolder(OnPath):
    """A declared target folder others may enter is set to mode 0700 (`path` is the folder)."""

    kind: ClassVar[str] = "secure-folder"

    @property
    def change(self) -> Change:
        return Change.UPDATE


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearLeftover(OnPath):
    """A file an interrupted write left in `folder`: removed, or put back (`~`) when it is a
    moved-aside copy whose name is free."""

    kind: ClassVar[str] = "clear-leftover"
    folder: str
    leftover: Leftover

    @property
    def puts_back(self) -> bool:
        return self.leftover.moved_aside and not self.leftover.final_exists

    @property
    def change(self) -> Change:
        return Change.UPDATE if self.puts_back else Change.REMOVE

    def attributes(self) -> Attributes:
        return (("final", self.leftover.final),)


# The closed union of what a plan may hold; apply/executor.py has one applier per kind.
Action = (
    CreateGeneration
    | RenameGeneration
    | RetainGeneration
    | RetireGeneration
    | UpdateChain
    | WriteCopy
    | RemoveCopy
    | RestoreEscrow
    | Conflict
    | BindConsultation
    | UpdateConsultation
    | SecureFolder
    | ClearLeftover
)
ACTION_KINDS: tuple[type[ActionBase], ...] = (
    CreateGeneration,
    RenameGeneration,
    RetainGeneration,
    RetireGeneration,
    UpdateChain,
    WriteCopy,
    RemoveCopy,
    RestoreEscrow,
    Conflict,
    BindConsultation,
    UpdateConsultation,
    SecureFolder,
    ClearLeftover,
)
