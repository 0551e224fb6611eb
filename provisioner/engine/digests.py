"""Digests that tie a saved plan to what it was made from: the inputs (the secrets' values
keyed by the escrow passphrase at the keyring's own cost) and the observed files."""

from __future__ import annotations

import hashlib
import hmac

from provisioner.bounded import InputFileError, read_regular
from provisioner.engine.inputs import Inputs
from provisioner.manifest.yamlpos import MAX_BYTES
from provisioner.plan.model import Observed
from provisioner.state.escrow import SCRYPT_N, SCRYPT_P, SCRYPT_R


def inputs_digest(inputs: Inputs, salt: bytes) -> str:
    """A digest of the manifest, the files it references and the secrets' values, keyed by the
    escrow passphrase. The plan file goes where reviewers read it: without the passphrase its
    digest tests no guess of a password, and with every entity's password in hand it tests a
    guess of the passphrase no cheaper than the escrow's keyring file does (the same scrypt
    cost, `escrow.SCRYPT_N`; it was half that before 2026-12-07, an outside review's finding)."""
    h = hashlib.sha256()
    files = [inputs.manifest.path]
    for issuer in inputs.manifest.issuers.values():
        files += [issuer.certificate, issuer.private_key]
    if inputs.consultations_path is not None:
        files.append(inputs.consultations_path)
    for path in files:
        h.update(str(path).encode() + b"\0")
        try:  # the same bounded read as the loaders: a file swapped for a pipe is not waited on
            h.update(hashlib.sha256(read_regular(path, MAX_BYTES)).digest())
        except InputFileError:
            h.update(b"(unreadable)")
    key = hashlib.scrypt(
        inputs.escrow_passphrase.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=256 * SCRYPT_N * SCRYPT_R,
        dklen=32,
    )
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for entity, password in sorted(inputs.passwords.items()):
        mac.update(entity.encode() + b"\0" + password.encode() + b"\0")
    h.update(mac.digest())
    h.update(repr(sorted(inputs.limit or ())).encode())
    scope = inputs.scope
    if scope is not None and scope.targets is not None:  # (absent: as before targets existed)
        h.update(repr((sorted(scope.targets), sorted(scope.whole))).encode())
    return h.hexdigest()


def observed_digest(observed: Observed) -> str:
    h = hashlib.sha256()
    for (target, path), facts in sorted(observed.files.items()):
        h.update(f"{target}\0{path}\0".encode())
        h.update(
            b"-"
            if facts is None
            else f"{facts.sha256}:{facts.size}:{facts.mode}:{facts.symlink}".encode()
        )
    for (target, folder), found in sorted(observed.folders.items()):
        h.update(f"folder\0{target}\0{folder}\0".encode())
        if found is not None:
            h.update(f"{found.mode}:{[(x.name, x.final_exists) for x in found.leftovers]}".encode())
    for name, reason in sorted(observed.unreachable.items()):
        h.update(f"unreachable\0{name}\0{reason}".encode())
    return h.hexdigest()
