"""What each transport means to the program, in one place per transport: the manifest fields
it reads into a Target, how its paths join and compare, whether its file modes or its ACLs
say who may read a copy, what the state records of it, and what an Ansible inventory needs to
reach it. The connections themselves live in provisioner/transports/ (opened by the pool
through its own table, `transports.OPENERS`).

Everything else asks `kind_of(target)` instead of comparing `target.transport` with a name:
adding a transport is one class here, its connection module, its schema fragment and its
tests (docs/ARCHITECTURE.md, "Recipes")."""

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
        path = posixpath.normpath(t.path)
        path = "/" + path.lstrip("/") if path.startswith("/") else path
        if self.case_insensitive(path):
            path = path.casefold()
        host = (t.host or "").casefold()
        return (t.transport, host, t.port, (t.share or "").casefold(), path)

    def case_insensitive(self, path: str) -> bool:
        return bool(_WINDOWS_ABS.match(path))

    def spec_extra(self, t: m.Target) -> dict[str, object]:
        """Fields of its own the state records beside the common ones (secret references,
        never secrets)."""
        return {}

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

    def target(self, c: Checker, item: dict[str, Any], role: m.Role, where: Where) -> m.Target:
        path = c.local_str(item["path"], (*where, "path"))
        return m.Target(item["name"], role, "local", path, c.pos.at(where))

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

    def target(self, c: Checker, item: dict[str, Any], role: m.Role, where: Where) -> m.Target:
        passphrase = item.get("key_passphrase")
        key_file = item.get("key_file")
        return m.Target(
            item["name"],
            role,
            "ssh",
            c.remote_path(item["path"], (*where, "path")),
            c.pos.at(where),
            host=item["host"],
            port=item.get("port", 22),
            user=item["user"],
            key_file=c.local_path(key_file, (*where, "key_file")) if key_file else None,
            key_passphrase=c.secret(passphrase, (*where, "key_passphrase")) if passphrase else None,
            known_hosts=c.local_path(item["known_hosts"], (*where, "known_hosts")),
            connect_timeout=float(item.get("connect_timeout", 10.0)),
        )

    def address(self, t: m.Target) -> str:
        sep = "" if t.path.startswith("/") else "/"
        return f"{t.user}@{t.host}:{t.port}{sep}{t.path}"

    def credentials(
        self, t: m.Target
    ) -> tuple[list[tuple[str, m.SecretRef]], list[tuple[str, Path]]]:
        secrets = [("key_passphrase", t.key_passphrase)] if t.key_passphrase else []
        files = [(f, p) for f, p in (("key_file", t.key_file), ("known_hosts", t.known_hosts)) if p]
        return secrets, files

    def ansible_connection(self, t: m.Target) -> dict[str, Any] | None:
        out: dict[str, Any] = {"host": t.host, "port": t.port, "user": t.user}
        if t.key_file is not None:
            out["key_file"] = str(t.key_file)
        if t.known_hosts is not None:
            out["known_hosts"] = str(t.known_hosts)
        out["connect_timeout"] = t.connect_timeout
        return out


class Smb(TransportKind):
    name = "smb"
    default_port = 445
    access_by_acl = True

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
        return m.Target(
            item["name"],
            role,
            "smb",
            folder.rstrip("/") or "/",
            c.pos.at(where),
            host=item["host"],
            port=item.get("port", 445),
            user=item["user"],
            connect_timeout=float(item.get("connect_timeout", 10.0)),
            share=item["share"],
            password=c.secret(item["password"], (*where, "password")),
            readers=item.get("readers"),
            encrypt=item.get("encrypt", True),
        )

    def address(self, t: m.Target) -> str:
        return f"//{t.user}@{t.host}:{t.port}/{t.share}{t.path.rstrip('/')}"

    def posix_modes(self, path: str) -> bool:
        return False  # each copy carries its own protected ACL (access_by_acl)

    def case_insensitive(self, path: str) -> bool:
        return True

    def spec_extra(self, t: m.Target) -> dict[str, object]:
        return {
            "share": t.share,
            "password": t.password,
            "readers": t.readers,
            "encrypt": t.encrypt,
        }


KINDS: dict[str, TransportKind] = {k.name: k for k in (Local(), Ssh(), Smb())}


def kind_of(target: m.Target) -> TransportKind:
    """The kind of `target`'s transport."""
    return KINDS[target.transport]
