"""Consultations exported from a platform as CSV: encodings, separators, column names, statuses.

A spreadsheet saved by Excel in French is Windows-1252 with `;` separators; a platform's own
export is often UTF-8, with or without a byte order mark, and its columns carry French names
(`Référence`, `Objet`, `Date limite de remise des plis`...). This module turns such a file into
rows keyed by the tool's field names; consultations.py builds the consultations from them.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from provisioner.errors import Diagnostic, Location, ManifestError

FIELDS = (
    "reference",
    "title",
    "entity",
    "designation",
    "certificate_sha256",
    "status",
    "deadline",
    "opening",
)
STATUSES = ("open", "opening", "closed")

# The names a column may carry, compared without case, accents or punctuation. The exact
# headers vary with the platform and its version: a header not listed here is named in the
# manifest (`consultations: {columns: {deadline: "Date et heure limite"}}`).
ALIASES: dict[str, tuple[str, ...]] = {
    "reference": (
        "reference",
        "Référence",
        "Réf.",
        "Référence de la consultation",
        "N° de consultation",
        "Numéro de consultation",
    ),
    "title": (
        "title",
        "Objet",
        "Intitulé",
        "Objet de la consultation",
        "Intitulé de la consultation",
    ),
    "entity": ("entity", "Entité", "Entité d'achat", "Entité publique", "Service"),
    "designation": (
        "designation",
        "Désignation",
        "Désignation du bi-clé",
        "Désignation de la bi-clé",
        "Bi-clé",
        "Bi-clé de chiffrement",
        "Clé de chiffrement",
    ),
    "certificate_sha256": (
        "certificate_sha256",
        "Empreinte SHA-256",
        "Empreinte SHA256",
        "Empreinte du certificat",
    ),
    "status": ("status", "Statut", "État", "Etat de la consultation", "Statut de la consultation"),
    "deadline": (
        "deadline",
        "Date limite de remise des plis",
        "Date limite de réception des plis",
        "Date limite de remise des offres",
        "Date et heure limite de remise des plis",
        "Date limite",
        "DLRO",
    ),
    "opening": (
        "opening",
        "Date d'ouverture des plis",
        "Ouverture des plis",
        "Date d'ouverture",
        "Ouverture",
    ),
}

# Words that make an unread column a date column of that field, whatever else it says: such
# a column is refused, not ignored (its dates would be lost).
DATE_WORDS = {"deadline": ("limite", "deadline", "dlro"), "opening": ("ouverture", "opening")}

# Status words. "Fermée" is deliberately absent: on a platform a consultation is closed to new
# bids at its deadline, while its bids still wait to be opened; here `closed` means done (the
# key may leave the workstations). A platform's other words are mapped in the manifest.
STATUS_WORDS: dict[str, str] = {
    "open": "open",
    "ouverte": "open",
    "en cours": "open",
    "en ligne": "open",
    "publiée": "open",
    "opening": "opening",
    "ouverture": "opening",
    "ouverture des plis": "opening",
    "en cours d'ouverture": "opening",
    "closed": "closed",
    "clôturée": "closed",
    "archivée": "closed",
}


def normalise(name: str) -> str:
    """`Désignation du bi-clé` and `designation du bi cle` compare equal."""
    decomposed = unicodedata.normalize("NFKD", name.replace("’", "'"))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return " ".join(re.sub(r"[^0-9a-z°]+", " ", bare).split())


@dataclass(frozen=True, slots=True)
class ExportFormat:
    """The manifest's additions for another platform: header name per field, status words."""

    columns: tuple[tuple[str, str], ...] = ()  # (field, header)
    statuses: tuple[tuple[str, str], ...] = ()  # (word, status)

    def status(self, word: str) -> str | None:
        key = normalise(word)
        for given, status in self.statuses:
            if normalise(given) == key:
                return status
        for given, status in STATUS_WORDS.items():
            if normalise(given) == key:
                return status
        return None


DEFAULT_FORMAT = ExportFormat()

# UTF-8 multi-byte sequences: a file that has some and also invalid bytes is damaged or mixed,
# not Windows-1252 (where "Ã©" would be a French text's rarest pair).
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _place(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset]
    return before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1


def decode_export(data: bytes, display: str, notes: list[Diagnostic]) -> str:
    """UTF-8 (a byte order mark is dropped), else Windows-1252 when the bytes decode as such
    and hold no control character; the fallback is reported in `notes`, never silent."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _place(data, exc.start)
        where = Location(display, line, column)
        if _UTF8_SEQUENCE.search(data):
            raise ManifestError(
                [
                    Diagnostic(
                        "error",
                        where,
                        "the file mixes UTF-8 with another encoding (a damaged file, or two "
                        "files pasted together): save it again as CSV UTF-8",
                    )
                ]
            ) from None
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as bad:
            line, column = _place(data, bad.start)
            raise ManifestError(
                [
                    Diagnostic(
                        "error",
                        Location(display, line, column),
                        f"byte 0x{data[bad.start]:02X} is neither UTF-8 nor Windows-1252 text: "
                        "save the file as CSV UTF-8",
                    )
                ]
            ) from None
        notes.append(
            Diagnostic(
                "warning",
                where,
                "not UTF-8: read as Windows-1252 (Excel's CSV in French); save it as "
                "'CSV UTF-8' to be explicit",
            )
        )
    text = text.removeprefix("\ufeff")
    control = _CONTROL.search(text)
    if control:
        line = text.count("\n", 0, control.start()) + 1
        column = control.start() - (text.rfind("\n", 0, control.start()) + 1) + 1
        raise ManifestError(
            [
                Diagnostic(
                    "error",
                    Location(display, line, column),
                    f"control character U+{ord(control.group()):04X}: not a text export",
                )
            ]
        )
    return text


def delimiter_of(header_line: str) -> str:
    """`;` (Excel in French, most platforms) or `,`, whichever the header row uses more."""
    return ";" if header_line.count(";") >= header_line.count(",") and ";" in header_line else ","


def field_columns(line: str, delimiter: str) -> list[int]:
    """1-based character column where each field of a CSV line starts (quotes respected)."""
    starts = [1]
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == delimiter and not quoted:
            starts.append(i + 2)
    return starts


@dataclass(frozen=True, slots=True)
class Header:
    """Which field each column gives, by column index."""

    fields: dict[int, str]
    names: tuple[str, ...]  # the headers as written
    ignored: tuple[str, ...]

    def index_of(self, field: str) -> int | None:
        for index, name in self.fields.items():
            if name == field:
                return index
        return None


def map_header(names: list[str], fmt: ExportFormat, display: str, columns: list[int]) -> Header:
    """Give each header its field; refuse what would be ambiguous or incomplete."""
    configured = {normalise(header): field for field, header in fmt.columns}
    overridden = {field for field, _ in fmt.columns}
    known = {
        normalise(alias): field
        for field, aliases in ALIASES.items()
        if field not in overridden
        for alias in aliases
    }
    errors: list[Diagnostic] = []
    fields: dict[int, str] = {}
    ignored: list[str] = []
    taken: dict[str, int] = {}
    for index, name in enumerate(names):
        key = normalise(name)
        field = configured.get(key) or known.get(key)
        if field is None:
            if name.strip():
                ignored.append(name.strip())
            continue
        if field in taken:
            if field == "title":  # "Objet" and "Intitulé" side by side: the first one
                ignored.append(name.strip())
                continue
            errors.append(
                Diagnostic(
                    "error",
                    Location(display, 1, columns[index] if index < len(columns) else None),
                    f"columns {names[taken[field]].strip()!r} and {name.strip()!r} both give "
                    f"the {field}: name the one to use in the manifest "
                    f"(consultations: {{columns: {{{field}: ...}}}})",
                )
            )
            continue
        taken[field] = index
        fields[index] = field
    missing = [f for f in ("reference", "entity", "status") if f not in taken]
    if not ("designation" in taken or "certificate_sha256" in taken):
        missing.append("designation or certificate_sha256")
    # A first line of fewer fields than the columns required is no header (a password file
    # given by mistake): it is not echoed.
    shown = (
        "the header is: " + ", ".join(n.strip() for n in names)
        if len(names) >= 4
        else f"the first line has {len(names)} field{'s' if len(names) > 1 else ''}, not "
        "shown: it is no consultations header; is this the right file?"
    )
    for field in missing:
        accepted = [h for f, h in fmt.columns if f in field.split(" or ")] or [
            a for f in field.split(" or ") for a in ALIASES[f][:4]
        ]
        errors.append(
            Diagnostic(
                "error",
                Location(display, 1, 1),
                f"header: no {field} column (accepted: {', '.join(repr(a) for a in accepted)}; "
                "another name is given in the manifest: consultations: {columns: "
                f"{{{field.split(' or ')[0]}: ...}}}}; {shown})",
            )
        )
    if errors:
        raise ManifestError(errors)
    return Header(fields, tuple(names), tuple(ignored))


def near_misses(header: Header, display: str) -> Iterable[Diagnostic]:
    """A column the tool does not read, named like a field it has not found (`Date limite de
    remise`, `Statu`): a warning, so a misspelt column does not go unseen, and an error for
    the deadline and the opening, whose dates would be lost. Other columns of the export are
    ignored without a word."""
    found = set(header.fields.values())
    for name in header.ignored:
        for field, aliases in ALIASES.items():
            if field in found:
                continue
            close = difflib.get_close_matches(
                normalise(name), [normalise(a) for a in aliases], n=1, cutoff=0.75
            )
            words = normalise(name).split()
            if close or any(w in words for w in DATE_WORDS.get(field, ())):
                # A date column read as nothing would drop the deadline or the opening that
                # check compares with the key's expiry: an error, not a warning.
                dates = field in ("deadline", "opening")
                yield Diagnostic(
                    "error" if dates else "warning",
                    Location(display, 1),
                    f"column {name!r} is not read: did you mean the {field} column? (name it "
                    f"in the manifest: consultations: {{columns: {{{field}: {name!r}}}}})"
                    + (": its dates would be lost" if dates else ""),
                )
                break
