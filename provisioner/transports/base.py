"""The transport interface and the facts it reports about a file."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provisioner.errors import Location, TransportError
from provisioner.manifest.model import SecretRef, Target
from provisioner.manifest.transport_kinds import KINDS, kind_of

# The most a transport reads of one file: a copy or a receipt is a few KB, so a file larger
# than this is not one this tool wrote, and is never read whole into memory.
MAX_READ_BYTES = 1 << 20


def too_large(path: str) -> str:
    return f"{path} is larger than {MAX_READ_BYTES} bytes: not a file this tool wrote"


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a target says about a file, without opening it as a PKCS#12."""

    size: int
    sha256: str
    mode: int
    symlink: bool = False
    # SMB: the file's owner and the SIDs its ACL lets read it (observed where the server
    # reports a security descriptor); empty elsewhere, where `mode` tells.
    owner: str = ""
    readers: tuple[str, ...] = ()
    # local: the mode lets others read the file and the filesystem fixes it (a CIFS mount's
    # file_mode): chmod cannot change it. Never set for a mode that lets no one else read.
    mode_fixed: bool = False


# Files this tool leaves in a target folder when a write is interrupted: the temporary of an
# atomic write (local and SSH) and, on SSH servers without posix-rename, the previous copy
# moved aside. Both are recognised by name, and only for the copy names this tool writes
# (`<entity>.g<N>.p12`): a foreign file is never taken for one.
_COPY_NAME = r"(?P<final>[^/\\]+\.g[0-9]+\.p12)"
_LEFTOVER = re.compile(
    rf"\.provisioner-tmp-{_COPY_NAME}\.[0-9a-f]{{8}}\Z|{_COPY_NAME.replace('final', 'old')}"
    r"\.old-[0-9a-f]{8}\Z"
)
OLD_MARK = ".old-"


_WELL_KNOWN_SIDS = {
    "S-1-1-0": "Everyone",
    "S-1-5-7": "Anonymous",
    "S-1-5-11": "Authenticated Users",
    "S-1-5-18": "SYSTEM",
    "S-1-5-32-544": "Administrators",
    "S-1-5-32-545": "Users",
    "S-1-5-32-546": "Guests",
}


def sid_name(sid: str) -> str:
    """A SID as a reader knows it: `S-1-1-0 (Everyone)`; domain and Samba Unix SIDs as is."""
    if sid in _WELL_KNOWN_SIDS:
        return f"{sid} ({_WELL_KNOWN_SIDS[sid]})"
    if sid.startswith("S-1-5-21-") and sid.rsplit("-", 1)[-1] == "513":
        return f"{sid} (Domain Users)"
    if sid.startswith("S-1-22-2-"):
        return f"{sid} (Unix group {sid.rsplit('-', 1)[-1]})"
    if sid.startswith("S-1-22-1-"):
        return f"{sid} (Unix user {sid.rsplit('-', 1)[-1]})"
    return sid


def leftover_final(name: str) -> str | None:
    """The copy name a leftover file was for, or None when `name` is not one of ours."""
    found = _LEFTOVER.match(name)
    if found is None:
        return None
    return found.group("final") or found.group("old")


@dataclass(frozen=True, slots=True)
class Leftover:
    """A file an interrupted write left in a target folder."""

    name: str
    final: str  # the copy it was for
    moved_aside: bool  # the previous copy, moved aside (SSH servers without posix-rename)
    final_exists: bool


@dataclass(frozen=True, slots=True)
class FolderFacts:
    """What a target says about a folder holding copies: one stat and one listing."""

    mode: int
    leftovers: tuple[Leftover, ...] = ()
    # The names that look like copies (`<entity>.g<number>.p12`): a generation this state
    # never numbered there means a state older than its targets (lost, restored, copied).
    copies: tuple[str, ...] = ()
    # The folder's device and inode where the transport tells them (local): one folder
    # reached by two paths (a symlink, a bind mount) is one identity.
    identity: tuple[int, int] | None = None


def as_leftover(name: str, present: Collection[str] = ()) -> Leftover | None:
    """The leftover named `name` in a folder holding `present`, or None if it is not one."""
    final = leftover_final(name)
    if final is None:
        return None
    return Leftover(name, final, not name.startswith(".provisioner-tmp-"), final in present)


def folder_facts(
    mode: int,
    names: list[str],
    *,
    moves_aside: bool = True,
    identity: tuple[int, int] | None = None,
) -> FolderFacts:
    """FolderFacts from a folder's mode and the names it holds. `moves_aside`: whether this
    transport ever moves a copy aside (SSH); elsewhere a `.old-…` name is someone else's."""
    # A substring test first: the no-op plan lists every target folder.
    copies = tuple(sorted(n for n in names if n.endswith(".p12") and ".g" in n))
    candidates = [n for n in names if ".provisioner-tmp-" in n or (moves_aside and OLD_MARK in n)]
    if not candidates:
        return FolderFacts(mode, copies=copies, identity=identity)
    present = set(names)
    found = (as_leftover(name, present) for name in sorted(candidates))
    return FolderFacts(mode, tuple(x for x in found if x is not None), copies, identity)


# Why a target's host could not be reached, as `Unreachable.kind` says it.
REFUSED = "refused"
TIMED_OUT = "timed out"
NO_BANNER = "no SSH banner"
HANDSHAKE_STALLED = "SSH handshake stalled"
AUTH_FAILED = "auth failed"
HOST_KEY_MISMATCH = "host key mismatch"
HOST_KEY_UNKNOWN = "host key unknown"
NETWORK = "network error"
CLIENT_KEY = "client key"


class Unreachable(TransportError):
    """A host this run could not connect to, with the kind of failure (`REFUSED`, ...); the
    message says it in words. The run does not try that host again."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Transport(Protocol):
    """Observe, write atomically, read and remove files on one target."""

    target: Target

    def observe(self, path: str) -> FileFacts | None:
        """Facts about `path`, or None when there is no file."""
        ...

    def write(self, path: str, data: bytes) -> FileFacts:
        """Atomically replace `path` with `data`, mode 0600 (folders 0700)."""
        ...

    def read(self, path: str) -> bytes:
        """The bytes of a regular file, at most MAX_READ_BYTES of them (TransportError past
        that, or for a file that is not regular: a FIFO is never waited on)."""
        ...

    def names(self) -> list[str]:
        """The file names in the target's folder; empty when the folder does not exist."""
        ...

    def observe_folder(self, folder: str) -> FolderFacts | None:
        """The folder's mode and the leftovers of interrupted writes in it, or None."""
        ...

    def secure_folder(self, folder: str) -> None:
        """Take group and other access away from `folder` (mode 0700)."""
        ...

    def clear_leftover(self, folder: str, leftover: Leftover) -> None:
        """Remove a leftover; a copy moved aside is put back first if its name is still free."""
        ...

    def remove(self, path: str) -> None:
        """Remove `path`; a missing file is not an error."""
        ...

    def close(self) -> None: ...


def file_path(target: Target, file_name: str) -> str:
    """Where `file_name` lives on `target`."""
    return kind_of(target).join(target.path, file_name)


def folder_of(target: Target, path: str) -> str:
    """The folder holding `path` on `target`."""
    return kind_of(target).dirname(path)


def in_folder(target: Target, folder: str, name: str) -> str:
    """The path of `name` in `folder` on `target`."""
    return kind_of(target).join(folder, name)


# The fields every recorded spec carries, a transport's own replacing them: the record's shape
# since schema version 1, when every target had them all (a local target's port 22 included),
# kept so that a target's record reads the same before and after an upgrade.
RECORD_BASE: dict[str, object] = {
    "host": None,
    "port": 22,
    "user": None,
    "key_file": None,
    "key_passphrase": None,
    "known_hosts": None,
    "connect_timeout": 10.0,
}


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

    spec: dict[str, object] = {
        "name": target.name,
        "role": target.role,
        "transport": target.transport,
        "path": target.path,
        **RECORD_BASE,
    }
    for field, value in kind_of(target).record(target).items():
        spec[field] = ref(value) if isinstance(value, SecretRef) else value
    return json.dumps(spec, sort_keys=True)


def target_from_spec(spec: str) -> Target:
    """Rebuild a Target recorded with `target_spec`."""
    d = json.loads(spec)

    def secret_ref(recorded: object) -> SecretRef | None:
        if not recorded or not isinstance(recorded, dict):
            return None
        raw = dict(recorded)
        base = Path(str(raw.pop("base_dir")))
        kind, value = next(iter(raw.items()))
        return SecretRef(
            kind,
            tuple(value) if isinstance(value, list) else str(value),
            base,
            Location("state"),
        )

    return Target(
        name=d["name"],
        role=d["role"],
        path=d["path"],
        location=Location("state"),
        spec=KINDS[d["transport"]].from_record(d, secret_ref),
    )
