"""The inventory: workstations and shared locations as targets, groups expanded (cycles
refused)."""

from __future__ import annotations

import os
from typing import Any

from provisioner.manifest import install as inst
from provisioner.manifest import model as m
from provisioner.manifest.checker import Checker
from provisioner.manifest.names import did_you_mean
from provisioner.manifest.transport_kinds import KINDS, kind_of


def targets(
    c: Checker, raw: list[dict[str, Any]], role: m.Role, section: str
) -> dict[str, m.Target]:
    out: dict[str, m.Target] = {}
    for i, item in enumerate(raw):
        path: tuple[str | int, ...] = ("inventory", section, i)
        name = item["name"]
        if name in out:
            c.error((*path, "name"), f"duplicate {role} name '{name}'")
            continue
        out[name] = KINDS[item["transport"]].target(c, item, role, path)
    return out


def expand_groups(
    c: Checker, raw_groups: dict[str, Any], workstations: dict[str, m.Target]
) -> dict[str, tuple[str, ...]]:
    """Resolve groups to workstation names (groups may contain groups), reporting cycles."""
    c.raw_groups = raw_groups
    groups = {name: inst.group_members(raw) for name, raw in raw_groups.items()}
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
    c: Checker,
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
                    inst.member_path(c.raw_groups, name, i),
                    f"group cycle: {' -> '.join((*trail, name, member))}",
                )
                continue
            members.extend(_visit(c, groups, workstations, resolved, member, (*trail, name)))
        else:
            c.error(
                inst.member_path(c.raw_groups, name, i),
                f"'{member}' is neither a workstation nor a group"
                + did_you_mean(member, [*workstations, *groups]),
            )
    resolved[name] = tuple(dict.fromkeys(members))
    return resolved[name]


def same_folders(
    c: Checker, inventory: dict[str, Any], built: dict[str, dict[str, m.Target]]
) -> None:
    """Refuse two targets that are one folder: a removal on one would delete the other's
    copy. Local paths are compared with their symlinks resolved (as far as they exist);
    remote ones by host, port (and share) and the normalised path, case-folded where the
    file system ignores case (SMB, Windows drives)."""
    seen: dict[tuple[str | int | None, ...], m.Target] = {}
    folders = _Folders()
    for section in ("locations", "workstations"):
        names: set[str] = set()
        for i, item in enumerate(inventory.get(section, [])):
            target = built[section].get(item["name"])
            if target is None or item["name"] in names:
                continue  # a duplicate name is refused already
            names.add(item["name"])
            first = seen.setdefault(_folder_key(target, folders), target)
            if first is not target:
                c.error(
                    ("inventory", section, i, "path"),
                    f"{target.role} '{target.name}' is in the folder of {first.role} "
                    f"'{first.name}' ({first.location}): two targets may not share a folder, "
                    "a removal on one would delete the other's copy",
                )


def _folder_key(t: m.Target, folders: _Folders) -> tuple[str | int | None, ...]:
    return kind_of(t).folder_key(t, folders.resolve)


class _Folders:
    """os.path.realpath of normalised absolute paths, learning as it goes: each folder's
    resolution, and the names of the symlinks in each folder (one listing). realpath, an
    lstat of every part of every path, cost 50 ms per 1,000 local targets; this, under 1 ms
    (measured)."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}
        self.links: dict[str, frozenset[str]] = {}

    def resolve(self, path: str) -> str:
        if path in self.real:
            return self.real[path]
        parent, _, name = path.rpartition("/")
        if not name:
            return path
        folder = self.resolve(parent or "/")
        if folder not in self.links:
            try:
                with os.scandir(folder) as entries:
                    self.links[folder] = frozenset(e.name for e in entries if e.is_symlink())
            except OSError:
                self.links[folder] = frozenset()  # no folder there: nothing to follow
        joined = f"{folder.rstrip('/')}/{name}"
        self.real[path] = os.path.realpath(joined) if name in self.links[folder] else joined
        return self.real[path]
