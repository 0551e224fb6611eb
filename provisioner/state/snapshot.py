"""Reading a state into the planner's `Recorded` snapshot: the SQLite state, or the PostgreSQL
one (the same tables and columns), each giving the rows of the named queries below."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from provisioner import clock
from provisioner.state.records import (
    PASSWORD_SOURCE,
    Recorded,
    RecordedConsultation,
    RecordedCopy,
    RecordedGeneration,
)
from provisioner.state.store import TABLE_COLUMNS

# What the snapshot reads: each query's table, columns and order, the columns being the table's
# own (store.TABLE_COLUMNS, the one list; a generation's `retired_at` comes last and is not
# read). A backend may fetch them its own way (PostgreSQL: one JSON document a table,
# `state/pg.py`), the rows being the same.
QUERIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "meta": ("meta", TABLE_COLUMNS["meta"], ""),
    "generations": ("generations", TABLE_COLUMNS["generations"][:-1], "entity, number"),
    "copies": ("copies", TABLE_COLUMNS["copies"], ""),
    "targets": ("targets", TABLE_COLUMNS["targets"], ""),
    "consultations": ("consultations", TABLE_COLUMNS["consultations"], ""),
    # Every name a generation has had, oldest first; ties in insertion order (SQLite's rowid).
    "designations": ("designations", TABLE_COLUMNS["designations"][:2], "since, rowid"),
}
Fetch = Callable[[str], Iterable[Sequence[Any]]]


def sql_of(name: str) -> str:
    table, columns, order = QUERIES[name]
    return f"SELECT {', '.join(columns)} FROM {table}" + (f" ORDER BY {order}" if order else "")


def read_snapshot(conn: sqlite3.Connection) -> Recorded:
    """Everything the planner needs, read by the caller's open transaction."""
    return build_snapshot(lambda name: conn.execute(sql_of(name)))


def build_snapshot(rows: Fetch) -> Recorded:
    """The snapshot from the rows of each named query (QUERIES), read in one transaction."""
    meta: dict[str, str] = {str(k): str(v) for k, v in rows("meta")}
    generations = tuple(
        RecordedGeneration(
            id=r[0],
            entity=r[1],
            number=r[2],
            designation=r[3],
            common_name=r[4],
            issuer=r[5],
            key_size=r[6],
            subject=tuple(json.loads(r[7])),
            certificate=bytes(r[8]),
            chain=bytes(r[9]),
            cert_sha256=r[10],
            key_sha256=r[11],
            chain_sha256=r[12],
            not_before=clock.parse(r[13]),
            not_after=clock.parse(r[14]),
            status=r[15],
            origin=r[16],
            created_at=clock.parse(r[17]),
        )
        for r in rows("generations")
    )
    # The copies of one generation repeat its entity, ids, profile, names and write time:
    # one object each instead of one per copy (tens of MB at 100,000 copies).
    shared: dict[str, str] = {}
    one = shared.setdefault
    stamps: dict[str, dt.datetime] = {}
    copies: dict[tuple[str, str], RecordedCopy] = {}
    for r in rows("copies"):
        target = one(r[0], r[0])
        written_at = stamps.get(r[10])
        if written_at is None:
            written_at = stamps[r[10]] = clock.parse(r[10])
        copies[(target, r[1])] = RecordedCopy(
            target=target,
            path=r[1],
            entity=one(r[2], r[2]),
            generation_id=one(r[3], r[3]),
            sha256=r[4],
            size=r[5],
            profile=one(r[6], r[6]),
            password_id=one(r[7], r[7]),
            friendly_name=one(r[8], r[8]),
            chain_sha256=one(r[9], r[9]),
            written_at=written_at,
        )
    targets: dict[str, str] = {str(k): str(v) for k, v in rows("targets")}
    consultations = {
        r[0]: RecordedConsultation(
            reference=r[0],
            entity=r[1],
            key_ref=r[2],
            generation_id=r[3],
            title=r[4],
            status=r[5],
            deadline=_date(r[6]),
            opening=_date(r[7]),
            bound_at=clock.parse(r[8]),
            closed_at=_date(r[9]),
            cert_sha256=r[10],
        )
        for r in rows("consultations")
    }
    designations: dict[str, tuple[str, ...]] = {}
    for generation, designation in rows("designations"):
        designations[generation] = (*designations.get(generation, ()), designation)
    return Recorded(
        lineage=meta.get("lineage"),
        serial=int(meta.get("serial", "0")),
        generations=generations,
        copies=copies,
        targets=targets,
        consultations=consultations,
        designations=designations,
        home=meta.get("home"),
        previous_home=meta.get("previous_home"),
        password_sources={
            k.removeprefix(PASSWORD_SOURCE): v
            for k, v in meta.items()
            if k.startswith(PASSWORD_SOURCE)
        },
    )


def _date(value: str | None) -> dt.datetime | None:
    return clock.parse(value) if value else None
