"""Exit codes of plan, apply and rehearse: success, error (or total failure), and partial
failure, where the targets that were reached are done and some others were not reached.

- 0: done. Every target in scope was reached and nothing failed (plan: no change).
- 1: error. Bad input, a guard, a conflict, a failed action (a write on a target that was
  observed, a key generation), or total failure: no target could be observed.
- 2: `plan --detailed-exitcode` only: changes to make, every target observed.
- 4: partial. Some targets could not be observed (host down or hung, host key, login, an
  unusable target folder), every other target is done (plan: observed) and nothing else
  failed; the next run tries them again.

4 (not 2 or 3) because 2 is `plan --detailed-exitcode`'s "changes" and 3 is `check`'s UNKNOWN;
ansible-playbook also exits 4 when hosts were unreachable. `check` keeps its monitoring codes
(0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; an unreachable target is a WARNING) and `status`
exits 0 (it reports).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.engine import Session
    from provisioner.plan.model import Plan

OK = 0
ERROR = 1
CHANGES = 2
PARTIAL = 4


def unreached(plan: Plan) -> set[str]:
    """The targets the plan could not observe."""
    return {u.target for u in plan.unreached}


def targets_in_scope(session: Session) -> frozenset[str]:
    """The targets a run of `session` observes (call while its state is open)."""
    from provisioner.plan.planner import paths_to_observe

    return frozenset(paths_to_observe(session.desired(), session.recorded))


def _partial_or_error(bad: set[str], in_scope: Collection[str]) -> int:
    """PARTIAL when at least one target in scope is outside `bad`, else ERROR (total)."""
    return PARTIAL if any(name not in bad for name in in_scope) else ERROR


def plan_code(plan: Plan, in_scope: Collection[str], detailed: bool) -> int:
    if plan.refusals or plan.conflicts:
        return ERROR
    bad = unreached(plan)
    if bad:
        return _partial_or_error(bad, in_scope)
    return CHANGES if detailed and plan.changes else OK


def apply_code(plan: Plan, failed: int, in_scope: Collection[str]) -> int:
    """`failed`: how many actions failed; each is an error (its target was observed, or the
    action is no target's, such as a key generation)."""
    if plan.refusals or plan.conflicts or failed:
        return ERROR
    bad = unreached(plan)
    return _partial_or_error(bad, in_scope) if bad else OK


def rehearse_code(opened: Iterable[tuple[str, bool, str]]) -> int:
    """From (target, opened, reason) per copy: 0 when every copy opened, PARTIAL when every
    copy that could be read opened and some targets were unreachable (at least one target's
    copy opened), else ERROR."""
    rows = list(opened)
    if not rows:
        return ERROR
    if all(ok for _, ok, _ in rows):
        return OK
    if any(not ok and reason != "unreachable" for _, ok, reason in rows):
        return ERROR
    return PARTIAL if any(ok and target != "escrow" for target, ok, _ in rows) else ERROR
