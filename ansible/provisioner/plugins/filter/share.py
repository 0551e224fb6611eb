# Copyright: provisioner maintainers
# MIT License
"""Where the copies and receipts of a workstation the tool writes through an SMB share are on
that workstation itself. The tool names them inside the share (`/ProgramData/Provisioner/...`
for `share: C$`); the role, which runs on the workstation, needs the folder the share exports
there (`agent_stores_share_root`, `C:\\` for `C$`): the receipt the role writes there is the one
the tool reads through the share."""

from __future__ import annotations

import posixpath
import re

from ansible.errors import AnsibleFilterError

DRIVE = re.compile(r"^[A-Za-z]:([\\/]|$)")
RECEIPT_SUFFIX = ".receipt.json"


def root_problem(root, windows):
    """Why `root` cannot be the local folder of a share on the workstation, or '' when it can:
    a drive path on Windows (C:\\, D:\\Partages), an absolute path elsewhere. A UNC path names
    another machine: the role runs on the workstation and does not write across the network."""
    if not isinstance(root, str) or not root.strip():
        return "it is not set"
    if root.startswith(("\\\\", "//")):
        return (
            f"{root} is a network path: give the share's folder on the workstation itself "
            "(the role writes the receipts there, not across the network)"
        )
    if windows and not DRIVE.match(root):
        return f"{root} is not a folder of a Windows drive (C:\\ for the share C$)"
    if not windows and not root.startswith("/"):
        return f"{root} is not an absolute path"
    return ""


def _join(root, inside, windows):
    parts = [p for p in inside.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise AnsibleFilterError(f"share_paths: {inside!r} leaves the share")
    if windows:
        return "\\".join([root.replace("/", "\\").rstrip("\\"), *parts])
    return posixpath.join(root, *parts)


def share_paths(copies, transport, root=None, windows=True):
    """`copies` (provisioner_copies) as the workstation sees them: for `transport` smb, each
    copy's `host_path` and `receipt_path` are the files under `root` that the share's paths
    name; other transports are returned as they are (their paths are already the host's or
    the controller's)."""
    if transport != "smb":
        return copies
    why = root_problem(root, windows)
    if why:
        raise AnsibleFilterError(f"share_paths: agent_stores_share_root: {why}")
    out = []
    for copy in copies:
        receipt = copy["receipt_path"]
        if not receipt.endswith(RECEIPT_SUFFIX):
            raise AnsibleFilterError(f"share_paths: {receipt!r} is not a receipt's path")
        pkcs12 = receipt[: -len(RECEIPT_SUFFIX)] + ".p12"  # the tool names both: NAME.gN.*
        out.append(
            {
                **copy,
                "host_path": _join(root, pkcs12, windows),
                "receipt_path": _join(root, receipt, windows),
            }
        )
    return out


class FilterModule:
    def filters(self):
        return {"share_paths": share_paths, "share_root_problem": root_problem}
