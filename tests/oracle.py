"""The stateful suite's oracle: what the files hold, read without the code under test.

The suite judges the program by the files themselves, so its reading of them must not be the
program's own: a sealing bug symmetric in seal and unseal, or a key escrowed and never recorded,
would pass unseen if the judge were `provisioner.state.escrow.Escrow`. Here the escrow (its
folder, or the same files a PostgreSQL state keeps in its `escrow` table) is opened from its
documented format (docs/SECURITY.md and the docstring of state/escrow.py), PKCS#12 copies with
the `cryptography` library's own loader, and bids with its CMS functions; nothing from
`provisioner` is imported. A PKCS#12 declaring more than MAX_ITERATIONS key-derivation
iterations (read from its DER by `declared_iterations`) is not opened: the world drops such
files to see whether the program hangs on them, and the judge must not.

The escrow format, as documented:
- `keyring.json`: {"format": "provisioner-escrow/1", "kdf": "scrypt", "n", "r", "p", "salt",
  "nonce", "wrapped"}; the 256-bit data key is `wrapped` by AES-256-GCM (associated data
  `escrow-data-key`) under scrypt(passphrase, salt, n, r, p, 32 bytes).
- `<public-key-sha256>.key`: {"format": "provisioner-escrow-key/2", "entity", "key_sha256",
  "nonce", "sealed", ...}; `sealed` is the PKCS#8 DER private key under AES-256-GCM with the data
  key, its associated data the format, the fingerprint and the entity joined by NUL bytes
  (format 1 files, "provisioner-escrow/1", sealed the fingerprint alone).
- a fingerprint is the SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.hazmat.primitives.serialization import pkcs12 as raw_pkcs12

KEYRING_FORMAT = "provisioner-escrow/1"
KEY_FORMAT = "provisioner-escrow-key/2"


def fingerprint(public: rsa.RSAPublicKey) -> str:
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


@lru_cache(maxsize=8192)
def _data_key(ring: bytes, passphrase: str) -> bytes | None:
    try:
        doc = json.loads(ring)
        if doc.get("format") != KEYRING_FORMAT or doc.get("kdf") != "scrypt":
            return None
        kek = Scrypt(
            salt=base64.b64decode(doc["salt"]), length=32, n=doc["n"], r=doc["r"], p=doc["p"]
        ).derive(passphrase.encode("utf-8"))
        return AESGCM(kek).decrypt(
            base64.b64decode(doc["nonce"]), base64.b64decode(doc["wrapped"]), b"escrow-data-key"
        )
    except (ValueError, KeyError, TypeError, InvalidTag):
        return None


@dataclass(frozen=True)
class SealedKey:
    """A key file of the escrow that opened: the entity it names and the key's fingerprint."""

    entity: str
    key_sha256: str


@lru_cache(maxsize=8192)
def _open_key_file(data_key: bytes, name: str, data: bytes) -> SealedKey | None:
    try:
        doc = json.loads(data)
        entity, sha = doc["entity"], doc["key_sha256"]
        if doc.get("format") == KEY_FORMAT:
            aad = b"\0".join((KEY_FORMAT.encode(), sha.encode("ascii"), entity.encode("utf-8")))
        elif doc.get("format") == KEYRING_FORMAT:
            aad = sha.encode("ascii")
        else:
            return None
        der = AESGCM(data_key).decrypt(
            base64.b64decode(doc["nonce"]), base64.b64decode(doc["sealed"]), aad
        )
        key = serialization.load_der_private_key(der, None)
    except (ValueError, KeyError, TypeError, InvalidTag, UnicodeError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    found = fingerprint(key.public_key())
    # A file must hold the key it is named after: one swapped for another does not count.
    if found != sha or name != f"{sha}.key":
        return None
    return SealedKey(entity, found)


def escrowed_keys(escrow: Path | Mapping[str, bytes], passphrase: str) -> dict[str, SealedKey]:
    """Fingerprint -> key, for every key file of the escrow (a folder, or its files by name, as
    a PostgreSQL state's `escrow` table holds them) that opens with the keyring there and the
    passphrase and holds the key it is named after."""
    files = escrow if not isinstance(escrow, Path) else _files(escrow)
    ring = files.get("keyring.json")
    if ring is None:
        return {}
    data_key = _data_key(ring, passphrase)
    if data_key is None:
        return {}
    out: dict[str, SealedKey] = {}
    for name in sorted(files):
        if not name.endswith(".key"):
            continue
        found = _open_key_file(data_key, name, files[name])
        if found is not None:
            out[found.key_sha256] = found
    return out


def _files(folder: Path) -> dict[str, bytes]:
    out = {}
    for path in [folder / "keyring.json", *sorted(folder.glob("*.key"))]:
        try:
            out[path.name] = path.read_bytes()
        except OSError:
            continue
    return out


# A PKCS#12 declaring more key-derivation iterations than this is not opened (the Windows
# import limit, docs/SECURITY.md): the world may drop one declaring 2**31 - 1, which would
# hold the judge for many minutes, as it would the program.
MAX_ITERATIONS = 600_000


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """The consecutive DER TLVs of `data` (ValueError when it is not DER)."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise ValueError("truncated")
        tag, n, i = data[i], data[i + 1], i + 2
        if n & 0x80:
            count = n & 0x7F
            if not 0 < count <= 4:
                raise ValueError("length")
            n, i = int.from_bytes(data[i : i + count], "big"), i + count
        if i + n > len(data):
            raise ValueError("truncated")
        out.append((tag, data[i : i + n]))
        i += n
    return out


def declared_iterations(data: bytes, depth: int = 0) -> int:
    """The largest iteration count `data` declares: an INTEGER right after an OCTET STRING
    in one SEQUENCE (PBKDF2 and PKCS#12 PBE parameters: salt, count; MacData: digest, salt,
    count), walking into constructed values and OCTET STRINGs that hold DER. 0 if none."""
    try:
        items = _tlvs(data)
    except ValueError:
        return 0
    found = 0
    previous = None
    for tag, value in items:
        if tag == 0x02 and previous == 0x04:
            found = max(found, int.from_bytes(value, "big", signed=True))
        elif (tag & 0x20 or tag == 0x04) and depth < 32:
            found = max(found, declared_iterations(value, depth + 1))
        previous = tag
    return found


@lru_cache(maxsize=8192)
def p12_contents(data: bytes, password: str) -> tuple[str, bytes] | None:
    """(key fingerprint, certificate DER) of a PKCS#12 that opens with `password` and whose
    key is its certificate's, else None (None, unopened, when it declares more than
    MAX_ITERATIONS)."""
    if declared_iterations(data) > MAX_ITERATIONS:
        return None
    try:
        key, cert, _ = raw_pkcs12.load_key_and_certificates(data, password.encode("utf-8"))
    except (ValueError, TypeError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey) or cert is None:
        return None
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or fingerprint(public) != fingerprint(
        key.public_key()
    ):
        return None
    return fingerprint(key.public_key()), cert.public_bytes(serialization.Encoding.DER)


def encrypt_bid(certificate: x509.Certificate, content: bytes) -> bytes:
    """A bid as a company's tool makes it: CMS EnvelopedData, AES-256, to the certificate."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(content)
        .add_recipient(certificate)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


@lru_cache(maxsize=8192)
def opens_bid(data: bytes, password: str, bid: bytes) -> bool:
    """Whether the PKCS#12 `data`, opened with `password`, decrypts `bid`."""
    if declared_iterations(data) > MAX_ITERATIONS:
        return False
    try:
        key, cert, _ = raw_pkcs12.load_key_and_certificates(data, password.encode("utf-8"))
        if not isinstance(key, rsa.RSAPrivateKey) or cert is None:
            return False
        return pkcs7.pkcs7_decrypt_der(bid, cert, key, []).startswith(b"bid ")
    except (ValueError, TypeError):
        return False
