"""Where the escrow keeps its sealed blobs (the keyring and one sealed key each): a folder of
files (`FolderBlobs`, the SQLite state's `escrow/`) or a table of the PostgreSQL schema
(`state/pg.py`). The escrow seals and checks every byte itself; a store only keeps names and
bytes: read (bounded), write durably, list, delete."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provisioner.atomic import write_private
from provisioner.errors import StateError

MAX_BLOB_BYTES = 64 * 1024  # a keyring or a sealed key is a few KB


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """One name of a store's listing: `regular` is False for a folder, a symlink or a device
    at that name (named, never read); `is_file` follows a symlink."""

    name: str
    size: int
    regular: bool
    is_file: bool


class SealedBlobs(Protocol):
    """Named sealed blobs. Errors: `read` raises FileNotFoundError for a name that is not
    there and OSError when it cannot be read; `write` and `delete` raise StateError naming the
    place and what to do."""

    def where(self, name: str | None = None) -> str:
        """The store, or one of its names, as messages show it."""
        ...

    def exists(self, name: str) -> bool: ...

    def read(self, name: str) -> bytes:
        """At most MAX_BLOB_BYTES + 1 bytes of `name` (the caller refuses a larger blob)."""
        ...

    def write(self, name: str, data: bytes, what: str) -> None:
        """Store `data` under `name` durably (fsynced, or committed) before returning."""
        ...

    def listing(self) -> list[BlobEntry]:
        """Every name there (an absent store is empty)."""
        ...

    def delete(self, name: str) -> None: ...


class FolderBlobs:
    """A folder of files, each written atomically (temporary name, fsync, rename), 0600 in a
    0700 folder (`atomic.write_private`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def where(self, name: str | None = None) -> str:
        return str(self.folder if name is None else self.folder / name)

    def exists(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def read(self, name: str) -> bytes:
        with (self.folder / name).open("rb") as handle:
            return handle.read(MAX_BLOB_BYTES + 1)

    def write(self, name: str, data: bytes, what: str) -> None:
        path = self.folder / name
        try:
            write_private(path, data)
        except OSError as exc:
            fix = "free space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the cause"
            raise StateError(
                f"{path}: cannot write {what}: {exc.strerror or exc}; the file is unchanged: "
                f"{fix}, then run the command again"
            ) from None

    def listing(self) -> list[BlobEntry]:
        """One scandir (and one lstat per name); a missing folder is empty."""
        out: list[BlobEntry] = []
        try:
            with os.scandir(self.folder) as entries:
                for e in entries:
                    regular = e.is_file(follow_symlinks=False)
                    size = e.stat(follow_symlinks=False).st_size if regular else 0
                    out.append(BlobEntry(e.name, size, regular, regular or e.is_file()))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StateError(f"{self.folder}: cannot list the escrow: {exc.strerror}") from None
        return out

    def delete(self, name: str) -> None:
        try:
            (self.folder / name).unlink(missing_ok=True)
        except OSError as exc:
            raise StateError(f"{self.folder / name}: cannot remove it: {exc.strerror}") from None


def blobs_at(place: Path | SealedBlobs) -> SealedBlobs:
    """A folder given as a path is a FolderBlobs; a store is itself."""
    return FolderBlobs(place) if isinstance(place, Path) else place
