"""`provisioner recover`: scan the copies, show what will be recorded, ask, record, bind the
consultations again. A declined, refused or empty run leaves nothing it created behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from provisioner import clock
from provisioner.engine import load_inputs, open_state
from provisioner.recover import bind, record, render, scan
from provisioner.state.store import hold


def run(
    manifest: Path,
    state_dir: Path | None,
    limit: list[str] | None,
    *,
    consultations: Path | None,
    moved: bool,
    lock_timeout: float,
    previous_password: str | None = None,
    parallel: int,
    show: Callable[[str], None],
    confirm: Callable[[], bool],
    state_backend: str | None = None,
) -> int:
    """The exit code: 0 when recorded or nothing to recover, 1 when declined. `show` prints
    the recovery plan and the outcome; `confirm` asks before anything is recorded."""
    # Entities only: a lost state is rebuilt from every copy of an entity, never from some.
    inputs = load_inputs(
        manifest,
        state_dir,
        limit,
        consultations=consultations,
        targets=False,
        state_backend=state_backend,
    )
    with (
        hold(inputs.location, "recover", lock_timeout),
        open_state(inputs, create=True, recovering=True) as session,
    ):
        recorded = False
        try:
            now = clock.now()
            found = scan(session, now, moved=moved, previous_password=previous_password)
            show(render(found))
            if found.blocking or found.refusal is not None:
                return 1
            if not found.changes:
                if not session.created:
                    # A recover interrupted after its record, before its bindings: the guards
                    # are recorded now (nothing is written to any target).
                    bound = bind(session, parallel, now)
                    if bound:
                        recorded = True
                        show(f"{bound} consultation binding(s) recorded again.")
                return 0
            if not confirm():
                return 1
            record(session, found, now)
            recorded = True
            bound = bind(session, parallel, now)
            show(
                "Recovered"
                + (f"; {bound} consultation binding(s) recorded again" if bound else "")
                + ". Run `provisioner plan` to see what is left to repair."
            )
            return 0
        finally:
            if not recorded:
                session.discard_created()  # declined, refused or nothing found: nothing written
