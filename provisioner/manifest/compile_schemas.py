"""Assemble the manifest schema's target from the transport kinds, and write the compiled
validators of the shipped JSON Schemas as Python modules.

Each transport's manifest fields are its kind's (`manifest/transport_kinds.py`: `summary`,
`path_help`, `fields`, `required`): `target_schema` makes the schema's `$defs.target` of them,
the fields every target has, and one `if`/`then`/`else` branch per kind, and `write` puts it
into schemas/manifest.schema.json (the one file editors and `validate` read), then compiles.

`fastjsonschema.compile` generates and compiles about 200 KB of Python for the manifest
schema on every run: 0.17 s, a tenth of a no-op plan at 1,000 entities. The generated code is
written once, here, into `provisioner/manifest/_generated/<name>.py` with the SHA-256 of the
schema it came from and the generator's version (GENERATOR); `schema.py` uses a module only
while that digest matches the schema file, and compiles in memory otherwise, so an edited
schema is never checked by a stale validator.

    python -m provisioner.manifest.compile_schemas
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastjsonschema

from provisioner.manifest.schema import SCHEMA_DIR, compiled_module, load_schema, schema_digest

COMPILED = ("manifest.schema.json", "consultations.schema.json")
HERE = Path(__file__).resolve().parent


def target_schema(shipped: dict[str, Any]) -> dict[str, Any]:
    """The manifest schema's target as the transport kinds declare it: `shipped` (the target
    as the schema file has it) gives the schemas of the fields every target has; each kind
    its own fields, its required ones and its words. A field several kinds share has one
    schema; its description says each kind's meaning ("ssh, smb: host name or address.")."""
    from provisioner.manifest.transport_kinds import COMMON_FIELDS, KINDS, PATH_HELP, PATH_RULE

    kinds = list(KINDS.values())
    common = {name: dict(shipped["properties"][name]) for name in COMMON_FIELDS}
    common["transport"] = {
        "enum": [k.name for k in kinds],
        "description": " ".join(f"{k.name}: {k.summary}" for k in kinds),
    }
    common["path"]["description"] = " ".join(
        [PATH_HELP, *(f"{k.name}: {k.path_help}" for k in kinds), PATH_RULE]
    )
    own: dict[str, dict[str, Any]] = {}
    said: dict[str, dict[str, list[str]]] = {}  # field -> description -> the kinds saying it
    for k in kinds:
        for field, schema in k.fields.items():
            assert field not in COMMON_FIELDS, f"{k.name}: {field} is every target's field"
            bare = {key: value for key, value in schema.items() if key != "description"}
            assert own.setdefault(field, bare) == bare, f"{field}: two kinds, two schemas"
            said.setdefault(field, {}).setdefault(schema["description"], []).append(k.name)
    fields: dict[str, Any] = {}
    for name in COMMON_FIELDS[:-1]:
        fields[name] = common[name]
    for field, schema in own.items():
        words = " ".join(f"{', '.join(who)}: {text}" for text, who in said[field].items())
        fields[field] = {**schema, "description": words}
    fields[COMMON_FIELDS[-1]] = common[COMMON_FIELDS[-1]]  # install, last

    def branch(k: Any) -> dict[str, Any]:
        allowed = [*COMMON_FIELDS[:-1], *k.fields, COMMON_FIELDS[-1]]
        out: dict[str, Any] = {"required": list(k.required)} if k.required else {}
        out["properties"] = dict.fromkeys(allowed, True)
        out["additionalProperties"] = False
        return out

    chain = branch(kinds[-1])  # the last kind needs no test: the enum leaves only it
    for k in reversed(kinds[:-1]):
        chain = {
            "if": {"properties": {"transport": {"const": k.name}}},
            "then": branch(k),
            "else": chain,
        }
    out = {key: value for key, value in shipped.items() if key not in ("if", "then", "else")}
    out["required"] = ["name", "transport", "path"]
    out["properties"] = fields
    out["$comment"] = (
        "Assembled from the transport kinds (provisioner/manifest/transport_kinds.py) by "
        "`python -m provisioner.manifest.compile_schemas`: edit them, not this. One "
        "if/then/else, local first: the compiled validator tests a condition by raising, "
        "so the common (local) case raises nothing."
    )
    return {**out, **chain}


def assembled_manifest_schema() -> dict[str, Any]:
    """schemas/manifest.schema.json with its target assembled from the transport kinds."""
    with (SCHEMA_DIR / "manifest.schema.json").open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    schema["$defs"]["target"] = target_schema(schema["$defs"]["target"])
    return schema


def source(schema_name: str) -> str:
    code = fastjsonschema.compile_to_code(load_schema(schema_name))
    entry = re.search(r"^def (\w+)\(data", code, flags=re.M)
    assert entry, "fastjsonschema output has no validation function"
    return (
        f"# Generated by `python -m provisioner.manifest.compile_schemas` from\n"
        f"# schemas/{schema_name}; do not edit. Used only while DIGEST matches that file.\n"
        f"# mypy: ignore-errors\n"
        f'DIGEST = "{schema_digest(schema_name)}"\n'
        f'GENERATOR = "fastjsonschema {fastjsonschema.VERSION}"\n'
        f"{code}\n\n"
        f"validate = {entry.group(1)}\n"
    )


def write() -> list[Path]:
    manifest = SCHEMA_DIR / "manifest.schema.json"
    text = json.dumps(assembled_manifest_schema(), indent=2, ensure_ascii=False) + "\n"
    manifest.write_text(text, encoding="utf-8")
    load_schema.cache_clear()
    written = [manifest]
    for name in COMPILED:
        path = HERE / (compiled_module(name).replace(".", "/") + ".py")
        path.write_text(source(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path)
