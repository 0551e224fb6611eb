"""Crypto core, proved against tools no one here wrote: openssl and keytool."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12

from provisioner.crypto import certificates, cms, keys, pkcs12
from provisioner.errors import (
    CorruptFileError,
    CryptoError,
    KeyMismatchError,
    UnsupportedAlgorithmError,
    WrongPasswordError,
)
from provisioner.manifest.model import PasswordPolicy
from provisioner.secrets import policy_problem
from tests.conftest import EXAMPLES, TEST_CLOCK

PASSWORD = "Correct-Horse-42!"
NOW = TEST_CLOCK  # never the wall clock: certificates read the same on any date
needs_keytool = pytest.mark.skipif(shutil.which("keytool") is None, reason="keytool missing")


def run(*argv: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(a) for a in argv], input=input, capture_output=True, check=False)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return keys.generate_key(2048)


@pytest.fixture(scope="module")
def region_ca() -> certificates.CertificateAuthority:
    ca_dir = EXAMPLES / "region-ca"
    password = (EXAMPLES / "secrets" / "region-ca.pass").read_text().strip().encode()
    return certificates.load_certificate_authority(
        (ca_dir / "internal-ca.pem").read_bytes(),
        (ca_dir / "internal-ca.key").read_bytes(),
        password,
    )


SPEC = certificates.CertificateSpec("Mairie de Test 2026", 730, "Mairie de Test", "Marchés", "FR")


@pytest.fixture(scope="module")
def cert(key: rsa.RSAPrivateKey) -> x509.Certificate:
    return certificates.build_certificate(key, SPEC, NOW)


@pytest.fixture(scope="module")
def issued(
    key: rsa.RSAPrivateKey, region_ca: certificates.CertificateAuthority
) -> x509.Certificate:
    return certificates.build_certificate(key, SPEC, NOW, region_ca)


def clear_pem(key: rsa.RSAPrivateKey) -> bytes:
    """An unencrypted PKCS#8 PEM, for feeding OpenSSL in a test (never done by the tool)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(certificates.certificate_pem(cert))
    return path


@pytest.mark.parametrize("size", [2048, 3072])
def test_key_sizes_and_fingerprints(size: int) -> None:
    k = keys.generate_key(size)
    assert k.key_size == size
    fp = keys.public_key_fingerprint(k)
    assert len(fp) == 64 and fp == keys.public_key_fingerprint(k.public_key())
    with pytest.raises(UnsupportedAlgorithmError):
        keys.generate_key(1024)


def test_certificate_is_an_encryption_certificate(cert: x509.Certificate) -> None:
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_encipherment and usage.value.data_encipherment
    assert not usage.value.digital_signature and not usage.value.key_cert_sign
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert cert.serial_number.bit_length() > 64
    assert certificates.common_name(cert) == "Mairie de Test 2026"
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 730


def test_openssl_reads_certificate_usage(cert: x509.Certificate, tmp_path: Path) -> None:
    out = run("openssl", "x509", "-noout", "-text", "-in", write_pem(tmp_path / "c.pem", cert))
    text = out.stdout.decode()
    assert "Key Encipherment, Data Encipherment" in text
    assert "CA:FALSE" in text
    assert "Subject: C = FR, O = Mairie de Test, OU = March" in text


def test_ca_issued_certificate_verifies_with_openssl(
    issued: x509.Certificate, tmp_path: Path
) -> None:
    leaf = write_pem(tmp_path / "leaf.pem", issued)
    done = run(
        "openssl",
        "verify",
        "-attime",  # at the suite's clock, the one the certificate was made at
        str(int(NOW.timestamp())),
        "-CAfile",
        EXAMPLES / "region-ca" / "internal-ca.pem",
        leaf,
    )
    assert done.returncode == 0, done.stderr
    assert b"leaf.pem: OK" in done.stdout


def test_self_signed_does_not_verify_against_the_ca(cert: x509.Certificate, tmp_path: Path) -> None:
    leaf = write_pem(tmp_path / "leaf.pem", cert)
    done = run(
        "openssl",
        "verify",
        "-attime",
        str(int(NOW.timestamp())),
        "-CAfile",
        EXAMPLES / "region-ca" / "internal-ca.pem",
        leaf,
    )
    assert done.returncode != 0


OPENSSL_INFO = {
    "modern": [
        "MAC: sha256, Iteration 2048",  # cryptography fixes the MAC count
        "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 100000, PRF hmacWithSHA256",
        "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 100000, PRF hmacWithSHA256",
    ],
    "legacy": [
        "MAC: sha1, Iteration 2048",
        "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048",
        "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048",
    ],
}


@pytest.mark.real_kdf
@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_openssl_reads_each_profile(
    profile: str,
    key: rsa.RSAPrivateKey,
    issued: x509.Certificate,
    region_ca: certificates.CertificateAuthority,
    tmp_path: Path,
) -> None:
    data = pkcs12.encode(
        key, issued, (region_ca.certificate,), "Mairie de Test 2026", PASSWORD, profile
    )
    path = tmp_path / "bicle.p12"
    path.write_bytes(data)
    legacy = ["-legacy"] if profile == "legacy" else []
    done = run(
        "openssl", "pkcs12", *legacy, "-info", "-in", path, "-passin", f"pass:{PASSWORD}", "-nokeys"
    )
    err, out = done.stderr.decode(), done.stdout.decode()
    assert done.returncode == 0, err
    for line in OPENSSL_INFO[profile]:
        assert line in err + out
    assert "friendlyName: Mairie de Test 2026" in out
    assert out.count("BEGIN CERTIFICATE") == 2, "leaf and CA chain"
    assert "Region Exemple AC interne" in out
    assert pkcs12.inspect(data).profile == profile
    bundle = pkcs12.decode(data, PASSWORD)
    assert bundle.friendly_name == "Mairie de Test 2026"
    assert keys.public_key_fingerprint(bundle.key) == keys.public_key_fingerprint(key)
    assert [c.subject for c in bundle.chain] == [region_ca.certificate.subject]


@needs_keytool
@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_keytool_reads_each_profile(
    profile: str, key: rsa.RSAPrivateKey, cert: x509.Certificate, tmp_path: Path
) -> None:
    path = tmp_path / "bicle.p12"
    path.write_bytes(pkcs12.encode(key, cert, (), "Mairie de Test 2026", PASSWORD, profile))
    done = run(
        "keytool", "-list", "-v", "-storetype", "PKCS12", "-keystore", path, "-storepass", PASSWORD
    )
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, out + done.stderr.decode()
    assert "Entry type: PrivateKeyEntry" in out
    assert "Alias name: mairie de test 2026" in out
    assert keys.certificate_fingerprint(cert)[:8].upper() in out.replace(":", "")


def extract_key(p12: Path, tmp_path: Path) -> Path:
    key_pem = tmp_path / "extracted.key"
    done = run(
        "openssl",
        "pkcs12",
        "-in",
        p12,
        "-passin",
        f"pass:{PASSWORD}",
        "-nocerts",
        "-nodes",
        "-out",
        key_pem,
    )
    assert done.returncode == 0, done.stderr
    return key_pem


def test_bid_encrypted_by_openssl_is_opened_by_rehearsal(
    key: rsa.RSAPrivateKey, cert: x509.Certificate, tmp_path: Path
) -> None:
    bid = tmp_path / "pli.txt"
    bid.write_bytes("Offre de l'entreprise: 123 456,78 € HT".encode())
    envelope = tmp_path / "pli.der"
    done = run(
        "openssl",
        "cms",
        "-encrypt",
        "-aes256",
        "-binary",
        "-in",
        bid,
        "-outform",
        "DER",
        "-out",
        envelope,
        write_pem(tmp_path / "c.pem", cert),
    )
    assert done.returncode == 0, done.stderr
    assert cms.open_bid(envelope.read_bytes(), cert, key) == bid.read_bytes()


def test_bid_encrypted_by_rehearsal_is_opened_by_openssl(
    key: rsa.RSAPrivateKey, cert: x509.Certificate, tmp_path: Path
) -> None:
    p12 = tmp_path / "bicle.p12"
    p12.write_bytes(pkcs12.encode(key, cert, (), "Mairie", PASSWORD, "modern"))
    envelope = tmp_path / "pli.der"
    envelope.write_bytes(cms.encrypt_bid(cert, b"test bid for the opening rehearsal"))
    shown = run("openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", envelope)
    assert b"aes-256-cbc" in shown.stdout
    done = run(
        "openssl",
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        envelope,
        "-inkey",
        extract_key(p12, tmp_path),
        "-recip",
        write_pem(tmp_path / "c.pem", cert),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"test bid for the opening rehearsal"


def test_bid_for_another_key_is_refused(cert: x509.Certificate) -> None:
    other = keys.generate_key(2048)
    envelope = cms.encrypt_bid(cert, b"x")
    with pytest.raises(KeyMismatchError):
        cms.open_bid(envelope, cert, other)
    other_cert = certificates.build_certificate(other, SPEC, NOW)
    with pytest.raises(KeyMismatchError):
        cms.open_bid(envelope, other_cert, other)
    with pytest.raises(CorruptFileError):
        cms.open_bid(b"not a bid", cert, other)


def test_distinct_errors(key: rsa.RSAPrivateKey, cert: x509.Certificate, tmp_path: Path) -> None:
    data = pkcs12.encode(key, cert, (), "Mairie", PASSWORD, "modern")
    with pytest.raises(WrongPasswordError, match="wrong password"):
        pkcs12.decode(data, "Not-The-Password-1")
    with pytest.raises(CorruptFileError, match="not a readable PKCS#12"):
        pkcs12.decode(data[: len(data) // 2], PASSWORD)
    with pytest.raises(CorruptFileError):
        pkcs12.decode(b"garbage" * 20, PASSWORD)
    # A file whose key and certificate do not match, built by OpenSSL's own library.
    other = keys.generate_key(2048)
    mismatched = crypto_pkcs12.serialize_key_and_certificates(
        b"x", other, None, [cert], serialization.BestAvailableEncryption(PASSWORD.encode())
    )
    with pytest.raises(KeyMismatchError, match="does not belong"):
        pkcs12.decode(mismatched, PASSWORD)


def test_unsupported_algorithm_is_named(
    key: rsa.RSAPrivateKey, cert: x509.Certificate, tmp_path: Path
) -> None:
    (tmp_path / "k.pem").write_bytes(clear_pem(key))
    out = tmp_path / "rc4.p12"
    done = run(
        "openssl",
        "pkcs12",
        "-export",
        "-legacy",
        "-keypbe",
        "PBE-SHA1-RC4-128",
        "-certpbe",
        "PBE-SHA1-RC4-128",
        "-inkey",
        tmp_path / "k.pem",
        "-in",
        write_pem(tmp_path / "c.pem", cert),
        "-out",
        out,
        "-passout",
        f"pass:{PASSWORD}",
    )
    if done.returncode != 0:
        pytest.skip("this OpenSSL cannot write RC4 PKCS#12")
    with pytest.raises(UnsupportedAlgorithmError, match="RC4"):
        pkcs12.decode(out.read_bytes(), PASSWORD)


def test_openssl_made_files_are_read(
    key: rsa.RSAPrivateKey, cert: x509.Certificate, tmp_path: Path
) -> None:
    (tmp_path / "k.pem").write_bytes(clear_pem(key))
    for extra in ([], ["-legacy"]):
        out = tmp_path / "o.p12"
        done = run(
            "openssl",
            "pkcs12",
            "-export",
            *extra,
            "-inkey",
            tmp_path / "k.pem",
            "-in",
            write_pem(tmp_path / "c.pem", cert),
            "-out",
            out,
            "-name",
            "Adopted",
            "-passout",
            f"pass:{PASSWORD}",
        )
        assert done.returncode == 0, done.stderr
        bundle = pkcs12.decode(out.read_bytes(), PASSWORD)
        assert bundle.friendly_name == "Adopted"


def test_issuer_with_wrong_password_or_not_a_ca(tmp_path: Path, cert: x509.Certificate) -> None:
    ca_dir = EXAMPLES / "region-ca"
    with pytest.raises(CryptoError, match="wrong password"):
        certificates.load_certificate_authority(
            (ca_dir / "internal-ca.pem").read_bytes(),
            (ca_dir / "internal-ca.key").read_bytes(),
            b"nope",
        )
    with pytest.raises(CryptoError, match="encrypted"):
        certificates.load_certificate_authority(
            (ca_dir / "internal-ca.pem").read_bytes(),
            (ca_dir / "internal-ca.key").read_bytes(),
            None,
        )
    leaf_key = keys.generate_key(2048)
    leaf = certificates.build_certificate(leaf_key, SPEC, NOW)
    with pytest.raises(CryptoError, match="not a CA"):
        certificates.load_certificate_authority(
            certificates.certificate_pem(leaf),
            clear_pem(leaf_key),
            None,
        )


def test_issuer_expiring_before_the_validity_is_refused(
    key: rsa.RSAPrivateKey, region_ca: certificates.CertificateAuthority
) -> None:
    long = certificates.CertificateSpec("Long", 3650)
    with pytest.raises(CryptoError, match="expires on"):
        certificates.build_certificate(key, long, NOW + dt.timedelta(days=400), region_ca)


def test_public_certificate_exports(cert: x509.Certificate) -> None:
    assert certificates.certificate_pem(cert).startswith(b"-----BEGIN CERTIFICATE-----")
    assert x509.load_der_x509_certificate(certificates.certificate_der(cert)) == cert


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", "mandatory"),
        ("Short-1", "shorter than 12"),
        ("alllowercaseletters", "character class"),
        ("Aa1Aa1Aa1Aa1Aa1Aa1", "repetitive"),
        ("Correct-Horse-42!", None),
    ],
)
def test_password_policy(password: str, problem: str | None) -> None:
    result = policy_problem(password, PasswordPolicy())
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result
        assert password == "" or password not in result
