"""The SQLite state is never kept on a network filesystem: SQLite's locking is unreliable over
NFS and SMB (its own documentation says so, and such databases get corrupted), and a lock
file on a share does not fall away when its holder crashes. A team shares a PostgreSQL state
instead. What holds a folder is read from the mount table (/proc/self/mountinfo)."""

from __future__ import annotations

import os
from pathlib import Path

from provisioner.errors import StateError
from provisioner.transports.local import mount_of, parse_mountinfo

MOUNTINFO = Path("/proc/self/mountinfo")

# Filesystem types (as the mount table names them) whose locking SQLite cannot rely on.
NETWORK_FILESYSTEMS: dict[str, str] = {
    "nfs": "NFS",
    "nfs4": "NFS",
    "cifs": "CIFS/SMB",
    "smb3": "CIFS/SMB",
    "smbfs": "CIFS/SMB",
    "9p": "9P (a virtual machine's or WSL's shared folder)",
    "afs": "AFS",
    "ceph": "CephFS",
    "glusterfs": "GlusterFS",
    "fuse.glusterfs": "GlusterFS",
    "lustre": "Lustre",
    "fuse.sshfs": "SSHFS",
    "davfs": "WebDAV",
    "fuse.davfs2": "WebDAV",
    "fuse.rclone": "rclone",
    "ncpfs": "NetWare",
    "coda": "Coda",
}


def network_filesystem(fstype: str) -> str | None:
    """What a mount table's filesystem type is, when it is a network one; None for a local
    one (ext4, xfs, btrfs, tmpfs, overlay, zfs...)."""
    return NETWORK_FILESYSTEMS.get(fstype.lower())


def filesystem_of(folder: Path, mountinfo: str | None = None) -> str | None:
    """The filesystem type holding `folder` (or its nearest existing parent: a state folder
    not made yet), from the mount table; None where there is no mount table."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    here = folder
    while not here.exists() and here != here.parent:
        here = here.parent
    mount = mount_of(os.path.realpath(here), parse_mountinfo(mountinfo))
    return mount.fstype if mount is not None else None


def refuse_network_folder(folder: Path) -> None:
    """StateError when the SQLite state folder is on a network filesystem."""
    fstype = filesystem_of(folder)
    kind = network_filesystem(fstype) if fstype else None
    if kind is None:
        return
    raise StateError(
        f"{folder}: the state folder is on a network filesystem ({kind}, type {fstype}): "
        "SQLite's locking is unreliable there and its database can be corrupted, and a lock "
        "on a share does not fall away when its holder crashes. Copy the folder to a local "
        "disk while no command runs and point --state-dir there; for several administrators "
        "and the scheduled job, keep the state in PostgreSQL: `state: {backend: postgresql, "
        "...}` in the manifest, then `provisioner state migrate --to postgresql --state-dir "
        "LOCAL-COPY` (docs/TEAM.md)"
    )
