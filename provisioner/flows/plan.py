"""`plan`: observe and plan without the lock, and save the plan for a later `apply PLAN`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from provisioner import clock
from provisioner.engine import Inputs, observe_and_plan, observed_digest, open_state
from provisioner.plan.model import Plan

if TYPE_CHECKING:  # imported where used: `plan` loads neither the probe nor the receipts
    pass


def plan(inputs: Inputs, *, parallel: int, out: Path | None) -> tuple[Plan, frozenset[str]]:
    """Observe and plan without the lock; save the plan to `out` unless it is refused.
    Returns the plan and the targets it observes (for the exit code, exit_codes.py)."""
    from provisioner.exit_codes import targets_in_scope

    with open_state(inputs, create=False) as session:
        observed, result = observe_and_plan(session, parallel, clock.now())
        if out is not None and not result.refusals:
            from provisioner.flows.apply import save_plan

            save_plan(session, result, observed_digest(observed), out)
        return result, targets_in_scope(session)
