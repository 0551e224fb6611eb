"""Rotation of the escrow passphrase: the data key is rewrapped under the new passphrase
(one file rewritten), the escrowed keys stay as they are, the audit log says so."""

from __future__ import annotations

from provisioner.errors import SecretError
from provisioner.manifest.model import PasswordPolicy
from provisioner.secrets import policy_problem
from provisioner.state.escrow import Escrow
from provisioner.state.store import StateStore

PASSPHRASE_POLICY = PasswordPolicy(min_length=16, min_classes=2)


def check_new_passphrase(new: str) -> None:
    """Refuse a new escrow passphrase weaker than the policy (SecretError)."""
    problem = policy_problem(new, PASSPHRASE_POLICY)
    if problem:
        raise SecretError(
            f"the new escrow passphrase is refused: {problem} (escrow passphrases need 16 "
            "characters)"
        )


def rotate(escrow: Escrow, store: StateStore, new: str) -> None:
    """Rewrap the escrow's data key under `new`, then record it in the audit log."""
    escrow.rekey(new)
    store.note("escrow-rekeyed", None, keys=len(escrow.fingerprints()))
