"""Error types of the whole program; the CLI renders them once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


class ManifestError(ProvisionerError):
    """The manifest (or a file it references) is invalid; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


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


def error_document(
    command: str | None, code: int, kind: str, exc: BaseException | str, **extra: Any
) -> dict[str, Any]:
    """What every command prints under `--json` when it fails (the `failure` of each
    schemas/*.schema.json): `kind` is usage, error, aborted, interrupted or internal; `error`
    says where (file, line, column) when that is known, `errors` lists every diagnostic."""
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
