"""One SSH connection and SFTP session per host, shared by every target on it.

Connecting is bounded: the TCP connect, the server's banner, the key exchange, the
authentication and the SFTP channel each wait at most the target's `connect_timeout`; a
server that answers then goes silent past it is not retried (waiting again would not help),
quick resets are retried twice (a machine booting). A connection that could not be made is
not tried again in the same run: every later use fails at once with the same reason, so a
host that is down costs one timeout per run, however many targets or copies it holds. The
next run tries again.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import paramiko
from paramiko.pkey import UnknownKeyType

from provisioner.errors import TransportError
from provisioner.logs import silence_library_logging
from provisioner.manifest.model import SshSpec, Target
from provisioner.transports.base import (
    AUTH_FAILED,
    CLIENT_KEY,
    HANDSHAKE_STALLED,
    HOST_KEY_MISMATCH,
    HOST_KEY_UNKNOWN,
    NETWORK,
    NO_BANNER,
    REFUSED,
    TIMED_OUT,
    Unreachable,
)
from provisioner.transports.ssh_hostkeys import _Refuse, fingerprint, known_hosts_name
from provisioner.transports.ssh_sftp import SftpStatusError, _Sftp

OPERATION_TIMEOUT = 60.0
CONNECT_ATTEMPTS = 3
T = TypeVar("T")


class SshConnection:
    """One SSH connection and SFTP session to a host, shared by every target on it."""

    def __init__(self, target: Target, passphrase: str | None) -> None:
        spec = target.spec_of(SshSpec)
        self.host = spec.host
        self.port = spec.port
        self.user = spec.user
        self.key_file = spec.key_file
        self.known_hosts = spec.known_hosts
        self.timeout = spec.connect_timeout
        self.passphrase = passphrase
        self.lock = threading.RLock()
        self.client: paramiko.SSHClient | None = None
        self.sftp: _Sftp | None = None
        # None until the server was asked (on the first rename that failed); then whether
        # posix-rename@openssh.com is usable, and if not why.
        self.posix_rename: bool | None = None
        self.fallback_reason = ""
        self.banner_seen = False  # whether the last failed attempt got the server's banner
        # The failure of the run's one connection attempt, if it failed (see the module).
        self.failure: Unreachable | None = None
        silence_library_logging()

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _connect_once(self) -> None:
        client = paramiko.SSHClient()
        if self.known_hosts is None or not self.known_hosts.is_file():
            raise Unreachable(
                HOST_KEY_UNKNOWN,
                f"known_hosts file {self.known_hosts} not found: record the "
                "host key with `provisioner trust` first",
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
        """The SFTP session, connecting (with bounded retries for transient faults) if need be;
        once a connection failed, the same failure at once for the rest of the run."""
        with self.lock:
            if self.sftp is not None:
                return self.sftp
            if self.failure is not None:
                raise Unreachable(self.failure.kind, str(self.failure))
            try:
                return self._connect()
            except Unreachable as exc:
                self.failure = exc
                raise
            except TransportError as exc:
                self.failure = Unreachable(CLIENT_KEY, str(exc))
                raise self.failure from None

    def _connect(self) -> _Sftp:
        where = f"{self.host}:{self.port}"
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
                raise Unreachable(
                    HOST_KEY_MISMATCH,
                    f"host key for {known_hosts_name(self.host, self.port)} CHANGED: the "
                    f"server offers {fingerprint(exc.key)}, known_hosts expects "
                    f"{fingerprint(exc.expected_key)}; refusing to connect (a changed key "
                    "may mean an impostor; verify, then update known_hosts)",
                ) from None
            except paramiko.PasswordRequiredException:
                raise TransportError(
                    f"the key {self.key_file} is encrypted: give key_passphrase in the target"
                ) from None
            except paramiko.AuthenticationException:
                raise Unreachable(
                    AUTH_FAILED,
                    f"authentication refused for {self.user}@{where} "
                    f"with {'key ' + str(self.key_file) if self.key_file else 'the SSH agent'}",
                ) from None
            except TimeoutError:
                raise Unreachable(
                    TIMED_OUT, f"cannot connect to {where}: timed out after {self.timeout:g} s"
                ) from None
            except paramiko.ssh_exception.NoValidConnectionsError as exc:
                reason = next(iter(exc.errors.values()), exc)
                refused = isinstance(reason, ConnectionRefusedError) or (
                    getattr(reason, "errno", None) == errno.ECONNREFUSED
                )
                raise Unreachable(
                    REFUSED if refused else NETWORK,
                    f"cannot connect to {where}: {getattr(reason, 'strerror', None) or reason}",
                ) from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                if time.monotonic() - started >= self.timeout:
                    # Connected, then silence past the timeout: waiting again would not
                    # help. (paramiko may report it as "No existing session".)
                    kind, stalled = (
                        (HANDSHAKE_STALLED, "did not complete the SSH handshake")
                        if self.banner_seen
                        else (NO_BANNER, "sent no SSH banner")
                    )
                    raise Unreachable(
                        kind,
                        f"cannot connect to {where}: the server {stalled} within "
                        f"{self.timeout:g} s (is an SSH server listening there?)",
                    ) from None
                # Resets and banner errors happen while a machine boots: retry, bounded.
                if attempt == CONNECT_ATTEMPTS:
                    raise Unreachable(
                        NETWORK, f"cannot connect to {where} after {attempt} attempts: {why}"
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
        """Close the connection; a later use connects again (unless connecting failed)."""
        with self.lock:
            if self.client is not None:
                self.client.close()
            self.client = self.sftp = None
