"""Renewed issuer certificates: generations whose issuer's certificate file now holds a
renewed certificate with the same key and subject get the new chain (public files only)."""

from __future__ import annotations

from provisioner.bounded import MAX_PEM_BYTES, InputFileError, read_regular
from provisioner.manifest.model import Manifest
from provisioner.state.records import Recorded


def chain_updates(manifest: Manifest, recorded: Recorded) -> dict[str, tuple[bytes, str]]:
    """Generation id -> (the new chain's PEM, its digest), for each live generation whose
    issuer file holds a renewed certificate with the same subject and key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from provisioner.crypto.certificates import chain_digest

    out: dict[str, tuple[bytes, str]] = {}
    for name, issuer in manifest.issuers.items():
        try:
            pem_in = read_regular(issuer.certificate, MAX_PEM_BYTES)
            certs = tuple(x509.load_pem_x509_certificates(pem_in))
        except (InputFileError, ValueError):
            continue  # reported when a generation is created with it
        digest = chain_digest(certs)
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
        for g in recorded.generations:
            if g.issuer != name or not g.chain or g.chain_sha256 == digest:
                continue
            old = x509.load_pem_x509_certificates(g.chain)[0]
            if old.subject == certs[0].subject and old.public_key() == certs[0].public_key():
                out[g.id] = (pem, digest)
    return out
