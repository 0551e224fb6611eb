"""Atomic, private file writes: temporary name, fsync, rename, fsync of the folder.

A crash leaves either the old file or the new one, never half of one. Files are 0600 and the
folders this module creates are 0700.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path

from provisioner import faults

FILE_MODE = 0o600
DIR_MODE = 0o700
TMP_MARK = ".provisioner-tmp-"


def make_private_dirs(path: Path) -> None:
    """Create `path` and missing parents with mode 0700 (existing folders are left as they are)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Per folder, the temporaries left by a crashed writer, by the name of the file they were for:
# each folder is listed once per process, not once per write (a shared location or the escrow
# holds thousands of files).
_STALE: dict[str, dict[str, list[str]]] = {}
_STALE_LOCK = threading.Lock()


def _remove_stale_temporaries(path: Path) -> None:
    """Temporaries of `path` left by a crashed writer (the state lock excludes a live one)."""
    folder = str(path.parent)
    with _STALE_LOCK:
        leftovers = _STALE.get(folder)
        if leftovers is None:
            leftovers = {}
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.startswith(TMP_MARK):
                            name, dot, _ = entry.name[len(TMP_MARK) :].rpartition(".")
                            if dot:
                                leftovers.setdefault(name, []).append(entry.path)
            except OSError:
                return
            _STALE[folder] = leftovers
        stale = leftovers.pop(path.name, [])
    for leftover in stale:
        with contextlib.suppress(OSError):
            os.unlink(leftover)


def create_private(path: Path, data: bytes) -> None:
    """Create `path` with `data`, mode 0600, atomically, never over anything: written under a
    temporary name, fsynced, then linked to `path` (FileExistsError when something is there,
    a symlink included)."""
    make_private_dirs(path.parent)
    tmp = path.parent / f"{TMP_MARK}{path.name}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path, follow_symlinks=False)
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def write_private(path: Path, data: bytes, *, refuse_symlink: bool = True) -> None:
    """Atomically replace `path` with `data`, mode 0600; refuse when `path` is a symlink."""
    if refuse_symlink and path.is_symlink():
        raise IsADirectoryError(f"refusing to write through a symlink: {path}")
    make_private_dirs(path.parent)
    _remove_stale_temporaries(path)
    tmp = path.parent / f"{TMP_MARK}{path.name}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    faults.reached("mid-rename")
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
