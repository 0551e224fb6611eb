"""Command line: a thin typer layer that parses, calls, renders and chooses the exit code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from provisioner import __version__
from provisioner.errors import Diagnostic, ManifestError, ProvisionerError
from provisioner.manifest.loader import read_manifest

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


def _diag_json(d: Diagnostic) -> dict[str, Any]:
    return {
        "severity": d.severity,
        "file": d.location.file,
        "line": d.location.line,
        "column": d.location.column,
        "message": d.message,
    }


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def validate(manifest: ManifestArg, as_json: JsonOpt = False) -> None:
    """Check a manifest and the files it references. Exit 0 when valid, 1 when not."""
    try:
        model, warnings = read_manifest(manifest)
    except ManifestError as exc:
        diagnostics = exc.diagnostics
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "valid": False,
                        "errors": [_diag_json(d) for d in diagnostics if d.severity == "error"],
                        "warnings": [_diag_json(d) for d in diagnostics if d.severity == "warning"],
                    },
                    indent=2,
                )
            )
        else:
            for d in diagnostics:
                typer.echo(str(d), err=True)
            count = sum(d.severity == "error" for d in diagnostics)
            typer.echo(f"{manifest}: invalid ({count} error{'s' if count != 1 else ''})", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "valid": True,
                    "errors": [],
                    "warnings": [_diag_json(d) for d in warnings],
                    "entities": len(model.entities),
                    "workstations": len(model.workstations),
                    "locations": len(model.locations),
                },
                indent=2,
            )
        )
        return
    for d in warnings:
        typer.echo(str(d), err=True)
    typer.echo(
        f"{manifest}: valid ({len(model.entities)} entities, {len(model.workstations)} "
        f"workstations, {len(model.locations)} shared locations"
        f"{f', {len(warnings)} warnings' if warnings else ''})"
    )


def main() -> None:
    """Console entry point: runs the app and turns known errors into messages, not tracebacks."""
    try:
        # Standalone mode handles usage errors (exit 2), --help and typer.Exit itself.
        app(prog_name="provisioner")
    except ProvisionerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a genuine bug: say so in one line unless debugging
        if os.environ.get("PROVISIONER_DEBUG"):
            raise
        typer.echo(
            f"Internal error: {type(exc).__name__}: {exc} (set PROVISIONER_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(1)
