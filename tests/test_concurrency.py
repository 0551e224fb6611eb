"""Two applies at once: one runs, the other fails at once or waits (--lock-timeout); a plan
during an apply reads a consistent state."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli
from tests.manifests import Manifest

ENV = {
    **{
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROVISIONER_") or k == "PROVISIONER_NOW"
    },
    "ESCROW": "Concurrency-Escrow-Pass-1",
    "PW": "Concurrency-Password-1!",
}


def manifest(folder: Path, entities: int = 40) -> Path:
    m = Manifest().location("nas")
    for i in range(entities):
        m.entity(f"e{i}", name=f"E{i}", shared_locations=["nas"])
    return m.write(folder / "m.yaml")


def start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", *map(str, args)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lock(folder: Path, first: subprocess.Popen[str]) -> None:
    lock = folder / ".provisioner" / "lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lock.exists() and lock.stat().st_size > 0:
            return
        assert first.poll() is None, "the first apply ended before taking the lock"
        time.sleep(0.01)
    raise AssertionError("the first apply never took the lock")


def test_two_applies_one_runs_the_other_fails_or_waits(tmp_path: Path) -> None:
    m = manifest(tmp_path)
    first = start("apply", "--auto-approve", m)
    wait_for_lock(tmp_path, first)
    second = run_cli("apply", "--auto-approve", m, env=ENV)
    during = run_cli("plan", m, env=ENV)
    waiter = start("apply", "--auto-approve", "--lock-timeout", "120", m)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 1
    assert "is locked by pid" in second.stderr and "running `apply`" in second.stderr
    # The plan read a snapshot: either nothing yet, or a consistent part of the first apply.
    assert during.returncode == 0, during.stderr
    assert "Plan:" in during.stdout
    w_out, w_err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, w_out + w_err
    assert "No changes." in w_out
    final = run_cli("plan", "--detailed-exitcode", m, env=ENV)
    assert final.returncode == 0
    assert len(list((tmp_path / "nas").glob("*.p12"))) == 40
