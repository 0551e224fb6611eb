"""The manifest's `install` settings: where a workstation's agents must find the bi-clé beyond
the PKCS#12 file (a Windows certificate store, an NSS database), per workstation or group."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from provisioner.manifest import model as m

Path = tuple[str | int, ...]


class Reporter(Protocol):
    def error(self, path: Path, message: str, *, key: bool = False) -> None: ...


def group_members(raw: list[str] | dict[str, Any]) -> list[str]:
    """The member names of a group written as a list or as `{members, install}`."""
    return raw if isinstance(raw, list) else list(raw["members"])


def member_path(raw_groups: dict[str, Any], name: str, index: int) -> Path:
    """Where member `index` of group `name` is written."""
    if isinstance(raw_groups.get(name), dict):
        return ("inventory", "groups", name, "members", index)
    return ("inventory", "groups", name, index)


def parse(c: Reporter, raw: dict[str, Any], path: Path) -> m.Install:
    """An `install` mapping (schema-valid) as the model's Install; options that belong to
    another store are errors, not silently ignored."""
    store = raw["store"]
    misplaced = {
        m.STORE_WINDOWS: ("nss_database",),
        m.STORE_NSS: ("windows_location", "exportable"),
    }.get(store, ())
    for option in misplaced:
        if option in raw:
            c.error((*path, option), f"{option} does not apply to store '{store}'", key=True)
    database = raw.get("nss_database", m.DEFAULT_NSS_DATABASE)
    if store == m.STORE_NSS:
        bare = database.removeprefix("sql:")
        if not bare.startswith("/") or ".." in bare.split("/") or not bare.isprintable():
            c.error(
                (*path, "nss_database"),
                f"nss_database {database!r} must be an absolute folder path without '..' "
                "({user} stands for each agent user)",
            )
    return m.Install(
        store=store,
        users=tuple(raw.get("users", ())),
        windows_location=raw.get("windows_location", "CurrentUser"),
        exportable=bool(raw.get("exportable", False)),
        nss_database=database,
    )


def settle(
    c: Reporter,
    inventory: dict[str, Any],
    workstations: dict[str, m.Target],
    groups: dict[str, tuple[str, ...]],
) -> dict[str, m.Target]:
    """The workstations with their install settings: their own, else their groups' (two
    groups that give one workstation different settings are an error: which one holds is not
    for the tool to guess)."""
    for i, item in enumerate(inventory.get("locations", [])):
        if "install" in item:
            c.error(
                ("inventory", "locations", i, "install"),
                "install applies to workstations only: a shared location keeps the file",
                key=True,
            )
    own: dict[str, m.Install] = {}
    for i, item in enumerate(inventory.get("workstations", [])):
        if "install" in item and item["name"] in workstations:
            own[item["name"]] = parse(
                c, item["install"], ("inventory", "workstations", i, "install")
            )
    given: dict[str, tuple[str, m.Install]] = {}
    for name, raw in inventory.get("groups", {}).items():
        if not isinstance(raw, dict) or "install" not in raw:
            continue
        path: Path = ("inventory", "groups", name, "install")
        settings = parse(c, raw["install"], path)
        for member in groups.get(name, ()):
            if member in own:
                continue
            before = given.setdefault(member, (name, settings))
            if before[1] != settings:
                c.error(
                    path,
                    f"workstation '{member}' gets different install settings from groups "
                    f"'{before[0]}' and '{name}': give it its own install",
                )
    chosen = {name: s for name, (_, s) in given.items()} | own
    return {
        name: dataclasses.replace(t, install=chosen[name]) if name in chosen else t
        for name, t in workstations.items()
    }
