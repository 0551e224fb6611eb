"""The typer application, the options commands share, and the small helpers of every
command wrapper (errors, colour, manifest warnings)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from provisioner import __version__
from provisioner.errors import Diagnostic, Interrupted, InterruptedAtPrompt, UsageError

app = typer.Typer(
    name="provisioner",
    help=(
        "Declarative provisioning of procurement encryption key pairs (bi-clés de chiffrement): "
        "generate, renew, escrow and distribute password-protected PKCS#12 files to shared "
        "locations and agent workstations, and keep every key still bound to an open "
        "consultation."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ManifestArg = Annotated[
    Path, typer.Argument(help="Manifest file (YAML).", show_default=False, metavar="MANIFEST")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State folder (default: $PROVISIONER_STATE_DIR, else "
        ".provisioner/ beside the manifest).",
        show_default=False,
    ),
]
StateBackendOpt = Annotated[
    str | None,
    typer.Option(
        "--state-backend",
        help="sqlite or postgresql (default: $PROVISIONER_STATE_BACKEND, else the manifest's "
        "state, else sqlite); postgresql takes the manifest's dsn and schema, or "
        "$PROVISIONER_STATE_DSN and $PROVISIONER_STATE_SCHEMA.",
        metavar="BACKEND",
        show_default=False,
    ),
]
LimitOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--limit",
        help="Only this entity (all its copies), or workstation, group or shared location "
        "(only the copies there, of the entities that have one; what concerns all of an "
        "entity's targets, such as a new key, is held back). Repeat for several.",
        show_default=False,
    ),
]
# recover and audit: entities only (a state is rebuilt from every copy of an entity).
EntityLimitOpt = Annotated[
    list[str] | None,
    typer.Option("--limit", help="Only this entity (repeat for several).", show_default=False),
]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", min=1, max=256, help="Targets handled at once.")
]
LockTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--lock-timeout",
        min=0,
        help="Seconds to wait for another apply to finish (0: fail at once).",
    ),
]
ConsultationsOpt = Annotated[
    Path | None,
    typer.Option(
        "--consultations",
        help="Consultations file (YAML or CSV) instead of the one the manifest names.",
        metavar="FILE",
        show_default=False,
    ),
]
PasswordEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--password-env",
        metavar="NAME",
        show_default=False,
        help="Environment variable holding the PKCS#12 password, instead of the entity's password.",
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        metavar="PATH",
        show_default=False,
        help="File whose first line is the PKCS#12 password, instead of the entity's password.",
    ),
]


def _set_quiet(value: bool) -> bool:
    OUTPUT.quiet = OUTPUT.quiet or value
    if OUTPUT.quiet and OUTPUT.verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    return value


def _set_verbose(value: bool) -> bool:
    OUTPUT.verbose = OUTPUT.verbose or value
    if OUTPUT.quiet and OUTPUT.verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    return value


# The global -q/-v, also accepted after the command's name (`provisioner plan x.yaml -q`).
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", callback=_set_quiet, help="Print only errors and the final line."
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        callback=_set_verbose,
        help="Print the per-action detail too (plan, apply: each entity already in sync).",
    ),
]
EntityArg = Annotated[str, typer.Argument(help="Entity id.", metavar="ENTITY", show_default=False)]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provisioner {__version__}")
        raise typer.Exit(0)


@dataclass
class Output:
    """How much the command says, from the global options: quiet prints only errors and the
    final line; verbose adds the per-action detail where a command has it (the plan's lines
    for what is in sync, the plan of an apply)."""

    quiet: bool = False
    verbose: bool = False


# This process's command (one a process): set by the root callback, read by the wrappers.
OUTPUT = Output()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print only errors and the final line (scheduled jobs)."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Print the per-action detail where there is one."),
    ] = False,
) -> None:
    """Declarative provisioning of bi-clés de chiffrement."""
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    # Runs first, before the command's own -q/-v: a fresh context for each invocation (the
    # tests call the app many times in one process).
    OUTPUT.quiet, OUTPUT.verbose = quiet, verbose


class CommandFailed(UsageError):
    """A wrapper's refusal (a missing option, no terminal to confirm): main() prints it as
    `Error: ...`, or as the error document under --json (kind usage)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def fail(message: str, code: int = 1) -> NoReturn:
    raise CommandFailed(message, code)


def warnings(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic]) -> None:
    for d in diagnostics:
        typer.echo(str(d), err=True)


def colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def ask_yes(question: str) -> bool:
    """Terraform's confirmation: only `yes` approves. Ctrl-C here is InterruptedAtPrompt:
    nothing was done before the question."""
    try:
        answer = typer.prompt(question, default="", show_default=False)
    except Interrupted:
        raise InterruptedAtPrompt from None
    return bool(answer.strip() == "yes")
