"""Helpers shared by the end-to-end tests of the reconcile engine."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_keys
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from tests.conftest import EXAMPLES

PASSWORDS = {
    entity: (EXAMPLES / "secrets" / f"{entity}.pass").read_text().strip()
    for entity in ("commune-exemple", "syndicat-eaux")
}
ESCROW_PASSPHRASE = (EXAMPLES / "secrets" / "escrow.pass").read_text().strip()
DESIGNATIONS = {"commune-exemple": "Commune Exemple", "syndicat-eaux": "Syndicat Eaux Val"}


def p12_files(manifest: Path) -> dict[str, Path]:
    """Every PKCS#12 under the quickstart's demo-out folder, by path relative to it."""
    root = manifest.parent / "demo-out"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*.p12"))}


def key_fingerprints(manifest: Path) -> dict[str, str]:
    """The public-key fingerprint inside every copy, opened with its entity's password."""
    out = {}
    for rel, path in p12_files(manifest).items():
        entity = rel.rsplit("/", 1)[1].split(".")[0]
        out[rel] = public_key_fingerprint(pkcs12.decode(path.read_bytes(), PASSWORDS[entity]).key)
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def state_rows(manifest: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(manifest.parent / ".provisioner" / "state.db")
    try:
        return list(conn.execute(query))
    finally:
        conn.close()


def serial(manifest: Path) -> int:
    return int(state_rows(manifest, "SELECT value FROM meta WHERE key = 'serial'")[0][0])


def dated_certificate(
    key: CertificateIssuerPrivateKeyTypes,
    name: str,
    at: dt.datetime,
    days: int = 400,
    key_usage: tuple[str, ...] = (),
) -> x509.Certificate:
    """A self-signed certificate valid from `at` for `days`, dated by the test's own clock
    (never the wall clock: a suite run on any date, or under faketime, makes the same one);
    `key_usage` names the x509.KeyUsage flags set (none: no keyUsage extension)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(minutes=5))
        .not_valid_after(at + dt.timedelta(days=days))
    )
    if key_usage:
        flags = {flag: flag in key_usage for flag in KEY_USAGE_FLAGS}
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=False)
    return builder.sign(key, hashes.SHA256())


KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def openssl_p12(
    folder: Path,
    password: str,
    at: dt.datetime,
    name: str = "Ancienne cle",
    days: int = 400,
    legacy: bool = True,
    ec: bool = False,
    key_usage: tuple[str, ...] = (),
) -> Path:
    """A bi-clé exported by OpenSSL (`openssl pkcs12 -export`), as from a Windows workstation
    (.pfx). Its certificate is valid from `at`, the clock the test pins, for `days`."""
    key: CertificateIssuerPrivateKeyTypes = (
        ec_keys.generate_private_key(ec_keys.SECP256R1())
        if ec
        else rsa.generate_private_key(65537, 2048)
    )
    cert_obj = dated_certificate(key, name, at, days, key_usage)
    key_path, cert, out = folder / "k.pem", folder / "c.pem", folder / "old.pfx"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(cert_obj.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-export",
            *(["-legacy"] if legacy else []),
            "-inkey",
            key_path,
            "-in",
            cert,
            "-name",
            name,
            "-out",
            out,
            "-passout",
            f"pass:{password}",
        ],
        check=True,
        capture_output=True,
    )
    key_path.unlink()
    return out
