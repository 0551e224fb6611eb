"""The JSON contract of every command under `--json`: one document on stdout, whether the
command succeeds or fails, with `format_version` (schemas/<command>.schema.json). A failure is
`{"format_version": 1, "command": ..., "exit_code": ..., "error": {...}, "errors": [...]}`, the
same for every command; `error` says where (file, line, column) when that is known."""

from __future__ import annotations

from typing import Any

import typer

from provisioner.errors import diagnostic_json, error_document
from provisioner.jsondoc import dumps

__all__ = ["diagnostic_json", "emit", "error_document", "json_command"]


def emit(document: dict[str, Any], *, ascii_only: bool = False) -> None:
    """Print one document, `format_version` first."""
    typer.echo(dumps(document, ascii_only=ascii_only))


def json_command(argv: list[str]) -> tuple[bool, str | None]:
    """Whether `--json` was given, and the command's name (the first word not an option; of
    a group, `state migrate`, its two words), read from the raw arguments: a usage error is
    found before any option is parsed."""
    words = [a for a in argv if not a.startswith("-")]
    if words[:1] == ["state"] and len(words) > 1:
        return "--json" in argv, f"state {words[1]}"
    return "--json" in argv, (words[0] if words else None)
