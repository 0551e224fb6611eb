"""What the state records, as frozen values the planner reads (no I/O here)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final, Literal, NamedTuple

from provisioner.consultations import ConsultationStatus

# A generation's status and origin, closed sets (the state's CHECK constraints).
Status = Literal["current", "retained", "retired"]
Origin = Literal["generated", "adopted"]

CURRENT: Final = "current"
RETAINED: Final = "retained"
RETIRED: Final = "retired"


# The meta key prefix under which the state keeps each entity's password source stamp.
PASSWORD_SOURCE = "password-source/"


class AuditRow(NamedTuple):
    """One audit record as stored: its detail is the JSON text."""

    id: int
    at: str
    actor: str
    action: str
    entity: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class RecordedGeneration:
    """One key generation of an entity: a key pair and its certificate."""

    id: str
    entity: str
    number: int
    designation: str
    common_name: str
    issuer: str
    key_size: int
    subject: tuple[str | None, str | None, str | None]  # O, OU, C
    certificate: bytes  # DER
    chain: bytes  # PEM certificates of the issuer chain, may be empty
    cert_sha256: str
    key_sha256: str
    chain_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: Status
    origin: Origin
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RecordedCopy:
    """A PKCS#12 file the tool wrote on a target, and how it was encoded."""

    entity: str
    generation_id: str
    target: str
    path: str
    sha256: str
    size: int
    profile: str
    password_id: str
    friendly_name: str
    chain_sha256: str
    written_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RecordedConsultation:
    """A consultation as the state knows it; its binding (entity, key_ref, generation,
    cert_sha256) never changes once recorded, except an unmanaged key becoming known (generation
    and cert_sha256 set once). key_ref is how the file first named the key; the binding follows
    the generation's certificate whatever it is called later."""

    reference: str
    entity: str
    key_ref: str  # "designation:..." or "sha256:..."
    generation_id: str | None  # None while the bound key is not managed
    title: str
    status: ConsultationStatus
    deadline: dt.datetime | None
    opening: dt.datetime | None
    bound_at: dt.datetime
    closed_at: dt.datetime | None
    # The bound generation's certificate fingerprint: the binding's identity once managed.
    cert_sha256: str | None = None


@dataclass(frozen=True)
class Recorded:
    """A consistent snapshot of the state."""

    lineage: str | None
    serial: int
    generations: tuple[RecordedGeneration, ...] = ()
    copies: dict[tuple[str, str], RecordedCopy] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)  # name -> JSON spec (no secrets)
    consultations: dict[str, RecordedConsultation] = field(default_factory=dict)
    # generation id -> every designation it has had, oldest first (the current one included)
    designations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    home: str | None = None  # the manifest folder the state was made for
    previous_home: str | None = None  # the home before `recover --moved` re-homed it
    # entity -> the stamp of its password's source when an apply last read it and every copy
    # of the entity was then written or observed under that password (secrets.source_stamp)
    password_sources: dict[str, str] = field(default_factory=dict)

    # Indexes, built once per snapshot: plans at region scale must not be quadratic.
    @cached_property
    def _by_entity(self) -> dict[str, list[RecordedGeneration]]:
        index: dict[str, list[RecordedGeneration]] = {}
        for g in sorted(self.generations, key=lambda g: g.number):
            index.setdefault(g.entity, []).append(g)
        return index

    @cached_property
    def _by_id(self) -> dict[str, RecordedGeneration]:
        return {g.id: g for g in self.generations}

    @cached_property
    def _copies_by_entity(self) -> dict[str, list[RecordedCopy]]:
        index: dict[str, list[RecordedCopy]] = {}
        for c in self.copies.values():
            index.setdefault(c.entity, []).append(c)
        return index

    def generations_of(self, entity: str) -> list[RecordedGeneration]:
        """The entity's generations, oldest first."""
        return self._by_entity.get(entity, [])

    def copies_of(self, entity: str) -> list[RecordedCopy]:
        return self._copies_by_entity.get(entity, [])

    def current(self, entity: str) -> RecordedGeneration | None:
        for g in self._by_entity.get(entity, ()):
            if g.status == CURRENT:
                return g
        return None

    def generation(self, generation_id: str) -> RecordedGeneration | None:
        return self._by_id.get(generation_id)

    def names_of(self, g: RecordedGeneration) -> tuple[str, ...]:
        """Every designation `g` has had, oldest first, ending with its current one."""
        former = tuple(d for d in self.designations.get(g.id, ()) if d != g.designation)
        return (*former, g.designation)
