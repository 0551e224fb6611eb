"""Error types of the whole program; the CLI renders them once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Location:
    """Where a problem is: a file position, or an entity/target path."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One error or warning with its location."""

    severity: str  # "error" or "warning"
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class ProvisionerError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 1


class UsageError(ProvisionerError):
    """The command line asks for what cannot be: a bad or missing value, options that exclude
    each other, a confirmation nobody can give (--json, no terminal)."""


class ManifestError(ProvisionerError):
    """The manifest (or a file it references) is invalid; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class UnknownNameError(ManifestError, UsageError):
    """A name given on the command line (--limit, ENTITY, TARGET) that the manifest does not
    declare: a usage error, placed at the manifest it was looked up in."""


class NoAnswer(ProvisionerError):
    """A prompt got no answer (end of input)."""


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt, which click would turn into a bare "Aborted!"; a
    BaseException, so that no `except Exception` on the way swallows it."""


class InterruptedAtPrompt(Interrupted):
    """Ctrl-C while a confirmation was asked (apply, recover): nothing was done yet."""


class SecretError(ProvisionerError):
    """A secret reference could not be resolved or breaks the password policy."""


class CryptoError(ProvisionerError):
    """A key, certificate or PKCS#12 file is unusable; the message says why."""


class WrongPasswordError(CryptoError):
    """The password does not open the PKCS#12 file."""


class CorruptFileError(CryptoError):
    """The file is not a readable PKCS#12 / certificate."""


class KeyMismatchError(CryptoError):
    """The private key does not belong to the certificate."""


class UnsupportedAlgorithmError(CryptoError):
    """The key or file uses an algorithm this tool does not handle."""


class TooCostlyError(UnsupportedAlgorithmError):
    """The file declares more key-derivation work than any file this tool opens."""


class StateError(ProvisionerError):
    """The state database or escrow is unusable."""


class NoStateError(StateError):
    """A command that reads the state found none where it looked: one sentence for every
    command, saying where it looked, what it cannot do, and the three ways on."""

    def __init__(self, where: object, cannot: str) -> None:
        super().__init__(
            f"{where}: no state there, so {cannot}: apply first, or point --state-dir (or the "
            "manifest's `state:`) at the state; a lost state: provisioner recover "
            "(docs/RECOVERY.md)"
        )


class WrongPassphraseError(StateError):
    """The escrow passphrase does not open the escrow's keyring."""


class UnitError(StateError):
    """State and escrow are not one unit (lost state, missing keyring, another lineage, a
    state older than its escrow): nothing runs until `recover` or a restore."""


class LockError(ProvisionerError):
    """Another apply holds the state lock."""


class StalePlanError(ProvisionerError):
    """A saved plan no longer matches the state, inputs or targets."""


class TransportError(ProvisionerError):
    """A target could not be read or written."""


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    return {
        "severity": d.severity,
        "file": d.location.file,
        "line": d.location.line,
        "column": d.location.column,
        "message": d.message,
    }


ErrorKind = Literal[
    "usage",
    "invalid",
    "secret",
    "state",
    "locked",
    "stale",
    "error",
    "aborted",
    "interrupted",
    "internal",
]

# The one table from a fault to the `kind` of its JSON error document, the same for every
# command (the enum of `$defs.failure` in every schemas/*.schema.json, in this order; the
# first class that matches wins). A usage error click finds is given as a UsageError.
ERROR_KINDS: tuple[tuple[type[BaseException], ErrorKind, str], ...] = (
    (
        UsageError,
        "usage",
        "the command line: an unknown option or command, a bad or missing value, options "
        "that exclude each other, a name the manifest does not declare, a confirmation "
        "nobody can give (--json or no terminal without --auto-approve)",
    ),
    (
        ManifestError,
        "invalid",
        "an input file is invalid (the manifest, a file it references, the consultations "
        "file), with its file, line and column",
    ),
    (
        SecretError,
        "secret",
        "a secret could not be read, or a password or passphrase is refused by its policy",
    ),
    (
        StateError,
        "state",
        "the state or escrow: none there, unreadable, not one unit, or a wrong escrow "
        "passphrase (docs/RECOVERY.md)",
    ),
    (LockError, "locked", "another apply holds the state's lock: try again later"),
    (StalePlanError, "stale", "a saved plan no longer matches: make a new plan"),
    (NoAnswer, "aborted", "a prompt got no answer (end of input)"),
    (
        ProvisionerError,
        "error",
        "anything else to fix before running again: a file that cannot be adopted or "
        "written, a target that cannot be read",
    ),
    (Interrupted, "interrupted", "Ctrl-C, with what was done before it"),
    (BaseException, "internal", "a bug: report it"),
)


def error_kind(exc: BaseException) -> ErrorKind:
    """The `kind` of `exc`'s error document (ERROR_KINDS)."""
    return next(kind for cls, kind, _ in ERROR_KINDS if isinstance(exc, cls))


def error_document(
    command: str | None, code: int, exc: BaseException, **extra: Any
) -> dict[str, Any]:
    """What every command prints under `--json` when it fails (the `failure` of each
    schemas/*.schema.json): `kind` from ERROR_KINDS; `error` says where (file, line, column)
    when that is known, `errors` lists every diagnostic."""
    kind = error_kind(exc)
    diagnostics = exc.diagnostics if isinstance(exc, ManifestError) else []
    errors = [diagnostic_json(d) for d in diagnostics if d.severity == "error"]
    first = errors[0] if errors else None
    error: dict[str, Any] = {
        "kind": kind,
        "message": first["message"] if first else (str(exc) or type(exc).__name__),
        "file": first["file"] if first else None,
        "line": first["line"] if first else None,
        "column": first["column"] if first else None,
    }
    return {
        "format_version": 1,
        "command": command,
        "exit_code": code,
        "error": error | extra,
        "errors": errors,
        "warnings": [diagnostic_json(d) for d in diagnostics if d.severity == "warning"],
    }
