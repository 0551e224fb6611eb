"""SSH host keys: fingerprints as `ssh-keygen -lf` shows them, the known_hosts file, and the
key a server offers (`provisioner trust`). An unknown or changed key is never accepted."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import paramiko

from provisioner.errors import TransportError
from provisioner.logs import silence_library_logging
from provisioner.transports.base import HOST_KEY_UNKNOWN, Unreachable


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


def expected_host_keys(known_hosts: Path | None, host: str, port: int) -> tuple[str, ...]:
    """The host keys a target's known_hosts file expects for `host`:`port` (type and base64,
    sorted; hashed entries included), or the file's path when it cannot be read: what two
    targets must agree on to share one connection (the first to connect checks the key for
    every target sharing it)."""
    if known_hosts is None:
        return ("none",)
    try:
        entries = paramiko.HostKeys(str(known_hosts))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        return (f"unreadable:{known_hosts}:{exc}",)
    found = entries.lookup(known_hosts_name(host, port))
    keys = tuple(sorted(f"{kind} {key.get_base64()}" for kind, key in (found or {}).items()))
    return keys or (f"unknown:{known_hosts}",)


class _Refuse(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys, naming the fingerprint the operator must verify."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise Unreachable(
            HOST_KEY_UNKNOWN,
            f"unknown host key for {hostname}: {fingerprint(key)}; verify it with the "
            "machine's administrator, then record it with `provisioner trust`",
        )


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
