"""Bid-opening rehearsal: a CMS EnvelopedData test bid (pli) encrypted to a certificate and
opened with a private key, as the platform does at the opening of bids (ouverture des plis)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from provisioner.errors import CorruptFileError, KeyMismatchError


def encrypt_bid(certificate: x509.Certificate, content: bytes) -> bytes:
    """DER CMS EnvelopedData of `content`, AES-256-CBC, key transported to `certificate`."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(content)
        .add_recipient(certificate)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def open_bid(envelope: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> bytes:
    """Decrypt a DER CMS EnvelopedData addressed to `certificate` with `key`.

    Raises KeyMismatchError when the bid is not addressed to this certificate or the key cannot
    open it, CorruptFileError when the envelope is unreadable."""
    try:
        return pkcs7.pkcs7_decrypt_der(envelope, certificate, key, [])
    except ValueError as exc:
        text = str(exc).lower()
        if "asn1" in text or "parse" in text or "not an enveloped" in text:
            raise CorruptFileError(f"unreadable bid: {exc}") from None
        raise KeyMismatchError(f"this key cannot open the bid: {exc}") from None
