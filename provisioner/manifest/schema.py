"""JSON Schema validation of manifests, with errors mapped back to file:line:column."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

if TYPE_CHECKING:  # jsonschema is imported only to explain an invalid document
    import jsonschema
    from jsonschema.exceptions import ValidationError

from provisioner.errors import Diagnostic
from provisioner.manifest.yamlpos import Positions

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema shipped with the package, e.g. `manifest.schema.json`."""
    with (SCHEMA_DIR / name).open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    import jsonschema

    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def dotted(path: tuple[str | int, ...] | list[str | int]) -> str:
    """`('entities', 0, 'key')` -> `entities[0].key`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditional parts of `schema`: its `then` and `else` (nested), and its allOf's."""
    out: list[dict[str, Any]] = []
    for part in (schema, *schema.get("allOf", [])):
        for key in ("then", "else"):
            sub = part.get(key)
            if isinstance(sub, dict):
                out += [sub, *branches(sub)]
    return out


def _allowed_keys(schema: dict[str, Any]) -> list[str]:
    keys = list(schema.get("properties", {}))
    for part in branches(schema):
        keys += [k for k in part.get("properties", {}) if k not in keys]
    return keys


def _hint(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (expected one of: {', '.join(sorted(allowed))})" if allowed else ""


def _explain(error: ValidationError, positions: Positions) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    where = dotted(path)
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    value = error.instance
    rule: Any = error.validator_value
    if schema.get("x-kind") == "secret" and kind in ("type", "minProperties"):
        message = (
            f"{where}: inline secrets are not allowed; give a reference "
            "{env: NAME}, {file: PATH} or {command: [argv...]}"
        )
        return [Diagnostic("error", positions.at(path), message)]
    if kind == "additionalProperties" and isinstance(value, dict):
        parent: Any = error.parent.schema if error.parent else {}
        allowed = _allowed_keys(schema) or _allowed_keys(parent if isinstance(parent, dict) else {})
        extras = [k for k in value if k not in allowed]
        return [
            Diagnostic(
                "error",
                positions.at((*path, k), key=True),
                f"{dotted((*path, k))}: unknown key '{k}'{_hint(k, allowed)}",
            )
            for k in extras
        ] or [Diagnostic("error", positions.at(path), f"{where}: {error.message}")]
    if kind == "required":
        missing = [k for k in rule if isinstance(value, dict) and k not in value]
        return [
            Diagnostic("error", positions.at(path), f"{where}: missing required key '{k}'")
            for k in missing
        ]
    if kind == "type":
        expected = rule
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        expected = {"object": "mapping", "array": "list"}.get(expected, expected)
        message = f"{where}: expected {expected}, got {_type_name(value)}"
    elif kind == "enum":
        choices = ", ".join(json.dumps(c) for c in rule)
        message = f"{where}: {json.dumps(value)} is not one of: {choices}"
    elif kind == "const":
        message = f"{where}: must be {json.dumps(rule)}, got {json.dumps(value)}"
    elif kind == "pattern":
        rule = schema.get("description") or f"pattern {rule}"
        message = f"{where}: {json.dumps(value)} is not a valid name: {rule}"
    elif kind == "maxProperties" and schema.get("x-kind") == "secret":
        message = f"{where}: a secret reference has exactly one of env, file, command"
    else:
        message = f"{where}: {error.message}"
    return [Diagnostic("error", positions.at(path), message)]


def compiled_module(schema_name: str) -> str:
    """`manifest.schema.json` -> `_generated.manifest`: the module `compile_schemas` writes."""
    return "_generated." + schema_name.split(".", 1)[0]


def schema_digest(schema_name: str) -> str:
    """SHA-256 of the shipped schema file, recorded in its compiled module."""
    return hashlib.sha256((SCHEMA_DIR / schema_name).read_bytes()).hexdigest()


@cache
def _fast(name: str) -> Any:
    """The compiled validator: the module written by `compile_schemas` when it was made from
    this very schema file, else compiled now (0.17 s for the manifest schema)."""
    try:
        module = importlib.import_module(f"provisioner.manifest.{compiled_module(name)}")
    except ImportError:
        module = None
    if module is not None and getattr(module, "DIGEST", None) == schema_digest(name):
        return module.validate
    return fastjsonschema.compile(load_schema(name))


def is_valid(document: Any, schema_name: str) -> bool:
    """Compiled check (fastjsonschema): tens of times faster than jsonschema, no messages."""
    try:
        _fast(schema_name)(document)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def validate(document: Any, positions: Positions, schema_name: str) -> list[Diagnostic]:
    """Every schema violation of `document`, in document order.

    Valid documents pass through the compiled validator; only an invalid one is walked by
    jsonschema, the reference implementation, which names every error."""
    if is_valid(document, schema_name):
        return []
    diagnostics: list[Diagnostic] = []
    for error in _validator(schema_name).iter_errors(document):
        diagnostics.extend(_explain(error, positions))
    unique: dict[tuple[object, ...], Diagnostic] = {}
    for d in diagnostics:
        unique.setdefault((d.location.line, d.location.column, d.message), d)
    return sorted(unique.values(), key=lambda d: (d.location.line or 0, d.location.column or 0))
