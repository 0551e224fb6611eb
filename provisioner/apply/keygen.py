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


def _encode(job: tuple[bytes, bytes, bytes, str, str, str]) -> bytes:
    from cryptography import x509

    from provisioner.crypto import pkcs12

    key_der, cert_der, chain_pem, name, password, profile = job
    key = serialization.load_der_private_key(key_der, None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey)
    chain = tuple(x509.load_pem_x509_certificates(chain_pem)) if chain_pem else ()
    return pkcs12.encode(
        key, x509.load_der_x509_certificate(cert_der), chain, name, password, profile
    )


def encode_many(
    jobs: list[tuple[rsa.RSAPrivateKey, bytes, bytes, str, str, str]], workers: int | None = None
) -> list[bytes]:
    """PKCS#12 encodings (key, certificate DER, chain PEM, friendly name, password, profile),
    in parallel processes when there are many: PBKDF2 at 100,000 rounds costs ~35 ms each.
    Keys and passwords cross to the workers through pipes, never files."""
    from cryptography import x509

    from provisioner.crypto import pkcs12

    workers = workers or os.cpu_count() or 1
    if len(jobs) < 8 or workers < 2:
        out = []
        for key, cert_der, chain_pem, name, password, profile in jobs:
            chain = tuple(x509.load_pem_x509_certificates(chain_pem)) if chain_pem else ()
            out.append(
                pkcs12.encode(
                    key, x509.load_der_x509_certificate(cert_der), chain, name, password, profile
                )
            )
        return out
    payload = [
        (
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            cert,
            chain,
            name,
            password,
            profile,
        )
        for key, cert, chain, name, password, profile in jobs
    ]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(_encode, payload, chunksize=max(1, len(jobs) // (workers * 8))))
