"""The key-generation workers (provisioner/apply/keygen.py), in this process: mutation testing
only sees what runs here, and a worker's first steps run in a child. Each worker ignores Ctrl-C
(the apply handles it), asks the kernel to kill it with its parent, and exits at once when its
parent is already gone; the keys it makes are whole RSA keys of the size asked for."""

from __future__ import annotations

import ctypes
import signal

import pytest

from provisioner.apply import keygen


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.exits: list[int] = []
        self.failure: BaseException | None = None  # what prctl raises


@pytest.fixture
def worker_start(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """What a worker's start asks of the signals, the C library and the process; its parent
    is pid 4242."""
    seen = Recorder()

    class Libc:
        def __init__(self, name: str | None, use_errno: bool = False) -> None:
            self.name = name

        def prctl(self, option: int, value: int) -> int:
            seen.calls.append(("prctl", option, value))
            if seen.failure is not None:
                raise seen.failure
            return 0

    monkeypatch.setattr(
        keygen.signal, "signal", lambda sig, handler: seen.calls.append((sig, handler))
    )
    monkeypatch.setattr(ctypes, "CDLL", Libc)
    monkeypatch.setattr(keygen.os, "getppid", lambda: 4242)
    monkeypatch.setattr(keygen.os, "_exit", seen.exits.append)
    monkeypatch.setattr(keygen.sys, "platform", "linux")
    return seen


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_worker_ignores_ctrl_c_and_dies_with_its_parent(
    worker_start: Recorder, method: str
) -> None:
    keygen._die_with_parent(4242, method)
    assert worker_start.calls == [
        (signal.SIGINT, signal.SIG_IGN),
        ("prctl", 1, signal.SIGKILL),  # PR_SET_PDEATHSIG
    ]
    assert worker_start.exits == []


@pytest.mark.parametrize(("method", "exits"), [("fork", [1]), ("spawn", [1]), ("forkserver", [])])
def test_a_worker_whose_parent_is_gone_exits_at_once(
    worker_start: Recorder, method: str, exits: list[int]
) -> None:
    # Forked or spawned by an apply that died meanwhile (its parent is now another process);
    # under forkserver the parent is the server, which ends with the apply.
    keygen._die_with_parent(1111, method)
    assert worker_start.exits == exits


@pytest.mark.parametrize("failure", [OSError(22, "Invalid argument"), AttributeError("prctl")])
def test_a_system_without_prctl_still_starts_its_workers(
    worker_start: Recorder, failure: BaseException
) -> None:
    worker_start.failure = failure
    keygen._die_with_parent(4242, "fork")
    assert worker_start.calls[-1] == ("prctl", 1, signal.SIGKILL)
    assert worker_start.exits == []


def test_a_worker_makes_a_whole_key_of_the_size_asked() -> None:
    key = keygen._load(keygen._generate_der(2048))
    assert key.key_size == 2048
    assert key.private_numbers().public_numbers == key.public_key().public_numbers()
