"""The warnings about a bound key's expiry against its consultation's dates, to the second.

The quickstart's keys are made on 2026-11-30 09:00 UTC for 730 days: generation 1 of
commune-exemple expires at 2028-11-29 09:00 UTC (EXPIRY). A consultation bound to it is
planned at instants around its deadline (date limite de remise des plis), its opening
(ouverture des plis) and the key's expiry; each plan names the one risk the dates make, in
the words an operator reads. A second either side of an instant changes the answer only
where the rule says it does."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.conftest import TEST_CLOCK, Runner

EXPIRY = dt.datetime(2028, 11, 29, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def consultation(
    folder: Path, status: str, deadline: dt.datetime | None, opening: dt.datetime | None
) -> Path:
    lines = [
        "version: 1",
        "consultations:",
        "  - reference: AO-2028-001",
        "    title: Travaux de voirie",
        "    entity: commune-exemple",
        "    designation: Commune Exemple",
        f"    status: {status}",
    ]
    if deadline is not None:
        lines.append(f"    deadline: '{deadline.isoformat()}'")
    if opening is not None:
        lines.append(f"    opening: '{opening.isoformat()}'")
    path = folder / "consultations.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def bound(cli: Runner, quickstart: Path) -> Path:
    """The keys made, then the consultation launched with generation 1 (bound for ever)."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    file = consultation(quickstart.parent, "open", EXPIRY + 30 * DAY, EXPIRY + 40 * DAY)
    done = cli("apply", "--auto-approve", "-q", quickstart, "--consultations", file)
    assert done.returncode == 0, done.stdout + done.stderr
    return quickstart


def warned(
    cli: Runner,
    manifest: Path,
    at: dt.datetime,
    status: str,
    deadline: dt.datetime | None,
    opening: dt.datetime | None,
) -> list[str]:
    """The plan's warnings about commune-exemple's bound key, as `[code] message` lines."""
    file = consultation(manifest.parent, status, deadline, opening)
    done = cli("plan", manifest, "--consultations", file, env={"PROVISIONER_NOW": at.isoformat()})
    assert "Traceback" not in done.stderr and done.returncode in (0, 1), done.stderr
    prefix = "  ! commune-exemple: ["
    codes = ("expire", "expired")
    return [
        line[len(prefix) - 1 :]
        for line in done.stdout.splitlines()
        if line.startswith(prefix) and any(c in line for c in codes)
    ]


def codes(lines: list[str]) -> list[str]:
    return [line[1 : line.index("]")] for line in lines]


def test_expiring_at_the_very_deadline_is_not_before_it_but_before_the_opening(
    cli: Runner, bound: Path
) -> None:
    lines = warned(cli, bound, TEST_CLOCK, "open", EXPIRY, EXPIRY + 10 * DAY)
    assert codes(lines) == ["expires-before-opening"], lines
    lines = warned(cli, bound, TEST_CLOCK, "open", EXPIRY + SECOND, EXPIRY + 10 * DAY)
    assert codes(lines) == ["expires-before-deadline"], lines
    assert lines[0] == (
        '[expires-before-deadline] generation 1 "Commune Exemple" expires on 2028-11-29, '
        "before the deadline for bids of consultation AO-2028-001 (Travaux de voirie; "
        "deadline 2028-11-29; opening 2028-12-09) on 2028-11-29"
    ), lines


def test_a_key_is_expired_from_its_expiry_instant_while_bids_are_still_accepted(
    cli: Runner, bound: Path
) -> None:
    lines = warned(cli, bound, EXPIRY, "open", EXPIRY + 5 * DAY, EXPIRY + 10 * DAY)
    assert codes(lines) == ["expired-accepting-bids"], lines
    assert lines[0] == (
        '[expired-accepting-bids] generation 1 "Commune Exemple" expired on 2028-11-29; '
        "consultation AO-2028-001 (Travaux de voirie; deadline 2028-12-04; opening 2028-12-09), "
        "bound to it, "
        "still accepts bids: companies cannot encrypt to an expired certificate. Keep this "
        "key to open its bids; new consultations must use the current generation"
    ), lines
    lines = warned(cli, bound, EXPIRY - SECOND, "open", EXPIRY + 5 * DAY, EXPIRY + 10 * DAY)
    assert codes(lines) == ["expires-before-deadline"], lines


def test_bids_are_no_longer_accepted_from_the_deadline_instant(cli: Runner, bound: Path) -> None:
    deadline, opening = EXPIRY + DAY, EXPIRY + 3 * DAY
    lines = warned(cli, bound, deadline, "open", deadline, opening)
    assert codes(lines) == ["expired-before-opening"], lines
    assert lines[0].endswith(
        "bound to it, has not been opened yet. Keep this key to open its bids; new "
        "consultations must use the current generation"
    ), lines
    lines = warned(cli, bound, deadline - SECOND, "open", deadline, opening)
    assert codes(lines) == ["expired-accepting-bids"], lines


def test_from_the_opening_instant_an_expired_bound_key_is_a_reminder(
    cli: Runner, bound: Path
) -> None:
    deadline, opening = EXPIRY + DAY, EXPIRY + 3 * DAY
    lines = warned(cli, bound, opening, "open", deadline, opening)
    assert codes(lines) == ["expired-bound"], lines
    assert "is still open. Keep this key to open its bids" in lines[0], lines
    lines = warned(cli, bound, opening - SECOND, "open", deadline, opening)
    assert codes(lines) == ["expired-before-opening"], lines


def test_a_consultation_being_opened_accepts_no_bids(cli: Runner, bound: Path) -> None:
    """Status `opening` (ouverture des plis en cours): no deadline to read, yet no bid can come
    in; the risk is the opening's, not the deposit's."""
    lines = warned(cli, bound, EXPIRY + DAY, "opening", None, EXPIRY + 3 * DAY)
    assert codes(lines) == ["expired-before-opening"], lines
