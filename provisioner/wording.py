"""Counts in what the program says agree with their number: `1 shared location`, `2 shared
locations`, `0 copies`."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """`n` and its noun in agreement: singular for 1, else `plural` (default: singular + s)."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"
