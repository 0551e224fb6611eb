"""The environment for a real server a test starts (sshd, smbd): the system's own clock.

`make test-dates` runs the suite under libfaketime (LD_PRELOAD and FAKETIME, inherited by every
child). The program under test and the tools it drives live on the shifted date; a server is the
world around them, and smbd's timers stall under a shifted clock (a share that never answers),
so each server starts without the preload."""

from __future__ import annotations

import os


def server_env() -> dict[str, str]:
    """os.environ without libfaketime's variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FAKETIME") and k not in {"LD_PRELOAD", "DONT_FAKE_MONOTONIC"}
    }
