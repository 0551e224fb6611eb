"""One writer per state: an advisory lock (flock) on `<state>/lock`, with its holder's identity.

The kernel releases the lock when its holder dies, so a lock left by a dead process never
blocks; its recorded holder is then reported as stale and replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from provisioner import clock
from provisioner.atomic import FILE_MODE
from provisioner.errors import LockError
from provisioner.state.db import actor

LOCK_NAME = "lock"


def describe_holder(info: str) -> str:
    """A holder record, as the refusal names it (pid, user@host, command, since)."""
    try:
        holder = json.loads(info)
        return (
            f"pid {holder['pid']} ({holder['actor']}), running `{holder['command']}` since "
            f"{holder['started']}"
        )
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


def holder_record(command: str) -> str:
    """Who holds the lock, for what, since when: what a refused command names."""
    return json.dumps(
        {
            "pid": os.getpid(),
            "actor": actor(),
            "command": command,
            "started": clock.iso(clock.now()),
        }
    )


def refusal(state: object, holder: str) -> LockError:
    """The refusal of a command that could not take the lock of `state` (a folder, or a
    PostgreSQL schema), naming the holder its record gives."""
    return LockError(
        f"the state {state} is locked by {describe_holder(holder)}; wait for it to finish "
        "or use --lock-timeout SECONDS"
    )


def stale_note(previous: str) -> str:
    return f"replaced the stale lock of {describe_holder(previous)}, which is no longer running"


@contextlib.contextmanager
def hold(state_dir: Path, command: str, timeout: float = 0.0) -> Iterator[str | None]:
    """Hold the state lock; waits up to `timeout` seconds, else raises LockError naming the
    holder. Yields a note when a stale holder record (dead process) was replaced."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        what = (
            "is a folder, not the lock file"
            if isinstance(exc, IsADirectoryError)
            else f"cannot be opened ({exc.strerror or exc})"
        )
        raise LockError(
            f"{path}: {what}; the state lock must be a file this tool can create there: "
            "move whatever is at that name away, then run the command again"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockError(f"{path}: is not a regular file; move it away, then run again")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise refusal(
                        state_dir, os.pread(fd, 4096, 0).decode("utf-8", "replace")
                    ) from None
                time.sleep(0.1)
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        note = stale_note(previous) if previous else None
        record = holder_record(command)
        # The holder record only informs a second command; the flock is the lock. On a full
        # disk it cannot be written, and the command must still reach the real error.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode(), 0)
            os.fsync(fd)
        try:
            yield note
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
