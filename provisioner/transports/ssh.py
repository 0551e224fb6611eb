"""The ssh transport: SFTP to an OpenSSH server (Linux, or Windows' built-in OpenSSH).

Security: the server's host key must already be in the known_hosts file the manifest names;
an unknown or changed key is refused with its SHA-256 fingerprint (record it with
`provisioner trust`). Authentication by key file (optional passphrase from a secret reference)
or, without a key file, by the SSH agent; never by password.

Writes are atomic: upload to a temporary name in the same folder, set mode 0600, then
`posix-rename@openssh.com` over the target; where the server lacks that extension (older
Windows OpenSSH), the old file is moved aside, the new one renamed in, the old one removed.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from provisioner.atomic import TMP_MARK
from provisioner.errors import ProvisionerError, TransportError
from provisioner.manifest.model import Target
from provisioner.transports.base import FileFacts

OPERATION_TIMEOUT = 60.0
CONNECT_ATTEMPTS = 3
T = TypeVar("T")


def fingerprint(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...`, as `ssh-keygen -lf` shows it."""
    return f"{key.get_name()} {key.fingerprint}"


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
        self.sftp: paramiko.SFTPClient | None = None
        self.posix_rename = True

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
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_file) if self.key_file else None,
                passphrase=self.passphrase,
                allow_agent=self.key_file is None,
                look_for_keys=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(OPERATION_TIMEOUT)  # type: ignore[union-attr]
        except BaseException:
            client.close()
            raise
        self.client, self.sftp = client, sftp

    def connect(self) -> paramiko.SFTPClient:
        """The SFTP session, connecting (with bounded retries for transient faults) if need be."""
        with self.lock:
            if self.sftp is not None:
                return self.sftp
            delay = 0.5
            for attempt in range(1, CONNECT_ATTEMPTS + 1):
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
                except paramiko.AuthenticationException:
                    raise TransportError(
                        f"authentication refused for {self.user}@{self.host}:{self.port} "
                        f"with {'key ' + str(self.key_file) if self.key_file else 'the SSH agent'}"
                    ) from None
                except paramiko.PasswordRequiredException:
                    raise TransportError(
                        f"the key {self.key_file} is encrypted: give key_passphrase"
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
                    # Resets and banner errors happen while a machine boots: retry, bounded.
                    if attempt == CONNECT_ATTEMPTS:
                        raise TransportError(
                            f"cannot connect to {self.host}:{self.port} after {attempt} "
                            f"attempts: {getattr(exc, 'strerror', None) or exc}"
                        ) from None
                    time.sleep(delay)
                    delay *= 2
            raise AssertionError("unreachable")

    def run(self, op: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run an SFTP operation; if the connection died, reconnect once and retry."""
        sftp = self.connect()
        try:
            with self.lock:
                return op(sftp)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            dead_link = (
                isinstance(exc, (EOFError, ConnectionError, TimeoutError, paramiko.SSHException))
                or exc.errno is None
            )
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
        def op(sftp: paramiko.SFTPClient) -> FileFacts | None:
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

    def _makedirs(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        parts = folder.split("/")
        current = ""
        for i, part in enumerate(parts):
            current = part if i == 0 else f"{current}/{part}"
            if not part or (i == 0 and _is_windows_path(f"{part}/")):
                continue
            try:
                sftp.stat(current)
            except FileNotFoundError:
                sftp.mkdir(current, mode=0o700)

    def write(self, path: str, data: bytes) -> FileFacts:
        folder, name = posixpath.split(path)
        tmp = posixpath.join(folder, f"{TMP_MARK}{name}.{secrets.token_hex(4)}")

        def op(sftp: paramiko.SFTPClient) -> None:
            try:
                if stat.S_ISLNK(sftp.lstat(path).st_mode or 0):
                    raise TransportError(f"refusing to write through a symlink: {path}")
            except FileNotFoundError:
                pass
            self._makedirs(sftp, folder)
            try:
                with sftp.open(tmp, "wb") as handle:
                    handle.set_pipelined(True)
                    handle.write(data)
                if sftp.stat(tmp).st_size != len(data):
                    raise OSError(5, "short write (disk full?)")
                try:
                    sftp.chmod(tmp, 0o600)
                except OSError:
                    if not _is_windows_path(path):  # Windows ignores POSIX modes; ACLs rule
                        raise
                self._replace(sftp, tmp, path)
            except BaseException:
                with contextlib.suppress(OSError, paramiko.SSHException):
                    sftp.remove(tmp)
                raise

        try:
            self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("write", path, exc) from None
        return FileFacts(len(data), hashlib.sha256(data).hexdigest(), 0o600)

    def _replace(self, sftp: paramiko.SFTPClient, tmp: str, path: str) -> None:
        if self.conn.posix_rename:
            try:
                sftp.posix_rename(tmp, path)
                return
            except OSError as exc:
                if exc.errno is not None:
                    raise
                self.conn.posix_rename = False  # server lacks posix-rename@openssh.com
        replace_without_posix_rename(sftp, tmp, path)

    def read(self, path: str) -> bytes:
        def op(sftp: paramiko.SFTPClient) -> bytes:
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
        def op(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        try:
            self.conn.run(op)
        except (OSError, EOFError, paramiko.SSHException, ProvisionerError) as exc:
            raise self._fail("remove", path, exc) from None

    def close(self) -> None:
        return None  # the pool closes the shared connection


def replace_without_posix_rename(sftp: paramiko.SFTPClient, tmp: str, path: str) -> None:
    """Windows-safe replace: plain SFTP rename refuses an existing target, so move the old file
    aside first. A crash in between leaves the new file under its temporary name and the old
    one under `.old`; the next apply sees the target missing and writes it again."""
    aside = f"{path}.old-{secrets.token_hex(4)}"
    try:
        sftp.rename(path, aside)
    except FileNotFoundError:
        aside = ""
    sftp.rename(tmp, path)
    if aside:
        with contextlib.suppress(OSError):
            sftp.remove(aside)


def scan_host_key(host: str, port: int, timeout: float) -> paramiko.PKey:
    """The host key a server offers (what `ssh-keyscan` shows), without authenticating."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
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
