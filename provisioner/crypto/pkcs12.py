"""PKCS#12 (.p12/.pfx) encoding under named profiles, decoding, verification and inspection.

Profiles:
- `modern`: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC for key and certificates, HMAC-SHA256
  MAC. Windows 10 1709+, Windows Server 2019+, OpenSSL 3, Java 8u301+.
- `legacy`: PBE-SHA1-3DES for key and certificates, HMAC-SHA1 MAC. Windows Server 2016 and
  Windows 10 before 1709 refuse AES files with a misleading "wrong password".
Iteration counts stay far below 600,000, above which Windows refuses the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from provisioner.crypto import der
from provisioner.crypto.keys import check_pair
from provisioner.errors import (
    CorruptFileError,
    TooCostlyError,
    UnsupportedAlgorithmError,
    WrongPasswordError,
)

WINDOWS_MAX_ITERATIONS = 600_000
# A PKCS#12 with its chain is a few KB: a larger file is not one to open.
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Profile:
    name: str
    pbes: pkcs12.PBES
    mac_hash: hashes.HashAlgorithm
    iterations: int
    key_algorithm: str  # as `inspect` names it
    mac_algorithm: str


PROFILES: dict[str, Profile] = {
    "modern": Profile(
        "modern",
        pkcs12.PBES.PBESv2SHA256AndAES256CBC,
        hashes.SHA256(),
        100_000,
        "PBES2/PBKDF2-HMAC-SHA256/AES-256-CBC",
        "HMAC-SHA256",
    ),
    # 2,048 is what OpenSSL and old Windows themselves use for this format.
    "legacy": Profile(
        "legacy",
        pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC,
        hashes.SHA1(),
        2_048,
        "PBE-SHA1-3DES",
        "HMAC-SHA1",
    ),
}
assert all(p.iterations <= WINDOWS_MAX_ITERATIONS for p in PROFILES.values())

_PBE_OIDS = {
    "1.2.840.113549.1.12.1.1": "PBE-SHA1-RC4-128",
    "1.2.840.113549.1.12.1.2": "PBE-SHA1-RC4-40",
    "1.2.840.113549.1.12.1.3": "PBE-SHA1-3DES",
    "1.2.840.113549.1.12.1.4": "PBE-SHA1-2DES",
    "1.2.840.113549.1.12.1.5": "PBE-SHA1-RC2-128",
    "1.2.840.113549.1.12.1.6": "PBE-SHA1-RC2-40",
}
_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_PRF = {
    "1.2.840.113549.2.7": "HMAC-SHA1",
    "1.2.840.113549.2.9": "HMAC-SHA256",
    "1.2.840.113549.2.10": "HMAC-SHA384",
    "1.2.840.113549.2.11": "HMAC-SHA512",
}
_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": "AES-128-CBC",
    "2.16.840.1.101.3.4.1.22": "AES-192-CBC",
    "2.16.840.1.101.3.4.1.42": "AES-256-CBC",
    "1.2.840.113549.3.7": "DES-EDE3-CBC",
}
_DIGESTS = {
    "1.3.14.3.2.26": "HMAC-SHA1",
    "2.16.840.1.101.3.4.2.1": "HMAC-SHA256",
    "2.16.840.1.101.3.4.2.2": "HMAC-SHA384",
    "2.16.840.1.101.3.4.2.3": "HMAC-SHA512",
}
_UNSUPPORTED = {"PBE-SHA1-RC4-128", "PBE-SHA1-RC4-40"}
_DATA = "1.2.840.113549.1.7.1"
_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
_KEY_BAG = "1.2.840.113549.1.12.10.1.1"


@dataclass(frozen=True)
class Pkcs12Info:
    """What a PKCS#12 file is made of, read without its password."""

    key_algorithms: tuple[str, ...]
    certificate_algorithms: tuple[str, ...]  # empty when certificates are not encrypted
    mac_algorithm: str | None
    iterations: int  # the highest count found (key, certificates, MAC)
    unencrypted_key: bool

    @property
    def profile(self) -> str | None:
        """`modern`, `legacy`, or None when the file matches neither profile."""
        for profile in PROFILES.values():
            algs = {*self.key_algorithms, *self.certificate_algorithms}
            if algs == {profile.key_algorithm} and self.mac_algorithm == profile.mac_algorithm:
                return profile.name
        return None


@dataclass(frozen=True)
class Bundle:
    """The decoded content of a PKCS#12: key, certificate, chain, friendly name."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    friendly_name: str | None
    info: Pkcs12Info | None  # None when the file is BER that only OpenSSL reads


def _algorithm(tlv: der.Tlv) -> tuple[str, int]:
    """Name and iteration count of a PBE AlgorithmIdentifier."""
    parts = der.children(tlv)
    name = der.oid(parts[0])
    if name in _PBE_OIDS:
        params = der.children(parts[1])
        return _PBE_OIDS[name], der.integer(params[1])
    if name == _PBES2:
        kdf, scheme = der.children(parts[1])
        kdf_parts = der.children(kdf)
        if der.oid(kdf_parts[0]) != _PBKDF2:
            return f"PBES2/unknown-KDF({der.oid(kdf_parts[0])})", 0
        kdf_params = der.children(kdf_parts[1])
        iterations = der.integer(kdf_params[1])
        prf = "HMAC-SHA1"
        for item in kdf_params[2:]:
            if item.tag == der.SEQUENCE:
                prf_oid = der.oid(der.children(item)[0])
                prf = _PRF.get(prf_oid, f"unknown-PRF({prf_oid})")
        cipher_oid = der.oid(der.children(scheme)[0])
        cipher = _CIPHERS.get(cipher_oid, f"unknown-cipher({cipher_oid})")
        return f"PBES2/PBKDF2-{prf}/{cipher}", iterations
    return f"unknown({name})", 0


def inspect(data: bytes) -> Pkcs12Info:
    """Name the algorithms and iteration counts of a PKCS#12 without opening it."""
    try:
        pfx = der.children(der.read_one(data, der.SEQUENCE))
        auth_safe = der.children(pfx[1])
        if der.oid(auth_safe[0]) != _DATA:
            raise CorruptFileError("PKCS#12 is not password-integrity protected")
        octets = der.read_one(auth_safe[1].value, der.OCTET_STRING)
        key_algs: list[str] = []
        cert_algs: list[str] = []
        unencrypted_key = False
        top = 0
        for content_info in der.children(der.read_one(octets.value, der.SEQUENCE)):
            parts = der.children(content_info)
            kind = der.oid(parts[0])
            inner = der.read_one(parts[1].value)
            if kind == _ENCRYPTED_DATA:
                eci = der.children(inner)[1]
                name, count = _algorithm(der.children(eci)[1])
                cert_algs.append(name)
                top = max(top, count)
            elif kind == _DATA:
                for bag in der.children(der.read_one(inner.value, der.SEQUENCE)):
                    bag_parts = der.children(bag)
                    bag_id = der.oid(bag_parts[0])
                    if bag_id == _SHROUDED_KEY_BAG:
                        epki = der.read_one(bag_parts[1].value, der.SEQUENCE)
                        name, count = _algorithm(der.children(epki)[0])
                        key_algs.append(name)
                        top = max(top, count)
                    elif bag_id == _KEY_BAG:
                        unencrypted_key = True
        mac = None
        if len(pfx) > 2:
            mac_parts = der.children(pfx[2])
            digest_alg = der.children(der.children(mac_parts[0])[0])
            digest_oid = der.oid(digest_alg[0])
            mac = _DIGESTS.get(digest_oid, f"unknown({digest_oid})")
            if len(mac_parts) > 2:
                top = max(top, der.integer(mac_parts[2]))
    except (IndexError, CorruptFileError) as exc:
        raise CorruptFileError(f"not a readable PKCS#12 file ({exc or 'bad structure'})") from None
    return Pkcs12Info(tuple(key_algs), tuple(cert_algs), mac, top, unencrypted_key)


def encode(
    key: rsa.RSAPrivateKey,
    certificate: x509.Certificate,
    chain: tuple[x509.Certificate, ...],
    friendly_name: str,
    password: str,
    profile: str,
) -> bytes:
    """A password-protected PKCS#12 with the designation as friendly name and the chain."""
    if not password:
        raise ValueError("a PKCS#12 password is mandatory")
    p = PROFILES[profile]
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(p.iterations)
        .key_cert_algorithm(p.pbes)
        .hmac_hash(p.mac_hash)
        .build(password.encode("utf-8"))
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8"), key, certificate, list(chain) or None, encryption
    )


# The PBE and PBKDF2 algorithm identifiers (DER), then the digests a MAC names.
_PBKDF2_DER = bytes.fromhex("06092a864886f70d01050c")
_PBE_DER = bytes.fromhex("060a2a864886f70d010c01")  # then one byte: the cipher
_MAC_DIGESTS_DER = tuple(
    bytes.fromhex(h)
    for h in (
        "06052b0e03021a",
        "0609608648016503040201",
        "0609608648016503040202",
        "0609608648016503040203",
    )
)


def _header(data: bytes, i: int) -> tuple[int, int, int | None] | None:
    """(tag, start of the value, length or None when indefinite) of the TLV at `i`."""
    if i + 2 > len(data):
        return None
    tag, n, i = data[i], data[i + 1], i + 2
    if n == 0x80:
        return tag, i, None
    if n & 0x80:
        count = n & 0x7F
        if count == 0 or count > 4 or i + count > len(data):
            return None
        n, i = int.from_bytes(data[i : i + count], "big"), i + count
    return tag, i, n


def _skip(data: bytes, i: int | None, tag: int) -> int | None:
    """The index after the definite-length TLV of `tag` at `i`, or None."""
    h = None if i is None else _header(data, i)
    if h is None or h[0] != tag or h[2] is None:
        return None
    return h[1] + h[2]


def _count_at(data: bytes, i: int | None) -> int:
    """The INTEGER at `i` (an iteration count), 0 when there is none; one too long to read is
    taken as too many."""
    h = None if i is None else _header(data, i)
    if h is None or h[0] != der.INTEGER or h[2] is None or h[1] + h[2] > len(data):
        return 0
    if h[2] > 8:
        return 1 << 63
    return max(0, int.from_bytes(data[h[1] : h[1] + h[2]], "big", signed=True))


def declared_iterations(data: bytes) -> int:
    """The highest key-derivation or MAC iteration count a PKCS#12 declares, found by scanning
    for the algorithm identifiers that carry one, so BER files (which the DER reader above
    does not walk) are bounded too. Linear in the file's size: no key is derived."""
    top = 0
    for prefix, extra in ((_PBKDF2_DER, 0), (_PBE_DER, 1)):
        at = data.find(prefix)
        while at >= 0:
            h = _header(data, at + len(prefix) + extra)  # the parameters: salt, count
            if h is not None and h[0] == der.SEQUENCE:
                top = max(top, _count_at(data, _skip(data, h[1], der.OCTET_STRING)))
            at = data.find(prefix, at + 1)
    for prefix in _MAC_DIGESTS_DER:
        at = data.find(prefix)
        while at >= 0:
            i = at + len(prefix)
            if data[i : i + 2] == b"\x05\x00":  # the digest's NULL parameters
                i += 2
            salt = _skip(data, i, der.OCTET_STRING)  # the MAC's value, then its salt
            top = max(top, _count_at(data, _skip(data, salt, der.OCTET_STRING)))
            at = data.find(prefix, at + 1)
    return top


def decode(data: bytes, password: str) -> Bundle:
    """Open a PKCS#12 with `password` and check that its key matches its certificate.

    A file larger than MAX_FILE_BYTES, or declaring more than WINDOWS_MAX_ITERATIONS
    iterations, is refused before any key is derived: no file this tool writes or a platform
    exports is like that, and deriving 2^31 iterations would stall the run for minutes.

    Raises CorruptFileError, UnsupportedAlgorithmError, WrongPasswordError or KeyMismatchError.
    """
    if len(data) > MAX_FILE_BYTES:
        raise CorruptFileError(f"larger than {MAX_FILE_BYTES} bytes: not a PKCS#12 file")
    try:
        info: Pkcs12Info | None = inspect(data)
    except CorruptFileError:
        info = None  # BER files (some Windows exports) escape the DER reader; OpenSSL decides
    if info is not None:
        for name in (*info.key_algorithms, *info.certificate_algorithms, info.mac_algorithm or ""):
            if "unknown" in name or name in _UNSUPPORTED:
                raise UnsupportedAlgorithmError(f"PKCS#12 uses an unsupported algorithm: {name}")
    iterations = max(info.iterations if info is not None else 0, declared_iterations(data))
    if iterations > WINDOWS_MAX_ITERATIONS:
        raise TooCostlyError(
            f"PKCS#12 declares {iterations:,} key-derivation iterations, more than the "
            f"{WINDOWS_MAX_ITERATIONS:,} Windows imports (no file this tool writes or a platform "
            "exports has so many)"
        )
    try:
        loaded = pkcs12.load_pkcs12(data, password.encode("utf-8"))
    except ValueError:
        if info is None:
            raise CorruptFileError("not a readable PKCS#12 file") from None
        raise WrongPasswordError("wrong password: the PKCS#12 integrity check fails") from None
    except Exception as exc:  # the backend refuses an algorithm it cannot run
        raise UnsupportedAlgorithmError(f"cannot open this PKCS#12: {exc}") from None
    if loaded.key is None:
        raise CorruptFileError("PKCS#12 holds no private key")
    if not isinstance(loaded.key, rsa.RSAPrivateKey):
        kind = type(loaded.key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise UnsupportedAlgorithmError(
            f"PKCS#12 private key is not RSA ({kind}): bids are encrypted to RSA keys only"
        )
    others = list(loaded.additional_certs)
    leaf = loaded.cert
    if leaf is None:
        # Some exports do not link the certificate to the key: find the one that matches.
        wanted = loaded.key.public_key().public_numbers()
        for candidate in others:
            public = candidate.certificate.public_key()
            if isinstance(public, rsa.RSAPublicKey) and public.public_numbers() == wanted:
                leaf = candidate
        if leaf is None:
            if not others:
                raise CorruptFileError("PKCS#12 holds no certificate")
            check_pair(loaded.key, others[0].certificate)  # raises KeyMismatchError
            raise AssertionError("unreachable")
        others.remove(leaf)
    certificate = leaf.certificate
    check_pair(loaded.key, certificate)
    raw_name = leaf.friendly_name
    return Bundle(
        key=loaded.key,
        certificate=certificate,
        chain=tuple(c.certificate for c in others),
        friendly_name=raw_name.decode("utf-8", "replace") if raw_name else None,
        info=info,
    )
