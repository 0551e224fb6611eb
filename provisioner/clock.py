"""The one clock of the program. PROVISIONER_NOW (ISO 8601) moves it, for rehearsing dates."""

from __future__ import annotations

import datetime as dt
import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from provisioner.errors import ProvisionerError

# Consultation dates are Paris time, as the platforms show them.
try:
    PARIS: dt.tzinfo = ZoneInfo("Europe/Paris")
except (ZoneInfoNotFoundError, ValueError):  # no time zone database on this system
    PARIS = dt.UTC


def now() -> dt.datetime:
    """Current UTC time, or PROVISIONER_NOW when set (used by scenario tests and rehearsals)."""
    forced = os.environ.get("PROVISIONER_NOW")
    if forced:
        try:
            value = dt.datetime.fromisoformat(forced)
        except ValueError:
            raise ProvisionerError(f"PROVISIONER_NOW={forced!r} is not an ISO 8601 date") from None
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def day(value: dt.datetime) -> str:
    """A consultation date as the file gives it: its calendar day in Paris time (a date without
    a time is midnight in Paris, so `2028-08-03` stays the 3rd whatever the offset stored)."""
    return f"{value.astimezone(PARIS):%Y-%m-%d}"


def until(value: dt.datetime) -> dt.datetime:
    """The last instant a consultation date covers: a date given without a time (midnight in
    Paris) covers its whole day, so a key that expires at 11:00 on an opening day given as
    `2028-11-30` expires before that opening. A date with a time is that instant."""
    local = value.astimezone(PARIS)
    if local.time() != dt.time(0, 0):
        return value
    return (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0) - dt.timedelta(
        microseconds=1
    )


def days_until(value: dt.datetime, now: dt.datetime) -> int:
    """Calendar days (Paris) from `now` to a consultation date: 0 on its day, -1 the next."""
    return (value.astimezone(PARIS).date() - now.astimezone(PARIS).date()).days


def local_iso(value: dt.datetime) -> str:
    """ISO 8601 in Paris time with its offset, e.g. `2028-08-03T00:00:00+02:00`: the form
    consultation dates are stored and printed in, so the calendar day reads as given."""
    return value.astimezone(PARIS).isoformat()
