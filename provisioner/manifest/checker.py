"""The loader's diagnostics collector and its checks of paths, names and secret references."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from provisioner.errors import Diagnostic
from provisioner.manifest import model as m
from provisioner.manifest.names import _WINDOWS_ABS, file_name_problem, name_problem
from provisioner.manifest.schema import dotted
from provisioner.manifest.yamlpos import Positions


class Checker:
    """Collects diagnostics while building the model, so every problem is reported at once.

    Problems are kept with the document path they concern and placed (file:line:column) by
    `diagnostics()`, against the full positions of the document."""

    def __init__(self, positions: Positions, base_dir: Path) -> None:
        self.pos = positions
        self.child_env = m.MINIMAL_ENVIRONMENT  # set by read_manifest before secrets are built
        self.raw_groups: dict[str, Any] = {}  # as written: lists or {members, install}
        self.base_dir = base_dir
        self.base = str(base_dir)
        self.found: list[tuple[str, tuple[str | int, ...], bool, str]] = []
        # Relative paths with no empty, '.' or '..' part join the base as they are.
        self.clean_base = self.base == os.path.normpath(self.base) and self.base != "/"

    def error(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        self.found.append(("error", path, key, f"{dotted(path)}: {message}"))

    def warning(self, path: tuple[str | int, ...], message: str) -> None:
        self.found.append(("warning", path, False, f"{dotted(path)}: {message}"))

    def diagnostics(self, positions: Positions) -> list[Diagnostic]:
        placed = [
            Diagnostic(severity, positions.at(path, key=key), message)
            for severity, path, key, message in self.found
        ]
        return sorted(placed, key=lambda d: (d.location.line or 0, d.location.column or 0))

    def local_path(self, raw: str, path: tuple[str | int, ...]) -> Path:
        """A local path: absolute, or relative to the manifest; never through `..`."""
        return Path(self.local_str(raw, path))

    def local_str(self, raw: str, path: tuple[str | int, ...]) -> str:
        parts = raw.split("/")
        if not raw.isprintable():
            self.error(path, "path contains control characters")
        elif "\\" in raw or (raw[1:2] == ":" and raw[:1].isalpha()):  # C:\x, C:/x
            self.error(
                path,
                f"{raw!r} is a Windows path: local paths are on this machine (POSIX, forward "
                "slashes); a Windows workstation is reached with an ssh target "
                "(path: C:/ProgramData/...)",
            )
        elif ".." in parts:
            self.error(path, f"unsafe path {raw!r}: '..' may not be used to leave a folder")
        elif raw[:1] == "~":
            self.error(
                path,
                f"{raw!r}: a leading '~' is not a home folder here (it would be a folder named "
                "'~' beside the manifest): write the absolute path",
            )
        if self.clean_base and raw[:1] != "/" and "" not in parts and "." not in parts:
            return f"{self.base}/{raw}"  # what normpath would return, without its cost
        return os.path.normpath(raw if os.path.isabs(raw) else os.path.join(self.base, raw))

    def remote_path(self, raw: str, path: tuple[str | int, ...]) -> str:
        if "\\" in raw:
            self.error(path, f"remote path {raw!r} must use forward slashes (C:/ProgramData/...)")
        elif not (raw.startswith("/") or _WINDOWS_ABS.match(raw)):
            self.error(path, f"remote path {raw!r} must be absolute (/srv/... or C:/...)")
        elif ".." in PurePosixPath(raw).parts or not raw.isprintable():
            self.error(path, f"unsafe remote path {raw!r}")
        elif _WINDOWS_ABS.match(raw):
            for part in raw[3:].split("/"):
                problem = file_name_problem(part) if part else None
                if problem:
                    self.error(path, f"remote path {raw!r}: {problem}")
                    break
        return raw.rstrip("/") or "/"

    def name(self, text: str | None, path: tuple[str | int, ...], what: str) -> None:
        """Refuse control, format and separator characters in a name (see name_problem)."""
        problem = name_problem(text) if text else None
        if problem:
            self.error(path, f"{what} {problem}")

    def secret(self, raw: dict[str, Any], path: tuple[str | int, ...]) -> m.SecretRef:
        kind, value = next(iter(raw.items()))
        if kind == "command":
            return m.SecretRef(
                "command", tuple(value), self.base_dir, self.pos.at(path), self.child_env
            )
        if kind == "file":
            self.local_path(value, (*path, "file"))
        return m.SecretRef(kind, value, self.base_dir, self.pos.at(path))
