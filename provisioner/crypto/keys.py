"""RSA key generation and the fingerprints that identify keys and certificates."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner.errors import KeyMismatchError, UnsupportedAlgorithmError

KEY_SIZES = (2048, 3072, 4096)


def generate_key(size: int) -> rsa.RSAPrivateKey:
    """A fresh RSA key of `size` bits (public exponent 65537)."""
    if size not in KEY_SIZES:
        raise UnsupportedAlgorithmError(f"RSA key size {size} is not one of {KEY_SIZES}")
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex (what the platform's registry shows)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def public_key_fingerprint(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex; identical across generations'
    re-encodings of the same key."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def check_pair(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    """Raise KeyMismatchError unless `key` is the private half of `cert`'s public key."""
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise UnsupportedAlgorithmError("certificate key is not RSA")
    if public.public_numbers() != key.public_key().public_numbers():
        raise KeyMismatchError(
            "the private key does not belong to the certificate "
            f"(certificate key {public_key_fingerprint(public)[:16]}…, "
            f"private key {public_key_fingerprint(key)[:16]}…)"
        )
