"""One way for the tests and the benchmarks to write a manifest: built as data, written as
YAML, so that a change of the manifest's shape is made here once (docs/TESTING.md).

    m = Manifest().location("nas").workstation("ws-a", path="ws-a")
    m.entity("ville", workstations=["ws-a"], shared_locations=["nas"]).write(folder / "m.yaml")

Targets default to the local transport; `ssh(...)` and `smb(...)` give the fields of the
other two. Secrets are references (`{env: NAME}`, `{file: PATH}`), never values. Tests of the
manifest's own errors keep writing YAML text: the line and column of a message are what they
check."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Fields = dict[str, Any]


def ssh(
    host: str,
    port: int,
    user: str,
    path: str | Path,
    *,
    key_file: str | Path | None = None,
    key_passphrase: Fields | None = None,
    known_hosts: str | Path,
    connect_timeout: float | None = None,
) -> Fields:
    """The fields of an SSH target (no `key_file`: the SSH agent's keys)."""
    out: Fields = {"transport": "ssh", "host": host, "port": port, "user": user}
    if key_file is not None:
        out["key_file"] = str(key_file)
    if key_passphrase is not None:
        out["key_passphrase"] = key_passphrase
    out["known_hosts"] = str(known_hosts)
    out["path"] = str(path)
    if connect_timeout is not None:
        out["connect_timeout"] = connect_timeout
    return out


def smb(
    host: str,
    port: int,
    share: str,
    user: str,
    path: str,
    *,
    password: Fields,
    readers: str | None = None,
    connect_timeout: float | None = None,
) -> Fields:
    """The fields of an SMB target (`path`: the folder in the share, "/" first)."""
    out: Fields = {"transport": "smb", "host": host, "port": port, "share": share, "user": user}
    out["password"] = password
    out["path"] = path
    if readers is not None:
        out["readers"] = readers
    if connect_timeout is not None:
        out["connect_timeout"] = connect_timeout
    return out


@dataclass
class Manifest:
    """A manifest as data; each method adds to it and returns it."""

    escrow: Fields = field(default_factory=lambda: {"passphrase": {"env": "ESCROW"}})
    defaults: Fields = field(default_factory=lambda: {"key": {"size": 2048}})
    locations: list[Fields] = field(default_factory=list)
    workstations: list[Fields] = field(default_factory=list)
    groups: dict[str, list[str] | Fields] = field(default_factory=dict)
    entities: list[Fields] = field(default_factory=list)
    top: Fields = field(default_factory=dict)  # issuers, consultations, hooks, state...

    def location(self, name: str, **fields: Any) -> Manifest:
        """A shared location; local at `path` (default: its name) unless `fields` say."""
        self.locations.append(_target(name, fields))
        return self

    def workstation(self, name: str, **fields: Any) -> Manifest:
        """An agent's workstation; local at `path` (default: its name) unless `fields` say."""
        self.workstations.append(_target(name, fields))
        return self

    def group(self, name: str, members: list[str], **fields: Any) -> Manifest:
        """A group of workstations: its members' list, or with `fields` (an `install`...) a
        mapping of `members` and those fields."""
        self.groups[name] = {"members": list(members), **fields} if fields else list(members)
        return self

    def entity(
        self,
        entity_id: str,
        *,
        name: str | None = None,
        designation: str | None = None,
        password: Fields | None = None,
        shared_locations: list[str] | None = None,
        workstations: list[str] | None = None,
        **fields: Any,
    ) -> Manifest:
        """An entity (`password` defaults to `{env: PW}`, the designation to its name)."""
        shown = name or entity_id.capitalize()
        out: Fields = {"id": entity_id, "name": shown}
        out["key"] = {"designation": designation or shown, **fields.pop("key", {})}
        out["password"] = password or {"env": "PW"}
        if shared_locations:
            out["shared_locations"] = list(shared_locations)
        if workstations:
            out["workstations"] = list(workstations)
        out.update(fields)
        self.entities.append(out)
        return self

    def document(self) -> Fields:
        inventory: Fields = {}
        if self.locations:
            inventory["locations"] = self.locations
        if self.workstations:
            inventory["workstations"] = self.workstations
        if self.groups:
            inventory["groups"] = self.groups
        doc: Fields = {"version": 1, "defaults": self.defaults, "escrow": self.escrow}
        doc.update(self.top)
        doc["inventory"] = inventory
        doc["entities"] = self.entities
        return doc

    def text(self) -> str:
        """The YAML as a person writes it: one line per target, lists indented."""
        return str(
            yaml.dump(
                self.document(),
                Dumper=_Dumper,
                sort_keys=False,
                width=1000,
                default_flow_style=None,
            )
        )

    def write(self, path: Path) -> Path:
        path.write_text(self.text(), encoding="utf-8")
        return path


class _Line(dict[str, Any]):
    """A mapping written on one line (a target)."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # lists indented under their key


_Dumper.add_representer(
    _Line,
    lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True),
)


def _target(name: str, fields: Fields) -> _Line:
    out = _Line(name=name)
    if "transport" not in fields:
        out["transport"] = "local"
        out["path"] = str(fields.pop("path", name))
    out.update({k: str(v) if isinstance(v, Path) else v for k, v in fields.items()})
    return out
