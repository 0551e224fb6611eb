"""Key generation across cores: RSA generation dominates a first apply."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner.crypto.keys import generate_key


def _generate_der(size: int) -> bytes:
    # Crosses the process boundary through a pipe, never through a file.
    return generate_key(size).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_many(sizes: list[int], workers: int | None = None) -> list[rsa.RSAPrivateKey]:
    """One key per requested size, in order; in parallel processes when there are several."""
    workers = workers or os.cpu_count() or 1
    if len(sizes) < 2 or workers < 2:
        return [generate_key(size) for size in sizes]
    with ProcessPoolExecutor(max_workers=min(workers, len(sizes))) as pool:
        ders = list(pool.map(_generate_der, sizes, chunksize=max(1, len(sizes) // (workers * 8))))
    keys = []
    for der in ders:
        # Made by our own child process a moment ago: skip OpenSSL's slow RSA re-check.
        key = serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
        assert isinstance(key, rsa.RSAPrivateKey)
        keys.append(key)
    return keys
