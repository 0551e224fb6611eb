"""What the programs this tool starts (hooks, `{command}` secret sources) are given.

A child gets a minimal environment, never a copy of ours: ours may hold the escrow passphrase
and every entity's password (`{env: NAME}` sources). It gets the variables of `BASE` (and the
`LC_*` ones) that are set, plus those the manifest's `pass_environment` lists; a variable that
any secret reference names is withheld even then.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from provisioner.manifest.model import ChildEnvironment

# What a program needs to run and to write human text: where programs are, the user it runs
# as, its language, time zone and temporary folders (XDG_RUNTIME_DIR: where gpg-agent's and the
# session bus's sockets are); and the tool's clock, so a hook that calls provisioner again sees
# the same simulated time.
BASE = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "PROVISIONER_NOW",
)


def environment(
    policy: ChildEnvironment,
    withheld_values: Iterable[str] = (),
) -> dict[str, str]:
    """The environment of a child: BASE, LC_* and `policy.passed` as set in our own
    environment, without the names `policy.withheld` and without any variable whose value is
    one of `withheld_values` (the secrets this run resolved)."""
    source = os.environ
    wanted = set(BASE) | set(policy.passed)
    values = {v for v in withheld_values if v}
    return {
        name: value
        for name, value in source.items()
        if (name in wanted or name.startswith("LC_"))
        and name not in policy.withheld
        and value not in values
    }


@dataclass(frozen=True, slots=True)
class Finished:
    """A bounded run: the return code and at most `limit + 1` bytes of standard output."""

    returncode: int
    stdout: bytes
    too_large: bool


class Timeout(Exception):
    """The program did not exit in time (it was killed)."""


def run_bounded(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    limit: int,
) -> Finished:
    """Run `argv` (no shell, standard input empty, standard error discarded) and read at most
    `limit` bytes of its output. The timeout applies to the program, not to its output pipe:
    once it has exited, what it wrote is taken at once, even if a process it left behind keeps
    the pipe open. Past `limit` bytes or `timeout` seconds, it is killed. It stays in our
    process group, so that a password program can still ask on the terminal (pinentry).
    Raises OSError when it cannot be started, Timeout when it did not finish in time."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
    )
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            eof = False
            while not eof and size <= limit:
                exited = process.poll() is not None
                # After the exit, only what is already in the pipe is read (no waiting).
                if not exited:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        _kill(process)
                        raise Timeout
                    selector.select(min(remaining, 0.05))
                while size <= limit:
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if not chunk:
                        eof = True
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                if exited:
                    break
        if size > limit:
            _kill(process)
            return Finished(process.wait(), b"".join(chunks)[: limit + 1], True)
        remaining = max(0.0, deadline - time.monotonic())
        try:
            returncode = process.wait(remaining)
        except subprocess.TimeoutExpired:
            _kill(process)
            raise Timeout from None
        return Finished(returncode, b"".join(chunks), False)
    finally:
        process.stdout.close()
        if process.poll() is None:
            _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()
