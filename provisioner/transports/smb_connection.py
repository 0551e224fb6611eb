"""One SMB connection and session per server and account, shared by the targets on it:
connecting with retries and a timeout, signing and SMB3 encryption required, one reconnect
when the link dies, operations serialised on it (smbprotocol's credits), and smbprotocol's
own logging kept off the terminal."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import smbclient
from smbprotocol.exceptions import (
    LogonFailure,
    SMBAuthenticationError,
    SMBException,
    SMBOSError,
    SMBResponseException,
)

from provisioner.errors import TransportError
from provisioner.manifest.model import SmbSpec, Target

CONNECT_ATTEMPTS = 3
OPERATION_TIMEOUT = 60.0
T = TypeVar("T")
SMB_ERRORS = (OSError, SMBException, ValueError, EOFError)


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, SMBOSError):
        return exc.strerror or str(exc)
    if isinstance(exc, SMBResponseException):
        return exc.message.split(": ", 1)[-1] if exc.message else type(exc).__name__
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def silence_library_logging() -> None:
    """smbprotocol logs a dropped connection from its receiver thread through Python's
    last-resort handler (stderr); the transport reports failures itself, one line per target."""
    for name in ("smbprotocol", "smbclient", "spnego"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        logger.propagate = False


class SmbConnection:
    """One SMB connection and session to a server, for one account, shared by every target
    on it (smbprotocol multiplexes the trees of several shares on it)."""

    def __init__(self, target: Target, password: str) -> None:
        spec = target.spec_of(SmbSpec)
        self.host = spec.host
        self.port = spec.port
        self.user = spec.user
        self.encrypt = spec.encrypt
        self.timeout = spec.connect_timeout
        self._password = password
        self.lock = threading.RLock()
        self.cache: dict[str, Any] = {}
        self.connected = False
        self.failure: TransportError | None = None
        silence_library_logging()

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def options(self) -> dict[str, Any]:
        """What every smbclient call gets: this connection's own cache and credentials."""
        return {
            "username": self.user,
            "password": self._password,
            "port": self.port,
            "encrypt": self.encrypt,
            "connection_timeout": self.timeout,
            "connection_cache": self.cache,
            "auth_protocol": "ntlm",
            "require_signing": True,
        }

    def connect(self) -> None:
        """Open the session, with bounded retries for transient faults (a reset while the
        server starts); a refused password or a missing share fails at once. Once opening it
        failed (refused, timed out, a hung server), the same failure at once for the rest of
        the run: a server that does not answer costs one wait, not one per copy."""
        with self.lock:
            if self.connected:
                return
            if self.failure is not None:
                raise TransportError(str(self.failure))
            try:
                self._connect()
            except TransportError as exc:
                self.failure = exc
                raise

    def _connect(self) -> None:
        """Called by `connect`, holding the lock."""
        delay = 0.5
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            started = time.monotonic()
            try:
                smbclient.register_session(self.host, **self.options)
                self._bound_waits()
                self.connected = True
                return
            except (LogonFailure, SMBAuthenticationError):
                self._reset()
                raise TransportError(
                    f"authentication refused for {self.name} (wrong user or password?)"
                ) from None
            except SMB_ERRORS as exc:
                self._reset()
                why = reason_of(exc.__cause__ or exc) if isinstance(exc, ValueError) else ""
                why = why or reason_of(exc)
                refused = "refused" in why.lower()
                timed_out = time.monotonic() - started >= self.timeout
                if "encrypt" in why.lower():
                    raise TransportError(
                        f"{self.name}: the server cannot encrypt (SMB3 encryption is "
                        "required; `encrypt: false` only on a network you trust)"
                    ) from None
                if timed_out or "timeout" in why.lower():
                    raise TransportError(
                        f"cannot connect to {self.host}:{self.port}: no SMB answer within "
                        f"{self.timeout:g} s"
                    ) from None
                if refused or attempt == CONNECT_ATTEMPTS:
                    tries = "" if refused else f" after {attempt} attempts"
                    raise TransportError(
                        f"cannot connect to {self.host}:{self.port}{tries}: {why}"
                    ) from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _bound_waits(self) -> None:
        """A server that stops answering mid-operation fails it within about OPERATION_TIMEOUT
        s: smbprotocol's receiver sends an echo after a silence of `_receive_timeout` (600 s by
        default) and closes the connection, failing what waits on it, when that echo too goes
        unanswered; half the operation timeout each."""
        for connection in self.cache.values():
            if hasattr(connection, "_receive_timeout"):
                connection._receive_timeout = max(1, int(OPERATION_TIMEOUT / 2))

    def run(self, op: Callable[[], T]) -> T:
        """Run an operation; if the connection died (server restarted), reconnect once.
        Operations are serialised on the connection: run at once from several threads,
        smbprotocol fails them with "requires 1 credits but only 0 credits are available"
        (measured with --parallel 8 on Samba 4.17)."""
        self.connect()
        try:
            with self.lock:
                return op()
        except SMB_ERRORS as exc:
            if not dead_link(exc):
                raise
            self._reset()
            self.connect()
            with self.lock:
                return op()

    def _reset(self) -> None:
        with self.lock:
            with contextlib.suppress(*SMB_ERRORS):
                smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self.cache)
            self.cache.clear()
            self.connected = False

    def close(self) -> None:
        self._reset()


def dead_link(exc: BaseException) -> bool:
    if isinstance(exc, SMBOSError):
        return False  # a file status (not found, denied, in use...)
    if isinstance(exc, (ConnectionError, EOFError, socket.timeout, TimeoutError)):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("connection", "closed", "session", "socket", "broken pipe"))
