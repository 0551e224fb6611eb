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


def target(path: str) -> Target:
    return Target("nas", "location", "local", path, Location("m.yaml", 9, 7))


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
