"""The typer application, the options commands share, and the small helpers of every
command wrapper (errors, colour, manifest warnings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from provisioner import __version__
from provisioner.errors import Diagnostic

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
LimitOpt = Annotated[
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
EntityArg = Annotated[str, typer.Argument(help="Entity id.", metavar="ENTITY", show_default=False)]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provisioner {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Declarative provisioning of bi-clés de chiffrement."""


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def warnings(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic]) -> None:
    for d in diagnostics:
        typer.echo(str(d), err=True)


def colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def ask_yes(question: str) -> bool:
    """Terraform's confirmation: only `yes` approves."""
    answer = typer.prompt(question, default="", show_default=False)
    return bool(answer.strip() == "yes")
