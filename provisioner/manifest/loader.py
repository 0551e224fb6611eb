"""Load a manifest: safe YAML, JSON Schema, semantic checks, then the frozen model."""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from provisioner.errors import Diagnostic, Location, ManifestError
from provisioner.exports import ExportFormat, normalise
from provisioner.inputs import InputFileError, read_regular
from provisioner.manifest import model as m
from provisioner.manifest.schema import dotted, is_valid, validate
from provisioner.manifest.yamlpos import MAX_BYTES, Positions, load_yaml

_WINDOWS_ABS = re.compile(r"^[A-Za-z]:/")
# Characters a name may not hold: control (NUL included), format (bidi overrides, zero-width),
# surrogates, line and paragraph separators. A spoofed name reaches the certificate's CN and
# the friendly name the agent sees.
_FORBIDDEN_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "a format character: bidi or zero-width",
    "Cs": "a surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
# File names Windows refuses whatever their extension (`con.g1.p12` included).
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
    + [
        "com\u00b9",
        "com\u00b2",
        "com\u00b3",
        "lpt\u00b9",
        "lpt\u00b2",
        "lpt\u00b3",
        "conin$",
        "conout$",
    ]
)


def name_problem(text: str) -> str | None:
    """Why `text` may not be a name, designation or subject field, or None."""
    if text.isprintable():  # every refused category is unprintable: one C loop for most names
        return None
    for ch in text:
        category = unicodedata.category(ch)
        if category in _FORBIDDEN_CATEGORIES:
            label = unicodedata.name(ch, "") if category != "Cs" else ""
            return (
                f"contains control characters: U+{ord(ch):04X}{f' {label}' if label else ''} "
                f"({_FORBIDDEN_CATEGORIES[category]}); names may hold no control, format or "
                "line-separator character"
            )
    return None


def _shown(text: str) -> str:
    """`text` for a message: unprintable characters escaped, never sent to the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot start a file name on Windows and POSIX targets, or None."""
    stem = name.split(".", 1)[0].rstrip(" ").casefold()
    if stem in WINDOWS_RESERVED:
        return (
            f"'{name}' is a reserved device name on Windows (con, prn, aux, nul, com1-com9, "
            "lpt1-lpt9, with any extension): its files could not be written there"
        )
    if name.endswith((".", " ")):
        return f"'{name}' ends with a dot or a space, which Windows drops from file names"
    if len(name.encode("utf-8")) > 100:
        return f"'{name[:20]}...' is longer than 100 bytes"
    return None


class _Checker:
    """Collects diagnostics while building the model, so every problem is reported at once.

    Problems are kept with the document path they concern and placed (file:line:column) by
    `diagnostics()`, against the full positions of the document."""

    def __init__(self, positions: Positions, base_dir: Path) -> None:
        self.pos = positions
        self.child_env = m.MINIMAL_ENVIRONMENT  # set by read_manifest before secrets are built
        self.base_dir = base_dir
        self.base = str(base_dir)
        self.found: list[tuple[str, tuple[str | int, ...], bool, str]] = []
        # Relative paths with no empty, '.' or '..' part join the base as they are.
        self.clean_base = self.base == os.path.normpath(self.base) and self.base != "/"

    def error(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        self.found.append(("error", path, key, f"{dotted(path)}: {message}"))

    def warning(self, path: tuple[str | int, ...], message: str) -> None:
        self.found.append(("warning", path, False, f"{dotted(path)}: {message}"))

    def diagnostics(self, positions: Positions) -> list[Diagnostic]:
        placed = [
            Diagnostic(severity, positions.at(path, key=key), message)
            for severity, path, key, message in self.found
        ]
        return sorted(placed, key=lambda d: (d.location.line or 0, d.location.column or 0))

    def local_path(self, raw: str, path: tuple[str | int, ...]) -> Path:
        """A local path: absolute, or relative to the manifest; never through `..`."""
        return Path(self.local_str(raw, path))

    def local_str(self, raw: str, path: tuple[str | int, ...]) -> str:
        parts = raw.split("/")
        if not raw.isprintable():
            self.error(path, "path contains control characters")
        elif "\\" in raw or (raw[1:2] == ":" and raw[:1].isalpha()):  # C:\x, C:/x
            self.error(
                path,
                f"{raw!r} is a Windows path: local paths are on this machine (POSIX, forward "
                "slashes); a Windows workstation is reached with an ssh target "
                "(path: C:/ProgramData/...)",
            )
        elif ".." in parts:
            self.error(path, f"unsafe path {raw!r}: '..' may not be used to leave a folder")
        if self.clean_base and raw[:1] != "/" and "" not in parts and "." not in parts:
            return f"{self.base}/{raw}"  # what normpath would return, without its cost
        return os.path.normpath(raw if os.path.isabs(raw) else os.path.join(self.base, raw))

    def remote_path(self, raw: str, path: tuple[str | int, ...]) -> str:
        if "\\" in raw:
            self.error(path, f"remote path {raw!r} must use forward slashes (C:/ProgramData/...)")
        elif not (raw.startswith("/") or _WINDOWS_ABS.match(raw)):
            self.error(path, f"remote path {raw!r} must be absolute (/srv/... or C:/...)")
        elif ".." in PurePosixPath(raw).parts or not raw.isprintable():
            self.error(path, f"unsafe remote path {raw!r}")
        elif _WINDOWS_ABS.match(raw):
            for part in raw[3:].split("/"):
                problem = file_name_problem(part) if part else None
                if problem:
                    self.error(path, f"remote path {raw!r}: {problem}")
                    break
        return raw.rstrip("/") or "/"

    def name(self, text: str | None, path: tuple[str | int, ...], what: str) -> None:
        """Refuse control, format and separator characters in a name (see name_problem)."""
        problem = name_problem(text) if text else None
        if problem:
            self.error(path, f"{what} {problem}")

    def secret(self, raw: dict[str, Any], path: tuple[str | int, ...]) -> m.SecretRef:
        kind, value = next(iter(raw.items()))
        if kind == "command":
            return m.SecretRef(
                "command", tuple(value), self.base_dir, self.pos.at(path), self.child_env
            )
        if kind == "file":
            self.local_path(value, (*path, "file"))
        return m.SecretRef(kind, value, self.base_dir, self.pos.at(path))


def _subject(raw: dict[str, Any] | None, base: m.Subject) -> m.Subject:
    raw = raw or {}
    return m.Subject(
        organization=raw.get("organization", base.organization),
        organizational_unit=raw.get("organizational_unit", base.organizational_unit),
        country=raw.get("country", base.country),
    )


def _policy(raw: dict[str, Any] | None, base: m.PasswordPolicy) -> m.PasswordPolicy:
    raw = raw or {}
    return m.PasswordPolicy(
        min_length=raw.get("min_length", base.min_length),
        min_classes=raw.get("min_classes", base.min_classes),
    )


def _targets(
    c: _Checker, raw: list[dict[str, Any]], role: str, section: str
) -> dict[str, m.Target]:
    out: dict[str, m.Target] = {}
    for i, item in enumerate(raw):
        path: tuple[str | int, ...] = ("inventory", section, i)
        name = item["name"]
        if name in out:
            c.error((*path, "name"), f"duplicate {role} name '{name}'")
            continue
        if item["transport"] == "local":
            target_path = c.local_str(item["path"], (*path, "path"))
            out[name] = m.Target(name, role, "local", target_path, c.pos.at(path))
        else:
            passphrase = item.get("key_passphrase")
            key_file = item.get("key_file")
            out[name] = m.Target(
                name,
                role,
                "ssh",
                c.remote_path(item["path"], (*path, "path")),
                c.pos.at(path),
                host=item["host"],
                port=item.get("port", 22),
                user=item["user"],
                key_file=c.local_path(key_file, (*path, "key_file")) if key_file else None,
                key_passphrase=c.secret(passphrase, (*path, "key_passphrase"))
                if passphrase
                else None,
                known_hosts=c.local_path(item["known_hosts"], (*path, "known_hosts")),
                connect_timeout=float(item.get("connect_timeout", 10.0)),
            )
    return out


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'ws-marches'?)`, or the few names there are; computed on errors only."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if 0 < len(names) <= 8:
        return f" (known: {', '.join(names)})"
    return ""


def _expand_groups(
    c: _Checker, groups: dict[str, list[str]], workstations: dict[str, m.Target]
) -> dict[str, tuple[str, ...]]:
    """Resolve groups to workstation names (groups may contain groups), reporting cycles."""
    for name in groups:
        if name in workstations:
            c.error(
                ("inventory", "groups", name),
                f"group '{name}' has the name of a workstation",
                key=True,
            )
    resolved: dict[str, tuple[str, ...]] = {}
    for name in groups:
        _visit(c, groups, workstations, resolved, name, ())
    return resolved


def _visit(
    c: _Checker,
    groups: dict[str, list[str]],
    workstations: dict[str, m.Target],
    resolved: dict[str, tuple[str, ...]],
    name: str,
    trail: tuple[str, ...],
) -> tuple[str, ...]:
    """The workstations of group `name`, memoized in `resolved`. (A module function, not a
    closure: a recursive closure is a reference cycle that kept the whole parsed document and
    its positions alive until a full garbage collection, 160 MB at 10,000 entities.)"""
    if name in resolved:
        return resolved[name]
    members: list[str] = []
    for i, member in enumerate(groups[name]):
        if member in workstations:
            members.append(member)
        elif member in groups:
            if member in (*trail, name):
                c.error(
                    ("inventory", "groups", name, i),
                    f"group cycle: {' -> '.join((*trail, name, member))}",
                )
                continue
            members.extend(_visit(c, groups, workstations, resolved, member, (*trail, name)))
        else:
            c.error(
                ("inventory", "groups", name, i),
                f"'{member}' is neither a workstation nor a group"
                + _did_you_mean(member, [*workstations, *groups]),
            )
    resolved[name] = tuple(dict.fromkeys(members))
    return resolved[name]


def _secret_refs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every secret reference of a schema-valid document."""
    refs = [doc["escrow"]["passphrase"]]
    refs += [i["password"] for i in doc.get("issuers", []) if "password" in i]
    inventory = doc.get("inventory", {})
    for section in ("workstations", "locations"):
        refs += [t["key_passphrase"] for t in inventory.get(section, []) if "key_passphrase" in t]
    refs += [e["password"] for e in doc["entities"]]
    return refs


def _child_environment(c: _Checker, doc: dict[str, Any]) -> m.ChildEnvironment:
    """`pass_environment`, checked: a variable a secret reference names is never passed."""
    withheld = frozenset(ref["env"] for ref in _secret_refs(doc) if "env" in ref)
    passed = doc.get("pass_environment", [])
    for i, name in enumerate(passed):
        if name in withheld:
            c.error(
                ("pass_environment", i),
                f"{name} holds a secret (a secret reference names it): it is never passed to "
                "hooks or secret commands",
            )
    return m.ChildEnvironment(tuple(dict.fromkeys(passed)), withheld)


def _build(c: _Checker, doc: dict[str, Any], manifest_path: Path) -> m.Manifest:
    defaults = doc.get("defaults", {})
    key_defaults = defaults.get("key", {})
    base_subject = _subject(defaults.get("subject"), m.Subject())
    for field in ("organization", "organizational_unit"):
        c.name(getattr(base_subject, field), ("defaults", "subject", field), field)
    base_policy = _policy(defaults.get("password_policy"), m.PasswordPolicy())

    issuers: dict[str, m.Issuer] = {}
    for i, raw in enumerate(doc.get("issuers", [])):
        path: tuple[str | int, ...] = ("issuers", i)
        if raw["name"] == m.SELF_SIGNED or raw["name"] in issuers:
            c.error((*path, "name"), f"issuer name '{raw['name']}' is reserved or already used")
            continue
        cert = c.local_path(raw["certificate"], (*path, "certificate"))
        key = c.local_path(raw["private_key"], (*path, "private_key"))
        for file, field in ((cert, "certificate"), (key, "private_key")):
            if not file.is_file():
                c.error((*path, field), f"file not found: {file}")
        password = raw.get("password")
        issuers[raw["name"]] = m.Issuer(
            raw["name"],
            cert,
            key,
            c.secret(password, (*path, "password")) if password else None,
            c.pos.at(path),
        )

    inventory = doc.get("inventory", {})
    workstations = _targets(c, inventory.get("workstations", []), "workstation", "workstations")
    locations = _targets(c, inventory.get("locations", []), "location", "locations")
    groups = _expand_groups(c, inventory.get("groups", {}), workstations)

    entities: list[m.Entity] = []
    seen_ids: set[str] = set()
    designations: dict[str, str] = {}
    for i, raw in enumerate(doc["entities"]):
        path = ("entities", i)
        if raw["id"] in seen_ids:
            c.error((*path, "id"), f"duplicate entity id '{raw['id']}'")
        seen_ids.add(raw["id"])
        rk = raw["key"]
        designation = rk["designation"]
        folded = designation.casefold()
        if folded in designations:
            c.error(
                (*path, "key", "designation"),
                f"designation '{_shown(designation)}' is already used by entity "
                f"'{designations[folded]}'; each bi-clé needs its own désignation",
            )
        designations.setdefault(folded, raw["id"])
        c.name(designation, (*path, "key", "designation"), "designation")
        c.name(raw["name"], (*path, "name"), "name")
        problem = file_name_problem(raw["id"])
        if problem:
            c.error((*path, "id"), f"entity id {problem}; choose another id")
        common_name = rk.get("common_name")
        c.name(common_name, (*path, "key", "common_name"), "common_name")
        for field in ("organization", "organizational_unit"):
            c.name(rk.get("subject", {}).get(field), (*path, "key", "subject", field), field)
        if common_name is not None and common_name != designation:
            c.warning(
                (*path, "key", "common_name"),
                f"common_name '{_shown(common_name)}' differs from designation "
                f"'{_shown(designation)}'; "
                "the platform advises using the same name for both",
            )
        issuer = rk.get("issuer", m.SELF_SIGNED)
        if issuer != m.SELF_SIGNED and issuer not in issuers:
            c.error(
                (*path, "key", "issuer"),
                f"unknown issuer '{issuer}'{_did_you_mean(issuer, [m.SELF_SIGNED, *issuers])}",
            )
        spec = m.KeySpec(
            designation=designation,
            common_name=common_name,
            issuer=issuer,
            size=rk.get("size", key_defaults.get("size", m.DEFAULT_KEY_SIZE)),
            validity_days=rk.get(
                "validity_days", defaults.get("validity_days", m.DEFAULT_VALIDITY_DAYS)
            ),
            renew_before_days=rk.get(
                "renew_before_days", defaults.get("renew_before_days", m.DEFAULT_RENEW_BEFORE_DAYS)
            ),
            profile=rk.get("pkcs12_profile", defaults.get("pkcs12_profile", m.DEFAULT_PROFILE)),
            subject=_subject(rk.get("subject"), base_subject),
        )
        if spec.renew_before_days >= spec.validity_days:
            c.error(
                (*path, "key"),
                f"renew_before_days ({spec.renew_before_days}) must be shorter than "
                f"validity_days ({spec.validity_days}), else every run would renew",
            )
        shared: list[m.Target] = []
        for j, name in enumerate(raw.get("shared_locations", [])):
            if name in locations:
                shared.append(locations[name])
            else:
                c.error(
                    (*path, "shared_locations", j),
                    f"unknown shared location '{name}'{_did_you_mean(name, locations)}",
                )
        held: list[str] = []
        for j, name in enumerate(raw.get("workstations", [])):
            if name in workstations:
                held.append(name)
            elif name in groups:
                held.extend(groups[name])
            else:
                c.error(
                    (*path, "workstations", j),
                    f"'{name}' is neither a workstation nor a group"
                    + _did_you_mean(name, [*workstations, *groups]),
                )
        state = raw.get("state", "present")
        if state == "present" and not shared:
            c.warning(
                path,
                "no shared location keeps a copy of this bi-clé; only the escrow would hold it",
            )
        entities.append(
            m.Entity(
                id=raw["id"],
                name=raw["name"],
                state=state,
                key=spec,
                password=c.secret(raw["password"], (*path, "password")),
                password_policy=_policy(raw.get("password_policy"), base_policy),
                shared_locations=tuple(dict.fromkeys(shared)),
                workstations=tuple(workstations[n] for n in dict.fromkeys(held)),
                location=c.pos.at(path),
            )
        )

    consultations = None
    raw_source = doc.get("consultations", {})
    source: dict[str, Any] = {"file": raw_source} if isinstance(raw_source, str) else raw_source
    if "file" in source:
        where = ("consultations",) if isinstance(raw_source, str) else ("consultations", "file")
        consultations = c.local_path(source["file"], where)
        if not consultations.is_file():
            c.error(where, f"file not found: {consultations}")
    columns: dict[str, str] = source.get("columns", {})
    for field, header in columns.items():
        twin = [f for f, h in columns.items() if f < field and normalise(h) == normalise(header)]
        if twin:
            c.error(("consultations", "columns", field), f"{header!r} is also the {twin[0]} column")

    return m.Manifest(
        path=manifest_path,
        base_dir=c.base_dir,
        escrow_passphrase=c.secret(doc["escrow"]["passphrase"], ("escrow", "passphrase")),
        issuers=issuers,
        workstations=workstations,
        groups=groups,
        locations=locations,
        entities=tuple(entities),
        consultations=consultations,
        consultations_format=ExportFormat(
            columns=tuple(columns.items()), statuses=tuple(source.get("statuses", {}).items())
        ),
        hooks={
            event: tuple(tuple(argv) for argv in commands)
            for event, commands in doc.get("hooks", {}).items()
        },
        child_env=c.child_env,
    )


def read_manifest(path: Path) -> tuple[m.Manifest, list[Diagnostic]]:
    """Load and check a manifest; returns it with its warnings, or raises ManifestError."""
    display = os.path.relpath(path) if not path.is_absolute() else str(path)
    try:
        data = read_regular(path, MAX_BYTES)
    except InputFileError as exc:
        raise ManifestError([Diagnostic("error", Location(display), str(exc))]) from None
    # Lean positions first: those of mappings and lists, which is all the model records.
    # Every key and value is placed only when there is something to report (parsed again).
    doc, positions = load_yaml(data, display, lean=True)
    if not isinstance(doc, dict):
        raise ManifestError(
            [
                Diagnostic(
                    "error", positions.at(()), "the manifest must be a mapping with 'version: 1'"
                )
            ]
        )
    if not is_valid(doc, "manifest.schema.json"):
        doc, positions = load_yaml(data, display)
        raise ManifestError(validate(doc, positions, "manifest.schema.json"))
    checker = _Checker(positions, path.resolve().parent)
    checker.child_env = _child_environment(checker, doc)
    manifest = _build(checker, doc, path.resolve())
    if not checker.found:
        return manifest, []
    diagnostics = checker.diagnostics(load_yaml(data, display)[1])
    if any(d.severity == "error" for d in diagnostics):
        raise ManifestError(diagnostics)
    return manifest, diagnostics
