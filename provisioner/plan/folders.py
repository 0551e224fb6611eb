"""The checks of the folders that hold copies: their permissions, and the files interrupted
writes left in them. One action per finding, on the target (not on an entity)."""

from __future__ import annotations

from collections.abc import Callable

from provisioner.manifest.model import Target
from provisioner.plan.model import CLEAR, SECURE, Action, Desired, Observed, Reason
from provisioner.transports.base import FolderFacts, Leftover, file_path, folder_of, in_folder


def folder_permissions(target: Target, folder: str, facts: FolderFacts) -> Reason | None:
    # Windows OpenSSH reports synthetic modes; only POSIX folders are compared.
    # SMB folders are not compared: each copy carries its own protected ACL.
    posix = target.transport == "local" or (target.transport == "ssh" and folder.startswith("/"))
    if posix and facts.mode & 0o077:
        return Reason(
            "folder-permissions",
            f"folder mode {facts.mode:04o} lets others reach the copies: set to 0700",
        )
    return None


def leftover_reason(leftover: Leftover) -> Reason:
    if not leftover.moved_aside:
        return Reason("leftover", f"temporary of an interrupted write of {leftover.final}: removed")
    if leftover.final_exists:
        return Reason(
            "leftover",
            f"previous copy moved aside by an interrupted replace of {leftover.final}, which is "
            "in place: removed",
        )
    return Reason(
        "leftover",
        f"previous copy moved aside by an interrupted replace: put back as {leftover.final}, "
        "a name nothing holds",
    )


def plan_folders(
    desired: Desired,
    observed: Observed,
    resolve: Callable[[str], Target | None],
) -> list[Action]:
    """Actions for the observed folders of reachable targets: `~ secure folder` when group or
    other may enter a declared target folder, `-` (or `~` for a put-back) per leftover."""
    actions: list[Action] = []
    for (name, folder), facts in sorted(observed.folders.items()):
        target = resolve(name)
        if facts is None or target is None or name in observed.unreachable:
            continue
        declared = desired.manifest.workstations.get(name) or desired.manifest.locations.get(name)
        if declared is not None and folder == folder_of(declared, file_path(declared, "x")):
            reason = folder_permissions(declared, folder, facts)
            if reason is not None:
                actions.append(
                    Action(SECURE, "~", "", 0, reason.code, reason.message, name, folder)
                )
        for leftover in facts.leftovers:
            reason = leftover_reason(leftover)
            putback = leftover.moved_aside and not leftover.final_exists
            actions.append(
                Action(
                    CLEAR,
                    "~" if putback else "-",
                    "",
                    0,
                    reason.code,
                    reason.message,
                    name,
                    in_folder(target, folder, leftover.name),
                    attributes=(("final", leftover.final),),
                )
            )
    return actions
