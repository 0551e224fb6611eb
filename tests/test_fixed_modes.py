"""A local target on a filesystem that fixes file modes (a CIFS mount's file_mode, FAT): the
permission check must not ask for a rewrite at every run, and says so once per target.

No CIFS or FAT mount can be made on the test machines (no mount privilege in the sandbox, no
cifs module), so the detection is tested on the facts it reads: mountinfo lines in the kernel's
format, and the planner on observed facts. A plain folder, where chmod works, is tested for
real: the check still fires there.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from provisioner.errors import Location
from provisioner.manifest.model import Manifest, SecretRef, Target
from provisioner.plan.model import Desired, Observed
from provisioner.plan.planner import plan
from provisioner.state.records import Recorded
from provisioner.transports.base import FileFacts
from provisioner.transports.local import LocalTransport, mode_is_fixed, mount_of, parse_mountinfo
from tests.test_planner import LOC, NAS, NOW, WS1, WS2, copy, entity, generation

MOUNTINFO = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
40 22 0:35 / /mnt/partage rw,relatime shared:20 - cifs //nas/partage rw,vers=3.1.1,\
cache=strict,username=svc,uid=0,noforceuid,gid=0,noforcegid,addr=10.0.0.5,file_mode=0644,\
dir_mode=0755,soft,nounix,serverino,mapposix,rsize=4194304,wsize=4194304
41 22 0:36 / /mnt/acl rw,relatime shared:21 - cifs //nas/acl rw,vers=3.1.1,cifsacl,\
file_mode=0644,dir_mode=0755
42 22 8:17 / /media/usb\\040key rw,relatime shared:22 - vfat /dev/sdb1 rw,fmask=0022,dmask=0022
"""


def test_the_mount_table_tells_which_filesystems_fix_modes() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.point for m in mounts] == ["/", "/mnt/partage", "/mnt/acl", "/media/usb key"]
    assert mode_is_fixed(mount_of("/mnt/partage/cles/ville.g1.p12", mounts))
    assert mode_is_fixed(mount_of("/media/usb key/x", mounts))
    assert not mode_is_fixed(mount_of("/mnt/acl/cles", mounts))  # cifsacl maps modes
    assert not mode_is_fixed(mount_of("/mnt/partagex/cles", mounts))  # ext4, not the share
    assert not mode_is_fixed(mount_of("/srv/keys", mounts))


def test_on_a_folder_where_chmod_works_a_readable_copy_is_still_reported(tmp_path: Path) -> None:
    target = Target("ws", "workstation", str(tmp_path), Location("m.yaml"))
    transport = LocalTransport(target)
    written = transport.write(str(tmp_path / "ville.g1.p12"), b"bytes")
    assert written.mode == 0o600 and not written.mode_fixed
    os.chmod(tmp_path / "ville.g1.p12", 0o644)
    facts = transport.observe(str(tmp_path / "ville.g1.p12"))
    assert facts is not None and facts.mode == 0o644 and not facts.mode_fixed


def _plan(observed: dict[tuple[str, str], FileFacts | None]) -> tuple[list[str], list[str]]:
    manifest = Manifest(
        Path("/m.yaml"),
        Path("/"),
        SecretRef("env", "E", Path("/"), LOC),
        {},
        {"ws1": WS1, "ws2": WS2},
        {},
        {"nas": NAS},
        (entity(),),
        None,
    )
    g1, g2 = generation(1, "retired"), generation(2)
    copies = (copy(NAS, 1), copy(NAS, 2), copy(WS1, 2))
    facts = {(c.target, c.path): FileFacts(c.size, c.sha256, 0o600) for c in copies}
    facts.update(observed)
    result = plan(
        Desired(manifest, {"ville": "pw1"}),
        Recorded("lineage", 3, (g1, g2), {(c.target, c.path): c for c in copies}),
        Observed(facts, {}),
        NOW,
    )
    actions = [f"{a.symbol} {a.kind} {a.reason} {a.target}" for a in result.actions]
    return actions, [w.message for w in result.warnings if w.code == "mode-fixed"]


def test_modes_a_filesystem_fixes_give_one_warning_per_target_not_a_rewrite_each_run() -> None:
    loose = {
        (c.target, c.path): FileFacts(c.size, c.sha256, 0o644, mode_fixed=True)
        for c in (copy(NAS, 1), copy(NAS, 2))
    }
    actions, warnings = _plan(loose)
    assert actions == []
    assert warnings == [
        "nas: the filesystem holding /srv/nas fixes file modes (a CIFS mount's file_mode, a FAT "
        "disk): its copies show mode 0644, which chmod cannot change, so who may read them is "
        "neither checked nor set here; declare the share with `transport: smb` to set and "
        "check each copy's ACL"
    ]
    # Where chmod works, the same mode is a rewrite, as before.
    unfixed = {k: replace(v, mode_fixed=False) for k, v in loose.items() if v is not None}
    actions, warnings = _plan(dict(unfixed))
    assert actions == ["~ write-copy permissions nas", "~ write-copy permissions nas"]
    assert warnings == []


def test_on_a_filesystem_that_fixes_modes_only_a_mode_others_can_read_is_flagged(
    tmp_path: Path,
) -> None:
    """The transport flags a copy as fixed-mode only when its mode lets others read it: a
    private copy on such a filesystem needs no warning (the planner relies on it)."""
    target = Target("ws", "workstation", str(tmp_path), Location("m.yaml"))
    transport = LocalTransport(target)
    transport.write(str(tmp_path / "ville.g1.p12"), b"bytes")
    transport._mode_fixed = True  # what the mount table says of a CIFS mount (tested above)
    private = transport.observe(str(tmp_path / "ville.g1.p12"))
    assert private is not None and private.mode == 0o600 and not private.mode_fixed
    os.chmod(tmp_path / "ville.g1.p12", 0o640)
    shown = transport.observe(str(tmp_path / "ville.g1.p12"))
    assert shown is not None and shown.mode == 0o640 and shown.mode_fixed
