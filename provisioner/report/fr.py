"""Dates and numbers as France writes them (fr-FR, Europe/Paris), without the system locale:
a report must read the same whatever machine made it."""

from __future__ import annotations

import datetime as dt

from provisioner.clock import PARIS

MONTHS = (
    "janv.",
    "févr.",
    "mars",
    "avr.",
    "mai",
    "juin",
    "juil.",
    "août",
    "sept.",
    "oct.",
    "nov.",
    "déc.",
)
NNBSP = "\u202f"  # fr-FR groups thousands with a narrow no-break space


def paris(value: dt.datetime) -> dt.datetime:
    return value.astimezone(PARIS)


def date(value: dt.datetime) -> str:
    """`15/01/2027`: the calendar day in Paris."""
    return f"{paris(value):%d/%m/%Y}"


def date_time(value: dt.datetime) -> str:
    """`15/01/2027 12:00`, or the day alone at midnight (a date the file gave without a time)."""
    local = paris(value)
    if (local.hour, local.minute, local.second) == (0, 0, 0):
        return date(value)
    return f"{local:%d/%m/%Y %H:%M}"


def month(value: dt.datetime) -> str:
    """`janv. 2027`, for the timeline's ticks."""
    local = paris(value)
    return f"{MONTHS[local.month - 1]} {local.year}"


def number(value: int) -> str:
    """`1 234 567` with narrow no-break spaces."""
    sign = "-" if value < 0 else ""
    digits = str(abs(value))
    groups = []
    while digits:
        groups.append(digits[-3:])
        digits = digits[:-3]
    return sign + NNBSP.join(reversed(groups))


def decimal(value: float, places: int = 1) -> str:
    """`1,5` (decimal comma)."""
    whole, _, fraction = f"{abs(value):.{places}f}".partition(".")
    text = number(int(whole)) + ("," + fraction if fraction else "")
    return ("-" if value < 0 else "") + text


def days(value: int) -> str:
    """`1 jour`, `42 jours`."""
    return f"{number(value)} jour{'s' if abs(value) > 1 else ''}"


def size(n_bytes: int) -> str:
    """`1,2 Mo`, `340 ko`, as French software writes sizes."""
    if n_bytes >= 1_000_000:
        return f"{decimal(n_bytes / 1_000_000)} Mo"
    if n_bytes >= 1_000:
        return f"{number(round(n_bytes / 1_000))} ko"
    return f"{number(n_bytes)} o"
