"""Fault injection for the crash-safety tests: PROVISIONER_FAULT_INJECT="point[:n]" makes the
process kill itself with SIGKILL the n-th time (default 1st) it reaches `point`.

Points: after-keygen, after-escrow, mid-commit, after-commit, mid-distribution, mid-rename,
after-remove; SSH writes: ssh-uploaded, fallback-moved-aside, fallback-renamed-in. Unset
(always, outside the test suite), `reached` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_SPEC = os.environ.get("PROVISIONER_FAULT_INJECT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_WANTED = int(_NTH) if _NTH.isdigit() else 1
_seen = 0
_lock = threading.Lock()


def reached(point: str) -> None:
    """Die here, abruptly, if the test asked for it."""
    global _seen
    if point != _POINT:
        return
    with _lock:
        _seen += 1
        if _seen == _WANTED:
            os.kill(os.getpid(), signal.SIGKILL)
