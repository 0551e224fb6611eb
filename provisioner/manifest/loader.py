"""Load a manifest: safe YAML, JSON Schema, semantic checks, then the frozen model."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.bounded import InputFileError, not_regular, read_regular
from provisioner.errors import Diagnostic, Location, ManifestError
from provisioner.manifest import install as inst
from provisioner.manifest import model as m
from provisioner.manifest.checker import Checker
from provisioner.manifest.names import _shown, did_you_mean, file_name_problem
from provisioner.manifest.schema import is_valid, validate
from provisioner.manifest.targets import expand_groups, same_folders, targets
from provisioner.manifest.yamlpos import MAX_BYTES, load_yaml
from provisioner.platform_csv import ExportFormat, normalise

# Placeholders of a designation or common name (`{n}`, `{year}`); any other is refused.
PLACEHOLDER = re.compile(r"\{[^{}]*\}")
KNOWN = ("{n}", "{year}")


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


def _secret_refs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every secret reference of a schema-valid document."""
    refs = [doc["escrow"]["passphrase"]]
    refs += [doc["state"]["dsn"]] if "dsn" in doc.get("state", {}) else []
    refs += [i["password"] for i in doc.get("issuers", []) if "password" in i]
    inventory = doc.get("inventory", {})
    for section in ("workstations", "locations"):
        refs += [t["key_passphrase"] for t in inventory.get(section, []) if "key_passphrase" in t]
        refs += [t["password"] for t in inventory.get(section, []) if "password" in t]
    refs += [e["password"] for e in doc["entities"]]
    return refs


def _child_environment(c: Checker, doc: dict[str, Any]) -> m.ChildEnvironment:
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


def _build(c: Checker, doc: dict[str, Any], manifest_path: Path) -> m.Manifest:
    """The frozen manifest of a document the schema accepted, each further check a
    diagnostic at its place: defaults, issuers, the inventory, the entities, the consultations
    source, in the document's order."""
    defaults = doc.get("defaults", {})
    base_subject = _subject(defaults.get("subject"), m.Subject())
    for field in ("organization", "organizational_unit"):
        c.name(getattr(base_subject, field), ("defaults", "subject", field), field)
    base = _EntityDefaults(
        defaults, base_subject, _policy(defaults.get("password_policy"), m.PasswordPolicy())
    )
    issuers = _issuers(c, doc.get("issuers", []))

    inventory = doc.get("inventory", {})
    workstations = targets(c, inventory.get("workstations", []), "workstation", "workstations")
    locations = targets(c, inventory.get("locations", []), "location", "locations")
    groups = expand_groups(c, inventory.get("groups", {}), workstations)
    workstations = inst.settle(c, inventory, workstations, groups)
    same_folders(c, inventory, {"workstations": workstations, "locations": locations})

    entities: list[m.Entity] = []
    seen_ids: set[str] = set()
    designations: dict[str, str] = {}  # casefolded designation -> the entity that has it
    for i, raw in enumerate(doc["entities"]):
        path: tuple[str | int, ...] = ("entities", i)
        if raw["id"] in seen_ids:
            c.error((*path, "id"), f"duplicate entity id '{raw['id']}'")
        seen_ids.add(raw["id"])
        _entity_names(c, raw, path, designations)
        spec = _key_spec(c, raw["key"], path, base, issuers)
        shared, held = _entity_targets(c, raw, path, locations, workstations, groups)
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
                password_policy=_policy(raw.get("password_policy"), base.policy),
                shared_locations=tuple(dict.fromkeys(shared)),
                workstations=tuple(workstations[n] for n in dict.fromkeys(held)),
                location=c.pos.at(path),
            )
        )

    consultations, export_format = _consultations_source(c, doc.get("consultations", {}))
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
        consultations_format=export_format,
        hooks={
            event: tuple(tuple(argv) for argv in commands)
            for event, commands in doc.get("hooks", {}).items()
        },
        child_env=c.child_env,
        state=_state(c, doc.get("state")),
    )


@dataclass(frozen=True)
class _EntityDefaults:
    """What an entity inherits from the manifest's `defaults`."""

    raw: dict[str, Any]
    subject: m.Subject
    policy: m.PasswordPolicy


def _issuers(c: Checker, raw_issuers: list[dict[str, Any]]) -> dict[str, m.Issuer]:
    issuers: dict[str, m.Issuer] = {}
    for i, raw in enumerate(raw_issuers):
        path: tuple[str | int, ...] = ("issuers", i)
        if raw["name"] == m.SELF_SIGNED or raw["name"] in issuers:
            c.error((*path, "name"), f"issuer name '{raw['name']}' is reserved or already used")
            continue
        cert = c.local_path(raw["certificate"], (*path, "certificate"))
        key = c.local_path(raw["private_key"], (*path, "private_key"))
        for file, field in ((cert, "certificate"), (key, "private_key")):
            if (why := not_regular(file)) is not None:
                c.error((*path, field), why)
        password = raw.get("password")
        issuers[raw["name"]] = m.Issuer(
            raw["name"],
            cert,
            key,
            c.secret(password, (*path, "password")) if password else None,
            c.pos.at(path),
        )
    return issuers


def _entity_names(
    c: Checker, raw: dict[str, Any], path: tuple[str | int, ...], designations: dict[str, str]
) -> None:
    """An entity's names: its désignation unique (case aside) across the manifest, printable
    names, an id that makes a file name, known placeholders, the CN advice."""
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
    for field, text in (("designation", designation), ("common_name", common_name)):
        unknown = sorted({p for p in PLACEHOLDER.findall(text or "") if p not in KNOWN})
        if unknown:
            c.error(
                (*path, "key", field),
                f"unknown placeholder {', '.join(unknown)} in {field}: only {{n}} (the "
                "generation number) and {year} (the year of creation) are replaced",
            )
    for field in ("organization", "organizational_unit"):
        c.name(rk.get("subject", {}).get(field), (*path, "key", "subject", field), field)
    if common_name is not None and common_name != designation:
        c.warning(
            (*path, "key", "common_name"),
            f"common_name '{_shown(common_name)}' differs from designation "
            f"'{_shown(designation)}'; "
            "the platform advises using the same name for both",
        )


def _key_spec(
    c: Checker,
    rk: dict[str, Any],
    path: tuple[str | int, ...],
    base: _EntityDefaults,
    issuers: dict[str, m.Issuer],
) -> m.KeySpec:
    """How an entity's generations are made: its key block over the defaults."""
    defaults = base.raw
    issuer = rk.get("issuer", m.SELF_SIGNED)
    if issuer != m.SELF_SIGNED and issuer not in issuers:
        c.error(
            (*path, "key", "issuer"),
            f"unknown issuer '{issuer}'{did_you_mean(issuer, [m.SELF_SIGNED, *issuers])}",
        )
    spec = m.KeySpec(
        designation=rk["designation"],
        common_name=rk.get("common_name"),
        issuer=issuer,
        size=rk.get("size", defaults.get("key", {}).get("size", m.DEFAULT_KEY_SIZE)),
        validity_days=rk.get(
            "validity_days", defaults.get("validity_days", m.DEFAULT_VALIDITY_DAYS)
        ),
        renew_before_days=rk.get(
            "renew_before_days", defaults.get("renew_before_days", m.DEFAULT_RENEW_BEFORE_DAYS)
        ),
        profile=rk.get("pkcs12_profile", defaults.get("pkcs12_profile", m.DEFAULT_PROFILE)),
        subject=_subject(rk.get("subject"), base.subject),
    )
    if spec.renew_before_days >= spec.validity_days:
        c.error(
            (*path, "key"),
            f"renew_before_days ({spec.renew_before_days}) must be shorter than "
            f"validity_days ({spec.validity_days}), else every run would renew",
        )
    return spec


def _entity_targets(
    c: Checker,
    raw: dict[str, Any],
    path: tuple[str | int, ...],
    locations: dict[str, m.Target],
    workstations: dict[str, m.Target],
    groups: dict[str, tuple[str, ...]],
) -> tuple[list[m.Target], list[str]]:
    """The shared locations an entity names, and its workstations with its groups expanded."""
    shared: list[m.Target] = []
    for j, name in enumerate(raw.get("shared_locations", [])):
        if name in locations:
            shared.append(locations[name])
        else:
            c.error(
                (*path, "shared_locations", j),
                f"unknown shared location '{name}'{did_you_mean(name, locations)}",
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
                + did_you_mean(name, [*workstations, *groups]),
            )
    return shared, held


def _consultations_source(
    c: Checker, raw_source: str | dict[str, Any]
) -> tuple[Path | None, ExportFormat]:
    """The consultations file the manifest names (a path, or a mapping with the export's
    column names and status words), and the format to read it with."""
    consultations = None
    source: dict[str, Any] = {"file": raw_source} if isinstance(raw_source, str) else raw_source
    if "file" in source:
        where = ("consultations",) if isinstance(raw_source, str) else ("consultations", "file")
        consultations = c.local_path(source["file"], where)
        if (why := not_regular(consultations)) is not None:
            c.error(where, why)
    columns: dict[str, str] = source.get("columns", {})
    for field, header in columns.items():
        twin = [f for f, h in columns.items() if f < field and normalise(h) == normalise(header)]
        if twin:
            c.error(("consultations", "columns", field), f"{header!r} is also the {twin[0]} column")
    export_format = ExportFormat(
        columns=tuple(columns.items()), statuses=tuple(source.get("statuses", {}).items())
    )
    return consultations, export_format


def _state(c: Checker, raw: dict[str, Any] | None) -> m.StateSettings:
    if raw is None:
        return m.StateSettings()
    dsn = c.secret(raw["dsn"], ("state", "dsn")) if "dsn" in raw else None
    return m.StateSettings(backend=raw["backend"], dsn=dsn, schema=raw.get("schema"))


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
    checker = Checker(positions, path.resolve().parent)
    checker.child_env = _child_environment(checker, doc)
    manifest = _build(checker, doc, path.resolve())
    if not checker.found:
        return manifest, []
    diagnostics = checker.diagnostics(load_yaml(data, display)[1])
    if any(d.severity == "error" for d in diagnostics):
        raise ManifestError(diagnostics)
    return manifest, diagnostics
