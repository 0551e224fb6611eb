"""The escrow: every private key ever generated or adopted, encrypted at rest.

Its blobs are kept by a `SealedBlobs` store (`state/blobs.py`): the files of `<state>/escrow/`
for a SQLite state, a table of the schema for a PostgreSQL one, the same bytes either way:
- `keyring.json`: a random 256-bit data key, wrapped (AES-256-GCM) under a key derived from the
  escrow passphrase with scrypt. Rotating the passphrase rewraps this one file.
- `<public-key-sha256>.key`: one private key (PKCS#8 DER) sealed with AES-256-GCM under the data
  key. Every field read back is authenticated: the associated data holds the format, the
  fingerprint (so a file cannot be swapped for another) and the entity. Files of format 1 (before
  0.x) sealed the fingerprint only; they are still read, their entity reported as unauthenticated,
  and rewritten in the current format by the next command that writes the state, with the entity
  the state records for that key.
The data key also derives the password identifiers kept in the state: an HMAC that tells whether
an entity's password changed without keeping anything that could be brute-forced offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from provisioner.crypto.keys import public_key_fingerprint
from provisioner.errors import StateError, WrongPassphraseError
from provisioner.state.blobs import MAX_BLOB_BYTES, SealedBlobs, blobs_at

KEYRING = "keyring.json"
FORMAT = "provisioner-escrow/1"
KEY_FORMAT = "provisioner-escrow-key/2"  # key files; FORMAT marks those of format 1
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# What a keyring may ask of scrypt: a damaged or hostile file must not exhaust memory or time.
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_R = 32
MAX_SCRYPT_P = 16
MAX_SCRYPT_MEMORY = 1 << 30  # 128 * n * r bytes
MAX_FILE_BYTES = MAX_BLOB_BYTES  # a keyring or key file is a few KB


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("a base64 field is not text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _scrypt_parameters(ring: dict[str, object], path: str) -> tuple[int, int, int]:
    """n, r and p of a keyring, refused unless within bounds (StateError)."""
    n, r, p = ring.get("n"), ring.get("r"), ring.get("p")
    if (
        type(n) is not int
        or type(r) is not int
        or type(p) is not int
        or not (2 <= n <= MAX_SCRYPT_N and n & (n - 1) == 0)
        or not (1 <= r <= MAX_SCRYPT_R)
        or not (1 <= p <= MAX_SCRYPT_P)
        or 128 * n * r > MAX_SCRYPT_MEMORY
        or n >= 1 << (16 * r)  # scrypt's own rule (RFC 7914): n below 2^(128 r / 8)
    ):
        raise StateError(
            f"{path}: the keyring's scrypt parameters (n={str(n)[:20]}, r={str(r)[:20]}, "
            f"p={str(p)[:20]}) are out of bounds: n must be a power of two up to 2^20 and below "
            f"2^(16 r), r at most {MAX_SCRYPT_R}, p at most {MAX_SCRYPT_P}, using at most 1 GiB "
            "(this tool writes "
            f"n=2^15, r={SCRYPT_R}, p={SCRYPT_P}). The keyring is damaged or was not written by "
            "provisioner: restore the escrow folder from a backup (docs/RECOVERY.md)"
        )
    return n, r, p


def _read_json(blobs: SealedBlobs, name: str) -> dict[str, object]:
    """A small JSON object blob (OSError, ValueError when it is not one)."""
    data = blobs.read(name)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    value = json.loads(data.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _key_aad(key_sha256: str, entity: str) -> bytes:
    """The associated data of a key file: every field it holds besides the sealed key."""
    return b"\0".join((KEY_FORMAT.encode(), key_sha256.encode("ascii"), entity.encode("utf-8")))


@dataclass(frozen=True)
class EscrowedKey:
    """A key read back from the escrow, with the entity its file names."""

    key: rsa.RSAPrivateKey
    entity: str
    authenticated: bool  # False for a format 1 file: its entity field was not sealed


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


@dataclass(frozen=True)
class EscrowListing:
    """One listing of an escrow, read once per run and handed to whatever needs it (the unit
    check, the planner's escrow observation, `check`): no passphrase needed."""

    where: str  # the escrow, as messages show it
    keyring: bool  # keyring.json is a file there
    sealed: tuple[str, ...]  # names of the sealed key files, readable or not
    keys: frozenset[str]  # fingerprints of the key files present and not empty

    @classmethod
    def read(cls, place: Path | SealedBlobs) -> EscrowListing:
        """One listing of the store (a scandir of a folder, and one stat per key file); a
        missing folder is empty."""
        blobs = blobs_at(place)
        keyring = False
        sealed: list[str] = []
        keys: set[str] = set()
        for e in blobs.listing():
            if e.name == KEYRING:
                keyring = e.is_file
            elif e.name.endswith(".key"):
                sealed.append(e.name)
                if e.regular and e.size > 0:
                    keys.add(e.name[: -len(".key")])
        return cls(blobs.where(), keyring, tuple(sorted(sealed)), frozenset(keys))

    def named(self) -> set[str]:
        """Fingerprints a key file is named after, empty or not (`check` needs no secret:
        presence by name)."""
        return {name[: -len(".key")] for name in self.sealed}


class Escrow:
    """An unlocked escrow (a folder, or the blobs of a PostgreSQL schema)."""

    def __init__(
        self, folder: Path | SealedBlobs, data_key: bytes, ring: dict[str, object] | None = None
    ) -> None:
        self.folder = folder  # as given: a folder's path, or the store
        self.blobs = blobs_at(folder)
        self._ring = ring or {}  # the keyring as read or written (its lineage included)
        self._data_key = data_key
        self._aead = AESGCM(data_key)
        self._password_key = hmac.new(data_key, b"password-id", hashlib.sha256).digest()

    @staticmethod
    def exists(folder: Path | SealedBlobs) -> bool:
        return blobs_at(folder).exists(KEYRING)

    @staticmethod
    def read_lineage(folder: Path | SealedBlobs) -> str | None:
        """The lineage a keyring names, read without the passphrase (None: not recorded)."""
        blobs = blobs_at(folder)
        try:
            lineage = _read_json(blobs, KEYRING).get("lineage")
        except (OSError, ValueError) as exc:
            raise StateError(
                f"{blobs.where(KEYRING)}: cannot read the escrow keyring: {exc}"
            ) from None
        return lineage if isinstance(lineage, str) else None

    @classmethod
    def unlock(cls, folder: Path | SealedBlobs, passphrase: str) -> Escrow:
        """Open an existing escrow; StateError when the passphrase is wrong or files are bad."""
        blobs = blobs_at(folder)
        path = blobs.where(KEYRING)
        try:
            ring = _read_json(blobs, KEYRING)
            if ring.get("format") != FORMAT:
                raise StateError(f"{path}: unknown escrow format {str(ring.get('format'))[:40]!r}")
            n, r, p = _scrypt_parameters(ring, path)
            kek = _kek(passphrase, _unb64(ring["salt"]), n, r, p)
            data_key = AESGCM(kek).decrypt(
                _unb64(ring["nonce"]), _unb64(ring["wrapped"]), b"escrow-data-key"
            )
        except InvalidTag:
            raise WrongPassphraseError(f"{path}: wrong escrow passphrase") from None
        except (OSError, ValueError, KeyError, TypeError, MemoryError) as exc:
            raise StateError(f"{path}: cannot read the escrow keyring: {exc}") from None
        return cls(folder, data_key, ring)

    @classmethod
    def create(
        cls, folder: Path | SealedBlobs, passphrase: str, lineage: str | None = None
    ) -> Escrow:
        """Create a new escrow with a fresh data key. Refuses to overwrite a keyring, and to
        start one in a folder holding sealed keys (they would never open again)."""
        blobs = blobs_at(folder)
        if blobs.exists(KEYRING):
            raise StateError(f"{blobs.where(KEYRING)}: an escrow already exists")
        sealed = EscrowListing.read(blobs).sealed
        if sealed:
            raise StateError(
                f"{blobs.where()}: keyring.json is missing but {len(sealed)} sealed key file(s) "
                "are there; a new keyring would never open them. Restore keyring.json from the "
                "backup of this state folder (docs/RECOVERY.md)"
            )
        data_key = AESGCM.generate_key(bit_length=256)
        ring: dict[str, object] = dict(_wrap(passphrase, data_key), key_files=KEY_FORMAT)
        if lineage is not None:
            ring["lineage"] = lineage
        blobs.write(KEYRING, json.dumps(ring).encode(), "the escrow keyring")
        return cls(folder, data_key, ring)

    @property
    def lineage(self) -> str | None:
        """The state's lineage the keyring names: state and escrow are one unit."""
        value = self._ring.get("lineage")
        return value if isinstance(value, str) else None

    def rekey(self, new_passphrase: str) -> None:
        """Rewrap the data key under a new passphrase; key files stay as they are."""
        ring: dict[str, object] = dict(_wrap(new_passphrase, self._data_key))
        for kept in ("key_files", "lineage"):
            if kept in self._ring:
                ring[kept] = self._ring[kept]
        self.blobs.write(KEYRING, json.dumps(ring).encode(), "the escrow keyring")
        self._ring = ring

    def set_lineage(self, lineage: str) -> None:
        """Record the state's lineage in the keyring (the rest of it unchanged)."""
        ring = dict(self._ring, lineage=lineage)
        self.blobs.write(KEYRING, json.dumps(ring).encode(), "the escrow keyring")
        self._ring = ring

    @property
    def needs_upgrade(self) -> bool:
        """Whether key files of format 1 may remain (no upgrade pass has run yet)."""
        return self._ring.get("key_files") != KEY_FORMAT

    def password_id(self, entity: str, password: str) -> str:
        """A keyed fingerprint of an entity's password: equal iff the password is unchanged."""
        message = entity.encode("utf-8") + b"\0" + password.encode("utf-8")
        return hmac.new(self._password_key, message, hashlib.sha256).hexdigest()[:32]

    def path_for(self, key_sha256: str) -> str:
        """The key's blob, as messages show it (a file's path for a folder)."""
        return self.blobs.where(f"{key_sha256}.key")

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
        self._seal(fingerprint, der, entity, serial)
        return fingerprint

    def _seal(self, fingerprint: str, der: bytes, entity: str, serial: int | None = None) -> None:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, der, _key_aad(fingerprint, entity))
        record = {
            "format": KEY_FORMAT,
            "entity": entity,
            "key_sha256": fingerprint,
            "lineage": self.lineage,
            "serial": serial,
            "nonce": _b64(nonce),
            "sealed": _b64(sealed),
        }
        self.blobs.write(f"{fingerprint}.key", json.dumps(record).encode(), "the escrowed key")

    @staticmethod
    def has_key(folder: Path | SealedBlobs, key_sha256: str) -> bool:
        """A key file for this fingerprint is there (no passphrase needed)."""
        return blobs_at(folder).exists(f"{key_sha256}.key")

    def get(self, key_sha256: str) -> rsa.RSAPrivateKey:
        """The private key with this public key fingerprint; StateError if missing or damaged."""
        return self.read(key_sha256).key

    def read(self, key_sha256: str) -> EscrowedKey:
        """The key with this public key fingerprint and the entity its file names, every field
        checked by the AEAD tag (a format 1 file's entity is read but marked unauthenticated);
        StateError if missing or damaged."""
        key, entity, _, version = self._open(key_sha256)
        return EscrowedKey(key, entity, authenticated=version == KEY_FORMAT)

    def intact(self, key_sha256: str) -> bool:
        """The key file is there and its AEAD tag checks (every field it seals): a read and
        an AES-GCM decryption, no key parsing, so every plan can afford it for every key."""
        try:
            self._decrypt(key_sha256)
        except StateError:
            return False
        return True

    def _open(self, key_sha256: str) -> tuple[rsa.RSAPrivateKey, str, bytes, str]:
        path = self.path_for(key_sha256)
        der, entity, version = self._decrypt(key_sha256)
        # The AEAD tag proves this is the key we sealed: OpenSSL's slow RSA check adds nothing.
        key = serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(key, rsa.RSAPrivateKey) or public_key_fingerprint(key) != key_sha256:
            raise StateError(f"{path}: escrowed key does not match its fingerprint")
        return key, entity, der, version

    def _decrypt(self, key_sha256: str) -> tuple[bytes, str, str]:
        path = self.path_for(key_sha256)
        try:
            record = _read_json(self.blobs, f"{key_sha256}.key")
            version, entity = record.get("format"), record.get("entity")
            if not isinstance(entity, str) or record.get("key_sha256") != key_sha256:
                raise ValueError("fields")
            if version == KEY_FORMAT:
                aad = _key_aad(key_sha256, entity)
            elif version == FORMAT:  # format 1: the fingerprint only
                aad = key_sha256.encode("ascii")
            else:
                raise ValueError("format")
            der = self._aead.decrypt(_unb64(record["nonce"]), _unb64(record["sealed"]), aad)
        except FileNotFoundError:
            raise StateError(f"{path}: the escrow has no key {key_sha256[:16]}…") from None
        except (InvalidTag, OSError, ValueError, KeyError, TypeError):
            raise StateError(
                f"{path}: escrowed key is damaged, altered or not for this escrow"
            ) from None
        return der, entity, version

    def upgrade(self, entities: dict[str, str]) -> None:
        """Rewrite the format 1 key files in the current format, whose associated data seals
        the entity too. `entities` maps a key fingerprint to the entity the state records for
        it, which wins over the file's unauthenticated claim; a file the state does not know
        keeps format 1. The keyring then records that the pass was made, so that it runs once."""
        for fingerprint in self.fingerprints():
            owner = entities.get(fingerprint)
            if owner is None:
                continue
            try:
                if KEY_FORMAT.encode() in self.blobs.read(f"{fingerprint}.key")[:MAX_FILE_BYTES]:
                    continue
                _, _, der, version = self._open(fingerprint)
            except (OSError, StateError):
                continue  # damaged: reported by whatever needs the key, not rewritten here
            if version == FORMAT:
                self._seal(fingerprint, der, owner)
        ring = dict(self._ring, key_files=KEY_FORMAT)
        self.blobs.write(KEYRING, json.dumps(ring).encode(), "the escrow keyring")
        self._ring = ring

    @staticmethod
    def sealed_serial(folder: Path | SealedBlobs, key_sha256: str) -> int | None:
        """The state serial a key file was sealed at (None: not recorded or unreadable)."""
        try:
            serial = _read_json(blobs_at(folder), f"{key_sha256}.key").get("serial")
        except (OSError, ValueError):
            return None
        return serial if isinstance(serial, int) else None

    def fingerprints(self) -> list[str]:
        return sorted(
            e.name[: -len(".key")] for e in self.blobs.listing() if e.name.endswith(".key")
        )
