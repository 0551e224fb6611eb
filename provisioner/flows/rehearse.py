"""`rehearse`: the opening of bids rehearsed with every copy and escrowed key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from provisioner import clock
from provisioner.engine import load_inputs, observe_and_plan, open_state
from provisioner.errors import (
    NoStateError,
)

if TYPE_CHECKING:  # imported where used: `plan` loads neither the probe nor the receipts
    from provisioner.receipts import StoreState
    from provisioner.rehearse import CopyResult


def rehearse(
    manifest: Path,
    state_dir: Path | None,
    limit: list[str] | None,
    *,
    parallel: int,
    consultations: Path | None,
    state_backend: str | None = None,
) -> tuple[list[CopyResult], list[StoreState]]:
    """Rehearse the opening of bids with every copy and escrowed key (see rehearse.py), and
    what the agents' key stores' receipts say."""
    from provisioner import rehearse as rehearsal

    inputs = load_inputs(
        manifest, state_dir, limit, consultations=consultations, state_backend=state_backend
    )
    with open_state(inputs, create=False) as session:
        if session.db is None:
            raise NoStateError(session.location, "no copy to rehearse")
        now = clock.now()
        _, result = observe_and_plan(session, parallel, now)
        results = rehearsal.rehearse(
            session.manifest,
            session.recorded,
            result,
            dict(session.passwords),
            session.pool,
            now,
            session.limit,
            session.escrow,
            session.inputs.scope,
        )
        from provisioner import receipts

        stores = receipts.survey_of(session, result, parallel, session.limit)
        return results, stores
