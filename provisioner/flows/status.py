"""`status`: the plan against the recorded state, and what the agents' key stores' receipts say."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner import clock
from provisioner.engine import load_inputs, observe_and_plan, open_state
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.plan.model import Plan
from provisioner.state.records import Recorded

if TYPE_CHECKING:  # imported where used: `plan` loads neither the probe nor the receipts
    from provisioner.receipts import StoreState


@dataclass(frozen=True)
class Observation:
    """What status and rehearse render: the plan against the recorded state at `now`."""

    now: dt.datetime
    manifest: Manifest
    recorded: Recorded
    plan: Plan
    stores: list[StoreState]  # what the agents' key stores' receipts say (receipts.py)
    scope: Scope | None = None  # what --limit named (the copies outside it are not observed)


def status(
    manifest: Path,
    state_dir: Path | None,
    limit: list[str] | None = None,
    *,
    parallel: int,
    consultations: Path | None,
    state_backend: str | None = None,
) -> Observation:
    inputs = load_inputs(
        manifest,
        state_dir,
        limit,
        need_secrets=False,
        consultations=consultations,
        state_backend=state_backend,
    )
    with open_state(inputs, create=False, unlock=False) as session:
        now = clock.now()
        _, result = observe_and_plan(session, parallel, now)
        from provisioner import receipts

        stores = receipts.survey_of(session, result, parallel, session.limit)
        return Observation(
            now, session.manifest, session.recorded, result, stores, session.inputs.scope
        )
