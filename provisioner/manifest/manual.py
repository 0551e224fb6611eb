"""docs/MANIFEST.md, generated from schemas/manifest.schema.json (titles and descriptions).

Regenerate with `python -m provisioner.manifest.manual > docs/MANIFEST.md`; a test fails
when the file and the schema disagree.
"""

from __future__ import annotations

from typing import Any

from provisioner.manifest.schema import branches, load_schema

HEADER = """# Manifest reference

Generated from `schemas/manifest.schema.json` by
`python -m provisioner.manifest.manual > docs/MANIFEST.md`; do not edit by hand.
Editors that understand the `# yaml-language-server: $schema=...` line show the same help
while you type. Concepts and French terms: `docs/CONCEPTS.md`.
"""


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        merged = dict(root["$defs"][ref.removeprefix("#/$defs/")])
        merged.update({k: v for k, v in schema.items() if k != "$ref"})
        return merged
    return schema


def _type(schema: dict[str, Any], root: dict[str, Any]) -> str:
    schema = _resolve(schema, root)
    if "const" in schema:
        return f"`{schema['const']}`"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if schema.get("x-kind") == "secret":
        return "secret reference"
    kind = schema.get("type")
    if isinstance(kind, list):  # a path, or a mapping with more settings
        return " or ".join("mapping" if k == "object" else str(k) for k in kind)
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), root)}"
    if kind == "object":
        return "mapping"
    return str(kind or "any")


def _section(
    title: str, schema: dict[str, Any], root: dict[str, Any], level: int, seen: set[str]
) -> list[str]:
    schema = _resolve(schema, root)
    lines = [f"{'#' * level} {title}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    properties: dict[str, Any] = dict(schema.get("properties", {}))
    for part in branches(schema):
        for key, value in part.get("properties", {}).items():
            if isinstance(value, dict):
                properties.setdefault(key, value)
    if properties:
        required = set(schema.get("required", []))
        for part in branches(schema):
            required |= set(part.get("required", []))
        lines += ["| key | type | required | meaning |", "|---|---|---|---|"]
        nested: list[tuple[str, dict[str, Any]]] = []
        for key, value in properties.items():
            sub = _resolve(value, root)
            meaning = (sub.get("description") or sub.get("title") or "").replace("|", "\\|")
            lines.append(
                f"| `{key}` | {_type(value, root)} | "
                f"{'yes' if key in required else ''} | {meaning} |"
            )
            target = sub.get("items", sub) if sub.get("type") == "array" else sub
            target = _resolve(target, root)
            kinds = target.get("type")
            if (
                (kinds == "object" or (isinstance(kinds, list) and "object" in kinds))
                and target.get("properties")
                and target.get("x-kind") != "secret"
            ):
                nested.append((f"{title.split(' ')[0]}.{key}", target))
        lines.append("")
        for name, sub in nested:
            if name not in seen:
                seen.add(name)
                lines += _section(f"{name}", sub, root, min(level + 1, 4), seen)
    return lines


def render() -> str:
    root = load_schema("manifest.schema.json")
    lines = [HEADER]
    lines += _section("manifest", root, root, 2, set())
    secret = root["$defs"]["secret"]
    lines += [
        "## Secret references",
        "",
        secret["description"],
        "",
        "| form | meaning |",
        "|---|---|",
    ]
    for key, value in secret["properties"].items():
        lines.append(f"| `{{{key}: ...}}` | {value['description']} |")
    lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
