"""A progress line on standard error for runs longer than about a second, only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

DELAY = 1.0
WIDTH = 30


class Progress:
    """Callable as the executor's `progress(phase, done, total)`."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.shown = False
        self.phase = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
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
