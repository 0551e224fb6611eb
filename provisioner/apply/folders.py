"""The target folders: closed to others (mode 0700) and cleared of what interrupted writes
left, before anything is written there (a put-back copy may then be replaced as planned)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from provisioner.errors import ProvisionerError
from provisioner.plan.actions import ClearLeftover, SecureFolder

if TYPE_CHECKING:
    from provisioner.apply.context import RunContext


def secure_and_clear(ctx: RunContext, actions: Sequence[SecureFolder | ClearLeftover]) -> None:
    for action in actions:
        try:
            transport = ctx.transport(action.target)
            if isinstance(action, SecureFolder):
                transport.secure_folder(action.path)
                event = "folder-secured"
            else:
                transport.clear_leftover(action.folder, action.leftover)
                event = "leftover-cleared"
        except ProvisionerError as exc:
            ctx.result.failed(action, str(exc))
            continue
        ctx.db.note(event, None, target=action.target, path=action.path)
        ctx.result.done(action)
