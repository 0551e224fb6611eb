"""The consultations file (YAML, or CSV with a header row as exported from a platform).

A consultation (call for tender) is bound at its launch to one bi-clé, named by its
désignation or its certificate's SHA-256 fingerprint. The binding is definitive.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from provisioner.bounded import InputFileError, read_regular
from provisioner.clock import PARIS, until
from provisioner.clock import day as paris_day
from provisioner.errors import Diagnostic, Location, ManifestError
from provisioner.manifest.schema import validate
from provisioner.manifest.yamlpos import MAX_BYTES, load_yaml
from provisioner.platform_csv import (
    DEFAULT_FORMAT,
    STATUSES,
    ExportFormat,
    decode_export,
    delimiter_of,
    field_columns,
    map_header,
    near_misses,
    normalise,
)

# JJ/MM/AAAA, then optionally HH:MM (or 12h00, "à 12h00", with seconds as Excel writes them).
_FR_DATE = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:(?:\s+(?:à\s+)?|T)(\d{1,2})[:h](\d{2})(?::(\d{2}))?)?$"
)


# A consultation's status: bids being received, being opened, or all opened (done).
ConsultationStatus = Literal["open", "opening", "closed"]


@dataclass(frozen=True)
class Consultation:
    reference: str
    title: str
    entity: str
    designation: str | None
    certificate_sha256: str | None  # lower-case hex without colons
    status: ConsultationStatus
    deadline: dt.datetime | None
    opening: dt.datetime | None
    location: Location

    @property
    def key_ref(self) -> str:
        """How the file names the bound key: `designation:...` or `sha256:...`."""
        if self.certificate_sha256:
            return f"sha256:{self.certificate_sha256}"
        return f"designation:{self.designation}"

    @property
    def is_open(self) -> bool:
        return self.status != "closed"


KeyRefKind = Literal["designation", "sha256"]


def split_key_ref(key_ref: str) -> tuple[KeyRefKind, str]:
    """A key reference (`Consultation.key_ref`, as the state records it) read back: its kind
    and the désignation or fingerprint it names. A reference is one or the other."""
    if key_ref.startswith("sha256:"):
        return "sha256", key_ref.removeprefix("sha256:")
    return "designation", key_ref.removeprefix("designation:")


def parse_date(text: str) -> dt.datetime:
    """ISO 8601 date or date-time, or the French DD/MM/YYYY [HH:MM]. A time without an offset
    is Paris time, as platforms show it."""
    text = text.strip()
    match = _FR_DATE.match(text)
    if match:
        day, month, year, hour, minute, second = match.groups()
        value = dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    else:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    # Dates are shifted by time zones and compared with validity periods: years at the edge of
    # what Python represents would overflow there, and no consultation lives in them.
    if not 1900 <= value.year <= 9000:
        raise ValueError(f"year {value.year} is outside 1900-9000")
    return value if value.tzinfo else value.replace(tzinfo=PARIS)


def _build(
    raw: dict[str, str],
    location: Location,
    errors: list[Diagnostic],
    date_location: dict[str, Location],
) -> Consultation | None:
    dates: dict[str, dt.datetime | None] = {}
    for field in ("deadline", "opening"):
        value = raw.get(field)
        dates[field] = None
        if value:
            try:
                dates[field] = parse_date(str(value))
            except ValueError:
                errors.append(
                    Diagnostic(
                        "error",
                        date_location.get(field, location),
                        f"{field}: {value!r} is not a date (JJ/MM/AAAA [HH:MM], "
                        "YYYY-MM-DD or an ISO 8601 date-time)",
                    )
                )
                return None
    fingerprint = raw.get("certificate_sha256") or None
    return Consultation(
        reference=str(raw["reference"]).strip(),
        title=str(raw.get("title") or ""),
        entity=str(raw["entity"]).strip(),
        designation=raw.get("designation") or None,
        certificate_sha256=fingerprint.replace(":", "").lower() if fingerprint else None,
        # One of STATUSES: the schema's enum, or the CSV's words mapped to them (_from_csv).
        status=cast(ConsultationStatus, str(raw["status"]).strip()),
        deadline=dates["deadline"],
        opening=dates["opening"],
        location=location,
    )


def _from_yaml(data: bytes, display: str) -> list[Consultation]:
    doc, positions = load_yaml(data, display)
    errors = validate(doc, positions, "consultations.schema.json")
    if errors:
        raise ManifestError(errors)
    out: list[Consultation] = []
    problems: list[Diagnostic] = []
    for i, raw in enumerate(doc["consultations"]):
        path = ("consultations", i)
        built = _build(
            raw,
            positions.at(path),
            problems,
            {f: positions.at((*path, f)) for f in ("deadline", "opening")},
        )
        if built is not None:
            out.append(built)
    if problems:
        raise ManifestError(problems)
    return out


def _from_csv(
    data: bytes, display: str, fmt: ExportFormat, notes: list[Diagnostic]
) -> list[Consultation]:
    text = decode_export(data, display, notes)
    # Lines as the csv module ends them (\r\n, \r or \n), so that its line numbers index them.
    lines = re.split(r"\r\n|\r|\n", text)
    delimiter = delimiter_of(lines[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    names = next(reader, [])
    header = map_header(names, fmt, display, field_columns(lines[0], delimiter))
    misses = list(near_misses(header, display))
    if any(d.severity == "error" for d in misses):
        raise ManifestError(misses)
    notes.extend(misses)
    errors: list[Diagnostic] = []
    out: list[Consultation] = []
    end = reader.line_num
    for row in reader:
        line, end = end + 1, reader.line_num  # a quoted field may span lines
        columns = field_columns(lines[line - 1] if line <= len(lines) else "", delimiter)
        where = Location(display, line)

        def at(field: str, row_line: int = line, starts: list[int] = columns) -> Location:
            index = header.index_of(field)
            column = starts[index] if index is not None and index < len(starts) else None
            return Location(display, row_line, column)

        def refuse(field: str, message: str, row_line: int = line) -> None:
            index = header.index_of(field)
            name = names[index].strip() if index is not None else field
            label = name if normalise(name) == normalise(field) else f"{name} ({field})"
            errors.append(Diagnostic("error", at(field, row_line), f"{label}: {message}"))

        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            errors.append(
                Diagnostic(
                    "error",
                    Location(
                        display, line, columns[len(names)] if len(columns) > len(names) else None
                    ),
                    f"{len(row)} fields where the header has {len(names)} (a {delimiter!r} "
                    "inside a value must be quoted)",
                )
            )
            continue
        clean = {
            field: row[index].strip() for index, field in header.fields.items() if index < len(row)
        }
        for field in ("reference", "entity", "status"):
            if not clean.get(field):
                refuse(field, "missing value")
        if clean.get("status"):
            status = fmt.status(clean["status"])
            if status is None:
                refuse(
                    "status",
                    f"{clean['status']!r} is not one of {', '.join(STATUSES)} (nor a word the "
                    "tool knows for them; map it in the manifest: consultations: {statuses: "
                    f"{{{clean['status']!r}: open}}}})",
                )
            else:
                clean["status"] = status
        if bool(clean.get("designation")) == bool(clean.get("certificate_sha256")):
            errors.append(
                Diagnostic("error", where, "give exactly one of designation and certificate_sha256")
            )
        fp = clean.get("certificate_sha256", "").replace(":", "")
        if fp and not re.fullmatch(r"[0-9A-Fa-f]{64}", fp):
            refuse("certificate_sha256", "not a SHA-256 fingerprint (64 hex digits)")
        if any(d.location.file == display and d.location.line == line for d in errors):
            continue
        built = _build(clean, where, errors, {f: at(f) for f in ("deadline", "opening")})
        if built is not None:
            out.append(built)
    if errors:
        raise ManifestError(errors)
    return out


def read_consultations(
    path: Path,
    entities: set[str] | None = None,
    fmt: ExportFormat = DEFAULT_FORMAT,
    notes: list[Diagnostic] | None = None,
) -> list[Consultation]:
    """Load and check a consultations file; every problem is reported with file:line (and the
    column for a CSV). Warnings (a Windows-1252 file, a misspelt column) go to `notes`."""
    display = str(path)
    try:  # never waits on a named pipe, never reads a device or a growing file without end
        data = read_regular(path, MAX_BYTES)
    except InputFileError as exc:
        raise ManifestError([Diagnostic("error", Location(display), str(exc))]) from None
    if path.suffix.lower() == ".csv":
        items = _from_csv(data, display, fmt, [] if notes is None else notes)
    else:
        items = _from_yaml(data, display)
    errors: list[Diagnostic] = []
    seen: dict[str, Consultation] = {}
    for c in items:
        if c.reference in seen:
            errors.append(
                Diagnostic(
                    "error",
                    c.location,
                    f"consultation {c.reference}: listed "
                    f"twice (first at {seen[c.reference].location})",
                )
            )
        seen.setdefault(c.reference, c)
        if entities is not None and c.entity not in entities:
            errors.append(
                Diagnostic(
                    "error", c.location, f"consultation {c.reference}: unknown entity '{c.entity}'"
                )
            )
        if any(ord(ch) < 32 for ch in c.reference):
            errors.append(Diagnostic("error", c.location, "reference contains control characters"))
        if c.deadline and c.opening and until(c.opening) < c.deadline and notes is not None:
            # Bids are opened after they are received: swapped or mistyped dates.
            notes.append(
                Diagnostic(
                    "warning",
                    c.location,
                    f"consultation {c.reference}: opening {paris_day(c.opening)} is before its "
                    f"deadline {paris_day(c.deadline)}: check both dates (check compares the key's "
                    "expiry with each)",
                )
            )
    if errors:
        raise ManifestError(errors)
    return items
