"""The mutations of one write transaction (`StateDB.change()`, and `PgStore.change()` through
`state/pg.PgChange`), who makes them, and the rows they write: one text of each statement and
one row of each record for both backends."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from typing import Any, Protocol

from provisioner import clock
from provisioner.state.records import RecordedConsultation, RecordedCopy, RecordedGeneration


def actor() -> str:
    """Who acts, for the audit log: user@host and pid."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class Executes(Protocol):
    """A database connection as a change uses it: SQLite's, or psycopg's."""

    def execute(self, query: str, params: tuple[object, ...], /) -> object: ...


class Change:
    """Mutations inside one transaction: the one text of each statement, for SQLite and for
    PostgreSQL (`state/pg.PgChange`), in the SQL both speak (upserts with `ON CONFLICT`);
    only the placeholder differs."""

    placeholder = "?"  # sqlite3's; psycopg's is %s

    def __init__(self, conn: Executes) -> None:
        self.conn = conn
        self.actor = actor()

    def _run(self, statement: str, params: tuple[object, ...]) -> None:
        if self.placeholder != "?":
            statement = statement.replace("?", self.placeholder)
        self.conn.execute(statement, params)

    def audit(self, action: str, entity: str | None, **detail: Any) -> None:
        """Append an audit record; callers pass identifiers and fingerprints, never secrets."""
        self._run(
            "INSERT INTO audit (at, actor, action, entity, detail) VALUES (?, ?, ?, ?, ?)",
            audit_row(self.actor, action, entity, detail),
        )

    def add_generation(self, g: RecordedGeneration) -> None:
        self._run(
            "INSERT INTO generations (id, entity, number, designation, common_name, issuer,"
            " key_size, subject, certificate, chain, cert_sha256, key_sha256, chain_sha256,"
            " not_before, not_after, status, origin, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            generation_row(g),
        )
        self._designation(g.id, g.designation, g.created_at)

    def _designation(self, generation_id: str, designation: str, since: dt.datetime) -> None:
        self._run(
            "INSERT INTO designations (generation, designation, since) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (generation_id, designation, clock.iso(since)),
        )

    def add_former_designation(
        self, generation_id: str, designation: str, since: dt.datetime
    ) -> None:
        """Record a name the generation had before it came under management (adopt)."""
        self._designation(generation_id, designation, since)

    def set_meta(self, key: str, value: str) -> None:
        self._run(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def set_status(self, generation_id: str, status: str, at: dt.datetime) -> None:
        self._run(
            "UPDATE generations SET status = ?, retired_at = ? WHERE id = ?",
            (status, clock.iso(at) if status == "retired" else None, generation_id),
        )

    def set_chain(self, generation_id: str, chain: bytes, chain_sha256: str) -> None:
        self._run(
            "UPDATE generations SET chain = ?, chain_sha256 = ? WHERE id = ?",
            (chain, chain_sha256, generation_id),
        )

    def set_designation(self, generation_id: str, designation: str) -> None:
        """Rename a generation; its former names stay in the designation history."""
        self._run(
            "UPDATE generations SET designation = ? WHERE id = ?", (designation, generation_id)
        )
        self._designation(generation_id, designation, clock.now())

    def put_copy(self, c: RecordedCopy) -> None:
        self._run(
            "INSERT INTO copies (target, path, entity, generation, sha256, size, profile,"
            " password_id, friendly_name, chain_sha256, written_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (target, path) DO UPDATE SET entity = excluded.entity,"
            " generation = excluded.generation, sha256 = excluded.sha256,"
            " size = excluded.size, profile = excluded.profile,"
            " password_id = excluded.password_id, friendly_name = excluded.friendly_name,"
            " chain_sha256 = excluded.chain_sha256, written_at = excluded.written_at",
            copy_row(c),
        )

    def delete_copy(self, target: str, path: str) -> None:
        self._run("DELETE FROM copies WHERE target = ? AND path = ?", (target, path))

    def put_consultation(self, c: RecordedConsultation) -> None:
        """Record a consultation, or update its status and dates; the binding itself is
        protected by a trigger and cannot change."""
        self._run(
            "INSERT INTO consultations (reference, entity, key_ref, generation, title, status,"
            " deadline, opening, bound_at, closed_at, cert_sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (reference) DO UPDATE SET entity = excluded.entity,"
            " key_ref = excluded.key_ref, generation = excluded.generation,"
            " cert_sha256 = excluded.cert_sha256,"
            " title = excluded.title, status = excluded.status, deadline = excluded.deadline,"
            " opening = excluded.opening, closed_at = excluded.closed_at",
            consultation_row(c),
        )

    def put_target(self, name: str, spec: str) -> None:
        self._run(
            "INSERT INTO targets (name, spec) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
            (name, spec),
        )


def audit_row(
    actor: str, action: str, entity: str | None, detail: dict[str, Any]
) -> tuple[str, str, str, str | None, str]:
    """at, actor, action, entity, detail of an audit record stamped now."""
    return (
        clock.iso(clock.now()),
        actor,
        action,
        entity,
        json.dumps(detail, sort_keys=True, default=str),
    )


def generation_row(g: RecordedGeneration) -> tuple[object, ...]:
    """The `generations` columns from id to created_at, in table order."""
    return (
        g.id,
        g.entity,
        g.number,
        g.designation,
        g.common_name,
        g.issuer,
        g.key_size,
        json.dumps(list(g.subject)),
        g.certificate,
        g.chain,
        g.cert_sha256,
        g.key_sha256,
        g.chain_sha256,
        clock.iso(g.not_before),
        clock.iso(g.not_after),
        g.status,
        g.origin,
        clock.iso(g.created_at),
    )


def copy_row(c: RecordedCopy) -> tuple[object, ...]:
    """The `copies` columns, in table order."""
    return (
        c.target,
        c.path,
        c.entity,
        c.generation_id,
        c.sha256,
        c.size,
        c.profile,
        c.password_id,
        c.friendly_name,
        c.chain_sha256,
        clock.iso(c.written_at),
    )


def consultation_row(c: RecordedConsultation) -> tuple[object, ...]:
    """reference ... closed_at, cert_sha256 of `consultations` (cert_sha256 last: it was
    added by the v3 migration)."""
    return (
        c.reference,
        c.entity,
        c.key_ref,
        c.generation_id,
        c.title,
        c.status,
        _iso_local(c.deadline),
        _iso_local(c.opening),
        clock.iso(c.bound_at),
        _iso(c.closed_at),
        c.cert_sha256,
    )


def _iso(value: dt.datetime | None) -> str | None:
    return clock.iso(value) if value else None


def _iso_local(value: dt.datetime | None) -> str | None:
    return clock.local_iso(value) if value else None
