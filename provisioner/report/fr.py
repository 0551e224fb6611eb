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


def days(value: int) -> str:
    """`1 day`, `1 234 days`: the page's words are English like the tool's, its numbers
    French."""
    return f"{number(value)} day{'s' if abs(value) != 1 else ''}"
