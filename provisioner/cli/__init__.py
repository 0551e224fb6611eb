"""Command line: a thin typer layer that parses, calls, renders and chooses the exit code.

Each command is a wrapper of a few lines in `read.py` (commands that change nothing),
`write.py` or `apply.py`, calling one function that holds its logic beside its concern
(`provisioner/commands.py`, `apply/run.py`, `recover/`, `adopt.py`, `transports/trust.py`).
The commands are registered here, in the order `--help` lists them."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import signal
import sys
from typing import NoReturn

import typer

from provisioner.cli import apply, read, write
from provisioner.cli.app import app
from provisioner.errors import ProvisionerError

for command in (
    read.validate,
    read.plan,
    apply.apply,
    read.status,
    read.check,
    read.rehearse,
    write.rekey,
    write.trust,
    write.recover,
    write.adopt,
    write.export,
    read.report,
    read.inventory,
):
    app.command()(command)

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point: runs the app and turns known errors into messages, not tracebacks."""
    os.umask(0o077)  # whatever this process creates is private
    signal.signal(signal.SIGINT, _interrupt)
    # Region-scale runs allocate hundreds of thousands of long-lived objects and few cycles:
    # collect the young generation less often.
    gc.set_threshold(50_000, 50, 100)
    try:
        # Standalone mode handles usage errors (exit 2), --help and typer.Exit itself.
        app(prog_name="provisioner")
    except SystemExit as exc:
        _leave(exc.code)
    except ProvisionerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        _leave(exc.exit_code)
    except Interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the message
        typer.echo(
            "\nInterrupted (Ctrl-C). What was recorded before is kept, an unfinished step was "
            "rolled back, and no file is half-written (writes are atomic). Run "
            "`provisioner plan` to see what remains, or the command again.",
            err=True,
        )
        _leave(130)
    except Exception as exc:  # a genuine bug: say so in one line unless debugging
        if os.environ.get("PROVISIONER_DEBUG"):
            raise
        typer.echo(
            f"Internal error: {type(exc).__name__}: {exc} (set PROVISIONER_DEBUG=1 for details)",
            err=True,
        )
        _leave(1)
    _leave(0)


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt, which click would turn into a bare "Aborted!"; a
    BaseException, so that no `except Exception` on the way swallows it."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def _leave(code: object) -> NoReturn:
    """Exit with `code` without tearing the heap down object by object.

    At region scale the interpreter's own teardown frees about a million objects (0.1 s at
    1,000 entities) that the kernel reclaims at once anyway. Everything that matters has
    happened by then: the state database and lock are closed by the commands, exit handlers
    (process pools, threads) run here, and the output streams are flushed."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message")
        sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status)
