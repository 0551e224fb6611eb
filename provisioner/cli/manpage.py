"""The manual page, provisioner(1), rendered from the same help texts as `provisioner --help`
and each `provisioner COMMAND --help`: nothing is written twice, so the page cannot say
other than the help. `make man` writes it to build/man/provisioner.1; from an installed
package, `python -m provisioner.cli.manpage provisioner.1`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from typer.main import get_command

from provisioner import __version__
from provisioner.cli import app

try:  # typer 0.28 vendors click; earlier versions use it
    from typer._click import Context
except ImportError:  # pragma: no cover - typer < 0.28
    from click import Context  # type: ignore[import-not-found,no-redef,assignment,unused-ignore]

EXIT_STATUS = (
    ("0", "Success; plan with --detailed-exitcode: no change; check: OK."),
    ("1", "Error: bad input, a guard or conflict, a failed action; check: WARNING."),
    ("2", "plan --detailed-exitcode: changes pending; check: CRITICAL."),
    ("3", "check: UNKNOWN (no state, unreadable input, a usage error)."),
    ("4", "Partial: some targets could not be reached, every other one converged."),
    ("130", "Interrupted (Ctrl-C)."),
)
ENVIRONMENT = (
    ("PROVISIONER_STATE_DIR", "The state folder when --state-dir is not given."),
    (
        "PROVISIONER_STATE_BACKEND",
        "sqlite or postgresql when --state-backend is not given (else the manifest's state).",
    ),
    (
        "PROVISIONER_STATE_DSN",
        "A PostgreSQL state's connection string, instead of the manifest's state.dsn.",
    ),
    ("PROVISIONER_STATE_SCHEMA", "A PostgreSQL state's schema, instead of the manifest's."),
    ("PROVISIONER_DEBUG", "Set to 1: a bug prints its traceback."),
    ("NO_COLOR", "No colour in the plan, even on a terminal."),
)


def roff(text: str) -> str:
    """`text` as roff running text: backslashes and hyphens escaped, no line taken for a
    request (a leading dot or quote)."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in out.splitlines()
    )


def _paragraphs(text: str) -> list[str]:
    """Help text as click shows it: paragraphs separated by blank lines; a paragraph that
    starts with \\b is kept as written."""
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def _block(text: str) -> list[str]:
    lines: list[str] = []
    for paragraph in _paragraphs(text):
        if paragraph.startswith("\b"):
            lines += [".PP", ".nf", roff(paragraph.removeprefix("\b").strip("\n")), ".fi"]
        else:
            lines += [".PP", roff(" ".join(paragraph.split()))]
    return lines


def _commands(group: Any, ctx: Context, path: list[str]) -> list[str]:
    """A section per command of `group`, in `--help` order; a group's commands (`state
    migrate`) each under their whole name."""
    lines: list[str] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = Context(command, info_name=name, parent=ctx)
        if hasattr(command, "list_commands"):
            lines += _commands(command, sub, [*path, name])
            continue
        usage = " ".join([*path, name, *command.collect_usage_pieces(sub)])
        lines += [f'.SS "{roff(usage)}"', *_block(command.help or "")]
        for param in command.get_params(sub):
            record = param.get_help_record(sub)
            if record and record[0] != "--help":
                lines += [".TP", f"\\fB{roff(record[0])}\\fR", roff(" ".join(record[1].split()))]
        if command.epilog:
            lines += _block(command.epilog)
    return lines


def render() -> str:
    """provisioner(1), from the typer app's commands, in `--help` order."""
    root = get_command(app)
    ctx = Context(root, info_name="provisioner")
    lines = [
        f'.TH PROVISIONER 1 "" "provisioner {__version__}" "User Commands"',
        ".SH NAME",
        "provisioner \\- declarative provisioning of procurement encryption key pairs "
        "(bi\\-cl\\['e]s de chiffrement)",
        ".SH SYNOPSIS",
        ".B provisioner",
        "[\\fB\\-q\\fR|\\fB\\-v\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]",
        ".SH DESCRIPTION",
        *_block(root.help or ""),
        ".SH OPTIONS",
    ]
    for param in root.get_params(ctx):
        record = param.get_help_record(ctx)
        if record:
            lines += [".TP", f"\\fB{roff(record[0])}\\fR", roff(record[1])]
    lines.append(".SH COMMANDS")
    lines += _commands(root, ctx, ["provisioner"])
    lines.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", roff(meaning)]
    lines.append(".SH ENVIRONMENT")
    for variable, meaning in ENVIRONMENT:
        lines += [".TP", f"\\fB{variable}\\fR", roff(meaning)]
    lines += [
        ".SH FILES",
        ".TP",
        "\\fI.provisioner/\\fR",
        roff(
            "The state beside the manifest (state.db, escrow/, lock), unless --state-dir or "
            "PROVISIONER_STATE_DIR says otherwise. Back it up whole, and never with the escrow "
            "passphrase."
        ),
        ".SH SEE ALSO",
        roff(
            "The README and docs/ of the distribution bicle-provisioner (HOWTO, RUNBOOK, "
            "RECOVERY, MANIFEST), and the JSON schemas in the package's schemas/ folder."
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Write the page to the path given, or to standard output."""
    page = render()
    if argv:
        out = Path(argv[0])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
