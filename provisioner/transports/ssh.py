"""The ssh transport: SFTP to an OpenSSH server (Linux, or Windows' built-in OpenSSH).

Security: the server's host key must already be in the known_hosts file the manifest names;
an unknown or changed key is refused with its SHA-256 fingerprint (record it with
`provisioner trust`). Authentication by key file (optional passphrase from a secret reference)
or, without a key file, by the SSH agent; never by password.

Writes are atomic and private: the temporary is created with mode 0600 in the open request
itself (no byte is ever in a file others may read), its size is checked, then
`posix-rename@openssh.com` puts it over the target. Only a server that does not offer that
extension (SFTP status "operation unsupported", older Windows OpenSSH) or refuses it
(`sftp-server -P posix-rename`) gets the move-aside fallback: the old copy is renamed to
`<name>.old-<hex>`, the new one renamed in, the old one removed (put back if the second
rename fails). The choice is made once per server, by asking it about a name that does not
exist, never from one file's failure. Leftovers of an interrupted write are reported by `plan`
and cleared by the next apply (`observe_folder`, `clear_leftover`).

The module is split by concern: `ssh_connection` (connecting, bounded, once per host and run),
`ssh_sftp` (the SFTP client and the replace without posix-rename), `ssh_hostkeys` (known_hosts,
fingerprints, `trust`) and `logs` (paramiko's logging and thread tracebacks kept off the
terminal). Their public names are importable from here as before.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import posixpath
import secrets
import stat

import paramiko

from provisioner import faults
from provisioner.atomic import TMP_MARK
from provisioner.errors import ProvisionerError, TransportError
from provisioner.logs import silence_library_logging
from provisioner.manifest.model import Target
from provisioner.transports.base import (
    MAX_READ_BYTES,
    FileFacts,
    FolderFacts,
    Leftover,
    Unreachable,
    folder_facts,
    too_large,
)
from provisioner.transports.ssh_connection import (
    CONNECT_ATTEMPTS,
    OPERATION_TIMEOUT,
    SshConnection,
)
from provisioner.transports.ssh_hostkeys import (
    fingerprint,
    known_hosts_name,
    known_key,
    looks_like_fingerprint,
    record_host_key,
    same_fingerprint,
    scan_host_key,
)
from provisioner.transports.ssh_sftp import (
    SftpStatusError,
    _file_failure,
    _is_windows_path,
    _Sftp,
    probe_posix_rename,
    replace_without_posix_rename,
)

__all__ = [
    "CONNECT_ATTEMPTS",
    "OPERATION_TIMEOUT",
    "SftpStatusError",
    "SshConnection",
    "SshTransport",
    "Unreachable",
    "fingerprint",
    "known_hosts_name",
    "known_key",
    "looks_like_fingerprint",
    "probe_posix_rename",
    "record_host_key",
    "replace_without_posix_rename",
    "same_fingerprint",
    "scan_host_key",
    "silence_library_logging",
]


class SshTransport:
    """Files of one target on an SSH connection."""

    def __init__(self, target: Target, connection: SshConnection) -> None:
        self.target = target
        self.conn = connection

    def _fail(self, action: str, path: str, exc: BaseException) -> TransportError:
        if isinstance(exc, Unreachable):  # keeps its kind
            return Unreachable(exc.kind, f"{self.target.name}: {exc}")
        if isinstance(exc, ProvisionerError):
            return TransportError(f"{self.target.name}: {exc}")
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return TransportError(
            f"{self.target.name}: cannot {action} {path} on {self.conn.host}: {reason}"
        )

    def observe(self, path: str) -> FileFacts | None:
        def op(sftp: _Sftp) -> FileFacts | None:
            try:
                info = sftp.lstat(path)
            except FileNotFoundError:
                return None
            mode = info.st_mode or 0
            if not stat.S_ISREG(mode):
                return FileFacts(info.st_size or 0, "", stat.S_IMODE(mode), symlink=True)
            digest = hashlib.sha256()
            with sftp.open(path, "rb") as handle:
                handle.prefetch()
                for chunk in iter(lambda: handle.read(65536), b""):
                    digest.update(chunk)
            return FileFacts(info.st_size or 0, digest.hexdigest(), stat.S_IMODE(mode))

        try:
            return self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("inspect", path, exc) from None

    def _makedirs(self, sftp: _Sftp, folder: str) -> None:
        parts = folder.split("/")
        current = ""
        for i, part in enumerate(parts):
            current = part if i == 0 else f"{current}/{part}"
            if not part or (i == 0 and _is_windows_path(f"{part}/")):
                continue
            try:
                sftp.stat(current)
            except FileNotFoundError:
                try:
                    sftp.mkdir(current, mode=0o700)
                except SftpStatusError:
                    # Another connection (a target on another address of the same machine)
                    # may have just made it; anything else fails here.
                    if not stat.S_ISDIR(sftp.stat(current).st_mode or 0):
                        raise

    def write(self, path: str, data: bytes) -> FileFacts:
        folder, name = posixpath.split(path)

        def op(sftp: _Sftp) -> None:
            try:
                if stat.S_ISLNK(sftp.lstat(path).st_mode or 0):
                    raise TransportError(f"refusing to write through a symlink: {path}")
            except FileNotFoundError:
                pass
            self._makedirs(sftp, folder)
            tmp = posixpath.join(folder, f"{TMP_MARK}{name}.{secrets.token_hex(4)}")
            try:
                # 0600 from the first byte: the open request carries the mode.
                with sftp.create_private(tmp) as handle:
                    handle.set_pipelined(True)
                    handle.write(data)
                info = sftp.stat(tmp)
                if info.st_size != len(data):
                    raise OSError(errno.EIO, "short write (disk full?)")
                if not _is_windows_path(path) and (info.st_mode or 0) & 0o077:
                    raise OSError(
                        errno.EPERM,
                        f"the server created the temporary with mode "
                        f"{stat.S_IMODE(info.st_mode or 0):04o}, ignoring the 0600 asked",
                    )
                faults.reached("ssh-uploaded")
                self._replace(sftp, tmp, path)
            except BaseException:
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    sftp.remove(tmp)
                raise

        try:
            self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("write", path, exc) from None
        return FileFacts(len(data), hashlib.sha256(data).hexdigest(), 0o600)

    def _replace(self, sftp: _Sftp, tmp: str, path: str) -> None:
        conn = self.conn
        if conn.posix_rename is not False:
            try:
                sftp.posix_rename(tmp, path)
                return
            except OSError as exc:
                if conn.posix_rename is None:
                    conn.posix_rename, conn.fallback_reason = probe_posix_rename(
                        sftp, posixpath.dirname(path)
                    )
                if conn.posix_rename:
                    raise _file_failure(sftp, path, exc) from None
        try:
            replace_without_posix_rename(sftp, tmp, path)
        except OSError as exc:
            failure = _file_failure(sftp, path, exc)
            raise OSError(
                failure.errno or errno.EIO,
                f"{failure.strerror or failure} ({conn.fallback_reason})",
            ) from None

    def read(self, path: str) -> bytes:
        def op(sftp: _Sftp) -> bytes:
            with sftp.open(path, "rb") as handle:
                info = handle.stat()
                if info.st_mode is not None and not stat.S_ISREG(info.st_mode):
                    raise TransportError(f"{path} is not a regular file")
                if (info.st_size or 0) > MAX_READ_BYTES:
                    raise TransportError(too_large(path))
                handle.prefetch(info.st_size)
                data = bytes(handle.read(MAX_READ_BYTES + 1))
            if len(data) > MAX_READ_BYTES:
                raise TransportError(too_large(path))
            return data

        try:
            return self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("read", path, exc) from None

    def names(self) -> list[str]:
        def op(sftp: paramiko.SFTPClient) -> list[str]:
            try:
                return sorted(sftp.listdir(self.target.path))
            except FileNotFoundError:
                return []

        try:
            return self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("list", self.target.path, exc) from None

    def remove(self, path: str) -> None:
        def op(sftp: _Sftp) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        try:
            self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("remove", path, exc) from None

    def observe_folder(self, folder: str) -> FolderFacts | None:
        # One lstat and one listing per folder (never a stat per file).
        def op(sftp: _Sftp) -> FolderFacts | None:
            try:
                info = sftp.lstat(folder)
            except FileNotFoundError:
                return None
            if not stat.S_ISDIR(info.st_mode or 0):
                return None
            return folder_facts(stat.S_IMODE(info.st_mode or 0), sftp.listdir(folder))

        try:
            return self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("list", folder, exc) from None

    def secure_folder(self, folder: str) -> None:
        def op(sftp: _Sftp) -> None:
            if not stat.S_ISDIR(sftp.lstat(folder).st_mode or 0):
                raise OSError(errno.ENOTDIR, "not a folder")
            sftp.chmod(folder, 0o700)

        try:
            self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("set mode 0700 on", folder, exc) from None

    def clear_leftover(self, folder: str, leftover: Leftover) -> None:
        path = posixpath.join(folder, leftover.name)
        final = posixpath.join(folder, leftover.final)

        def op(sftp: _Sftp) -> None:
            try:
                if leftover.moved_aside:
                    try:
                        sftp.lstat(final)
                    except FileNotFoundError:
                        sftp.rename(path, final)  # the previous copy, back under its name
                        return
                sftp.remove(path)
            except FileNotFoundError:
                return

        try:
            self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("clear", path, exc) from None

    def close(self) -> None:
        return None  # the pool closes the shared connection
