"""Exit codes as Terraform's: 0 success or no changes, 1 error (usage errors included), 2 changes
pending only under `plan --detailed-exitcode`; a declined apply is 1; Ctrl-C is 130."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, TEST_CLOCK, Runner, run_in_process


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--detailed-exitcode", "--limt", "x"],  # the typo
        ["plan", "--detailed-exitcode", "--parallel", "0"],  # a value out of range
        ["plan", "--detailed-exitcode"],  # the manifest missing
        ["nosuch"],  # no such command
        ["apply", "--nosuch"],
    ],
)
def test_a_usage_error_is_an_error_not_changes_pending(
    cli: Runner, quickstart: Path, args: list[str]
) -> None:
    extra = [] if args == ["nosuch"] or args[-1] == "--detailed-exitcode" else [quickstart]
    done = cli(*args, *extra)
    assert done.returncode == 1, done.stderr
    assert "Error:" in done.stderr and "Traceback" not in done.stderr
    # The HOWTO's idiom for scheduled plans does not take a typo for "changes pending".
    idiom = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m provisioner {' '.join(args)} || [ $? -eq 2 ]"],
        capture_output=True,
        check=False,
    )
    assert idiom.returncode != 0


def test_a_usage_error_of_the_probe_is_unknown(cli: Runner, quickstart: Path) -> None:
    done = cli("check", "--warn-days", "soon", quickstart)
    assert done.returncode == 3, done.stderr


def test_detailed_exitcode_two_only_for_changes(cli: Runner, quickstart: Path) -> None:
    assert cli("plan", quickstart).returncode == 0
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 2
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0
    assert cli("--version").returncode == 0
    assert cli("plan", "--help").returncode == 0


def start_in_terminal(
    args: list[str], cwd: Path, text: bool = False
) -> tuple[subprocess.Popen[Any], int]:
    """Start the CLI with a terminal on standard input (apply and recover ask only there), at
    the suite's pinned clock; the process and the terminal's side to type into."""
    main, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PROVISIONER_NOW"] = TEST_CLOCK.isoformat()  # the clock `cli` runs every command at
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", *args],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        text=text,
    )
    os.close(terminal)
    return process, main


def wait_for(process: subprocess.Popen[Any], shown: bytes, seconds: float) -> bytes:
    """What the process printed until it printed `shown` (its question), or `seconds` passed."""
    assert process.stdout is not None
    out = b""
    deadline = time.monotonic() + seconds
    while shown not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1)
        if ready:
            out += os.read(process.stdout.fileno(), 65536)
    return out


def run_in_terminal(args: list[str], answer: str, cwd: Path) -> tuple[int, str, str]:
    """Run the CLI with a terminal on standard input and type `answer`."""
    process, main = start_in_terminal(args, cwd, text=True)
    time.sleep(0.5)
    os.write(main, answer.encode() + b"\n")
    out, err = process.communicate(timeout=120)
    os.close(main)
    return process.returncode, out, err


def test_a_declined_apply_exits_1_and_changes_nothing(quickstart: Path) -> None:
    code, out, err = run_in_terminal(["apply", str(quickstart)], "no", quickstart.parent)
    assert code == 1, out + err
    assert "Apply cancelled." in err
    assert "Plan: " in out
    assert not (quickstart.parent / "demo-out").exists()
    assert not (quickstart.parent / ".provisioner").exists()  # nothing written before "yes"
    code, out, err = run_in_terminal(["apply", str(quickstart)], "yes", quickstart.parent)
    assert code == 0, out + err
    assert list((quickstart.parent / "demo-out").rglob("*.p12"))


def test_a_declined_recover_exits_1_and_records_nothing(quickstart: Path) -> None:
    """The state lost; `recover` in a terminal shows what it would record, the operator says
    no: exit 1, "Recover cancelled.", no state made; "yes" then records it."""
    code, out, err = run_in_terminal(
        ["apply", "--auto-approve", str(quickstart)], "", quickstart.parent
    )
    assert code == 0, out + err
    shutil.rmtree(quickstart.parent / ".provisioner")
    code, out, err = run_in_terminal(["recover", str(quickstart)], "no", quickstart.parent)
    assert code == 1, out + err
    assert "Recover cancelled." in err
    assert "Recover: 2 generations, 5 copies, 2 keys back into the escrow; 0 lost." in out
    assert not (quickstart.parent / ".provisioner" / "state.db").exists()
    code, out, err = run_in_terminal(["recover", str(quickstart)], "yes", quickstart.parent)
    assert code == 0, out + err
    assert (quickstart.parent / ".provisioner" / "state.db").is_file()


def test_the_readme_table_lists_the_exit_codes() -> None:
    readme = (REPO / "README.md").read_text()
    for row in ("130 when interrupted", "Apply cancelled", "--detailed-exitcode", "4 (partial)"):
        assert row in readme


def test_ctrl_c_at_the_approval_prompt_says_nothing_was_done(quickstart: Path) -> None:
    """Issue 31: Ctrl-C at apply's question said "an unfinished step was rolled back"; nothing
    had been done, and nothing is written (not even a state folder)."""
    process, main = start_in_terminal(["apply", str(quickstart)], quickstart.parent)
    assert b"Only 'yes' will be accepted" in wait_for(process, b"Only 'yes' will be accepted", 120)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    os.close(main)
    assert process.returncode == 130
    assert err.decode().strip() == "Interrupted (Ctrl-C) at the prompt: nothing was done."
    assert not (quickstart.parent / "demo-out").exists()
    assert not (quickstart.parent / ".provisioner").exists()


def test_a_recover_waiting_at_its_prompt_holds_the_lock_and_is_named(
    cli: Runner, quickstart: Path
) -> None:
    """An operator leaves `recover` at its question: the state stays locked, and an apply
    started meanwhile is refused naming that recover and its process; answered "no", recover
    writes nothing and the lock is free again."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    shutil.rmtree(quickstart.parent / ".provisioner")
    process, main = start_in_terminal(["recover", str(quickstart)], quickstart.parent)
    try:
        shown = wait_for(process, b"Record this?", 60)
        assert b"Record this?" in shown, shown
        refused = cli("apply", "--auto-approve", quickstart)
        assert refused.returncode != 0, refused.stdout
        said = " ".join(refused.stderr.split())
        assert f"pid {process.pid} (" in said and "running `recover` since" in said, said
    finally:
        os.write(main, b"no\n")
        process.communicate(timeout=120)
        os.close(main)
    assert process.returncode == 1
    assert not (quickstart.parent / ".provisioner" / "state.db").exists()
    done = cli("recover", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_recover_given_a_lock_timeout_waits_for_the_holder_then_records(
    cli: Runner, quickstart: Path
) -> None:
    """A scheduled `recover --lock-timeout 60` started while another recover waits at its
    question: it waits, and once the other is answered "no" it takes the lock and records the
    state again (without the timeout it would have been refused at once)."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    shutil.rmtree(quickstart.parent / ".provisioner")
    process, main = start_in_terminal(["recover", str(quickstart)], quickstart.parent)

    def say_no() -> None:
        # A sleep, not threading.Timer: a timed wait on a condition never wakes under
        # libfaketime's shifted clock (`make test-dates`), a sleep does.
        time.sleep(4)
        os.write(main, b"no\n")

    answer = threading.Thread(target=say_no)
    try:
        assert b"Record this?" in wait_for(process, b"Record this?", 60)
        # Meanwhile an apply without a timeout is refused at once, naming what holds the lock.
        refused = cli("apply", "--auto-approve", quickstart)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"is locked by pid {process.pid} (" in refused.stderr, refused.stderr
        assert "running `recover` since " in refused.stderr, refused.stderr
        answer.start()
        waited = cli("recover", "--auto-approve", "--lock-timeout", "60", quickstart)
    finally:
        if answer.ident is not None:
            answer.join()
        else:  # failed before answering: the recover at its prompt would wait for ever
            process.kill()
        process.communicate(timeout=120)
        os.close(main)
    assert process.returncode == 1
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert (quickstart.parent / ".provisioner" / "state.db").is_file()


def test_a_quiet_apply_held_by_conflicts_never_says_no_changes(
    cli: Runner, quickstart: Path
) -> None:
    """`apply -q` from an empty state folder beside copies another state wrote: exit 1 and
    the summary of what is held, not "No changes." (the scheduled job's one line)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    empty = quickstart.parent / "empty-state"
    done = cli("-q", "apply", "--auto-approve", "--state-dir", empty, quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == (
        "Plan: 0 to create, 0 to update, 0 to remove. 5 conflicts: apply leaves "
        "commune-exemple, syndicat-eaux alone (files this state did not write).\n"
    ), done.stdout
    assert "Left alone: commune-exemple, syndicat-eaux" in done.stderr


def test_while_recover_runs_its_lock_names_it_to_whoever_is_refused(
    cli: Runner, quickstart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a command refused by the lock prints names the holder: while `recover` reads the
    copies, the lock file says `recover` (pid, since when), as the refused apply would show.
    Run in this process, so that what recover writes there is read while it holds the lock."""
    from provisioner import clock
    from provisioner.flows import recover as flow
    from provisioner.state.lock import LOCK_NAME, refusal

    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    shutil.rmtree(quickstart.parent / ".provisioner")
    seen: list[str] = []
    scan = flow.scan

    def reading(*args: Any, **kwargs: Any) -> Any:
        state = quickstart.parent / ".provisioner"
        seen.append(str(refusal(state, (state / LOCK_NAME).read_text())))
        return scan(*args, **kwargs)

    monkeypatch.setattr(flow, "scan", reading)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PROVISIONER_NOW"] = TEST_CLOCK.isoformat()
    done = run_in_process(["recover", "--auto-approve", str(quickstart)], None, env, None)
    assert done.returncode == 0, done.stdout + done.stderr
    (said,) = seen
    assert f"is locked by pid {os.getpid()} (" in said, said
    assert f"running `recover` since {clock.iso(TEST_CLOCK)}" in said, said
