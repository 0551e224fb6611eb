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

paramiko's own logging is silenced: its failures become one line per target.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import paramiko
from paramiko.pkey import UnknownKeyType
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
from provisioner.atomic import TMP_MARK
from provisioner.errors import ProvisionerError, TransportError
from provisioner.manifest.model import Target
from provisioner.transports.base import (
    OLD_MARK,
    FileFacts,
    FolderFacts,
    Leftover,
    folder_facts,
)

OPERATION_TIMEOUT = 60.0
CONNECT_ATTEMPTS = 3
T = TypeVar("T")


def silence_library_logging() -> None:
    """paramiko logs connection failures with tracebacks through Python's last-resort handler
    (stderr); the transport reports them itself, one line per target."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


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


def fingerprint(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...`, as `ssh-keygen -lf` shows it."""
    return f"{key.get_name()} {key.fingerprint}"


def same_fingerprint(key: paramiko.PKey, given: str) -> bool:
    """Whether `given` (`SHA256:base64`, with or without the prefix and padding) is the
    SHA-256 fingerprint of `key`."""
    text = given.strip()
    if text.upper().startswith("SHA256:"):
        text = text[len("SHA256:") :]
    return bool(text) and text.rstrip("=") == key.fingerprint.split(":", 1)[1].rstrip("=")


def looks_like_fingerprint(given: str) -> bool:
    """Whether `given` has the form of a SHA-256 fingerprint (prefix optional)."""
    text = given.strip().removeprefix("SHA256:").rstrip("=")
    return len(text) == 43 and all(c.isalnum() or c in "+/" for c in text)


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys, naming the fingerprint the operator must verify."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise TransportError(
            f"unknown host key for {hostname}: {fingerprint(key)}; verify it with the "
            "machine's administrator, then record it with `provisioner trust`"
        )


def _is_windows_path(path: str) -> bool:
    return len(path) > 2 and path[1] == ":" and path[0].isalpha()


class SshConnection:
    """One SSH connection and SFTP session to a host, shared by every target on it."""

    def __init__(self, target: Target, passphrase: str | None) -> None:
        self.host = target.host or ""
        self.port = target.port
        self.user = target.user or ""
        self.key_file = target.key_file
        self.known_hosts = target.known_hosts
        self.timeout = target.connect_timeout
        self.passphrase = passphrase
        self.lock = threading.RLock()
        self.client: paramiko.SSHClient | None = None
        self.sftp: _Sftp | None = None
        # None until the server was asked (on the first rename that failed); then whether
        # posix-rename@openssh.com is usable, and if not why.
        self.posix_rename: bool | None = None
        self.fallback_reason = ""
        self.banner_seen = False  # whether the last failed attempt got the server's banner
        silence_library_logging()

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _connect_once(self) -> None:
        client = paramiko.SSHClient()
        if self.known_hosts is None or not self.known_hosts.is_file():
            raise TransportError(
                f"known_hosts file {self.known_hosts} not found: record the "
                "host key with `provisioner trust` first"
            )
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(_Refuse())
        key = self._user_key()
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=key,
                allow_agent=key is None,
                look_for_keys=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
            transport = client.get_transport()
            sftp = _Sftp.from_transport(transport) if transport is not None else None
            if sftp is None:
                raise paramiko.SSHException("the server refused the SFTP subsystem")
            sftp.get_channel().settimeout(OPERATION_TIMEOUT)  # type: ignore[union-attr]
        except BaseException:
            transport = client.get_transport()
            self.banner_seen = transport is not None and bool(transport.remote_version)
            client.close()
            raise
        self.client, self.sftp = client, sftp

    def _user_key(self) -> paramiko.PKey | None:
        """The key file, decrypted here so that each problem gets its own message; None for
        the SSH agent, which must hold a key."""
        if self.key_file is None:
            agent = paramiko.Agent()
            try:
                keys = agent.get_keys()
            finally:
                agent.close()
            if not keys:
                raise TransportError(
                    f"no key_file is given for {self.name} and no SSH agent key is available "
                    "(SSH_AUTH_SOCK unset, or the agent holds no key): give key_file, or load "
                    "a key with ssh-add"
                )
            return None
        try:
            # cryptography wants the passphrase as bytes (paramiko passes it through as is).
            secret = self.passphrase.encode() if self.passphrase is not None else None
            return paramiko.PKey.from_path(self.key_file, secret)  # type: ignore[arg-type]
        except OSError as exc:
            raise TransportError(
                f"cannot read the key file {self.key_file}: {exc.strerror or exc}"
            ) from None
        except TypeError as exc:  # cryptography: a password missing, or given for a clear key
            if self.passphrase is None:
                raise TransportError(
                    f"the key {self.key_file} is encrypted: give key_passphrase in the target"
                ) from None
            if "not encrypted" in str(exc):  # a passphrase for a clear key: not needed
                return paramiko.PKey.from_path(self.key_file)
            raise TransportError(
                f"cannot use the key {self.key_file} with key_passphrase: {exc}"
            ) from None
        except (ValueError, paramiko.SSHException, UnknownKeyType) as exc:
            if self.passphrase is not None and not isinstance(exc, UnknownKeyType):
                raise TransportError(
                    f"cannot decrypt the key {self.key_file} with key_passphrase (wrong "
                    "passphrase?)"
                ) from None
            raise TransportError(
                f"{self.key_file} is not a private key this tool can read: {exc}"
            ) from None

    def connect(self) -> _Sftp:
        """The SFTP session, connecting (with bounded retries for transient faults) if need be."""
        with self.lock:
            if self.sftp is not None:
                return self.sftp
            delay = 0.5
            for attempt in range(1, CONNECT_ATTEMPTS + 1):
                started = time.monotonic()
                try:
                    self._connect_once()
                    assert self.sftp is not None
                    return self.sftp
                except TransportError:
                    raise
                except paramiko.BadHostKeyException as exc:
                    raise TransportError(
                        f"host key for {known_hosts_name(self.host, self.port)} CHANGED: the "
                        "server offers "
                        f"{fingerprint(exc.key)}, known_hosts expects "
                        f"{fingerprint(exc.expected_key)}; refusing to connect (a changed key "
                        "may mean an impostor; verify, then update known_hosts)"
                    ) from None
                except paramiko.PasswordRequiredException:
                    raise TransportError(
                        f"the key {self.key_file} is encrypted: give key_passphrase in the target"
                    ) from None
                except paramiko.AuthenticationException:
                    raise TransportError(
                        f"authentication refused for {self.user}@{self.host}:{self.port} "
                        f"with {'key ' + str(self.key_file) if self.key_file else 'the SSH agent'}"
                    ) from None
                except TimeoutError:
                    raise TransportError(
                        f"cannot connect to {self.host}:{self.port}: timed out after "
                        f"{self.timeout:g} s"
                    ) from None
                except paramiko.ssh_exception.NoValidConnectionsError as exc:
                    reason = next(iter(exc.errors.values()), exc)
                    raise TransportError(
                        f"cannot connect to {self.host}:{self.port}: "
                        f"{getattr(reason, 'strerror', None) or reason}"
                    ) from None
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    if time.monotonic() - started >= self.timeout:
                        # Connected, then silence past the timeout: waiting again would not
                        # help. (paramiko may report it as "No existing session".)
                        stalled = (
                            "did not complete the SSH handshake"
                            if self.banner_seen
                            else "sent no SSH banner"
                        )
                        raise TransportError(
                            f"cannot connect to {self.host}:{self.port}: the server {stalled} "
                            f"within {self.timeout:g} s (is an SSH server listening there?)"
                        ) from None
                    # Resets and banner errors happen while a machine boots: retry, bounded.
                    if attempt == CONNECT_ATTEMPTS:
                        raise TransportError(
                            f"cannot connect to {self.host}:{self.port} after {attempt} "
                            f"attempts: {why}"
                        ) from None
                    time.sleep(delay)
                    delay *= 2
            raise AssertionError("unreachable")

    def run(self, op: Callable[[_Sftp], T]) -> T:
        """Run an SFTP operation; if the connection died, reconnect once and retry."""
        sftp = self.connect()
        try:
            with self.lock:
                return op(sftp)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            dead_link = isinstance(
                exc, (EOFError, ConnectionError, TimeoutError, paramiko.SSHException)
            ) or (exc.errno is None and not isinstance(exc, SftpStatusError))
            if not dead_link:
                raise  # a genuine file error (ENOENT, EACCES...), not a dead connection
            self.close()
            sftp = self.connect()
            with self.lock:
                return op(sftp)

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
            self.client = self.sftp = None


class SshTransport:
    """Files of one target on an SSH connection."""

    def __init__(self, target: Target, connection: SshConnection) -> None:
        self.target = target
        self.conn = connection

    def _fail(self, action: str, path: str, exc: BaseException) -> TransportError:
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
                handle.prefetch()
                return handle.read()

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


def scan_host_key(host: str, port: int, timeout: float) -> paramiko.PKey:
    """The host key a server offers (what `ssh-keyscan` shows), without authenticating."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    silence_library_logging()
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransportError(f"no SSH server answers on {host}:{port}: {exc}") from None
    finally:
        transport.close()


def known_key(known_hosts: Path, host: str, port: int) -> list[paramiko.PKey]:
    """Keys recorded for this host in a known_hosts file (hashed entries included)."""
    if not known_hosts.is_file():
        return []
    keys = paramiko.HostKeys(str(known_hosts))
    found = keys.lookup(known_hosts_name(host, port))
    return list(found.values()) if found else []


def record_host_key(known_hosts: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Append the key to the known_hosts file (created 0600 if missing)."""
    line = f"{known_hosts_name(host, port)} {key.get_name()} {key.get_base64()}\n"
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        existing = known_hosts.read_bytes()
        if existing and not existing.endswith(b"\n"):
            os.write(fd, b"\n")
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
