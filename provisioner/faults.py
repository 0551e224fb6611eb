"""Fault injection for the crash-safety tests: PROVISIONER_FAULT_INJECT="point[:n[:INT]]" makes
the process kill itself with SIGKILL (with `INT`: send itself SIGINT, as Ctrl-C would) the n-th
time (default 1st) it reaches `point`.

Points: after-keygen, after-escrow, mid-commit, committed (the state's COMMIT has just
returned), after-commit, mid-distribution, mid-rename, after-remove; SSH writes: ssh-uploaded,
fallback-moved-aside, fallback-renamed-in. Unset (always, outside the test suite), `reached`
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_SPEC = os.environ.get("PROVISIONER_FAULT_INJECT", "")
_POINT, _, _REST = _SPEC.partition(":")
_NTH, _, _SIGNAL = _REST.partition(":")
_WANTED = int(_NTH) if _NTH.isdigit() else 1
_KILL = signal.SIGINT if _SIGNAL == "INT" else signal.SIGKILL
_seen = 0
_lock = threading.Lock()


def reached(point: str) -> None:
    """Die here, abruptly (or be interrupted), if the test asked for it."""
    global _seen
    if point != _POINT:
        return
    with _lock:
        _seen += 1
        if _seen == _WANTED:
            os.kill(os.getpid(), _KILL)
