"""The local transport: folders on this machine and mounted shares."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from provisioner.atomic import write_private
from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transports.base import FileFacts


class LocalTransport:
    def __init__(self, target: Target) -> None:
        self.target = target

    def _fail(self, action: str, path: str, exc: OSError) -> TransportError:
        reason = exc.strerror or str(exc)
        return TransportError(f"{self.target.name}: cannot {action} {path}: {reason}")

    def observe(self, path: str) -> FileFacts | None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise self._fail("inspect", path, exc) from None
        if stat.S_ISLNK(info.st_mode):
            return FileFacts(info.st_size, "", stat.S_IMODE(info.st_mode), symlink=True)
        if not stat.S_ISREG(info.st_mode):
            return FileFacts(info.st_size, "", stat.S_IMODE(info.st_mode), symlink=True)
        try:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise self._fail("read", path, exc) from None
        return FileFacts(info.st_size, digest, stat.S_IMODE(info.st_mode))

    def write(self, path: str, data: bytes) -> FileFacts:
        try:
            write_private(Path(path), data)
        except IsADirectoryError as exc:
            raise TransportError(f"{self.target.name}: {exc}") from None
        except OSError as exc:
            raise self._fail("write", path, exc) from None
        return FileFacts(len(data), hashlib.sha256(data).hexdigest(), 0o600)

    def read(self, path: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise self._fail("read", path, exc) from None

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("remove", path, exc) from None

    def close(self) -> None:
        return None
