"""What one planning pass accumulates, and the small lookups every part of the planner shares.

The planner is split by concern (planner.py: generations; copies.py: copies and the escrow;
risks.py: warnings about bound keys); each part reads the inputs and appends to this."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from provisioner.manifest.model import Entity
from provisioner.plan.actions import Action, Conflict, ReasonCode
from provisioner.plan.bindings import Bindings, merge
from provisioner.plan.model import ConsultationView, Desired, Observed, PlanWarning
from provisioner.plan.paths import parse_copy_name
from provisioner.plan.policies import changed_but_ours
from provisioner.state.records import Recorded, RecordedCopy, RecordedGeneration
from provisioner.transports.base import target_from_spec


@dataclass(frozen=True, slots=True)
class Fresh:
    """The generation this plan creates: no record yet, its copies go where nothing is."""

    number: int
    designation: str


@dataclass(frozen=True, slots=True)
class Kept:
    """A recorded generation whose copies the targets keep, under the designation they carry
    (the wanted one when this plan renames it)."""

    generation: RecordedGeneration
    designation: str

    @property
    def number(self) -> int:
        return self.generation.number


@dataclass
class Planning:
    desired: Desired
    recorded: Recorded
    observed: Observed
    now: dt.datetime
    actions: list[Action] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)
    in_sync: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    moved_away: int = 0  # removals or rewrites held back away from the state's home
    # target -> (folder, mode) where the filesystem fixes file modes (a CIFS mount)
    fixed_modes: dict[str, tuple[str, int]] = field(default_factory=dict)
    bindings: Bindings = field(init=False)
    holders: dict[str, list[ConsultationView]] = field(init=False)
    # (target, folder) -> entity -> the generation numbers its copy names there carry
    _numbered: dict[tuple[str, str], dict[str, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bindings = merge(self.desired, self.recorded)
        self.holders = self.bindings.holders()

    def copies_of(self, entity: str) -> list[RecordedCopy]:
        return self.recorded.copies_of(entity)

    def numbered(self, target: str, folder: str) -> dict[str, list[int]]:
        """Entity -> the generation numbers of the copy names listed in `folder` (one pass
        over each folder's listing per plan, however many entities share it)."""
        found = self._numbered.get((target, folder))
        if found is None:
            found = {}
            facts = self.observed.folders.get((target, folder))
            for name in facts.copies if facts is not None else ():
                parsed = parse_copy_name(name)
                if parsed is not None:
                    found.setdefault(parsed[0], []).append(parsed[1])
            self._numbered[(target, folder)] = found
        return found

    def observed_sha256(self, target: str, path: str) -> str:
        """The digest of the file observed at `path` on `target`, "" where there was none."""
        facts = self.observed.files.get((target, path))
        return facts.sha256 if facts is not None else ""

    def role_of(self, target_name: str) -> str | None:
        manifest = self.desired.manifest
        if target_name in manifest.workstations:
            return "workstation"
        if target_name in manifest.locations:
            return "location"
        spec = self.recorded.targets.get(target_name)
        return target_from_spec(spec).role if spec else None

    def at_stake(self, generations: list[RecordedGeneration]) -> str:
        parts = []
        for g in generations:
            views = self.holders.get(g.id, [])
            parts.append(
                f'generation {g.number} "{g.designation}" is bound to open '
                f"consultation{'s' if len(views) > 1 else ''} "
                + ", ".join(v.describe() for v in views)
            )
        return "; ".join(parts)

    def conflict(self, entity: Entity, number: int, target: str, path: str, what: str) -> None:
        foreign = self.observed.foreign.get((target, path))
        inside = foreign.describe() if foreign is not None else "a symlink or special file"
        message = f"a file this state did not write stands {what} ({inside}): left as it is"
        self.conflict_action(entity, number, target, path, message)

    def conflict_action(
        self, entity: Entity, number: int, target: str, path: str, message: str
    ) -> None:
        self.actions.append(
            Conflict(
                entity=entity.id,
                generation=number,
                reason=ReasonCode.CONFLICT,
                message=message,
                target=target,
                path=path,
            )
        )

    def removable(self, entity: Entity, copy: RecordedCopy, number: int) -> bool:
        """A recorded copy may be removed only while it is what was written (a changed file
        is not ours any more: conflict), and not from a state found away from its home."""
        facts = self.observed.files.get((copy.target, copy.path))
        generation = self.recorded.generation(copy.generation_id)
        if facts is not None and (
            facts.symlink
            or (
                facts.sha256 != copy.sha256
                and not changed_but_ours(
                    self.observed.foreign.get((copy.target, copy.path)),
                    facts,
                    copy,
                    generation.key_sha256 if generation else "",
                )
            )
        ):
            self.conflict(entity, number, copy.target, copy.path, "where a copy to remove was")
            return False
        if self.desired.moved_from is not None:
            # A copied state shares its records (and absolute target paths) with the original:
            # nothing recorded is removed until the operator says the tree was moved.
            self.moved_away += 1
            return False
        return True
