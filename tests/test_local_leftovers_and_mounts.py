"""The local transport's own judgement: which mount fixes file modes (read from the kernel's
mount table, whatever lines it holds), and what interrupted writes left in a workstation folder:
a temporary is removed, never put in place of a copy; one that cannot be removed is reported
naming it, and the rest of the run is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import Location
from provisioner.manifest.model import Target
from provisioner.transports import local
from provisioner.transports.local import LocalTransport, mode_is_fixed, mount_of, parse_mountinfo
from tests.conftest import Runner

CIFS = (
    "40 22 0:35 / /mnt/partage rw,relatime shared:20 - cifs //nas/partage rw,vers=3.1.1,"
    "file_mode=0644,dir_mode=0755,nounix"
)
ROOT = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro"


def test_a_mount_table_line_that_is_not_a_mount_is_skipped_not_fatal() -> None:
    text = "\n".join(
        [
            ROOT,
            "a line written by something else , with six words",  # no ' - ' separator
            "",
            CIFS,
        ]
    )
    mounts = parse_mountinfo(text)
    assert [m.point for m in mounts] == ["/", "/mnt/partage"]
    assert mode_is_fixed(mount_of("/mnt/partage/cles/ville.g1.p12", mounts))


def line(number: int, point: str, fstype: str, source: str, options: str) -> str:
    """A mountinfo line as the kernel writes it (proc(5)): spaces, tabs and backslashes in the
    mount point escaped in octal."""
    escaped = point.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
    tail = f"{fstype} {source} {options}"
    return f"{number} 22 0:{number} / {escaped} rw,relatime shared:{number} - {tail}"


@pytest.mark.parametrize(
    ("mounts", "path", "fixed"),
    [
        # A CIFS share fixes modes unless an option maps them (cifsacl, modefromsid, posix,
        # unix); an smb3 mount is the same filesystem.
        ([("/mnt/nas", "cifs", "rw,vers=3.1.1,file_mode=0644")], "/mnt/nas/k.p12", True),
        ([("/mnt/nas", "cifs", "rw,vers=3.1.1,cifsacl,file_mode=0644")], "/mnt/nas/k.p12", False),
        ([("/mnt/nas", "smb3", "rw,file_mode=0644")], "/mnt/nas/k.p12", True),
        ([("/mnt/nas", "smb3", "rw,posix,file_mode=0644")], "/mnt/nas/k.p12", False),
        ([("/mnt/nas", "smb3", "rw,unix")], "/mnt/nas/k.p12", False),
        ([("/mnt/nas", "cifs", "rw,modefromsid")], "/mnt/nas/k.p12", False),
        ([("/media/usb", "exfat", "rw,fmask=0022")], "/media/usb/k.p12", True),
        # Mount points as the kernel escapes them: a space, a tab, a backslash, a last letter
        # that is no slash, a trailing space (a folder of another name).
        ([("/mnt/partage commun", "cifs", "rw")], "/mnt/partage commun/k.p12", True),
        ([("/mnt/tab\there", "cifs", "rw")], "/mnt/tab\there/k.p12", True),
        ([("/mnt/back\\slash", "cifs", "rw")], "/mnt/back\\slash/k.p12", True),
        ([("/mnt/NAS-X", "cifs", "rw")], "/mnt/NAS-X/cles/k.p12", True),
        ([("/mnt/share ", "cifs", "rw")], "/mnt/share/k.p12", False),
        # Mounted over: the later line is the one in use.
        ([("/mnt/nas", "ext4", "rw"), ("/mnt/nas", "cifs", "rw")], "/mnt/nas/k.p12", True),
        ([("/mnt/nas", "cifs", "rw"), ("/mnt/nas", "ext4", "rw")], "/mnt/nas/k.p12", False),
        # The deepest mount holding the path; only a whole folder name matches.
        ([("/mnt", "cifs", "rw"), ("/mnt/local", "ext4", "rw")], "/mnt/local/k.p12", False),
        ([("/mnt/nas", "cifs", "rw")], "/mnt/nas2/k.p12", False),
    ],
)
def test_which_mount_fixes_the_modes_of_a_path(
    mounts: list[tuple[str, str, str]], path: str, fixed: bool
) -> None:
    text = "\n".join(
        [ROOT] + [line(40 + i, *m[:2], "//nas/share", m[2]) for i, m in enumerate(mounts)]
    )
    assert mode_is_fixed(mount_of(path, parse_mountinfo(text))) is fixed


def target(path: str) -> Target:
    return Target("nas", "location", path, Location("m.yaml", 9, 7))


def test_the_mount_table_is_read_from_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(ROOT + "\n" + CIFS + "\n")
    real = Path

    def proc_is(path: str) -> Path:
        # This machine's /proc/self/mountinfo, as the kernel of a CIFS client writes it.
        return table if path == "/proc/self/mountinfo" else real("/nonexistent") / path

    monkeypatch.setattr(local, "Path", proc_is)
    assert LocalTransport(target("/mnt/partage/cles")).mode_fixed()
    assert not LocalTransport(target("/srv/cles")).mode_fixed()
    # Where there is no mount table (not Linux), modes are taken as chmod sets them: a copy
    # readable by others is then reported and rewritten, never excused.
    table.unlink()
    assert not LocalTransport(target("/mnt/partage/cles")).mode_fixed()


def test_a_temporary_is_removed_never_put_in_place_and_one_that_cannot_be_is_reported(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    workstations = quickstart.parent / "demo-out" / "workstations"
    # A write of a generation that never landed anywhere: its copy's name is free.
    temporary = workstations / "ws-accueil" / ".provisioner-tmp-commune-exemple.g5.p12.0badc0de"
    temporary.write_bytes(b"half a PKCS#12")
    # A folder under a temporary's name: it cannot be unlinked.
    stuck = workstations / "ws-marches" / ".provisioner-tmp-syndicat-eaux.g1.p12.12345678"
    (stuck / "inside").mkdir(parents=True)
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"  ! clear-leftover: ws-marches: cannot remove {stuck}: Is a directory" in (
        done.stderr.splitlines()
    )
    assert "Apply finished with errors: 1 done, 1 failed;" in done.stdout
    assert sorted(p.name for p in (workstations / "ws-accueil").iterdir()) == [
        "commune-exemple.g1.p12"
    ]
    assert (stuck / "inside").is_dir()
