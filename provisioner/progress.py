"""A progress line on standard error for runs longer than about a second, only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

DELAY = 1.0
WIDTH = 30

# What each phase's count means once done, for the Ctrl-C report.
DONE_WORDS = {
    "generating keys": "new keys made and escrowed",
    "writing copies": "copies written",
}
# This process's runs (a command makes one): what Ctrl-C reports as done.
_runs: list[Progress] = []


class Progress:
    """Callable as the executor's `progress(phase, done, total)`."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.shown = False
        self.phase = ""
        self.counts: dict[str, tuple[int, int]] = {}
        _runs.append(self)

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.counts[phase] = (done, total)
        if not self.enabled or total <= 0:
            return
        if not self.shown and time.monotonic() - self.start < DELAY:
            return
        if phase != self.phase and self.shown:
            self.stream.write("\n")
        self.phase = phase
        self.shown = True
        filled = WIDTH * done // total
        bar = "#" * filled + "-" * (WIDTH - filled)
        self.stream.write(f"\r{phase:<18} [{bar}] {done}/{total}")
        if done >= total:
            self.stream.write("\n")
            self.shown = False
            self.start = time.monotonic() - DELAY  # later phases show at once
        self.stream.flush()


def done_so_far() -> str | None:
    """What this process's runs had done, as counts ("new keys made and escrowed 3 of 12,
    copies written 0 of 24"), or None when no run had started a phase."""
    parts = [
        f"{DONE_WORDS.get(phase, phase)} {done} of {total}"
        for run in _runs
        for phase, (done, total) in run.counts.items()
        if total > 0
    ]
    return ", ".join(parts) or None
