"""The checks of the folders that hold copies: their permissions, and the files interrupted
writes left in them. One action per finding, on the target (not on an entity)."""

from __future__ import annotations

from collections.abc import Callable

from provisioner.manifest.model import Target
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.actions import ClearLeftover, Reason, ReasonCode, SecureFolder
from provisioner.plan.model import Desired, Observed
from provisioner.transports.base import FolderFacts, Leftover, file_path, folder_of, in_folder


def folder_permissions(target: Target, folder: str, facts: FolderFacts) -> Reason | None:
    # Windows OpenSSH reports synthetic modes; only POSIX folders are compared.
    # SMB folders are not compared: each copy carries its own protected ACL.
    if kind_of(target).posix_modes(folder) and facts.mode & 0o077:
        return Reason(
            ReasonCode.FOLDER_PERMISSIONS,
            f"folder mode {facts.mode:04o} lets others reach the copies: set to 0700",
        )
    return None


def leftover_reason(leftover: Leftover) -> Reason:
    if not leftover.moved_aside:
        return Reason(
            ReasonCode.LEFTOVER, f"temporary of an interrupted write of {leftover.final}: removed"
        )
    if leftover.final_exists:
        return Reason(
            ReasonCode.LEFTOVER,
            f"previous copy moved aside by an interrupted replace of {leftover.final}, which is "
            "in place: removed",
        )
    return Reason(
        ReasonCode.LEFTOVER,
        f"previous copy moved aside by an interrupted replace: put back as {leftover.final}, "
        "a name nothing holds",
    )


def plan_folders(
    desired: Desired,
    observed: Observed,
    resolve: Callable[[str], Target | None],
) -> list[SecureFolder | ClearLeftover]:
    """Actions for the observed folders of reachable targets: `~ secure folder` when group or
    other may enter a declared target folder, `-` (or `~` for a put-back) per leftover."""
    actions: list[SecureFolder | ClearLeftover] = []
    for (name, folder), facts in sorted(observed.folders.items()):
        target = resolve(name)
        if facts is None or target is None or name in observed.unreachable:
            continue
        declared = desired.manifest.workstations.get(name) or desired.manifest.locations.get(name)
        if declared is not None and folder == folder_of(declared, file_path(declared, "x")):
            reason = folder_permissions(declared, folder, facts)
            if reason is not None:
                actions.append(
                    SecureFolder(
                        entity="",
                        generation=0,
                        reason=reason.code,
                        message=reason.message,
                        target=name,
                        path=folder,
                    )
                )
        for leftover in facts.leftovers:
            reason = leftover_reason(leftover)
            actions.append(
                ClearLeftover(
                    entity="",
                    generation=0,
                    reason=reason.code,
                    message=reason.message,
                    target=name,
                    path=in_folder(target, folder, leftover.name),
                    folder=folder,
                    leftover=leftover,
                )
            )
    return actions
