"""Command line: a thin typer layer that parses, calls, renders and chooses the exit code.

Each command is a wrapper of a few lines in `read.py` (commands that change nothing),
`write.py` or `apply.py`, calling the one module of `provisioner/flows/` that holds its
logic (`trust`: `transports/trust.py`, the host-key policy; `report`: `report/`).
The commands are registered here, in the order `--help` lists them."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from provisioner import errors
from provisioner.cli import apply, read, write
from provisioner.cli.app import app
from provisioner.cli.document import emit, error_document, json_command
from provisioner.errors import Interrupted, InterruptedAtPrompt, ProvisionerError

try:  # typer 0.28 vendors click; earlier versions use it
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - typer < 0.28
    from click.exceptions import (  # type: ignore[import-not-found,no-redef,assignment,unused-ignore]
        ClickException,
        UsageError,
    )

for command in (
    write.init,
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
    read.audit,
    read.report,
    read.inventory,
):
    app.command()(command)

# `provisioner state ...`: what concerns the state itself (today: moving it between backends).
state_app = typer.Typer(
    name="state",
    help="The state itself: copy it between SQLite and PostgreSQL.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
state_app.command("migrate")(write.state_migrate)
app.add_typer(state_app, name="state", short_help="Copy the state between SQLite and PostgreSQL.")

# One line each in `provisioner --help` (click cuts a longer first sentence with "..."):
# at most 60 characters, so that the list fits 80 columns.
SUMMARIES = {
    "init": "Write a starter manifest, consultations and DEMO secrets.",
    "validate": "Check a manifest and the files it references.",
    "plan": "Show what apply would do, and why. Changes nothing.",
    "apply": "Create or renew keys, escrow them, write and remove copies.",
    "status": "Keys, generations, validity and every copy, per entity.",
    "check": "Monitoring probe (Nagios/Icinga): OK, WARNING, CRITICAL.",
    "rehearse": "Rehearse bid opening: every copy must open a test bid.",
    "rekey": "Rotate the escrow passphrase.",
    "trust": "Record SSH host keys in the manifest's known_hosts files.",
    "recover": "Rebuild a lost or older state and escrow from the copies.",
    "adopt": "Bring an existing bi-clé (PKCS#12) under management.",
    "export": "Export a PKCS#12, or the certificate for the platform.",
    "audit": "The audit log: who changed what, and when.",
    "report": "One HTML page: keys and consultations on a timeline.",
    "inventory": "Hosts and the copies their key stores must hold.",
}
# One example at the end of each command's --help (tests/test_validate_files.py runs each
# with --help appended, so an option renamed here fails a test).
EXAMPLES = {
    "init": "provisioner init region",
    "validate": "provisioner validate region.yaml",
    "plan": "provisioner plan region.yaml --out change.plan --detailed-exitcode",
    "apply": "provisioner apply change.plan",
    "status": "provisioner status region.yaml --json",
    "check": "provisioner check region.yaml --warn-days 30 --critical-days 7",
    "rehearse": "provisioner rehearse region.yaml --limit commune-a",
    "rekey": "provisioner rekey region.yaml --new-passphrase-env NEW_ESCROW_PASSPHRASE",
    "trust": "provisioner trust region.yaml ws-01 --fingerprint SHA256:...",
    "recover": "provisioner recover region.yaml",
    "adopt": "provisioner adopt region.yaml commune-a old.pfx --password-env OLD_PW",
    "export": "provisioner export region.yaml commune-a --format der --out commune-a.cer",
    "audit": "provisioner audit region.yaml --limit commune-a --since 01/01/2027",
    "report": "provisioner report region.yaml --out report.html --plan change.plan",
    "inventory": "provisioner inventory region.yaml --json",
    "state migrate": "provisioner state migrate --to postgresql region.yaml",
}
for _group, _command in [
    *(("", c) for c in app.registered_commands),
    *(("state ", c) for c in state_app.registered_commands),
]:
    _name = _group + str(_command.name or getattr(_command.callback, "__name__", ""))
    _command.short_help = _command.short_help or SUMMARIES.get(_name)
    if _name in EXAMPLES and not _command.epilog:
        # A paragraph that starts with \b is printed as written, not rewrapped, by click.
        _command.epilog = f"\b\nExample:\n  {EXAMPLES[_name]}"

__all__ = ["app", "main", "run"]


_PR_SET_DUMPABLE = 4


def no_core_dumps() -> None:
    """A crash leaves no core file holding a password, a private key or the escrow's data key:
    the core size limit is 0 (inherited by every child: a `command` secret's program too) and,
    on Linux, the process is not dumpable (no core, and no other process of the same user may
    read its memory through ptrace or /proc/PID/mem)."""
    import resource

    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def main() -> None:
    """Console entry point: runs the app and turns known errors into messages, not tracebacks."""
    os.umask(0o077)  # whatever this process creates is private
    no_core_dumps()
    signal.signal(signal.SIGINT, _interrupt)
    # Region-scale runs allocate hundreds of thousands of long-lived objects and few cycles:
    # collect the young generation less often.
    gc.set_threshold(50_000, 50, 100)
    from provisioner.logs import keep_off_terminal

    keep_off_terminal()  # a library's own logging never reaches the operator's terminal
    _leave(run(sys.argv[1:]))


@functools.cache
def _click_command() -> Callable[..., Any]:
    """The command line as click runs it, built from `app` once per process (typer builds it
    anew at each call: some 25 ms of signatures and type hints, paid per command by the tests
    that run commands in-process)."""
    return typer.main.get_command(app)


def run(argv: list[str]) -> int:
    """Run one command line (`provisioner ARGV`) and return its exit code: every known error
    becomes its message on stderr (and its JSON document under --json), never a traceback.
    `main` adds what belongs to a process (umask, Ctrl-C, exit); tests that must see the
    program in-process (mutation testing) call this."""
    as_json, command = json_command(argv)

    def document(code: int, exc: BaseException, **extra: object) -> None:
        if as_json:  # the one JSON document on stdout, whatever failed (kind: ERROR_KINDS)
            emit(error_document(command, code, exc, **extra))

    try:
        # Not standalone: click would exit 2 on a usage error, the code that means "changes
        # pending" under --detailed-exitcode. typer.Exit(n) comes back as n.
        code = _click_command()(args=argv, prog_name="provisioner", standalone_mode=False)
    except SystemExit as exc:
        return _status(exc.code)
    except UsageError as exc:  # unknown option, missing argument, bad value
        exc.show()
        # A probe's usage error is UNKNOWN (3) to the monitoring, as for any input it cannot use.
        status = 3 if exc.ctx is not None and exc.ctx.info_name == "check" else 1
        document(status, errors.UsageError(exc.format_message()))
        return status
    except ClickException as exc:
        exc.show()
        document(1, errors.UsageError(exc.format_message()))
        return 1
    except typer.Abort:  # end of input at a prompt
        typer.echo("\nAborted.", err=True)
        document(1, errors.NoAnswer("aborted: no answer at the prompt"))
        return 1
    except ProvisionerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        document(exc.exit_code, exc)
        return exc.exit_code
    except InterruptedAtPrompt as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        typer.echo("\nInterrupted (Ctrl-C) at the prompt: nothing was done.", err=True)
        document(130, exc, message="interrupted (Ctrl-C) at the prompt: nothing was done")
        return 130
    except Interrupted as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the message
        typer.echo(
            "\nInterrupted (Ctrl-C). What was recorded before is kept, an unfinished step was "
            "rolled back, and no file is half-written (writes are atomic). Run "
            "`provisioner plan` to see what remains, or the command again.",
            err=True,
        )
        from provisioner.progress import done_so_far

        done = done_so_far()
        if done:
            typer.echo(f"Done before the interruption: {done}; the rest was not done.", err=True)
        document(130, exc, message="interrupted (Ctrl-C)", done=done)
        return 130
    except Exception as exc:  # a genuine bug: say so in one line unless debugging
        if os.environ.get("PROVISIONER_DEBUG"):
            raise
        message = f"Internal error: {type(exc).__name__}: {exc}"
        typer.echo(f"{message} (set PROVISIONER_DEBUG=1 for details)", err=True)
        document(1, exc, message=message)
        return 1
    return code if isinstance(code, int) else 0


def _status(code: object) -> int:
    """The exit status of `sys.exit(code)`: None is 0, a message is printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def _leave(status: int) -> NoReturn:
    """Exit with `status` without tearing the heap down object by object.

    At region scale the interpreter's own teardown frees about a million objects (0.1 s at
    1,000 entities) that the kernel reclaims at once anyway. Everything that matters has
    happened by then: the state database and lock are closed by the commands, exit handlers
    (process pools, threads) run here, and the output streams are flushed."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status)
