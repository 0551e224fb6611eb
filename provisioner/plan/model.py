"""Plans and the inputs of the planner, as frozen values."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from provisioner import clock
from provisioner.codes import WarningCode
from provisioner.consultations import Consultation
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.plan.actions import Action, Change, Conflict
from provisioner.transports.base import FileFacts, FolderFacts


@dataclass(frozen=True)
class Desired:
    """The manifest plus what the engine resolved for it (never a secret itself)."""

    manifest: Manifest
    password_ids: dict[str, str | None]  # entity -> keyed password fingerprint (None: unknown)
    limit: frozenset[str] | None = None
    consultations: tuple[Consultation, ...] | None = None  # None: no consultations file
    notice_days: int = 30  # warn this many days before a renewal or an expiry
    # generation id -> (chain PEM, chain digest) when its issuer's certificate was renewed
    # with the same key: the copies are re-encoded with the new chain, the key is kept.
    chain_updates: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    # The manifest folder the state was made for, when the manifest is now elsewhere (a
    # copied or moved tree): copies under it are not removed as moved or decommissioned.
    moved_from: str | None = None
    # Entities whose password's source changed since the last apply that read it, as seen by
    # a command that reads no secret (status, check, report): their copies are planned for
    # re-encoding, as `plan` would if the password did change.
    password_sources_changed: frozenset[str] = frozenset()
    # What --limit named, when it named a target (manifest/scope.py): only the copies there.
    scope: Scope | None = None

    def in_scope(self, entity: str) -> bool:
        return self.limit is None or entity in self.limit

    def covers(self, entity: str, target: str) -> bool:
        """Whether `entity`'s copy on `target` is looked at and may be changed by this run."""
        return self.in_scope(entity) and (self.scope is None or self.scope.covers(entity, target))

    def partial(self, entity: str) -> bool:
        """In scope through some of its targets only: nothing that concerns all of them."""
        return self.scope is not None and self.scope.partial(entity)


@dataclass(frozen=True, slots=True)
class Foreign:
    """What a file the state did not write (or that changed since) holds, read with the
    entity's password. Only such files are opened: a no-op plan opens no PKCS#12."""

    pkcs12: bool  # parses as a PKCS#12 at all (a damaged file holds no key to lose)
    readable: bool  # opens with the entity's password
    cert_sha256: str | None = None
    key_sha256: str | None = None
    designation: str | None = None  # the friendly name inside
    escrowed: bool = False  # the escrow holds its private key
    known: bool = False  # its key is a generation's this state records
    written_here: bool = False  # the very bytes of a copy this state wrote elsewhere
    tried: bool = True  # False: the command read no password (status, check)
    # The keyed fingerprint of the password it was tried with (None: none, or not known).
    tried_with: str | None = None
    refused: str | None = None  # why it was not opened (too many iterations, too large)

    def describe(self) -> str:
        if self.written_here:
            return "a copy this state wrote for another place"
        if not self.pkcs12:
            return "not a PKCS#12 file"
        if self.refused is not None:
            return f"not opened: {self.refused}"
        if not self.tried:
            return "a PKCS#12, not opened: this command reads no password; `plan` says more"
        if not self.readable:
            return "a PKCS#12 that does not open with the entity's password"
        held = "in the escrow" if self.escrowed else "NOT in the escrow"
        whose = "a generation this state records" if self.known else "unknown to this state"
        return (
            f'holds certificate sha256:{(self.cert_sha256 or "")[:16]} "{self.designation or ""}"'
            f", key {held}, {whose}"
        )


@dataclass(frozen=True)
class Observed:
    """Facts read from targets: a file's facts or None when absent; the folders holding
    copies; unreachable targets.

    `foreign`: what files the state did not write hold (see Foreign). `escrow_keys`: the
    public-key fingerprints of the escrow's key files, None when there is no escrow."""

    files: dict[tuple[str, str], FileFacts | None] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    # (target, folder) -> the folder's mode and leftovers, None when there is no folder
    folders: dict[tuple[str, str], FolderFacts | None] = field(default_factory=dict)
    foreign: dict[tuple[str, str], Foreign] = field(default_factory=dict)
    escrow_keys: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class PlanWarning:
    """Something a reviewer must know that apply does not change (its code carries the
    severity `check` gives it: codes.py)."""

    entity: str | None
    code: WarningCode
    message: str
    # When the bids it concerns are opened (the consultation's opening, else its deadline):
    # check makes an `unmanaged-key` CRITICAL within --critical-days of it.
    opening: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsultationView:
    """A consultation as the plan sees it: the file's news over the state's record."""

    reference: str
    entity: str
    title: str
    key_ref: str
    generation_id: str | None
    generation: int  # 0 while the key is not managed
    status: str
    deadline: dt.datetime | None
    opening: dt.datetime | None
    recorded: bool
    designation: str = ""  # the bound generation's current designation ("" while not managed)

    @property
    def is_open(self) -> bool:
        return self.status != "closed"

    def describe(self) -> str:
        """`REF (title; deadline 2026-12-15, opening 2026-12-16)`."""
        parts = []
        if self.title:
            parts.append(self.title)
        if self.deadline:
            parts.append(f"deadline {clock.day(self.deadline)}")
        if self.opening:
            parts.append(f"opening {clock.day(self.opening)}")
        return f"{self.reference} ({'; '.join(parts)})" if parts else self.reference


@dataclass(frozen=True, slots=True)
class Unreached:
    """A target the plan could not observe, and why: nothing was checked or done there."""

    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.target}: cannot observe the target: {self.reason}"


@dataclass(frozen=True)
class Plan:
    """What apply will do, why, and what it will not do."""

    now: dt.datetime
    actions: tuple[Action, ...]
    warnings: tuple[PlanWarning, ...]
    unreached: tuple[Unreached, ...]  # by target name
    in_sync: tuple[str, ...]  # one line per entity with nothing to do, saying why
    refusals: tuple[str, ...] = ()  # guards that forbid applying this plan at all
    consultations: tuple[ConsultationView, ...] = ()

    @property
    def errors(self) -> tuple[str, ...]:
        """One sentence per target not observed, for people (`unreached` for the program)."""
        return tuple(str(u) for u in self.unreached)

    @property
    def changes(self) -> bool:
        return bool(self.actions)

    @property
    def actionable(self) -> bool:
        """Something apply would do (conflicts are left alone)."""
        return any(not isinstance(a, Conflict) for a in self.actions)

    @property
    def conflicts(self) -> tuple[Conflict, ...]:
        return tuple(a for a in self.actions if isinstance(a, Conflict))

    def conflicted_entities(self) -> list[str]:
        return sorted({a.entity for a in self.conflicts})

    def counts(self) -> tuple[int, int, int]:
        """(to create, to update, to remove); a replacement is an update, and conflicts are not
        counted: nothing is done."""
        changes = [a.change for a in self.actions]
        create = changes.count(Change.CREATE)
        update = changes.count(Change.UPDATE) + changes.count(Change.REPLACE)
        remove = changes.count(Change.REMOVE)
        return create, update, remove
