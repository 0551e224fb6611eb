"""The one clock of the program. PROVISIONER_NOW (ISO 8601) moves it, for rehearsing dates."""

from __future__ import annotations

import datetime as dt
import os

from provisioner.errors import ProvisionerError


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
