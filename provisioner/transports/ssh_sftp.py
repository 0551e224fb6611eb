"""SFTP for the ssh transport: a client that keeps status codes and creates files private,
and the replace used where the server lacks or refuses posix-rename@openssh.com."""

from __future__ import annotations

import contextlib
import errno
import posixpath
import secrets
import stat

import paramiko
from paramiko.sftp import (
    CMD_HANDLE,
    CMD_OPEN,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
)

from provisioner import faults
from provisioner.transports.base import OLD_MARK


class SftpStatusError(OSError):
    """An SFTP failure status other than "no such file" and "permission denied" (which keep
    their errno), with its status code: paramiko drops it."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text or f"SFTP status {status}")
        self.status = status


class _Sftp(paramiko.SFTPClient):
    """paramiko's SFTP client, keeping status codes and creating files private."""

    def _convert_status(self, msg: paramiko.Message) -> None:
        code = msg.get_int()
        text = msg.get_text()
        if code == SFTP_OK:
            return
        if code == SFTP_EOF:
            raise EOFError(text)
        if code == SFTP_NO_SUCH_FILE:
            raise OSError(errno.ENOENT, text)
        if code == SFTP_PERMISSION_DENIED:
            raise OSError(errno.EACCES, text)
        raise SftpStatusError(code, text)

    def create_private(self, path: str) -> paramiko.SFTPFile:
        """A new file (refused if the name exists) created 0600 by the open request itself."""
        attributes = paramiko.SFTPAttributes()
        attributes.st_mode = 0o600
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
        kind, msg = self._request(CMD_OPEN, path, flags, attributes)  # type: ignore[attr-defined]
        if kind != CMD_HANDLE:
            raise SftpStatusError(-1, "the server did not open the file")
        return paramiko.SFTPFile(self, msg.get_binary(), "wb")


def _is_windows_path(path: str) -> bool:
    return len(path) > 2 and path[1] == ":" and path[0].isalpha()


def probe_posix_rename(sftp: paramiko.SFTPClient, folder: str) -> tuple[bool, str]:
    """Ask the server once whether posix-rename@openssh.com works, by renaming a name that does
    not exist: "no such file" means it does. Returns (usable, why not)."""
    probe = posixpath.join(folder, f".provisioner-probe-{secrets.token_hex(4)}")
    try:
        sftp.posix_rename(probe, probe + "-")
    except FileNotFoundError:
        return True, ""
    except PermissionError:
        return False, "the server refuses posix-rename@openssh.com: replaced by moving aside"
    except SftpStatusError as exc:
        if exc.status == SFTP_OP_UNSUPPORTED:
            return False, "the server lacks posix-rename@openssh.com: replaced by moving aside"
        return True, ""
    return True, ""  # the probe name existed: the extension works


def _file_failure(sftp: paramiko.SFTPClient, path: str, exc: OSError) -> OSError:
    """The reason a rename over `path` failed, for that file: a folder standing there is said so
    (servers report it as a bare failure)."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        mode = sftp.lstat(path).st_mode or 0
        if stat.S_ISDIR(mode):
            return OSError(
                errno.EISDIR, f"a folder stands at {path}, where the copy belongs; move it away"
            )
    return exc


def replace_without_posix_rename(sftp: paramiko.SFTPClient, tmp: str, path: str) -> None:
    """Replace `path` by `tmp` where plain SFTP rename refuses an existing target: move the old
    file aside, rename the new one in, remove the old one. If the second rename fails the old
    copy is put back. A crash in between leaves `<name>.old-<hex>` (and perhaps the temporary):
    the next apply puts it back if the name is still free, or removes it (`clear_leftover`)."""
    try:
        mode = sftp.lstat(path).st_mode or 0
    except FileNotFoundError:
        aside = ""
    else:
        if not stat.S_ISREG(mode):  # never move a folder or a link aside
            raise OSError(
                errno.EISDIR, f"something that is not a file stands at {path}; move it away"
            )
        aside = f"{path}{OLD_MARK}{secrets.token_hex(4)}"
        try:
            sftp.rename(path, aside)
        except FileNotFoundError:
            aside = ""
    faults.reached("fallback-moved-aside")
    try:
        sftp.rename(tmp, path)
    except BaseException:
        if aside:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                sftp.rename(aside, path)
        raise
    faults.reached("fallback-renamed-in")
    if aside:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            sftp.remove(aside)
