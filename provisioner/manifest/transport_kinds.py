"""What each transport means to the program, in one place per transport: the manifest fields
it reads into a Target, how its paths join and compare, whether its file modes or its ACLs
say who may read a copy, what the state records of it, and what an Ansible inventory needs to
reach it. The connections themselves live in provisioner/transports/ (opened by the pool
through its own table, `transports.OPENERS`).

Everything else asks `kind_of(target)` instead of comparing `target.transport` with a name:
adding a transport is one class here (its manifest fields included: the inventory's target
schema is assembled from every kind's, `python -m provisioner.manifest.compile_schemas`), its
connection module and its tests (docs/ARCHITECTURE.md, "Recipes")."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from provisioner.manifest import model as m
from provisioner.manifest.checker import Checker
from provisioner.manifest.names import _WINDOWS_ABS, file_name_problem

Where = tuple[str | int, ...]
RecordedRef = Callable[[object], m.SecretRef | None]


# The fields every target has, whatever its transport (their schemas are the manifest
# schema's own), and what the schema says of `path` before and after each kind's `path_help`.
COMMON_FIELDS = ("name", "transport", "path", "description", "install")
PATH_HELP = "Folder that receives the files."
PATH_RULE = (
    "Each target has its own folder: two targets in one folder (the same path written "
    "differently, through a symlink, or on the same host and share) are refused, and so are "
    "two local folders a plan observes to be one (the same device and inode: a bind mount)."
)
# Field schemas several kinds use.
_TEXT: dict[str, Any] = {"type": "string", "minLength": 1}
_PORT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 65535}
_SECRET: dict[str, Any] = {"$ref": "#/$defs/secret"}
_TIMEOUT: dict[str, Any] = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 600,
    "description": "seconds to wait for a connection (default 10).",
}


class TransportKind:
    """The behaviour shared by every transport; each subclass says what differs."""

    name: ClassVar[m.Transport]
    default_port: ClassVar[int | None] = None
    # Its folders are folders of this machine (the controller): read without a connection,
    # a missing one may be an unmounted share.
    on_controller: ClassVar[bool] = False
    # Its host keys are pinned in a known_hosts file (`provisioner trust` records them).
    pins_host_keys: ClassVar[bool] = False
    # Who may read a copy is said by the file's ACL (SMB), not its mode bits.
    access_by_acl: ClassVar[bool] = False
    # Its manifest entry, as the schema's target says it (compile_schemas.target_schema):
    # what it is, in a sentence; what its `path` is; the fields it adds to those of every
    # target (COMMON_FIELDS), each a JSON Schema described for this transport alone (a field
    # two kinds share must have the same schema but for its description); those it requires.
    summary: ClassVar[str]
    path_help: ClassVar[str]
    fields: ClassVar[dict[str, dict[str, Any]]] = {}
    required: ClassVar[tuple[str, ...]] = ()

    def target(self, c: Checker, item: dict[str, Any], role: m.Role, where: Where) -> m.Target:
        """The Target its manifest entry declares (errors said through `c`)."""
        raise NotImplementedError

    # Paths on the target: POSIX by default (SFTP and SMB speak forward slashes).
    def join(self, folder: str, name: str) -> str:
        return posixpath.join(folder, name)

    def dirname(self, path: str) -> str:
        return posixpath.dirname(path)

    def address(self, t: m.Target) -> str:
        """Human name of where files land."""
        return t.path

    def posix_modes(self, path: str) -> bool:
        """Whether the mode bits reported for `path` mean what they say (Windows OpenSSH
        reports synthetic ones)."""
        return path.startswith("/")

    def folder_key(
        self, t: m.Target, resolve: Callable[[str], str]
    ) -> tuple[str | int | None, ...]:
        """What makes two targets the same folder (`resolve`: a local path's real path)."""
        raise NotImplementedError

    def remote_folder_key(
        self, t: m.Target, host: str, port: int, share: str
    ) -> tuple[str | int | None, ...]:
        """A remote folder's identity: the host, port and share, and the path as the server
        compares it."""
        path = posixpath.normpath(t.path)
        path = "/" + path.lstrip("/") if path.startswith("/") else path
        if self.case_insensitive(path):
            path = path.casefold()
        return (t.transport, host.casefold(), port, share.casefold(), path)

    def case_insensitive(self, path: str) -> bool:
        return bool(_WINDOWS_ABS.match(path))

    def record(self, t: m.Target) -> dict[str, object]:
        """The transport's own fields as the state records them beside the common ones
        (secret references, never secrets): `target_spec` in transports/base.py."""
        return {}

    def from_record(self, d: dict[str, Any], ref: RecordedRef) -> m.TransportSpec:
        """The spec recorded by `record` (`ref` reads a recorded secret reference)."""
        raise NotImplementedError

    def readers(self, t: m.Target) -> str | None:
        """The group its access control lets read the copies besides the tool (ACL kinds)."""
        return None

    def credentials(
        self, t: m.Target
    ) -> tuple[list[tuple[str, m.SecretRef]], list[tuple[str, Path]]]:
        """The secrets and the controller's files `validate` checks before a run: (field,
        reference) and (field, path)."""
        return [], []

    def ansible_connection(self, t: m.Target) -> dict[str, Any] | None:
        """How an Ansible inventory reaches the host, or None when the files are read on
        the controller (the playbook then uses the controller's path)."""
        return None


class Local(TransportKind):
    name = "local"
    on_controller = True
    summary = "a folder on this machine or a mounted share."
    path_help = "absolute or relative to the manifest."

    def target(self, c: Checker, item: dict[str, Any], role: m.Role, where: Where) -> m.Target:
        path = c.local_str(item["path"], (*where, "path"))
        return m.Target(item["name"], role, path, c.pos.at(where))

    def from_record(self, d: dict[str, Any], ref: RecordedRef) -> m.TransportSpec:
        return m.LOCAL

    def join(self, folder: str, name: str) -> str:
        return os.path.join(folder, name)

    def dirname(self, path: str) -> str:
        return os.path.dirname(path)

    def posix_modes(self, path: str) -> bool:
        return True

    def folder_key(
        self, t: m.Target, resolve: Callable[[str], str]
    ) -> tuple[str | int | None, ...]:
        return ("local", resolve(t.path))


class Ssh(TransportKind):
    name = "ssh"
    default_port = 22
    pins_host_keys = True
    summary = "SFTP to an OpenSSH server (Linux or Windows)."
    path_help = "absolute remote path, forward slashes (C:/ProgramData/Provisioner on Windows)."
    fields: ClassVar[dict[str, dict[str, Any]]] = {
        "host": {**_TEXT, "description": "host name or address."},
        "port": {**_PORT, "description": "port (default 22)."},
        "user": {**_TEXT, "description": "user name."},
        "key_file": {
            **_TEXT,
            "description": "private key file for authentication (relative to the manifest); "
            "without it the SSH agent is used.",
        },
        "key_passphrase": {**_SECRET, "description": "passphrase of key_file."},
        "known_hosts": {
            **_TEXT,
            "description": "known_hosts file used for strict host key checking (relative to "
            "the manifest).",
        },
        "connect_timeout": _TIMEOUT,
    }
    required = ("host", "user", "known_hosts")

    def target(self, c: Checker, item: dict[str, Any], role: m.Role, where: Where) -> m.Target:
        passphrase = item.get("key_passphrase")
        key_file = item.get("key_file")
        spec = m.SshSpec(
            host=item["host"],
            user=item["user"],
            known_hosts=c.local_path(item["known_hosts"], (*where, "known_hosts")),
            port=item.get("port", 22),
            key_file=c.local_path(key_file, (*where, "key_file")) if key_file else None,
            key_passphrase=c.secret(passphrase, (*where, "key_passphrase")) if passphrase else None,
            connect_timeout=float(item.get("connect_timeout", 10.0)),
        )
        path = c.remote_path(item["path"], (*where, "path"))
        return m.Target(item["name"], role, path, c.pos.at(where), spec)

    def address(self, t: m.Target) -> str:
        s = t.spec_of(m.SshSpec)
        sep = "" if t.path.startswith("/") else "/"
        return f"{s.user}@{s.host}:{s.port}{sep}{t.path}"

    def folder_key(
        self, t: m.Target, resolve: Callable[[str], str]
    ) -> tuple[str | int | None, ...]:
        s = t.spec_of(m.SshSpec)
        return self.remote_folder_key(t, s.host, s.port, "")

    def record(self, t: m.Target) -> dict[str, object]:
        s = t.spec_of(m.SshSpec)
        return {
            "host": s.host,
            "port": s.port,
            "user": s.user,
            "key_file": str(s.key_file) if s.key_file else None,
            "key_passphrase": s.key_passphrase,
            "known_hosts": str(s.known_hosts) if s.known_hosts else None,
            "connect_timeout": s.connect_timeout,
        }

    def from_record(self, d: dict[str, Any], ref: RecordedRef) -> m.TransportSpec:
        return m.SshSpec(
            host=d.get("host") or "",
            user=d.get("user") or "",
            known_hosts=Path(d["known_hosts"]) if d.get("known_hosts") else None,
            port=d.get("port") or 22,
            key_file=Path(d["key_file"]) if d.get("key_file") else None,
            key_passphrase=ref(d.get("key_passphrase")),
            connect_timeout=float(d.get("connect_timeout") or 10.0),
        )

    def credentials(
        self, t: m.Target
    ) -> tuple[list[tuple[str, m.SecretRef]], list[tuple[str, Path]]]:
        s = t.spec_of(m.SshSpec)
        secrets = [("key_passphrase", s.key_passphrase)] if s.key_passphrase else []
        files = [(f, p) for f, p in (("key_file", s.key_file), ("known_hosts", s.known_hosts)) if p]
        return secrets, files

    def ansible_connection(self, t: m.Target) -> dict[str, Any] | None:
        s = t.spec_of(m.SshSpec)
        out: dict[str, Any] = {"host": s.host, "port": s.port, "user": s.user}
        if s.key_file is not None:
            out["key_file"] = str(s.key_file)
        if s.known_hosts is not None:
            out["known_hosts"] = str(s.known_hosts)
        out["connect_timeout"] = s.connect_timeout
        return out


class Smb(TransportKind):
    name = "smb"
    default_port = 445
    access_by_acl = True
    summary = (
        "an SMB2/3 share (Windows file server, NAS, Samba), SMB3 encryption and signing "
        "required; see docs/SECURITY.md for what is checked there."
    )
    path_help = (
        "folder inside the share, forward slashes, from its root (/Provisioner/keys; / for "
        "the root)."
    )
    fields: ClassVar[dict[str, dict[str, Any]]] = {
        "host": {**_TEXT, "description": "host name or address."},
        "port": {**_PORT, "description": "port (default 445)."},
        "user": {**_TEXT, "description": "account name (DOMAIN\\name or name)."},
        "share": {
            **_TEXT,
            "pattern": '^[^\\\\/:*?"<>|]+$',
            "description": "share name (backup, C$ for a workstation's administrative share).",
        },
        "password": {
            **_SECRET,
            "description": "password of user (NTLM authentication; Kerberos is not offered, "
            "see docs/SECURITY.md).",
        },
        "readers": {
            "type": "string",
            "pattern": "^S-1-[0-9]+(-[0-9]+)+$",
            "description": "SID of the group that may read the copies besides the tool's "
            "account (default: nobody else), e.g. S-1-5-21-...-1105.",
        },
        "encrypt": {
            "type": "boolean",
            "description": "require SMB3 encryption (default true); false only for a server "
            "that cannot encrypt, on a network you trust (signing stays required).",
        },
        "connect_timeout": _TIMEOUT,
    }
    required = ("host", "share", "user", "password")

    def target(self, c: Checker, item: dict[str, Any], role: m.Role, where: Where) -> m.Target:
        folder = item["path"]
        if "\\" in folder or not folder.startswith("/"):
            c.error(
                (*where, "path"),
                f"smb path {folder!r} is the folder inside the share, from its root, with "
                "forward slashes (/Provisioner/keys, or / for the root)",
            )
        else:
            for part in folder.split("/"):
                problem = file_name_problem(part) if part else None
                if problem or part in (".", ".."):
                    c.error((*where, "path"), f"smb path {folder!r}: {problem or 'unsafe part'}")
                    break
        spec = m.SmbSpec(
            host=item["host"],
            user=item["user"],
            share=item["share"],
            password=c.secret(item["password"], (*where, "password")),
            port=item.get("port", 445),
            connect_timeout=float(item.get("connect_timeout", 10.0)),
            readers=item.get("readers"),
            encrypt=item.get("encrypt", True),
        )
        return m.Target(item["name"], role, folder.rstrip("/") or "/", c.pos.at(where), spec)

    def address(self, t: m.Target) -> str:
        s = t.spec_of(m.SmbSpec)
        return f"//{s.user}@{s.host}:{s.port}/{s.share}{t.path.rstrip('/')}"

    def folder_key(
        self, t: m.Target, resolve: Callable[[str], str]
    ) -> tuple[str | int | None, ...]:
        s = t.spec_of(m.SmbSpec)
        return self.remote_folder_key(t, s.host, s.port, s.share)

    def readers(self, t: m.Target) -> str | None:
        return t.spec_of(m.SmbSpec).readers

    def posix_modes(self, path: str) -> bool:
        return False  # each copy carries its own protected ACL (access_by_acl)

    def case_insensitive(self, path: str) -> bool:
        return True

    def record(self, t: m.Target) -> dict[str, object]:
        s = t.spec_of(m.SmbSpec)
        return {
            "host": s.host,
            "port": s.port,
            "user": s.user,
            "connect_timeout": s.connect_timeout,
            "share": s.share,
            "password": s.password,
            "readers": s.readers,
            "encrypt": s.encrypt,
        }

    def from_record(self, d: dict[str, Any], ref: RecordedRef) -> m.TransportSpec:
        return m.SmbSpec(
            host=d.get("host") or "",
            user=d.get("user") or "",
            share=d.get("share") or "",
            password=ref(d.get("password")),
            port=d.get("port") or 445,
            connect_timeout=float(d.get("connect_timeout") or 10.0),
            readers=d.get("readers"),
            encrypt=d.get("encrypt", True),
        )


KINDS: dict[str, TransportKind] = {k.name: k for k in (Local(), Ssh(), Smb())}


def kind_of(target: m.Target) -> TransportKind:
    """The kind of `target`'s transport."""
    return KINDS[target.transport]
