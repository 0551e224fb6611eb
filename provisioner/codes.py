"""The closed sets of codes the program says: a check's severity, a plan warning's code and
the codes of `check`'s own findings.

A plan warning's code carries its severity for `check` (and the report): there is no default,
so a new code cannot reach a monitoring system as a WARNING by omission; mypy and
tests/test_codes.py hold every member to one. docs/RUNBOOK.md has the table for operators.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Severity(IntEnum):
    """The monitoring plugin's status, which is also `check`'s exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


class WarningCode(StrEnum):
    """A plan warning: something a reviewer must know that apply does not change. Its value is
    the code printed in brackets and in JSON; `severity` is how much it matters to whoever
    watches the opening of bids: CRITICAL when bids of a consultation not closed are at risk
    now, WARNING for what can wait or what apply repairs."""

    severity: Severity

    def __new__(cls, value: str, severity: Severity) -> WarningCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.severity = severity
        return member

    # A bound generation no workstation holds, or missing or changed where apply restores it.
    BOUND_UNHELD = "bound-unheld", Severity.CRITICAL
    BOUND_MISSING = "bound-missing", Severity.CRITICAL
    # A bound generation's certificate expired, or expiring, before the dates of its
    # consultation (expired-bound: the consultation is past its opening, kept as a reminder).
    EXPIRED_ACCEPTING_BIDS = "expired-accepting-bids", Severity.CRITICAL
    EXPIRES_BEFORE_DEADLINE = "expires-before-deadline", Severity.CRITICAL
    EXPIRED_BEFORE_OPENING = "expired-before-opening", Severity.CRITICAL
    EXPIRES_BEFORE_OPENING = "expires-before-opening", Severity.CRITICAL
    EXPIRED_BOUND = "expired-bound", Severity.WARNING
    # A consultation bound to a key this state does not manage (CRITICAL within
    # --critical-days of its opening: check.py raises it).
    UNMANAGED_KEY = "unmanaged-key", Severity.WARNING
    RENEWAL_SOON = "renewal-soon", Severity.WARNING
    ORPHANED = "orphaned", Severity.WARNING
    # A generation whose private key is in no escrow and no intact copy: nothing can make it.
    ESCROW_MISSING = "escrow-missing", Severity.CRITICAL
    COPIED_TREE = "copied-tree", Severity.WARNING
    FIRST_KEY_HELD = "first-key-held", Severity.WARNING
    LIMIT_HELD = "limit-held", Severity.WARNING
    # Copies leaving for a target of the same role that was not observed: kept until it is.
    REMOVALS_HELD = "removals-held", Severity.WARNING
    # A retained generation no recorded consultation was bound to: kept, bindings to give.
    BINDINGS_UNKNOWN = "bindings-unknown", Severity.WARNING
    MODE_FIXED = "mode-fixed", Severity.WARNING


class FindingCode(StrEnum):
    """A finding `check` makes itself (beside the plan's warnings, each with its WarningCode,
    and a target folder's pending repair, with its ReasonCode). Its severity depends on the
    finding (a date within --warn-days or not): check.py gives it; docs/RUNBOOK.md's table
    lists each."""

    REFUSED = "refused"  # the plan is refused (a guard)
    UNREACHABLE = "unreachable"  # a target not observed
    ESCROW_MISSING = "escrow-missing"  # a key neither in the escrow nor in an intact copy
    BOUND_MISSING = "bound-missing"  # a conflict where a bound generation's copy goes
    CONFLICT = "conflict"  # a file this state did not write where a copy goes
    NO_KEY = "no-key"  # an entity never applied
    EXPIRED = "expired"  # the current generation expired
    EXPIRING = "expiring"  # ... or expires within --warn-days / --critical-days
    PENDING = "pending"  # drift apply repairs
    NOT_ESCROWED = "not-escrowed"  # a bound generation's key missing from the escrow
    STORE_NOT_OBSERVED = "store-not-observed"  # an agent's store receipt too old
    BOUND_NOT_IN_STORE = "bound-not-in-store"  # a bound generation not in an agent's store
    NOT_IN_STORE = "not-in-store"  # a current generation not in an agent's store
    UNIT_BROKEN = "unit-broken"  # state and escrow not one unit: nothing judged
