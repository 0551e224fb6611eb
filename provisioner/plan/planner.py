"""plan(desired, recorded, observed, now) -> Plan. Pure: no file, network or clock access."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from provisioner import clock
from provisioner.manifest.model import Entity, Target
from provisioner.plan.bindings import merge
from provisioner.plan.folders import plan_folders
from provisioner.plan.model import (
    CHAIN,
    CONFLICT,
    CREATE,
    ESCROW,
    REMOVE,
    RENAME,
    RETAIN,
    RETIRE,
    WRITE,
    Action,
    ConsultationView,
    Desired,
    Observed,
    Plan,
    Warning,
)
from provisioner.plan.policies import (
    CONFLICT as CONFLICT_REASON,
)
from provisioner.plan.policies import (
    COPY_CHECKS,
    GENERATION_CHECKS,
    CopyContext,
    GenerationContext,
    changed_but_ours,
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


def parse_copy_name(name: str) -> tuple[str, int] | None:
    """(entity, number) from a copy's file name `<entity>.g<number>.p12`, else None."""
    if not name.endswith(".p12"):
        return None
    entity, sep, number = name[: -len(".p12")].rpartition(".g")
    if not sep or not entity or not number.isdigit() or number != str(int(number)):
        return None
    return entity, int(number)


def paths_to_observe(desired: Desired, recorded: Recorded) -> dict[str, set[str]]:
    """Per target name, the paths the planner will ask about: live and next generations on
    every target, every generation on shared locations, and every recorded copy."""
    wanted: dict[str, set[str]] = {}
    for entity in desired.manifest.entities:
        if not desired.in_scope(entity.id):
            continue
        generations = recorded.generations_of(entity.id)
        live = [g.number for g in generations if g.status in LIVE]
        live.append(next_number(recorded, entity.id))
        every = [g.number for g in generations] + [live[-1]]
        if entity.state == "present":
            for target in entity.targets:
                paths = wanted.setdefault(target.name, set())
                # Every generation's path, retired ones included: one brought back for a
                # consultation must not be written over a file someone put there since.
                for n in every:
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
        self.refusals: list[str] = []
        self.moved_away = 0
        # target -> (folder, mode) where the filesystem fixes file modes (a CIFS mount)
        self.fixed_modes: dict[str, tuple[str, int]] = {}
        self.bindings = merge(desired, recorded)
        self.holders = self.bindings.holders()

    def run(self) -> Plan:
        self.actions.extend(self.bindings.actions)
        self.refusals.extend(self.bindings.refusals)
        for entity in self.desired.manifest.entities:
            if self.desired.in_scope(entity.id):
                before = len(self.actions)
                if entity.state == "absent":
                    self.absent(entity)
                else:
                    self.present(entity)
                mine = self.actions[before:]
                if any(a.kind == CONFLICT for a in mine):
                    # Not ours, not touched: the conflicting paths are left alone, and so is
                    # everything that rests on the state being current (new generations,
                    # retirements, removals). Repairs of known generations' copies at free
                    # paths and escrow restores still go ahead: they can lose nothing.
                    self.actions[before:] = [a for a in mine if _safe_beside_conflict(a)]
                if len(self.actions) == before:
                    self.in_sync.append(self.sync_line(entity))
                self.warn(entity, self.actions[before:])
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
        for name, (folder, mode) in sorted(self.fixed_modes.items()):
            self.warnings.append(
                Warning(
                    None,
                    "mode-fixed",
                    f"{name}: the filesystem holding {folder} fixes file modes (a CIFS mount's "
                    f"file_mode, a FAT disk): its copies show mode {mode:04o}, which chmod "
                    "cannot change, so who may read them is neither checked nor set here; "
                    "declare the share with `transport: smb` to set and check each copy's ACL",
                )
            )
        if self.moved_away:
            self.warnings.append(
                Warning(
                    None,
                    "copied-tree",
                    f"this state was made in {self.desired.moved_from} and is used from "
                    f"elsewhere (a copied or moved tree): {self.moved_away} removal"
                    f"{'s or rewrites are' if self.moved_away > 1 else ' or rewrite is'} held "
                    "back, since the copies it recorded may be the original tree's. If the "
                    "tree was moved, not copied, run `provisioner recover --moved MANIFEST` to "
                    "make this its home",
                )
            )
        self.actions.extend(
            plan_folders(
                self.desired,
                self.observed,
                lambda name: resolve_target(self.desired, self.recorded, name),
            )
        )
        errors = tuple(
            f"{name}: cannot observe the target: {reason}"
            for name, reason in sorted(self.observed.unreachable.items())
        )
        for view in self.bindings.views:
            if view.is_open and view.generation_id is None:
                self.warnings.append(
                    Warning(
                        view.entity,
                        "unmanaged-key",
                        f"consultation {view.describe()} is bound to {view.key_ref}, a key this "
                        "tool does not manage: adopt it (provisioner adopt … --retained) so "
                        "that it is escrowed and distributed",
                    )
                )
        return Plan(
            self.now,
            tuple(self.actions),
            tuple(self.warnings),
            errors,
            tuple(self.in_sync),
            tuple(self.refusals),
            tuple(self.bindings.views),
        )

    # ------------------------------------------------------------ entities

    def absent(self, entity: Entity) -> None:
        bound = [g for g in self.recorded.generations_of(entity.id) if g.id in self.holders]
        if bound:
            self.refusals.append(
                f"{entity.location}: entity {entity.id} is marked absent, but "
                + self.at_stake(bound)
                + ". Its keys must stay until those consultations are "
                "closed: mark them closed in the consultations file first."
            )
            return
        for copy in sorted(self.copies_of(entity.id), key=lambda c: (c.target, c.path)):
            if copy.target in self.observed.unreachable:
                continue
            if self.role_of(copy.target) == "location":
                continue  # shared locations keep every generation, the entity's included
            generation = self.recorded.generation(copy.generation_id)
            number = generation.number if generation else 0
            if not self.removable(entity, copy, number, "entity-absent"):
                continue
            self.actions.append(
                Action(
                    REMOVE,
                    "-",
                    entity.id,
                    number,
                    "entity-absent",
                    "the entity is marked absent (shared locations keep their copies)",
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
            designation = self.unique_designation(entity, number, self.now.year, None)
            spec = entity.key
            not_after = self.now + dt.timedelta(days=spec.validity_days)
            attributes = [
                ("designation", designation),
                (
                    "common_name",
                    designation
                    if spec.common_name is None
                    else spec.common_name_for(number, self.now.year),
                ),
                ("key", f"RSA {spec.size}"),
                ("issuer", spec.issuer),
                ("valid_until", f"{not_after:%Y-%m-%d}"),
                ("pkcs12_profile", spec.profile),
                ("password", "(sensitive)"),
            ]
            symbol = "+"
            if current is not None and current.id in self.holders:
                attributes.append(("keeps", f"generation {current.number}"))
                self.retain(entity, current, "stays beside the new generation")
                keep.append((current.number, current.designation, current))
            elif current is not None:
                attributes.append(("replaces", f"generation {current.number}"))
                retiring.add(current.id)
                symbol = "-/+"
            self.actions.append(
                Action(
                    CREATE,
                    symbol,
                    entity.id,
                    number,
                    reason.code,
                    reason.message,
                    attributes=tuple(attributes),
                )
            )
            keep.insert(0, (number, designation, None))
        elif current is not None:
            wanted = self.unique_designation(
                entity, current.number, current.created_at.year, current.id
            )
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
        if reason is None:
            self.next_path_conflicts(entity)
        self.check_escrow(entity)
        keep = [(n, d, self.with_new_chain(entity, g)) for n, d, g in keep]
        for g in self.recorded.generations_of(entity.id):
            if g.status == CURRENT:
                continue
            if g.id in self.holders:
                if g.status == RETIRED:
                    self.retain(entity, g, "is brought back to the workstations")
                keep.append((g.number, g.designation, self.with_new_chain(entity, g)))
            elif g.status == RETAINED:
                self.actions.append(
                    Action(
                        RETIRE,
                        "-",
                        entity.id,
                        g.number,
                        "unbound",
                        "no open consultation holds this generation any more; the key stays in "
                        "the escrow and on the shared locations",
                        attributes=(("designation", g.designation),),
                    )
                )
                retiring.add(g.id)
        bound = [g for _, _, g in keep if g is not None and g.id in self.holders]
        if bound:
            for role, declared in (
                ("workstation", entity.workstations),
                ("shared location", entity.shared_locations),
            ):
                held = any(
                    self.role_of(c.target) == role.split()[-1]
                    for c in self.recorded.copies_of(entity.id)
                )
                if not declared and held:
                    self.refusals.append(
                        f"{entity.location}: entity {entity.id} declares no {role} any more, "
                        f"but " + self.at_stake(bound) + f". Removing its last {role} is "
                        "refused until those consultations are closed."
                    )
                    return
        self.plan_copies(entity, keep, retiring)

    def unique_designation(self, entity: Entity, number: int, year: int, itself: str | None) -> str:
        """The manifest's designation for generation `number`, made unique among the names
        the entity's other generations have had (a `{year}` template repeats within a year):
        a consultation naming it must name one generation."""
        name = entity.key.designation_for(number, year)
        taken = {
            d.casefold()
            for g in self.recorded.generations_of(entity.id)
            if g.id != itself
            for d in self.recorded.names_of(g)
        }
        return name if name.casefold() not in taken else f"{name} ({number})"

    def next_path_conflicts(self, entity: Entity) -> None:
        """A file where the next generation's copy will go is not ours (a state older than
        its targets, a copied tree): say so now, not on renewal day."""
        number = next_number(self.recorded, entity.id)
        for target in entity.targets:
            path = file_path(target, copy_file_name(entity.id, number))
            facts = self.observed.files.get((target.name, path))
            if facts is not None:
                self.conflict(entity, number, target.name, path, "where its next generation goes")

    def conflict(self, entity: Entity, number: int, target: str, path: str, what: str) -> None:
        foreign = self.observed.foreign.get((target, path))
        inside = foreign.describe() if foreign is not None else "a symlink or special file"
        message = f"a file this state did not write stands {what} ({inside}): left as it is"
        self.conflict_action(entity, number, target, path, message)

    def conflict_action(
        self, entity: Entity, number: int, target: str, path: str, message: str
    ) -> None:
        self.actions.append(
            Action(CONFLICT, "!", entity.id, number, CONFLICT_REASON, message, target, path)
        )

    def check_escrow(self, entity: Entity) -> None:
        """Every generation's key must be in the escrow: one that is missing is taken back
        from an intact copy that opens with the current password, else reported."""
        present = self.observed.escrow_keys
        if present is None:
            return
        password_id = self.desired.password_ids.get(entity.id)
        for g in self.recorded.generations_of(entity.id):
            if g.key_sha256 in present:
                continue
            source = next(
                (
                    c
                    for c in sorted(self.copies_of(entity.id), key=lambda c: (c.target, c.path))
                    if c.generation_id == g.id
                    and (password_id is None or c.password_id == password_id)
                    and c.target not in self.observed.unreachable
                    and (facts := self.observed.files.get((c.target, c.path))) is not None
                    and facts.sha256 == c.sha256
                ),
                None,
            )
            if source is not None:
                self.actions.append(
                    Action(
                        ESCROW,
                        "+",
                        entity.id,
                        g.number,
                        "escrow-missing",
                        f"the escrowed private key is missing: taken back from the copy on "
                        f"{source.target}",
                        target=source.target,
                        path=source.path,
                    )
                )
            else:
                self.warnings.append(
                    Warning(
                        entity.id,
                        "escrow-missing",
                        f'generation {g.number} "{g.designation}": its private key is missing '
                        "from the escrow and no intact copy that opens with the current password "
                        "was observed; restore the escrow from a backup, or run `provisioner "
                        "recover` (docs/RECOVERY.md)",
                    )
                )

    def removable(self, entity: Entity, copy: RecordedCopy, number: int, code: str) -> bool:
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

    def with_new_chain(
        self, entity: Entity, g: RecordedGeneration | None
    ) -> RecordedGeneration | None:
        """`g`, with the renewed chain of its issuer when there is one (and the action)."""
        if g is None or g.id not in self.desired.chain_updates:
            return g
        pem, digest = self.desired.chain_updates[g.id]
        self.actions.append(
            Action(
                CHAIN,
                "~",
                entity.id,
                g.number,
                "chain-changed",
                f"the certificate of issuer {g.issuer} was renewed with the same key: the copies "
                "carry the new chain (same bi-clé, re-encoded)",
                attributes=(("chain_sha256", digest),),
            )
        )
        return replace(g, chain=pem, chain_sha256=digest)

    def retain(self, entity: Entity, g: RecordedGeneration, what: str) -> None:
        views = self.holders[g.id]
        self.actions.append(
            Action(
                RETAIN,
                "~",
                entity.id,
                g.number,
                "bound-to-open-consultation",
                f"generation {g.number} {what}: consultations "
                + ", ".join(v.describe() for v in views)
                + " still need it to open their bids",
                attributes=(
                    ("designation", g.designation),
                    ("consultations", ", ".join(v.reference for v in views)),
                ),
            )
        )

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

    def role_of(self, target_name: str) -> str | None:
        manifest = self.desired.manifest
        if target_name in manifest.workstations:
            return "workstation"
        if target_name in manifest.locations:
            return "location"
        spec = self.recorded.targets.get(target_name)
        return target_from_spec(spec).role if spec else None

    def warn(self, entity: Entity, actions: list[Action]) -> None:
        """Warnings about keys and consultations, each with the consultation and its dates;
        `actions` are the entity's own, planned just before."""
        if entity.state != "present":
            return
        planned = {(a.target, a.generation) for a in actions if a.kind == WRITE}
        removed = {(a.target, a.path) for a in actions if a.kind == REMOVE}
        for g in self.recorded.generations_of(entity.id):
            views = self.holders.get(g.id, [])
            for view in views:
                self.warn_dates(entity, g, view)
            if views:
                held = any(
                    c.generation_id == g.id
                    and self.role_of(c.target) == "workstation"
                    and (c.target, c.path) not in removed
                    for c in self.recorded.copies_of(entity.id)
                ) or any((t.name, g.number) in planned for t in entity.workstations)
                if not held:
                    self.warnings.append(
                        Warning(
                            entity.id,
                            "bound-unheld",
                            f'generation {g.number} "{g.designation}" is bound to '
                            + ", ".join(v.describe() for v in views)
                            + " but no workstation holds it: no agent could open those bids",
                        )
                    )
                for target in self.missing_from(entity, g) if held else ():
                    where = (
                        f"workstation {target.name}: no agent there could open those bids"
                        if target.role == "workstation"
                        else f"shared location {target.name}: the copy that must never be "
                        "lost is not there"
                    )
                    self.warnings.append(
                        Warning(
                            entity.id,
                            "bound-missing",
                            f'generation {g.number} "{g.designation}" is bound to '
                            + ", ".join(v.describe() for v in views)
                            + f" but is missing from {where} (apply restores it)",
                        )
                    )
        current = self.recorded.current(entity.id)
        renewing = any(a.kind == CREATE for a in actions)
        if current is not None and not renewing:
            renew_on = current.not_after - dt.timedelta(days=entity.key.renew_before_days)
            if renew_on - self.now <= dt.timedelta(days=self.desired.notice_days):
                self.warnings.append(
                    Warning(
                        entity.id,
                        "renewal-soon",
                        f'generation {current.number} "{current.designation}" expires on '
                        f"{current.not_after:%Y-%m-%d}; a new generation will be created from "
                        f"{renew_on:%Y-%m-%d}: plan its upload to the platform",
                    )
                )

    def missing_from(self, entity: Entity, g: RecordedGeneration) -> list[Target]:
        """The reachable workstations and shared locations of `entity` observed without
        generation `g`'s copy."""
        out = []
        for t in entity.targets:
            if t.name in self.observed.unreachable:
                continue
            key = (t.name, file_path(t, copy_file_name(entity.id, g.number)))
            if self.observed.files.get(key) is None and (
                key in self.observed.files or g.status == RETIRED
            ):
                out.append(t)
        return out

    def warn_dates(self, entity: Entity, g: RecordedGeneration, view: ConsultationView) -> None:
        """Dates that put a bound generation at risk; the severity is in the code (check.py):
        at risk while bids can be deposited or before the opening, else a reminder."""
        accepting = view.status == "open" and (view.deadline is None or self.now < view.deadline)
        before_opening = view.opening is not None and self.now < view.opening
        name = f'generation {g.number} "{g.designation}"'
        if g.not_after <= self.now:
            if accepting:
                code = "expired-accepting-bids"
                risk = "still accepts bids: companies cannot encrypt to an expired certificate"
            elif before_opening:
                code, risk = "expired-before-opening", "has not been opened yet"
            else:
                code, risk = "expired-bound", f"is still {view.status}"
            self.warnings.append(
                Warning(
                    entity.id,
                    code,
                    f"{name} expired on {g.not_after:%Y-%m-%d}; consultation {view.describe()}, "
                    f"bound to it, {risk}. Keep this key to open its bids; new consultations "
                    "must use the current generation",
                )
            )
            return
        for code, label, when, live in (
            ("expires-before-deadline", "deadline for bids", view.deadline, accepting),
            ("expires-before-opening", "opening", view.opening, before_opening),
        ):
            if live and when is not None and g.not_after < when:
                self.warnings.append(
                    Warning(
                        entity.id,
                        code,
                        f"{name} expires on {g.not_after:%Y-%m-%d}, before the {label} of "
                        f"consultation {view.describe()} on {clock.day(when)}",
                    )
                )
                return

    def plan_copies(
        self,
        entity: Entity,
        keep: list[tuple[int, str, RecordedGeneration | None]],
        retiring: set[str],
    ) -> None:
        wanted_paths: set[tuple[str, str]] = set()
        password_id = self.desired.password_ids.get(entity.id)
        # Shared locations keep every generation ever made, retired ones included: each is
        # checked like a live copy and written again when it is missing.
        kept = {n for n, _, _ in keep}
        archive: list[tuple[int, str, RecordedGeneration | None]] = [
            (g.number, g.designation, g)
            for g in self.recorded.generations_of(entity.id)
            if g.number not in kept
        ]
        for target in entity.targets:
            if target.name in self.observed.unreachable:
                continue
            for number, designation, generation in (
                keep + archive if target.role == "location" else keep
            ):
                path = file_path(target, copy_file_name(entity.id, number))
                wanted_paths.add((target.name, path))
                if (
                    generation is None
                    and (target.name, path) in self.observed.files
                    and (self.observed.files[(target.name, path)] is not None)
                ):
                    self.conflict(entity, number, target.name, path, "where its new copy goes")
                    continue
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
                    foreign=self.observed.foreign.get((target.name, path)),
                )
                reason = first_reason(COPY_CHECKS, ctx)
                facts = ctx.observed
                if facts is not None and facts.mode_fixed and facts.mode & 0o077:
                    self.fixed_modes.setdefault(target.name, (target.path, facts.mode))
                if reason is not None and reason.code == CONFLICT_REASON:
                    self.conflict_action(entity, number, target.name, path, reason.message)
                elif (
                    reason is not None
                    and self.desired.moved_from is not None
                    and reason.code != "missing"
                ):
                    # Away from home, a file at a recorded path may be the original tree's
                    # copy (absolute target paths): it is not rewritten either.
                    self.moved_away += 1
                elif reason is not None:
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
            if not self.removable(entity, copy, number, code):
                continue
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
        return self.recorded.copies_of(entity)

    def sync_line(self, entity: Entity) -> str:
        if entity.state == "absent":
            return (
                f"{entity.id}: absent, on no workstation "
                "(its shared locations keep every generation)"
            )
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


def _safe_beside_conflict(action: Action) -> bool:
    if action.kind in (CONFLICT, ESCROW, RENAME):  # a rename changes the state only
        return True
    return action.kind == WRITE and action.reason != "new-generation"


def plan(desired: Desired, recorded: Recorded, observed: Observed, now: dt.datetime) -> Plan:
    """Decide what apply must do to make the targets and state match the manifest."""
    return _Planner(desired, recorded, observed, now).run()
