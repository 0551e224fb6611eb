"""`rekey`: the escrow passphrase rotated."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.engine import Inputs, load_inputs, open_state
from provisioner.errors import (
    SecretError,
    StateError,
)

if TYPE_CHECKING:  # imported where used: `plan` loads neither the probe nor the receipts
    pass


def rekey(
    manifest: Path,
    state_dir: Path | None,
    new: str,
    *,
    lock_timeout: float,
    state_backend: str | None = None,
) -> str:
    """Rotate the escrow passphrase (the manifest's is the current one); returns the escrow,
    as messages name it."""
    from provisioner.secrets import resolve
    from provisioner.state import rekey as rotation
    from provisioner.state.store import hold

    rotation.check_new_passphrase(new)
    inputs = load_inputs(manifest, state_dir, need_secrets=False, state_backend=state_backend)
    current = resolve(inputs.manifest.escrow_passphrase, "escrow passphrase")
    if new == current:
        raise SecretError("the new passphrase is the current one")
    if inputs.location.is_sqlite and not inputs.escrow_dir.is_dir():
        raise StateError(f"no escrow in {inputs.state_dir}: nothing to rekey")
    inputs = _with_passphrase(inputs, current)
    with (
        hold(inputs.location, "rekey", lock_timeout),
        open_state(inputs, create=False) as session,
    ):
        if session.escrow is None or session.db is None:
            raise StateError(f"no escrow in {session.escrow_blobs.where()}")
        rotation.rotate(session.escrow, session.db, new)
        return session.escrow_blobs.where()


def _with_passphrase(inputs: Inputs, passphrase: str) -> Inputs:
    from dataclasses import replace

    return replace(inputs, escrow_passphrase=passphrase)
