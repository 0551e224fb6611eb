"""A renewed issuer certificate (same CA key) re-encodes the copies with the new chain and keeps
every bi-clé; the leaf still verifies against the renewed CA with openssl."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import KEY_USAGE_FLAGS, PASSWORDS, p12_files


def make_ca(folder: Path, serial: int) -> Path:
    """The region's CA certificate (serial `serial`), valid ten years from the suite's clock;
    its key is made once and kept, as a CA's is when its certificate is renewed."""
    key_path, cert = folder / "ca.key", folder / "ca.pem"
    if not key_path.exists():
        key_path.write_bytes(
            rsa.generate_private_key(65537, 2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Region"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Test Region internal CA"),
        ]
    )
    usage = dict.fromkeys(KEY_USAGE_FLAGS, False) | {"key_cert_sign": True, "crl_sign": True}
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(TEST_CLOCK - dt.timedelta(days=1))
        .not_valid_after(TEST_CLOCK + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert


def test_renewed_issuer_certificate_updates_the_chain_with_the_same_keys(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    make_ca(folder, 1)
    text = (
        quickstart.read_text()
        .replace(
            "escrow:",
            "issuers:\n  - {name: internal, certificate: ca.pem, private_key: ca.key}\nescrow:",
            1,
        )
        .replace(
            "designation: Commune Exemple", "designation: Commune Exemple\n      issuer: internal"
        )
    )
    quickstart.write_text(text)
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    copy = p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g1.p12"]
    before = pkcs12.decode(copy.read_bytes(), PASSWORDS["commune-exemple"])
    old_ca = before.chain[0]

    renewed = make_ca(folder, 2)  # same key and subject, new certificate
    planned = cli("plan", quickstart)
    assert "~ generation 1: update issuer chain  [chain-changed]" in planned.stdout
    assert planned.stdout.count("[chain-changed]") == 4  # the generation and its 3 copies
    said = "  [chain-changed] the issuer chain changed (same key, re-encoded)\n"
    assert planned.stdout.count(said) == 3, planned.stdout  # each copy says why
    assert "create" not in planned.stdout.split("Plan:")[0]
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    after = pkcs12.decode(copy.read_bytes(), PASSWORDS["commune-exemple"])
    new_ca = x509.load_pem_x509_certificate(renewed.read_bytes())
    assert after.chain[0] == new_ca != old_ca
    assert public_key_fingerprint(after.key) == public_key_fingerprint(before.key)
    leaf = folder / "leaf.pem"
    leaf.write_bytes(after.certificate.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        [
            "openssl",
            "verify",
            "-attime",
            str(int(TEST_CLOCK.timestamp())),
            "-CAfile",
            renewed,
            leaf,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0


def test_an_issuers_password_command_runs_once_per_apply(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The CA key is encrypted and its password comes from a command (a vault's CLI, which
    may prompt or be rate-limited): an apply that signs a new generation runs it once,
    loading the issuer before anything is written, and signs with what it loaded."""
    folder = quickstart.parent
    make_ca(folder, 1)
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    (folder / "ca.key").write_bytes(
        key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"CA-Key-Password-1"),
        )
    )
    calls = tmp_path / "calls"
    script = tmp_path / "ca-password.sh"
    script.write_text(f"#!/bin/sh\necho run >> {calls}\necho CA-Key-Password-1\n")
    script.chmod(0o700)
    quickstart.write_text(
        quickstart.read_text()
        .replace(
            "escrow:",
            "issuers:\n  - {name: internal, certificate: ca.pem, private_key: ca.key, "
            f"password: {{command: [{script}]}}}}\nescrow:",
            1,
        )
        .replace(
            "designation: Commune Exemple", "designation: Commune Exemple\n      issuer: internal"
        )
    )
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls.read_text() == "run\n", "the CA password command ran once"
    copy = p12_files(quickstart)["workstations/ws-accueil/commune-exemple.g1.p12"]
    bundle = pkcs12.decode(copy.read_bytes(), PASSWORDS["commune-exemple"])
    assert bundle.certificate.issuer.rfc4514_string().startswith("CN=Test Region internal CA,")
