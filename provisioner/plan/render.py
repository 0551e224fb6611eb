"""Plans as text a reviewer can scan (Terraform's manner) and as JSON (schemas/plan.schema.json)."""

from __future__ import annotations

from typing import Any

from provisioner import clock
from provisioner.plan.model import (
    BIND,
    CHAIN,
    CLEAR,
    CONFLICT,
    CONSULT,
    CREATE,
    ESCROW,
    REMOVE,
    RENAME,
    RETAIN,
    RETIRE,
    SECURE,
    WRITE,
    Action,
    Plan,
)

FORMAT_VERSION = 1

_COLOURS = {"+": "\033[32m", "~": "\033[33m", "-": "\033[31m", "-/+": "\033[35m", "!": "\033[33m"}
_RESET = "\033[0m"


def action_json(action: Action) -> dict[str, Any]:
    return {
        "kind": action.kind,
        "symbol": action.symbol,
        "entity": action.entity,
        "generation": action.generation,
        "reason": action.reason,
        "message": action.message,
        "target": action.target,
        "path": action.path,
        "attributes": dict(action.attributes),
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


def _label(action: Action) -> str:
    if action.kind in (BIND, CONSULT):
        verb = "bind" if action.kind == BIND else "update"
        return f"consultation {action.attribute('reference')}: {verb}"
    if action.kind == CREATE:
        return f"generation {action.generation}: create"
    if action.kind == RENAME:
        return f"generation {action.generation}: update designation"
    if action.kind == CHAIN:
        return f"generation {action.generation}: update issuer chain"
    if action.kind == RETIRE:
        return f"generation {action.generation}: retire"
    if action.kind == RETAIN:
        return f"generation {action.generation}: retain"
    if action.kind == ESCROW:
        return f"generation {action.generation}: restore escrowed key from {action.target}"
    if action.kind == CONFLICT:
        return f"conflict g{action.generation} on {action.target}: {action.path}"
    if action.kind == SECURE:
        return f"secure folder on {action.target}: {action.path}"
    if action.kind == CLEAR:
        verb = "remove" if action.symbol == "-" else "put back"
        return f"{verb} leftover on {action.target}: {action.path}"
    verb = {WRITE: "write" if action.symbol == "+" else "rewrite", REMOVE: "remove"}[action.kind]
    return f"{verb} g{action.generation} on {action.target}: {action.path}"


def action_label(action: Action) -> str:
    """What an action does, worded as in `plan` (`write g2 on ws-01: C:/...`)."""
    return _label(action)


def unobserved(plan: Plan) -> str:
    """`2 targets could not be observed`, or "" when every target was."""
    n = len(plan.errors)
    if not n:
        return ""
    return f"{n} target{'s' if n > 1 else ''} could not be observed"


def summary_line(plan: Plan) -> str:
    if plan.refusals:
        n = len(plan.refusals)
        guards = f"{n} guards forbid" if n > 1 else "a guard forbids"
        return f"Plan refused: {guards} applying it; nothing will be done."
    create, update, remove = plan.counts()
    line = f"Plan: {create} to create, {update} to update, {remove} to remove."
    entities = plan.conflicted_entities()
    if entities:
        n = len(plan.conflicts)
        line += (
            f" {n} conflict{'s' if n > 1 else ''}: apply leaves "
            f"{', '.join(entities)} alone (files this state did not write)."
        )
    if plan.errors:
        line += f" {unobserved(plan).capitalize()}: nothing is known of them."
    return line


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
        lines += [f"  {line}" for line in plan.in_sync]
    elif not plan.changes:
        lines.append("No changes. Every bi-clé is current and every copy matches what was written.")
        lines += [f"  {line}" for line in plan.in_sync]
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
            if action.kind in (CREATE, RENAME):
                width = max((len(k) for k, _ in action.attributes), default=0)
                for key, value in action.attributes:
                    shown = (
                        value
                        if value == "(sensitive)"
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
            "they were written. Nothing of "
            + ", ".join(plan.conflicted_entities())
            + " is changed. If the state was lost or restored from an older backup, run "
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
