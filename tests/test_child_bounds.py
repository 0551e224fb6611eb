"""A `{command}` password program, as the user sees it: it reads nothing the operator types, its
errors stay off the operator's terminal, its whole output counts against the 4096-byte bound
(the bound itself allowed), and it is timed on the program: stopped at its deadline, never
before, and noticed as soon as it exits."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner import children
from provisioner.errors import Location, SecretError
from provisioner.manifest.model import SecretRef
from provisioner.secrets import MAX_SECRET_BYTES, resolve


def command(*argv: str, base: Path) -> SecretRef:
    return SecretRef("command", argv, base, Location("m.yaml", 3, 7))


def shell(body: str, base: Path) -> SecretRef:
    return command("sh", "-c", body, base=base)


def run(body: str, tmp_path: Path, *, timeout: float = 5.0, limit: int = 100) -> children.Finished:
    return children.run_bounded(
        ["sh", "-c", body],
        env={"PATH": os.environ["PATH"]},
        cwd=tmp_path,
        timeout=timeout,
        limit=limit,
    )


@pytest.fixture
def operator_typing() -> Iterator[None]:
    """Our standard input holds what an operator typed (a pipe with a line, then its end)."""
    read, write = os.pipe()
    os.write(write, b"typed-Secret-42\n")
    os.close(write)
    saved = os.dup(0)
    os.dup2(read, 0)
    os.close(read)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)


@pytest.mark.usefixtures("operator_typing")
def test_a_password_program_reads_nothing_the_operator_types(tmp_path: Path) -> None:
    # `cat` copies its standard input: empty for a child, so no password comes out.
    with pytest.raises(SecretError, match=r"m.yaml:3:7: pw: the secret from .* is empty"):
        resolve(command("cat", base=tmp_path), "pw")


def test_a_password_programs_errors_stay_off_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    value = resolve(shell("echo 'vault: token renewed' >&2; echo pw-Value-1", tmp_path), "pw")
    assert value == "pw-Value-1"
    assert capfd.readouterr() == ("", "")


def test_output_of_exactly_the_bound_is_a_password_one_byte_more_is_not(tmp_path: Path) -> None:
    exact = "a" * (MAX_SECRET_BYTES - 2) + "B1"
    assert resolve(shell(f"printf {exact}", tmp_path), "pw") == exact
    # The output counts whole, however the program writes it: in pieces over time, or the
    # last byte once the bound is reached.
    for body in (
        "printf %03000d 1; sleep 0.1; printf %03000d 2",
        f"printf {exact}; sleep 0.2; printf x",
    ):
        with pytest.raises(SecretError, match=r"too large \(more than 4096 bytes; it was stop"):
            resolve(shell(body, tmp_path), "pw")


def test_a_password_written_in_pieces_is_read_whole(tmp_path: Path) -> None:
    value = resolve(shell("printf pw-; sleep 0.1; printf Value-1; sleep 0.1; echo", tmp_path), "pw")
    assert value == "pw-Value-1"


def test_a_program_is_not_stopped_before_its_deadline(tmp_path: Path) -> None:
    # Within a second of its deadline, a program still running is waited for.
    done = run("sleep 0.3; echo pw-Value-1", tmp_path, timeout=0.9)
    assert done == children.Finished(0, b"pw-Value-1\n", False)


def test_a_program_that_closed_its_output_is_still_stopped_at_its_deadline(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with pytest.raises(children.Timeout):
        run("exec >&-; sleep 1", tmp_path, timeout=0.3)
    assert time.monotonic() - started < 0.9


def test_a_program_that_exited_is_noticed_at_once(tmp_path: Path) -> None:
    # The program exits after 0.2 s; what it left behind keeps its output open for 3 s.
    started = time.monotonic()
    done = run("sleep 3 & echo pw-Value-1; sleep 0.2", tmp_path)
    assert done == children.Finished(0, b"pw-Value-1\n", False)
    assert time.monotonic() - started < 0.8


def test_a_program_still_running_when_we_are_interrupted_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[children.subprocess.Popen[bytes]] = []
    popen = children.subprocess.Popen

    def recording(*args: object, **kwargs: object) -> children.subprocess.Popen[bytes]:
        process = popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(process)
        return process  # type: ignore[no-any-return]

    class Interrupted(Exception):
        pass

    class Selector(children.selectors.DefaultSelector):  # type: ignore[name-defined,misc]
        def select(self, timeout: float | None = None) -> list[object]:
            raise Interrupted  # as Ctrl-C would, while we wait for its output

    monkeypatch.setattr(children.subprocess, "Popen", recording)
    monkeypatch.setattr(children.selectors, "DefaultSelector", Selector)
    try:
        with pytest.raises(Interrupted):
            run("exec sleep 30", tmp_path)
        assert started and started[0].poll() is not None, "the program was left running"
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_waiting_for_a_program_that_closed_its_output_costs_no_cpu(tmp_path: Path) -> None:
    spent = time.process_time()
    done = run("echo pw-Value-1; exec >&-; sleep 0.6", tmp_path)
    assert done == children.Finished(0, b"pw-Value-1\n", False)
    assert time.process_time() - spent < 0.05, "a busy wait"
