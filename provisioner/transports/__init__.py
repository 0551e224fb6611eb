"""Transports: one small interface to observe, write, read and remove files on a target."""

from __future__ import annotations

import threading
from collections.abc import Callable

from provisioner.errors import TransportError
from provisioner.manifest.model import SmbSpec, SshSpec, Target
from provisioner.transports.base import Transport
from provisioner.transports.local import LocalTransport


class TransportPool:
    """One transport per target for a whole run (observation and execution); SSH targets on
    the same host, port, user and key that expect the same host key (their known_hosts
    entries for that host) share one connection, and so do SMB targets on the same host,
    port, user and encryption. A target whose known_hosts disagrees gets its own connection,
    so its own host-key check: it is refused with its own error, never let in by another's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transports: dict[str, Transport] = {}
        self._connections: dict[tuple[object, ...], object] = {}

    def get(self, target: Target) -> Transport:
        with self._lock:
            found = self._transports.get(target.name)
            if found is not None and found.target == target:
                return found
            transport = self._open(target)
            self._transports[target.name] = transport
            return transport

    def _open(self, target: Target) -> Transport:
        """By the table of openers: one per transport, each importing only its own library."""
        return OPENERS[target.transport](self, target)

    def _open_local(self, target: Target) -> Transport:
        return LocalTransport(target)

    def _open_ssh(self, target: Target) -> Transport:
        from provisioner.secrets import resolve
        from provisioner.transports.ssh import SshConnection, SshTransport
        from provisioner.transports.ssh_hostkeys import expected_host_keys

        spec = target.spec_of(SshSpec)
        host_keys = expected_host_keys(spec.known_hosts, spec.host, spec.port)
        key = (spec.host, spec.port, spec.user, str(spec.key_file), host_keys)
        conn = self._connections.get(key)
        if not isinstance(conn, SshConnection):
            passphrase = None
            if spec.key_passphrase is not None:
                passphrase = resolve(spec.key_passphrase, f"{target.name} key passphrase")
            conn = SshConnection(target, passphrase)
            self._connections[key] = conn
        return SshTransport(target, conn)

    def _open_smb(self, target: Target) -> Transport:
        from provisioner.secrets import resolve
        from provisioner.transports.smb import SmbConnection, SmbTransport

        spec = target.spec_of(SmbSpec)
        key = ("smb:" + spec.host, spec.port, spec.user, str(spec.encrypt))
        conn = self._connections.get(key)
        if not isinstance(conn, SmbConnection):
            if spec.password is None:
                raise TransportError(f"{target.name}: no password is known for its SMB account")
            conn = SmbConnection(target, resolve(spec.password, f"{target.name} password"))
            self._connections[key] = conn
        return SmbTransport(target, conn)

    def close(self) -> None:
        with self._lock:
            # paramiko and smbprotocol are imported only by runs that use them
            for conn in self._connections.values():
                closer = getattr(conn, "close", None)
                if closer is not None:
                    closer()
            self._connections.clear()
            self._transports.clear()


# Each transport's connection, by the name the manifest gives it (manifest/transport_kinds.py
# holds the rest of what a transport means).
OPENERS: dict[str, Callable[[TransportPool, Target], Transport]] = {
    "local": TransportPool._open_local,
    "ssh": TransportPool._open_ssh,
    "smb": TransportPool._open_smb,
}
