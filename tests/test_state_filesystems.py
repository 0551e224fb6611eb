"""The SQLite state is refused on a network filesystem (NFS, CIFS/SMB...): its locking is
unreliable there and a lock on a share does not fall away when its holder crashes. The
detection is a table of the mount table's filesystem types; the refusal is checked end to end
through the real command line, in this process, with a mount table that says the folder is an
NFS mount (no real NFS server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.state import filesystems
from provisioner.state.filesystems import filesystem_of, network_filesystem
from tests.conftest import run_in_process

NETWORK = {
    "nfs": "NFS",
    "nfs4": "NFS",
    "NFS4": "NFS",
    "cifs": "CIFS/SMB",
    "smb3": "CIFS/SMB",
    "smbfs": "CIFS/SMB",
    "9p": "9P",
    "ceph": "CephFS",
    "glusterfs": "GlusterFS",
    "fuse.glusterfs": "GlusterFS",
    "fuse.sshfs": "SSHFS",
    "afs": "AFS",
    "lustre": "Lustre",
    "davfs": "WebDAV",
}
LOCAL = ("ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "vfat", "exfat", "fuse", "f2fs")


@pytest.mark.parametrize(("fstype", "kind"), sorted(NETWORK.items()))
def test_network_filesystems_are_recognised(fstype: str, kind: str) -> None:
    found = network_filesystem(fstype)
    assert found is not None and found.startswith(kind)


@pytest.mark.parametrize("fstype", LOCAL)
def test_local_filesystems_are_not(fstype: str) -> None:
    assert network_filesystem(fstype) is None


def mountinfo(point: Path, fstype: str) -> str:
    """A mount table: / on ext4, and `point` mounted with `fstype` (proc(5) format, a space in
    a path escaped as \\040)."""
    where = str(point.resolve()).replace(" ", "\\040")
    return (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"98 22 0:52 / {where} rw,relatime shared:40 - {fstype} srv:/export rw,vers=4.2\n"
    )


def test_the_folder_of_a_state_not_made_yet_is_judged_by_its_nearest_parent(
    tmp_path: Path,
) -> None:
    share = tmp_path / "a share"
    share.mkdir()
    table = mountinfo(share, "nfs4")
    assert filesystem_of(share / ".provisioner" / "deeper", table) == "nfs4"
    assert filesystem_of(tmp_path / "beside", table) == "ext4"


@pytest.fixture
def on_nfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quickstart: Path) -> Path:
    """The quickstart's folder, as an NFS mount according to the mount table."""
    table = tmp_path / "mountinfo"
    table.write_text(mountinfo(quickstart.parent, "nfs4"))
    monkeypatch.setattr(filesystems, "MOUNTINFO", table)
    return quickstart


@pytest.mark.parametrize("command", [["apply", "--auto-approve"], ["plan"], ["status"]])
def test_a_sqlite_state_on_nfs_is_refused_with_nothing_written(
    on_nfs: Path, command: list[str]
) -> None:
    env = {"PROVISIONER_NOW": "2026-11-30T09:00:00+00:00", "COLUMNS": "200"}
    done = run_in_process([*command, str(on_nfs)], on_nfs.parent, env, None)
    assert done.returncode == 1, done.stdout + done.stderr
    state = on_nfs.parent / ".provisioner"
    assert f"Error: {state}: the state folder is on a network filesystem (NFS, type nfs4)" in (
        done.stderr
    )
    assert "SQLite's locking is unreliable there" in done.stderr
    assert "backend: postgresql" in done.stderr and "Traceback" not in done.stderr
    assert not (state / "state.db").exists() and not (state / "escrow").exists()
    assert not (on_nfs.parent / "demo-out").exists(), "no copy written"
