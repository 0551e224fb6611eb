"""Reading the files a user points at (manifest, secret files) with bounds: a named pipe, a
device or a folder is refused at once, without waiting for a writer that may never come, and a
file larger than the caller's limit is refused without being read whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# A PEM certificate chain or private key is a few KB.
MAX_PEM_BYTES = 1 << 20


class InputFileError(Exception):
    """Why a file cannot be read as an input; the message names no path (callers place it)."""


def not_regular(path: Path) -> str | None:
    """Why `path` (followed) is no regular file to read, or None when it is one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    return f"{path} {_kind(mode)}; give a regular file"


def _kind(mode: int) -> str:
    return (
        "is a folder"
        if stat.S_ISDIR(mode)
        else "is a named pipe"
        if stat.S_ISFIFO(mode)
        else "is a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "is not a regular file"
    )


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (InputFileError past it).

    The open does not block (O_NONBLOCK: a FIFO without a writer) and the type is checked on
    the opened file (fstat), so it cannot be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise InputFileError(f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputFileError(f"{_kind(mode)}; give a regular file")
        size = os.fstat(fd).st_size
        if size > limit:
            raise InputFileError(f"is larger than {limit} bytes ({size} bytes)")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        read = 0
        while read <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - read))
            if not chunk:
                break
            chunks.append(chunk)
            read += len(chunk)
        if read > limit:  # it grew while being read
            raise InputFileError(f"is larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise InputFileError(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
