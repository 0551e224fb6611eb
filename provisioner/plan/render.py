"""Plans as text a reviewer can scan (Terraform's manner) and as JSON (schemas/plan.schema.json)."""

from __future__ import annotations

from typing import Any

from provisioner import clock
from provisioner.jsondoc import FORMAT_VERSION
from provisioner.plan.actions import (
    SENSITIVE,
    Action,
    BindConsultation,
    Change,
    ClearLeftover,
    Conflict,
    ConsultationAction,
    CreateGeneration,
    RemoveCopy,
    RenameGeneration,
    RestoreEscrow,
    RetainGeneration,
    RetireGeneration,
    SecureFolder,
    UpdateChain,
    UpdateConsultation,
    WriteCopy,
)
from provisioner.plan.model import Plan
from provisioner.wording import counted

_COLOURS = {"+": "\033[32m", "~": "\033[33m", "-": "\033[31m", "-/+": "\033[35m", "!": "\033[33m"}
_RESET = "\033[0m"


def action_json(action: Action) -> dict[str, Any]:
    return {
        "kind": action.kind,
        "symbol": action.symbol,
        "entity": action.entity,
        "generation": action.generation,
        "reason": action.reason.value,
        "message": action.message,
        "target": action.target,
        "path": action.path,
        "attributes": dict(action.attributes()),
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    create, update, remove = plan.counts()
    return {
        "format_version": FORMAT_VERSION,
        "now": clock.iso(plan.now),
        "changes": plan.changes,
        "summary": {
            "create": create,
            "update": update,
            "remove": remove,
            "conflicts": len(plan.conflicts),
        },
        "actions": [action_json(a) for a in plan.actions],
        "warnings": [
            {"entity": w.entity, "code": w.code, "message": w.message} for w in plan.warnings
        ],
        "errors": list(plan.errors),
        "refusals": list(plan.refusals),
        "in_sync": list(plan.in_sync),
        "consultations": [
            {
                "reference": v.reference,
                "entity": v.entity,
                "title": v.title,
                "key": v.key_ref,
                "generation": v.generation or None,
                "designation": v.designation or None,
                "status": v.status,
                "deadline": clock.local_iso(v.deadline) if v.deadline else None,
                "opening": clock.local_iso(v.opening) if v.opening else None,
                "recorded": v.recorded,
            }
            for v in plan.consultations
        ],
    }


def line_label(
    kind: str, generation: int, symbol: str, target: str | None, path: str | None, reference: str
) -> str:
    """What an action does, worded as in `plan` (`write g2 on ws-01: C:/...`), from the fields
    its JSON keeps too, so that a saved plan's lines read the same (`provisioner report`)."""
    match kind:
        case BindConsultation.kind:
            return f"consultation {reference}: bind"
        case UpdateConsultation.kind:
            return f"consultation {reference}: update"
        case CreateGeneration.kind:
            return f"generation {generation}: create"
        case RenameGeneration.kind:
            return f"generation {generation}: update designation"
        case UpdateChain.kind:
            return f"generation {generation}: update issuer chain"
        case RetireGeneration.kind:
            return f"generation {generation}: retire"
        case RetainGeneration.kind:
            return f"generation {generation}: retain"
        case RestoreEscrow.kind:
            return f"generation {generation}: restore escrowed key from {target}"
        case Conflict.kind:
            return f"conflict g{generation} on {target}: {path}"
        case SecureFolder.kind:
            return f"secure folder on {target}: {path}"
        case ClearLeftover.kind:
            verb = "put back" if symbol == Change.UPDATE.symbol else "remove"
            return f"{verb} leftover on {target}: {path}"
        case WriteCopy.kind:
            verb = "write" if symbol == Change.CREATE.symbol else "rewrite"
            return f"{verb} g{generation} on {target}: {path}"
        case RemoveCopy.kind:
            verb = "forget the record of" if symbol == Change.UPDATE.symbol else "remove"
            return f"{verb} g{generation} on {target}: {path}"
    return f"{kind} g{generation}"


def _label(action: Action) -> str:
    reference = action.reference if isinstance(action, ConsultationAction) else ""
    return line_label(
        action.kind, action.generation, action.symbol, action.target, action.path, reference
    )


def action_label(action: Action) -> str:
    """What an action does, worded as in `plan` (`write g2 on ws-01: C:/...`)."""
    return _label(action)


def unobserved_text(errors: int) -> str:
    """`2 targets could not be observed`, or "" when every target was."""
    if not errors:
        return ""
    return f"{errors} target{'s' if errors > 1 else ''} could not be observed"


def unobserved(plan: Plan) -> str:
    """`2 targets could not be observed`, or "" when every target was."""
    return unobserved_text(len(plan.errors))


def summary_text(
    *,
    refusals: int,
    counts: tuple[int, int, int],
    conflicts: int,
    conflicted: list[str],
    errors: int,
) -> str:
    """The plan's summary line from its figures (those `plan --json` keeps in "summary")."""
    if refusals:
        guards = f"{refusals} guards forbid" if refusals > 1 else "a guard forbids"
        return f"Plan refused: {guards} applying it; nothing will be done."
    create, update, remove = counts
    line = f"Plan: {create} to create, {update} to update, {remove} to remove."
    if conflicted:
        line += (
            f" {conflicts} conflict{'s' if conflicts > 1 else ''}: apply leaves "
            f"{', '.join(conflicted)} alone (files this state did not write)."
        )
    if errors:
        line += f" {unobserved_text(errors).capitalize()}: nothing is known of them."
    return line


def summary_line(plan: Plan) -> str:
    return summary_text(
        refusals=len(plan.refusals),
        counts=plan.counts(),
        conflicts=len(plan.conflicts),
        conflicted=plan.conflicted_entities(),
        errors=len(plan.errors),
    )


def _in_sync(plan: Plan, verbose: bool) -> list[str]:
    """Under a plan with no change: each entity with nothing to do and why, its expiry and
    renewal date (`-v`), else one line that counts them (a thousand entities are not a
    thousand lines)."""
    if verbose:
        return [f"  {line}" for line in plan.in_sync]
    if not plan.in_sync:
        return []
    entities = counted(len(plan.in_sync), "entity", "entities")
    return [f"  Nothing to do for {entities} (-v lists each, with its expiry and renewal date)."]


def render_plan(plan: Plan, *, colour: bool = False, verbose: bool = False) -> str:
    """The human plan: one block per entity, a symbol and a reason per line, a summary."""

    def paint(symbol: str, text: str) -> str:
        return f"{_COLOURS[symbol]}{text}{_RESET}" if colour else text

    lines: list[str] = []
    if plan.refusals:
        lines.append("Refused:")
        lines += [f"  {paint('-', 'x')} {refusal}" for refusal in plan.refusals]
        lines.append("")
    if plan.errors:
        lines.append("Errors:")
        lines += [f"  {paint('!', '!')} {error}" for error in plan.errors]
        lines.append("")
    if not plan.changes and plan.errors:
        # A summary never claims what was not observed.
        lines.append(
            f"No changes on the targets observed; {unobserved(plan)} (see Errors above): "
            "their copies were not checked."
        )
        lines += _in_sync(plan, verbose)
    elif not plan.changes and any(w.code == "limit-held" for w in plan.warnings):
        # Never "every bi-clé is current" when --limit held something back.
        lines.append("No changes within --limit; what it holds back is under Warnings.")
        lines += _in_sync(plan, verbose)
    elif not plan.changes:
        lines.append("No changes. Every bi-clé is current and every copy matches what was written.")
        lines += _in_sync(plan, verbose)
    else:
        lines.append(
            f"provisioner will perform the following actions (planned at {clock.iso(plan.now)}):"
        )
        group = None
        for action in plan.actions:
            # Folder actions belong to a target, not to an entity.
            heading = action.entity or f"target {action.target}"
            if heading != group:
                group = heading
                lines.append("")
                lines.append(f"  # {heading}")
            lines.append(
                f"  {paint(action.symbol, f'{action.symbol:>3}')} {_label(action)}"
                f"  [{action.reason}] {action.message}"
            )
            if isinstance(action, CreateGeneration | RenameGeneration):
                attributes = action.attributes()
                width = max((len(k) for k, _ in attributes), default=0)
                for key, value in attributes:
                    shown = (
                        value
                        if value == SENSITIVE
                        else f'"{value}"'
                        if key in ("designation", "common_name")
                        else value
                    )
                    lines.append(f"        {key:<{width}} = {shown}")
        if verbose and plan.in_sync:
            lines.append("")
            lines.append("Already in sync:")
            lines += [f"  {line}" for line in plan.in_sync]
    if plan.conflicts:
        lines.append("")
        lines.append(
            "Conflicts: files this state did not write stand where copies go, or changed since "
            "they were written. For "
            + ", ".join(plan.conflicted_entities())
            + ", apply does only what can lose nothing (a known generation's copy where no file "
            "stands, an escrow restore, a new name, the consultations file's records): no new "
            "generation, no retirement or removal, no file replaced. If the state was lost or "
            "restored from an older backup, run "
            "`provisioner recover MANIFEST` (it takes back every copy that holds a known key); "
            "otherwise move those files away and plan again."
        )
    if plan.warnings:
        lines.append("")
        lines.append("Warnings:")
        for w in plan.warnings:
            who = f"{w.entity}: " if w.entity else ""
            lines.append(f"  {paint('!', '!')} {who}[{w.code}] {w.message}")
    lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines)
