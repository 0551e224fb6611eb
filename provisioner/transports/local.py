"""The local transport: folders on this machine and mounted shares."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from provisioner.atomic import DIR_MODE, fsync_dir, write_private
from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transports.base import (
    MAX_READ_BYTES,
    FileFacts,
    FolderFacts,
    Leftover,
    folder_facts,
    too_large,
)

# Filesystems whose file modes come from mount options, not from chmod: a CIFS/SMB mount
# (file_mode=), FAT and exFAT (fmask=). A CIFS mount keeps modes only with one of KEEPS_MODES.
FIXED_MODE_FILESYSTEMS = frozenset({"cifs", "smb3", "vfat", "msdos", "exfat"})
KEEPS_MODES = frozenset({"cifsacl", "modefromsid", "posix", "unix"})


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/self/mountinfo: where, what filesystem, with which options."""

    point: str
    fstype: str
    options: frozenset[str]


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo text (proc(5)): mount point, filesystem type, and the mount
    and superblock options together (a CIFS mount's `file_mode` and `cifsacl` are there)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 6:
            continue
        tail = line.split(" - ", 1)[1].split()
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        options = {o.split("=", 1)[0] for o in fields[5].split(",")}
        if len(tail) >= 3:
            options |= {o.split("=", 1)[0] for o in tail[2].split(",")}
        mounts.append(Mount(point, tail[0] if tail else "", frozenset(options)))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding `path` (absolute, symlinks resolved): the longest mount point."""
    best: Mount | None = None
    for mount in mounts:
        prefix = mount.point.rstrip("/") + "/"
        if (path == mount.point or path.startswith(prefix) or mount.point == "/") and (
            best is None or len(mount.point) >= len(best.point)
        ):
            best = mount
    return best


def mode_is_fixed(mount: Mount | None) -> bool:
    """Whether chmod cannot change file modes on `mount`: a CIFS mount without an option that
    maps modes (cifsacl, modefromsid, SMB3 POSIX or Unix extensions), FAT, exFAT."""
    if mount is None or mount.fstype not in FIXED_MODE_FILESYSTEMS:
        return False
    return not (mount.fstype in ("cifs", "smb3") and mount.options & KEEPS_MODES)


def _fixed_here(folder: str) -> bool:
    """Whether the filesystem that holds `folder` (or its nearest existing parent) fixes
    file modes, as /proc/self/mountinfo says (False where there is none: not Linux)."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    return mode_is_fixed(mount_of(os.path.realpath(folder), parse_mountinfo(text)))


class LocalTransport:
    __slots__ = ("_checked", "_mode_fixed", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self._checked = False
        # Whether chmod has no effect where the copies live: from the mount table at the first
        # observation, or seen after a write's chmod (a filesystem the table does not tell).
        self._mode_fixed: bool | None = None

    def mode_fixed(self) -> bool:
        if self._mode_fixed is None:
            self._mode_fixed = _fixed_here(self.target.path)
        return self._mode_fixed

    def _fail(self, action: str, path: str, exc: OSError) -> TransportError:
        reason = exc.strerror or str(exc)
        return TransportError(f"{self.target.name}: cannot {action} {path}: {reason}")

    def _check_folder(self) -> None:
        # A symlinked target folder would send the keys somewhere nobody declared.
        if os.path.islink(self.target.path):
            raise TransportError(
                f"{self.target.name}: the target folder {self.target.path} is a symlink; "
                "declare the folder it points to instead"
            )

    def observe(self, path: str) -> FileFacts | None:
        # One open that refuses symlinks, fstat, read: the no-op plan's hot path.
        if not self._checked:
            self._check_folder()
            self._checked = True
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise self._fail("read", path, exc) from None
            info = os.lstat(path)  # a symlink where a copy belongs
            return FileFacts(info.st_size, "", stat.S_IMODE(info.st_mode), symlink=True)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return FileFacts(info.st_size, "", stat.S_IMODE(info.st_mode), symlink=True)
            # One read for a file of the size fstat gave (a PKCS#12 is a few KB); a large
            # file, or one that grew meanwhile, is read on to its end 1 MiB at a time.
            first = min(info.st_size + 1, 1 << 20)
            data = os.read(fd, first)
            digest = hashlib.sha256(data)
            size = len(data)
            if size == first:
                while chunk := os.read(fd, 1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
            mode = stat.S_IMODE(info.st_mode)
            fixed = bool(mode & 0o077) and self.mode_fixed()
            return FileFacts(size, digest.hexdigest(), mode, mode_fixed=fixed)
        except OSError as exc:
            raise self._fail("read", path, exc) from None
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes) -> FileFacts:
        self._check_folder()
        try:
            write_private(Path(path), data)
        except IsADirectoryError as exc:
            raise TransportError(f"{self.target.name}: {exc}") from None
        except OSError as exc:
            raise self._fail("write", path, exc) from None
        # Observed, not assumed: a filesystem that ignores chmod keeps its own mode.
        try:
            mode = stat.S_IMODE(os.lstat(path).st_mode)
        except OSError as exc:
            raise self._fail("inspect", path, exc) from None
        if mode & 0o077:
            self._mode_fixed = True
        return FileFacts(
            len(data), hashlib.sha256(data).hexdigest(), mode, mode_fixed=bool(mode & 0o077)
        )

    def read(self, path: str) -> bytes:
        # Never blocks (a FIFO without a writer) and never reads more than MAX_READ_BYTES
        # (a device, or a file swapped in after it was observed).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise self._fail("read", path, exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TransportError(f"{self.target.name}: {path} is not a regular file")
            if info.st_size > MAX_READ_BYTES:
                raise TransportError(f"{self.target.name}: {too_large(path)}")
            os.set_blocking(fd, True)
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_READ_BYTES and (chunk := os.read(fd, MAX_READ_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
            if size > MAX_READ_BYTES:
                raise TransportError(f"{self.target.name}: {too_large(path)}")
            return b"".join(chunks)
        except OSError as exc:
            raise self._fail("read", path, exc) from None
        finally:
            os.close(fd)

    def names(self) -> list[str]:
        self._check_folder()
        try:
            return sorted(os.listdir(self.target.path))
        except FileNotFoundError:
            return []  # (a folder not made yet holds no copy; a file there is not a folder)
        except OSError as exc:
            raise self._fail("list", self.target.path, exc) from None

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("remove", path, exc) from None

    def observe_folder(self, folder: str) -> FolderFacts | None:
        # One lstat and one listing per folder (never a stat per file).
        if not self._checked:
            self._check_folder()
            self._checked = True
        try:
            info = os.lstat(folder)
            if not stat.S_ISDIR(info.st_mode):
                return None  # reported where a copy is written or observed
            return folder_facts(
                stat.S_IMODE(info.st_mode),
                os.listdir(folder),
                moves_aside=False,
                identity=(info.st_dev, info.st_ino),
            )
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._fail("list", folder, exc) from None

    def secure_folder(self, folder: str) -> None:
        self._check_folder()
        # The folder opened without following a symlink, then its mode set through that
        # descriptor: a symlink swapped in after the check is refused, never followed (Linux
        # has no chmod that refuses a symlink: os.chmod(follow_symlinks=False) raises there).
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchmod(fd, DIR_MODE)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._fail("set mode 0700 on", folder, exc) from None

    def clear_leftover(self, folder: str, leftover: Leftover) -> None:
        path = os.path.join(folder, leftover.name)
        final = os.path.join(folder, leftover.final)
        try:
            if leftover.moved_aside and not os.path.lexists(final):
                os.rename(path, final)  # the previous copy, back under its name
                fsync_dir(Path(folder))
                return
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("remove", path, exc) from None

    def close(self) -> None:
        return None
