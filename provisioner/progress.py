"""Apply's progress: one live display on a terminal (rich), for the whole run, with a row per
phase (keys generated, PKCS#12 encoded, copies written, targets complete), each with its count,
rate and time left; nothing when standard error is not a terminal, nor under --quiet or --json
(the final summary is apply's own line). rich is imported only when the display starts, so a
run that shows none (a no-op apply, a scheduled job, a pipe) does not pay for it."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

# Runs shorter than this show nothing.
DELAY = 0.5

# The rows, in display order: phase (as the executor names it) -> label.
LABELS = {
    "generating keys": "keys generated",
    "encoding copies": "PKCS#12 encoded",
    "writing copies": "copies written",
    "targets": "targets complete",
}
# What each phase's count means once done, for the Ctrl-C report.
DONE_WORDS = {
    "generating keys": "new keys made and escrowed",
    "encoding copies": "PKCS#12 files encoded",
    "writing copies": "copies written",
    "targets": "targets complete",
}
# This process's runs (a command makes one): what Ctrl-C reports as done.
_runs: list[Progress] = []


class Progress:
    """Callable as the executor's `progress(phase, done, total)`; `close()` ends the display
    (apply's summary line follows it)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.counts: dict[str, tuple[int, int]] = {}
        self.display: RichProgress | None = None
        self.tasks: dict[str, TaskID] = {}
        _runs.append(self)

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.counts[phase] = (done, total)
        if not self.enabled or total <= 0:
            return
        if self.display is None:
            if time.monotonic() - self.start < DELAY:
                return
            self.display = _display(self.stream)
            self.display.start()
        for name, (d, t) in self.counts.items():  # rows in their order, each once
            if t <= 0:
                continue
            if name not in self.tasks:
                self.tasks[name] = self.display.add_task(LABELS.get(name, name), total=t)
            self.display.update(self.tasks[name], completed=d, total=t)

    def close(self) -> None:
        """Stop the live display, leaving its last state on the screen."""
        if self.display is not None:
            self.display.stop()
            self.display = None


def _display(stream: TextIO) -> RichProgress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        """Items a second since the row started, once it has run a second."""

        def render(self, task: Any) -> Text:
            elapsed = task.finished_time if task.finished else task.elapsed
            if not elapsed or elapsed < 1:
                return Text("")
            return Text(f"{task.completed / elapsed:,.1f}/s", style="progress.data.speed")

    return Progress(
        TextColumn("{task.description:<17}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("left"),
        console=Console(file=stream),
        refresh_per_second=8,
    )


def done_so_far() -> str | None:
    """What this process's runs had done, as counts ("new keys made and escrowed 3 of 12,
    copies written 0 of 24"), or None when no run had started a phase."""
    for run in _runs:
        run.close()  # the display stops before the message is printed
    parts = [
        f"{DONE_WORDS.get(phase, phase)} {done} of {total}"
        for run in _runs
        for phase, (done, total) in run.counts.items()
        if total > 0
    ]
    return ", ".join(parts) or None
