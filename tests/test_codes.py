"""A plan warning's code carries its severity (provisioner/codes.py): no code reaches a
monitoring system as a WARNING by default, and the operators' table in docs/RUNBOOK.md gives
each code the severity `check` gives it."""

from __future__ import annotations

import re

import pytest

from provisioner.codes import FindingCode, Severity, WarningCode
from tests.conftest import REPO


def runbook_rows() -> dict[str, set[str]]:
    """code -> the severities the RUNBOOK's table gives it (a code may have two rows: one in
    its window, one outside)."""
    rows: dict[str, set[str]] = {}
    text = (REPO / "docs" / "RUNBOOK.md").read_text()
    for line in text.splitlines():
        row = re.match(r"\s*\| (\d) \| (OK|WARNING|CRITICAL|UNKNOWN) \| ([^|]*) \|", line)
        if row:
            for code in re.findall(r"`([a-z-]+)`", row.group(3)):
                rows.setdefault(code, set()).add(row.group(2))
    return rows


def test_every_warning_code_is_in_the_runbook_with_the_severity_check_gives_it() -> None:
    rows = runbook_rows()
    for code in WarningCode:
        assert code.value in rows, f"{code.value} is missing from docs/RUNBOOK.md's table"
        assert code.severity.name in rows[code.value], (code.value, rows[code.value])


def test_the_codes_that_put_bids_at_risk_now_are_critical() -> None:
    critical = {c.value for c in WarningCode if c.severity is Severity.CRITICAL}
    assert critical == {
        "bound-unheld",
        "bound-missing",
        "expired-accepting-bids",
        "expires-before-deadline",
        "expired-before-opening",
        "expires-before-opening",
        "escrow-missing",
    }
    # Everything else is a WARNING: none is OK or UNKNOWN (a plan warning is a finding).
    assert {c.severity for c in WarningCode} == {Severity.WARNING, Severity.CRITICAL}


def test_a_code_not_in_the_set_is_refused_not_given_a_default() -> None:
    with pytest.raises(ValueError):
        WarningCode("a-code-nobody-declared")


def test_every_finding_code_of_check_is_in_the_runbook() -> None:
    """check's own findings (their severity depends on a date: check.py gives it) are each in
    the operators' table, as WARNING or CRITICAL."""
    rows = runbook_rows()
    for code in FindingCode:
        assert code.value in rows, f"{code.value} is missing from docs/RUNBOOK.md's table"
        assert rows[code.value] <= {"WARNING", "CRITICAL"}, (code.value, rows[code.value])


def _enums(schema: object) -> list[set[object]]:
    """Every `enum` (and a `const`'s one value) of a JSON Schema, anywhere in it."""
    found: list[set[object]] = []
    if isinstance(schema, dict):
        if isinstance(schema.get("enum"), list):
            found.append(set(schema["enum"]))
        for value in schema.values():
            found += _enums(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _enums(value)
    return found


def test_the_closed_sets_of_the_types_are_the_schemas_enums() -> None:
    """A Literal type of the model (a transport, a store, a profile, a state, a consultation's
    status) is exactly an enum of the schema that admits the value: a value the schema lets in
    is one the code's types name, and none more."""
    import json
    from typing import get_args

    from provisioner.consultations import ConsultationStatus
    from provisioner.manifest.model import EntityState, Profile, Store, Transport
    from provisioner.platform_csv import STATUSES

    manifest = json.loads((REPO / "schemas" / "manifest.schema.json").read_text())
    consultations = json.loads((REPO / "schemas" / "consultations.schema.json").read_text())
    for literal in (Transport, Store, Profile, EntityState):
        assert set(get_args(literal)) in _enums(manifest), literal
    assert set(get_args(ConsultationStatus)) in _enums(consultations)
    assert set(get_args(ConsultationStatus)) == set(STATUSES)
