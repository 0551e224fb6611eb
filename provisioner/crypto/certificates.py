"""X.509 certificates for bi-clés: encryption key usage, self-signed or issued by a CA."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from provisioner.crypto.keys import check_pair
from provisioner.errors import CorruptFileError, CryptoError, UnsupportedAlgorithmError

# Backdating absorbs clock skew between this host and the workstations.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateSpec:
    """What goes into a bi-clé certificate."""

    common_name: str
    validity_days: int
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class CertificateAuthority:
    """An issuer: its certificate, private key and the chain above it (may be empty)."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]


def subject_name(spec: CertificateSpec) -> x509.Name:
    attributes = []
    if spec.country:
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, spec.country))
    if spec.organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, spec.organization))
    if spec.organizational_unit:
        attributes.append(
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, spec.organizational_unit)
        )
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    return x509.Name(attributes)


# A certificate's serial number, 19 bytes: this mark, the lineage's tag (8 bytes), then 80
# random bits (RFC 5280 asks for a positive number of at most 20 bytes; CA/B asks for 64
# random bits). It tells a generation this state's lineage made from a look-alike file (an
# agent's own export, another tool's key) when a restored state meets certificates it does
# not record: the lineage is no secret, the mark is a name, not a proof.
_SERIAL_MARK = 0x50
_SERIAL_BYTES = 19


def lineage_tag(lineage: str) -> bytes:
    return hashlib.sha256(b"provisioner lineage\0" + lineage.encode()).digest()[:8]


def lineage_serial(lineage: str | None) -> int:
    """A serial number carrying `lineage`'s mark (a random one when there is no lineage)."""
    if lineage is None:
        return x509.random_serial_number()
    raw = bytes([_SERIAL_MARK]) + lineage_tag(lineage) + os.urandom(10)
    return int.from_bytes(raw, "big")


def serial_mark(cert: x509.Certificate) -> bytes | None:
    """The lineage tag `cert`'s serial number carries, or None (not made by this tool)."""
    serial = cert.serial_number
    if not 0 < serial < 1 << (8 * _SERIAL_BYTES):
        return None
    raw = serial.to_bytes(_SERIAL_BYTES, "big")
    return raw[1:9] if raw[0] == _SERIAL_MARK else None


def made_by_lineage(cert: x509.Certificate, lineage: str | None) -> bool:
    """True when `cert`'s serial number carries `lineage`'s mark."""
    return lineage is not None and serial_mark(cert) == lineage_tag(lineage)


def build_certificate(
    key: rsa.RSAPrivateKey,
    spec: CertificateSpec,
    now: dt.datetime,
    issuer: CertificateAuthority | None = None,
    lineage: str | None = None,
) -> x509.Certificate:
    """A certificate for `key` usable to encrypt bids: key usage keyEncipherment and
    dataEncipherment (critical), CA:FALSE, SKI/AKI, a random serial carrying the state's
    lineage mark, SHA-256 signature."""
    not_before = now - BACKDATE
    not_after = now + dt.timedelta(days=spec.validity_days)
    subject = subject_name(spec)
    public = key.public_key()
    if issuer is not None:
        ca_cert = issuer.certificate
        if not_after > ca_cert.not_valid_after_utc:
            raise CryptoError(
                f"the issuer certificate '{ca_cert.subject.rfc4514_string()}' expires on "
                f"{ca_cert.not_valid_after_utc:%Y-%m-%d}, before the requested validity "
                f"({not_after:%Y-%m-%d}); renew the CA or shorten validity_days"
            )
        if now < ca_cert.not_valid_before_utc:
            raise CryptoError("the issuer certificate is not yet valid")
        issuer_name = ca_cert.subject
        signing_key = issuer.key
        try:
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            )
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    else:
        issuer_name = subject
        signing_key = key
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(lineage_serial(lineage))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(aki, critical=False)
    )
    return builder.sign(signing_key, hashes.SHA256())


def load_certificate_authority(
    cert_pem: bytes, key_pem: bytes, password: bytes | None
) -> CertificateAuthority:
    """Parse an issuer from PEM files: the first certificate is the CA, the others its chain."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CorruptFileError("the issuer certificate file holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password)
    except TypeError:
        raise CryptoError(
            "the issuer private key is encrypted: give its password in the manifest"
            if password is None
            else "the issuer private key is not encrypted, yet a password was given"
        ) from None
    except ValueError:
        raise CryptoError(
            "cannot read the issuer private key (wrong password or bad PEM)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnsupportedAlgorithmError("only RSA issuer keys are supported")
    ca = certs[0]
    check_pair(key, ca)
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CryptoError("the issuer certificate is not a CA (basicConstraints CA:TRUE missing)")
    return CertificateAuthority(ca, key, tuple(certs[1:]))


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_der(cert: x509.Certificate) -> bytes:
    """DER (`.cer`): what the platform's key registry receives for a designation."""
    return cert.public_bytes(serialization.Encoding.DER)


def chain_digest(chain: tuple[x509.Certificate, ...]) -> str:
    """SHA-256 of a chain's DER certificates, in order: what a copy records of its chain."""
    return hashlib.sha256(b"".join(certificate_der(c) for c in chain)).hexdigest()


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()


def subject_triple(cert: x509.Certificate) -> tuple[str | None, str | None, str | None]:
    """The subject's O, OU and C, as the state records them for a generation."""

    def one(oid: x509.ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        if not values:
            return None
        value = values[0].value
        return value if isinstance(value, str) else value.decode()

    return (
        one(NameOID.ORGANIZATION_NAME),
        one(NameOID.ORGANIZATIONAL_UNIT_NAME),
        one(NameOID.COUNTRY_NAME),
    )
