"""What `--limit` names, resolved against the manifest, in the manner of Ansible's host
patterns: an entity id (that entity, on all its targets), or a workstation, a group of
workstations or a shared location (the entities that have a copy there, and only the copies
there). Names may be mixed and repeated; the scope is their union."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from provisioner.errors import Diagnostic, Location, UnknownNameError
from provisioner.manifest.model import Manifest
from provisioner.manifest.names import did_you_mean


@dataclass(frozen=True)
class Scope:
    """The entities a limited run looks at, and which of their copies.

    `whole`: entities named themselves, every one of their targets in scope. `targets`: the
    targets named (a group by its workstations); None when no target was named. An entity
    that is in scope only through `targets` is *partial*: only its copies on those targets
    are looked at or touched, and nothing that concerns all its targets (a new generation, a
    retirement, a rename, a binding) is done in such a run."""

    names: tuple[str, ...]  # as the operator gave them (a saved plan keeps these)
    entities: frozenset[str]
    whole: frozenset[str]
    targets: frozenset[str] | None

    def covers(self, entity: str, target: str) -> bool:
        """Whether `entity`'s copy on `target` is in scope."""
        if entity not in self.entities:
            return False
        return self.targets is None or entity in self.whole or target in self.targets

    def partial(self, entity: str) -> bool:
        return self.targets is not None and entity not in self.whole


def resolve(
    manifest: Manifest, names: Iterable[str], *, named_by: str = "--limit", targets: bool = True
) -> Scope:
    """The scope `names` give: each an entity id, or (with `targets`) a workstation, group or
    shared location name. An unknown name is an UnknownNameError naming it with the closest
    known names; `named_by` is how the operator gave them ("" for an ENTITY argument)."""
    given = tuple(dict.fromkeys(names))
    declared = {e.id for e in manifest.entities}
    whole = {n for n in given if n in declared}
    named: set[str] = set()
    unknown = []
    not_here: list[str] = []
    for name in given:
        if name in declared:
            continue
        kind = (
            "workstation"
            if name in manifest.workstations
            else "shared location"
            if name in manifest.locations
            else "group"
            if name in manifest.groups
            else None
        )
        if kind is None:
            unknown.append(name)
        elif not targets:
            not_here.append(f"{name} is a {kind}: here it takes entity ids")
        elif kind == "group":
            named.update(manifest.groups[name])
        else:
            named.add(name)
    if not_here:
        prefix = f"{named_by} " if named_by else ""
        raise UnknownNameError(
            [Diagnostic("error", Location(str(manifest.path)), prefix + n) for n in not_here]
        )
    if unknown:
        known = [*declared, *manifest.workstations, *manifest.groups, *manifest.locations]
        prefix = f"{named_by}: " if named_by else ""
        what = "name" if targets else "entity"
        hint = ": no entity, workstation, group or shared location of that name" if targets else ""
        raise UnknownNameError(
            [
                Diagnostic(
                    "error",
                    Location(str(manifest.path)),
                    f"{prefix}unknown {what} {name}{hint}"
                    + did_you_mean(name, known if targets else declared),
                )
                for name in unknown
            ]
        )
    target_names = frozenset(named) if given and len(whole) < len(given) else None
    through = {
        e.id
        for e in manifest.entities
        if target_names is not None and any(t.name in target_names for t in e.targets)
    }
    return Scope(given, frozenset(whole | through), frozenset(whole), target_names)
