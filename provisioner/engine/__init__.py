"""The engine: a command's frozen inputs (`load_inputs`), its open state (`open_state`, a
context manager that closes on every path), observation of the targets and planning.

Commands use it as:

    inputs = load_inputs(manifest, state_dir, limit)
    with open_state(inputs, create=False) as session:
        observed, plan = observe_and_plan(session, parallel, clock.now())
"""

from provisioner.engine.digests import inputs_digest, observed_digest
from provisioner.engine.inputs import (
    DEFAULT_PARALLEL,
    STATE_ENV,
    Inputs,
    load_inputs,
    state_dir_for,
)
from provisioner.engine.observe import inspect_foreign, make_plan, observe, observe_and_plan
from provisioner.engine.session import Session, check_unit, open_state

__all__ = [
    "DEFAULT_PARALLEL",
    "STATE_ENV",
    "Inputs",
    "Session",
    "check_unit",
    "inputs_digest",
    "inspect_foreign",
    "load_inputs",
    "make_plan",
    "observe",
    "observe_and_plan",
    "observed_digest",
    "open_state",
    "state_dir_for",
]
