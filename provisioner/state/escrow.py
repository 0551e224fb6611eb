"""The escrow: every private key ever generated or adopted, encrypted at rest.

Layout of `<state>/escrow/`:
- `keyring.json`: a random 256-bit data key, wrapped (AES-256-GCM) under a key derived from the
  escrow passphrase with scrypt. Rotating the passphrase rewraps this one file.
- `<public-key-sha256>.key`: one private key (PKCS#8 DER) sealed with AES-256-GCM under the data
  key, the fingerprint as associated data so a file cannot be swapped for another.
The data key also derives the password identifiers kept in the state: an HMAC that tells whether
an entity's password changed without keeping anything that could be brute-forced offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from provisioner.atomic import make_private_dirs, write_private
from provisioner.crypto.keys import public_key_fingerprint
from provisioner.errors import StateError

KEYRING = "keyring.json"
FORMAT = "provisioner-escrow/1"
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _wrap(passphrase: str, data_key: bytes) -> dict[str, object]:
    salt = os.urandom(16)
    nonce = os.urandom(12)
    sealed = AESGCM(_kek(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
        nonce, data_key, b"escrow-data-key"
    )
    return {
        "format": FORMAT,
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": _b64(salt),
        "nonce": _b64(nonce),
        "wrapped": _b64(sealed),
    }


class Escrow:
    """An unlocked escrow folder."""

    def __init__(self, folder: Path, data_key: bytes, lineage: str | None = None) -> None:
        self.folder = folder
        self.lineage = lineage  # the state's lineage: state and escrow are one unit
        self._data_key = data_key
        self._aead = AESGCM(data_key)
        self._password_key = hmac.new(data_key, b"password-id", hashlib.sha256).digest()

    @staticmethod
    def exists(folder: Path) -> bool:
        return (folder / KEYRING).is_file()

    @staticmethod
    def read_lineage(folder: Path) -> str | None:
        """The lineage a keyring names, read without the passphrase (None: not recorded)."""
        path = folder / KEYRING
        try:
            lineage = json.loads(path.read_text(encoding="utf-8")).get("lineage")
        except (OSError, ValueError, AttributeError) as exc:
            raise StateError(f"{path}: cannot read the escrow keyring: {exc}") from None
        return lineage if isinstance(lineage, str) else None

    @staticmethod
    def sealed_files(folder: Path) -> list[str]:
        """Names of the sealed key files in `folder`, readable or not (no unlock needed)."""
        try:
            return sorted(e.name for e in os.scandir(folder) if e.name.endswith(".key"))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StateError(f"{folder}: cannot list the escrow: {exc.strerror}") from None

    def observe_keys(self) -> frozenset[str]:
        return self.list_keys(self.folder)

    @staticmethod
    def list_keys(folder: Path) -> frozenset[str]:
        """Fingerprints of the key files present and not empty: one listing, one stat each
        (no passphrase needed; `rehearse` and `export` open them)."""
        try:
            with os.scandir(folder) as entries:
                return frozenset(
                    e.name[: -len(".key")]
                    for e in entries
                    if e.name.endswith(".key")
                    and e.is_file(follow_symlinks=False)
                    and e.stat(follow_symlinks=False).st_size > 0
                )
        except OSError as exc:
            raise StateError(f"{folder}: cannot list the escrow: {exc.strerror}") from None

    @classmethod
    def unlock(cls, folder: Path, passphrase: str) -> Escrow:
        """Open an existing escrow; StateError when the passphrase is wrong or files are bad."""
        path = folder / KEYRING
        try:
            ring = json.loads(path.read_text(encoding="utf-8"))
            if ring.get("format") != FORMAT:
                raise StateError(f"{path}: unknown escrow format {ring.get('format')!r}")
            kek = _kek(passphrase, _unb64(ring["salt"]), ring["n"], ring["r"], ring["p"])
            data_key = AESGCM(kek).decrypt(
                _unb64(ring["nonce"]), _unb64(ring["wrapped"]), b"escrow-data-key"
            )
            lineage = ring.get("lineage")
        except InvalidTag:
            raise StateError(f"{path}: wrong escrow passphrase") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{path}: cannot read the escrow keyring: {exc}") from None
        return cls(folder, data_key, lineage if isinstance(lineage, str) else None)

    @classmethod
    def create(cls, folder: Path, passphrase: str, lineage: str | None = None) -> Escrow:
        """Create a new escrow with a fresh data key. Refuses to overwrite a keyring, and to
        start one in a folder holding sealed keys (they would never open again)."""
        if cls.exists(folder):
            raise StateError(f"{folder / KEYRING}: an escrow already exists")
        sealed = cls.sealed_files(folder)
        if sealed:
            raise StateError(
                f"{folder}: keyring.json is missing but {len(sealed)} sealed key file(s) are "
                "there; a new keyring would never open them. Restore keyring.json from the "
                "backup of this state folder (docs/RECOVERY.md)"
            )
        make_private_dirs(folder)
        data_key = AESGCM.generate_key(bit_length=256)
        escrow = cls(folder, data_key, lineage)
        escrow._write_ring(passphrase)
        return escrow

    def _write_ring(self, passphrase: str) -> None:
        ring = _wrap(passphrase, self._data_key)
        if self.lineage is not None:
            ring["lineage"] = self.lineage
        write_private(self.folder / KEYRING, json.dumps(ring).encode())

    def rekey(self, new_passphrase: str) -> None:
        """Rewrap the data key under a new passphrase; key files stay as they are."""
        self._write_ring(new_passphrase)

    def set_lineage(self, lineage: str) -> None:
        """Record the state's lineage in the keyring (rewrites only that field)."""
        path = self.folder / KEYRING
        try:
            ring = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"{path}: cannot read the escrow keyring: {exc}") from None
        ring["lineage"] = lineage
        write_private(path, json.dumps(ring).encode())
        self.lineage = lineage

    def password_id(self, entity: str, password: str) -> str:
        """A keyed fingerprint of an entity's password: equal iff the password is unchanged."""
        message = entity.encode("utf-8") + b"\0" + password.encode("utf-8")
        return hmac.new(self._password_key, message, hashlib.sha256).hexdigest()[:32]

    def path_for(self, key_sha256: str) -> Path:
        return self.folder / f"{key_sha256}.key"

    def put(self, key: rsa.RSAPrivateKey, entity: str, serial: int | None = None) -> str:
        """Seal and durably store `key` (fsynced); returns its public key fingerprint.

        `serial` is the state's serial when the key is sealed: a key the state does not know
        that was sealed after the state's serial tells a state older than its escrow."""
        fingerprint = public_key_fingerprint(key)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, der, fingerprint.encode("ascii"))
        record = {
            "format": FORMAT,
            "entity": entity,
            "key_sha256": fingerprint,
            "lineage": self.lineage,
            "serial": serial,
            "nonce": _b64(nonce),
            "sealed": _b64(sealed),
        }
        write_private(self.path_for(fingerprint), json.dumps(record).encode())
        return fingerprint

    def has(self, key_sha256: str) -> bool:
        return self.path_for(key_sha256).is_file()

    @staticmethod
    def has_key(folder: Path, key_sha256: str) -> bool:
        """A key file for this fingerprint is there (no passphrase needed)."""
        return (folder / f"{key_sha256}.key").is_file()

    def get(self, key_sha256: str) -> rsa.RSAPrivateKey:
        """The private key with this public key fingerprint; StateError if missing or damaged."""
        path = self.path_for(key_sha256)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            der = self._aead.decrypt(
                _unb64(record["nonce"]), _unb64(record["sealed"]), key_sha256.encode("ascii")
            )
        except FileNotFoundError:
            raise StateError(f"{path}: the escrow has no key {key_sha256[:16]}…") from None
        except (InvalidTag, OSError, ValueError, KeyError, TypeError):
            raise StateError(f"{path}: escrowed key is damaged or not for this escrow") from None
        # The AEAD tag proves this is the key we sealed: OpenSSL's slow RSA check adds nothing.
        key = serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(key, rsa.RSAPrivateKey) or public_key_fingerprint(key) != key_sha256:
            raise StateError(f"{path}: escrowed key does not match its fingerprint")
        return key

    @staticmethod
    def sealed_serial(folder: Path, key_sha256: str) -> int | None:
        """The state serial a key file was sealed at (None: not recorded or unreadable)."""
        try:
            serial = json.loads((folder / f"{key_sha256}.key").read_text("utf-8")).get("serial")
        except (OSError, ValueError, AttributeError):
            return None
        return serial if isinstance(serial, int) else None

    def fingerprints(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.key"))
