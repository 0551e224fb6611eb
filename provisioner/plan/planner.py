"""plan(desired, recorded, observed, now) -> Plan. Pure: no file, network or clock access."""

from __future__ import annotations

import datetime as dt

from provisioner.manifest.model import Entity, Target
from provisioner.plan.model import (
    CREATE,
    REMOVE,
    RENAME,
    RETIRE,
    WRITE,
    Action,
    Desired,
    Observed,
    Plan,
    Warning,
)
from provisioner.plan.policies import (
    COPY_CHECKS,
    GENERATION_CHECKS,
    CopyContext,
    GenerationContext,
    first_reason,
)
from provisioner.state.records import (
    CURRENT,
    RETAINED,
    RETIRED,
    Recorded,
    RecordedCopy,
    RecordedGeneration,
)
from provisioner.transports.base import file_path, target_from_spec

LIVE = (CURRENT, RETAINED)


def copy_file_name(entity: str, number: int) -> str:
    """The PKCS#12 file name of generation `number` of `entity` on every target."""
    return f"{entity}.g{number}.p12"


def next_number(recorded: Recorded, entity: str) -> int:
    return max((g.number for g in recorded.generations_of(entity)), default=0) + 1


def paths_to_observe(desired: Desired, recorded: Recorded) -> dict[str, set[str]]:
    """Per target name, the paths the planner will ask about (live, next and recorded copies)."""
    wanted: dict[str, set[str]] = {}
    for entity in desired.manifest.entities:
        if not desired.in_scope(entity.id):
            continue
        numbers = [g.number for g in recorded.generations_of(entity.id) if g.status in LIVE]
        numbers.append(next_number(recorded, entity.id))
        if entity.state == "present":
            for target in entity.targets:
                paths = wanted.setdefault(target.name, set())
                for n in numbers:
                    paths.add(file_path(target, copy_file_name(entity.id, n)))
    for copy in recorded.copies.values():
        if desired.in_scope(copy.entity) and desired.manifest.entity(copy.entity) is not None:
            wanted.setdefault(copy.target, set()).add(copy.path)
    return wanted


def resolve_target(desired: Desired, recorded: Recorded, name: str) -> Target | None:
    """A target by name: from the manifest, else as last recorded in the state."""
    manifest = desired.manifest
    target = manifest.workstations.get(name) or manifest.locations.get(name)
    if target is None and name in recorded.targets:
        target = target_from_spec(recorded.targets[name])
    return target


class _Planner:
    def __init__(
        self, desired: Desired, recorded: Recorded, observed: Observed, now: dt.datetime
    ) -> None:
        self.desired = desired
        self.recorded = recorded
        self.observed = observed
        self.now = now
        self.actions: list[Action] = []
        self.warnings: list[Warning] = []
        self.in_sync: list[str] = []

    def run(self) -> Plan:
        for entity in self.desired.manifest.entities:
            if self.desired.in_scope(entity.id):
                before = len(self.actions)
                if entity.state == "absent":
                    self.absent(entity)
                else:
                    self.present(entity)
                if len(self.actions) == before:
                    self.in_sync.append(self.sync_line(entity))
        declared = {e.id for e in self.desired.manifest.entities}
        for entity_id in sorted({g.entity for g in self.recorded.generations} - declared):
            if self.desired.in_scope(entity_id) and any(
                g.status in LIVE for g in self.recorded.generations_of(entity_id)
            ):
                self.warnings.append(
                    Warning(
                        entity_id,
                        "orphaned",
                        "in the state but not in the manifest: nothing is changed for it; "
                        "declare it with `state: absent` to remove its copies",
                    )
                )
        errors = tuple(
            f"{name}: cannot observe the target: {reason}"
            for name, reason in sorted(self.observed.unreachable.items())
        )
        return Plan(
            self.now, tuple(self.actions), tuple(self.warnings), errors, tuple(self.in_sync)
        )

    # ------------------------------------------------------------ entities

    def absent(self, entity: Entity) -> None:
        for copy in sorted(self.copies_of(entity.id), key=lambda c: (c.target, c.path)):
            if copy.target in self.observed.unreachable:
                continue
            generation = self.recorded.generation(copy.generation_id)
            self.actions.append(
                Action(
                    REMOVE,
                    "-",
                    entity.id,
                    generation.number if generation else 0,
                    "entity-absent",
                    "the entity is marked absent",
                    target=copy.target,
                    path=copy.path,
                )
            )
        for g in self.recorded.generations_of(entity.id):
            if g.status in LIVE:
                self.actions.append(
                    Action(
                        RETIRE,
                        "-",
                        entity.id,
                        g.number,
                        "entity-absent",
                        "the entity is marked absent; the key stays in the escrow",
                        attributes=(("designation", g.designation),),
                    )
                )

    def present(self, entity: Entity) -> None:
        current = self.recorded.current(entity.id)
        reason = first_reason(GENERATION_CHECKS, GenerationContext(entity, current, self.now))
        keep: list[tuple[int, str, RecordedGeneration | None]] = []
        retiring: set[str] = set()
        if reason is not None:
            number = next_number(self.recorded, entity.id)
            designation = entity.key.designation_for(number, self.now.year)
            spec = entity.key
            not_after = self.now + dt.timedelta(days=spec.validity_days)
            attributes = [
                ("designation", designation),
                ("common_name", spec.common_name_for(number, self.now.year)),
                ("key", f"RSA {spec.size}"),
                ("issuer", spec.issuer),
                ("valid_until", f"{not_after:%Y-%m-%d}"),
                ("pkcs12_profile", spec.profile),
                ("password", "(sensitive)"),
            ]
            if current is not None:
                attributes.append(("replaces", f"generation {current.number}"))
                retiring.add(current.id)
            self.actions.append(
                Action(
                    CREATE,
                    "-/+" if current is not None else "+",
                    entity.id,
                    number,
                    reason.code,
                    reason.message,
                    attributes=tuple(attributes),
                )
            )
            keep.append((number, designation, None))
        elif current is not None:
            wanted = entity.key.designation_for(current.number, current.created_at.year)
            if current.origin == "adopted":
                wanted = current.designation
            if current.designation != wanted:
                self.actions.append(
                    Action(
                        RENAME,
                        "~",
                        entity.id,
                        current.number,
                        "friendly-name-changed",
                        f"designation {current.designation!r} -> {wanted!r}; update it on the "
                        "platform too",
                        attributes=(("designation", wanted),),
                    )
                )
            keep.append((current.number, wanted, current))
        for g in self.recorded.generations_of(entity.id):
            if g.status == RETAINED:
                self.actions.append(
                    Action(
                        RETIRE,
                        "-",
                        entity.id,
                        g.number,
                        "unbound",
                        "no open consultation holds this generation any more; the key stays in "
                        "the escrow",
                        attributes=(("designation", g.designation),),
                    )
                )
                retiring.add(g.id)
        self.plan_copies(entity, keep, retiring)

    def plan_copies(
        self,
        entity: Entity,
        keep: list[tuple[int, str, RecordedGeneration | None]],
        retiring: set[str],
    ) -> None:
        wanted_paths: set[tuple[str, str]] = set()
        password_id = self.desired.password_ids.get(entity.id)
        for target in entity.targets:
            if target.name in self.observed.unreachable:
                continue
            for number, designation, generation in keep:
                path = file_path(target, copy_file_name(entity.id, number))
                wanted_paths.add((target.name, path))
                if generation is None:
                    self.actions.append(
                        Action(
                            WRITE,
                            "+",
                            entity.id,
                            number,
                            "new-generation",
                            "copy of the new generation",
                            target=target.name,
                            path=path,
                            attributes=(("role", target.role),),
                        )
                    )
                    continue
                ctx = CopyContext(
                    target=target,
                    path=path,
                    generation=generation,
                    observed=self.observed.files.get((target.name, path)),
                    recorded=self.recorded.copies.get((target.name, path)),
                    profile=entity.key.profile,
                    password_id=password_id,
                    friendly_name=designation,
                )
                reason = first_reason(COPY_CHECKS, ctx)
                if reason is not None:
                    self.actions.append(
                        Action(
                            WRITE,
                            "+" if reason.code == "missing" else "~",
                            entity.id,
                            number,
                            reason.code,
                            reason.message,
                            target=target.name,
                            path=path,
                            attributes=(("role", target.role),),
                        )
                    )
        declared = {t.name: t for t in entity.targets}
        for copy in sorted(self.copies_of(entity.id), key=lambda c: (c.target, c.path)):
            if (copy.target, copy.path) in wanted_paths or copy.target in self.observed.unreachable:
                continue
            generation = self.recorded.generation(copy.generation_id)
            number = generation.number if generation else 0
            old = generation is None or generation.status == RETIRED or generation.id in retiring
            holder = declared.get(copy.target)
            if holder is not None and holder.role == "location" and old:
                continue  # shared locations keep every generation: the copy that is never lost
            if holder is None:
                code, message = "decommissioned", "the target is no longer declared for the entity"
            elif old:
                code, message = "retired", "the generation is retired; the key stays in the escrow"
            else:
                code, message = "moved", "the target's folder changed"
            self.actions.append(
                Action(
                    REMOVE,
                    "-",
                    entity.id,
                    number,
                    code,
                    message,
                    target=copy.target,
                    path=copy.path,
                )
            )

    # ------------------------------------------------------------ helpers

    def copies_of(self, entity: str) -> list[RecordedCopy]:
        return [c for c in self.recorded.copies.values() if c.entity == entity]

    def sync_line(self, entity: Entity) -> str:
        if entity.state == "absent":
            return f"{entity.id}: absent, nothing of it is left on any target"
        current = self.recorded.current(entity.id)
        if current is None:
            return f"{entity.id}: no generation and no reachable target"
        days = (current.not_after - self.now).days
        count = sum(1 for c in self.copies_of(entity.id) if c.generation_id == current.id)
        renew = current.not_after - dt.timedelta(days=entity.key.renew_before_days)
        return (
            f'{entity.id}: generation {current.number} "{current.designation}" valid until '
            f"{current.not_after:%Y-%m-%d} ({days} days; renewal from {renew:%Y-%m-%d}), "
            f"{count} copies match what was written"
        )


def plan(desired: Desired, recorded: Recorded, observed: Observed, now: dt.datetime) -> Plan:
    """Decide what apply must do to make the targets and state match the manifest."""
    return _Planner(desired, recorded, observed, now).run()
