"""The transport interface and the facts it reports about a file."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provisioner.errors import Location
from provisioner.manifest.model import SecretRef, Target


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a target says about a file, without opening it as a PKCS#12."""

    size: int
    sha256: str
    mode: int
    symlink: bool = False


class Transport(Protocol):
    """Observe, write atomically, read and remove files on one target."""

    target: Target

    def observe(self, path: str) -> FileFacts | None:
        """Facts about `path`, or None when there is no file."""
        ...

    def write(self, path: str, data: bytes) -> FileFacts:
        """Atomically replace `path` with `data`, mode 0600 (folders 0700)."""
        ...

    def read(self, path: str) -> bytes: ...

    def names(self) -> list[str]:
        """The file names in the target's folder; empty when the folder does not exist."""
        ...

    def remove(self, path: str) -> None:
        """Remove `path`; a missing file is not an error."""
        ...

    def close(self) -> None: ...


def file_path(target: Target, file_name: str) -> str:
    """Where `file_name` lives on `target`."""
    if target.transport == "local":
        return os.path.join(target.path, file_name)
    return posixpath.join(target.path, file_name)


def target_spec(target: Target) -> str:
    """JSON description of a target kept in the state (secret references, never secrets),
    so that copies can still be removed after the target leaves the manifest."""

    def ref(r: SecretRef | None) -> object:
        return (
            None
            if r is None
            else {
                r.kind: list(r.value) if isinstance(r.value, tuple) else r.value,
                "base_dir": str(r.base_dir),
            }
        )

    return json.dumps(
        {
            "name": target.name,
            "role": target.role,
            "transport": target.transport,
            "path": target.path,
            "host": target.host,
            "port": target.port,
            "user": target.user,
            "key_file": str(target.key_file) if target.key_file else None,
            "key_passphrase": ref(target.key_passphrase),
            "known_hosts": str(target.known_hosts) if target.known_hosts else None,
            "connect_timeout": target.connect_timeout,
        },
        sort_keys=True,
    )


def target_from_spec(spec: str) -> Target:
    """Rebuild a Target recorded with `target_spec`."""
    d = json.loads(spec)
    passphrase = None
    if d.get("key_passphrase"):
        raw = dict(d["key_passphrase"])
        base = Path(raw.pop("base_dir"))
        kind, value = next(iter(raw.items()))
        passphrase = SecretRef(
            kind, tuple(value) if isinstance(value, list) else value, base, Location("state")
        )
    return Target(
        name=d["name"],
        role=d["role"],
        transport=d["transport"],
        path=d["path"],
        location=Location("state"),
        host=d.get("host"),
        port=d.get("port") or 22,
        user=d.get("user"),
        key_file=Path(d["key_file"]) if d.get("key_file") else None,
        key_passphrase=passphrase,
        known_hosts=Path(d["known_hosts"]) if d.get("known_hosts") else None,
        connect_timeout=float(d.get("connect_timeout") or 10.0),
    )
