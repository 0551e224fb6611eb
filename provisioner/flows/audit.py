"""`provisioner audit`: the state's append-only audit log, read without sqlite3.

Every change the tool records (a generation made, a copy written or removed, a binding, a
recovery, a rekey...) has an audit record: when (UTC), who (user@host and pid), what, which
entity, and details that are identifiers and fingerprints, never secrets. This module reads
them, filtered by entity, date and action; it needs no secret and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner import clock
from provisioner.consultations import parse_date
from provisioner.errors import (
    NoStateError,
    ProvisionerError,
    StateError,
    UsageError,
    error_document,
)
from provisioner.jsondoc import FORMAT_VERSION
from provisioner.state.location import StateLocation
from provisioner.state.store import open_store

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{1,2}/\d{1,2}/\d{4}$")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record as stored."""

    number: int
    at: dt.datetime
    actor: str
    action: str
    entity: str | None
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.number,
            "at": clock.iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "entity": self.entity,
            "detail": self.detail,
        }

    def line(self) -> str:
        details = " ".join(f"{k}={_shown(v)}" for k, v in sorted(self.detail.items()))
        return "  ".join(
            part
            for part in (clock.iso(self.at), self.action, self.entity or "-", details, self.actor)
            if part
        )


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return json.dumps(text) if (not text or any(c.isspace() for c in text)) else text


@dataclass(frozen=True, slots=True)
class Bounds:
    """The period asked for: `since` included, `until` excluded."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None


def period(since: str | None, until: str | None) -> Bounds:
    """`--since` / `--until` as given: a date (JJ/MM/AAAA or YYYY-MM-DD, the whole day in Paris
    time, `until` included) or an ISO 8601 date-time. ValueError names the bad one."""

    def parse(option: str, text: str) -> dt.datetime:
        try:
            return parse_date(text)
        except ValueError:
            raise ValueError(
                f"{option} {text!r} is not a date (JJ/MM/AAAA, YYYY-MM-DD or ISO 8601 date-time)"
            ) from None

    start = parse("--since", since) if since else None
    end = parse("--until", until) if until else None
    if end is not None and until and _DATE_ONLY.match(until.strip()):
        end += dt.timedelta(days=1)  # the whole day named
    if start is not None and end is not None and end <= start:
        raise ValueError(f"--until {until} is not after --since {since}")
    return Bounds(start, end)


def read_audit(
    state: StateLocation | Path,
    entities: list[str] | None = None,
    actions: list[str] | None = None,
    bounds: Bounds = Bounds(),  # frozen, never mutated
    last: int | None = None,
) -> list[AuditRecord]:
    """The records of the state there (a folder: SQLite), oldest first, filtered; StateError
    when there is no state there. `last` keeps only the newest N (after filtering)."""
    db = open_store(state, create=False, migrate=False)
    if db is None:
        where = state / "state.db" if isinstance(state, Path) else state
        raise NoStateError(where, "no audit log")
    try:
        rows = db.audit_records()
    finally:
        db.close()
    wanted_entities = set(entities or [])
    wanted_actions = set(actions or [])
    out: list[AuditRecord] = []
    for number, at, actor, action, entity, detail in rows:
        when = clock.parse(at)
        if wanted_entities and entity not in wanted_entities:
            continue
        if wanted_actions and action not in wanted_actions:
            continue
        if bounds.since is not None and when < bounds.since:
            continue
        if bounds.until is not None and when >= bounds.until:
            continue
        out.append(AuditRecord(number, when, actor, action, entity, json.loads(detail)))
    return out[-last:] if last else out


def known_names(state: StateLocation | Path) -> tuple[set[str], set[str]]:
    """Every entity and action the log names: to say "did you mean" for a filter."""
    db = open_store(state, create=False, migrate=False)
    if db is None:
        return set(), set()
    try:
        rows = db.audit_records()
    finally:
        db.close()
    return {r.entity for r in rows if r.entity}, {r.action for r in rows}


def render(records: list[AuditRecord]) -> str:
    """One line per record (UTC time, action, entity, details, actor), oldest first."""
    if not records:
        return "No audit record matches."
    return "\n".join(r.line() for r in records)


def document(
    records: list[AuditRecord], state: StateLocation | Path, bounds: Bounds
) -> dict[str, Any]:
    """The `--json` output (schemas/audit.schema.json); `state_dir` names the state (its
    folder, or its PostgreSQL database and schema)."""
    return {
        "format_version": FORMAT_VERSION,
        "state_dir": str(state),
        "since": clock.iso(bounds.since) if bounds.since else None,
        "until": clock.iso(bounds.until) if bounds.until else None,
        "records": [r.as_json() for r in records],
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the command prints and its exit code: the CLI only writes them out."""

    code: int
    out: str
    err: str = ""


def _unknown(kind: str, asked: list[str], known: set[str]) -> list[str]:
    problems = []
    for name in asked:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"no audit record names the {kind} '{name}'{hint}")
    return problems


def run(
    manifest: Path,
    state_dir: Path | None,
    state_backend: str | None,
    entities: list[str] | None,
    actions: list[str] | None,
    since: str | None,
    until: str | None,
    last: int | None,
    as_json: bool,
) -> Outcome:
    """`provisioner audit`: 0 with the records (possibly none for the period), 1 when there
    is no state, a filter names an entity or action the log has never seen, or a date is
    not one. With `as_json`, one JSON document on stdout either way."""

    def failed(exc: ProvisionerError) -> Outcome:
        if as_json:
            body = error_document("audit", 1, exc)
            return Outcome(1, json.dumps(body, indent=2), f"Error: {exc}")
        return Outcome(1, "", f"Error: {exc}")

    try:
        bounds = period(since, until)
        state = _where(manifest, state_dir, state_backend)
        known_entities, known_actions = known_names(state)
        problems = _unknown("entity", entities or [], known_entities)
        problems += _unknown("action", actions or [], known_actions)
        if problems and (known_entities or known_actions):
            return failed(UsageError("; ".join(problems)))
        records = read_audit(state, entities, actions, bounds, last)
    except ValueError as exc:  # a date that is not one
        return failed(UsageError(str(exc)))
    except StateError as exc:
        return failed(exc)
    if as_json:
        return Outcome(0, json.dumps(document(records, state, bounds), indent=2))
    return Outcome(0, render(records))


def _where(manifest: Path, state_dir: Path | None, state_backend: str | None) -> StateLocation:
    """Where the state is: the manifest's `state`, unless the backend is given as sqlite. A
    manifest that no longer loads is not needed for a SQLite state folder that is there."""
    from provisioner.engine.inputs import BACKEND_ENV, state_dir_for, state_location
    from provisioner.manifest.loader import read_manifest

    backend = state_backend or os.environ.get(BACKEND_ENV)
    if backend == "sqlite":
        return StateLocation("sqlite", state_dir_for(manifest, state_dir))
    try:
        loaded, _ = read_manifest(manifest)
    except ProvisionerError:
        folder = state_dir_for(manifest, state_dir)
        if backend is None and (folder / "state.db").is_file():
            return StateLocation("sqlite", folder)
        raise
    return state_location(loaded, state_dir, backend)
