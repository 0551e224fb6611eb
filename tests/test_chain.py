"""A renewed issuer certificate (same CA key) re-encodes the copies with the new chain and keeps
every bi-clé; the leaf still verifies against the renewed CA with openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from tests.conftest import Runner
from tests.engine_helpers import PASSWORDS, p12_files

SUBJECT = "/C=FR/O=Test Region/CN=Test Region internal CA"


def make_ca(folder: Path, serial: int) -> Path:
    key, cert = folder / "ca.key", folder / "ca.pem"
    if not key.exists():
        subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-x509",
            "-key",
            key,
            "-subj",
            SUBJECT,
            "-days",
            "3650",
            "-set_serial",
            str(serial),
            "-out",
            cert,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        check=True,
        capture_output=True,
    )
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
    assert "create" not in planned.stdout.split("Plan:")[0]
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    after = pkcs12.decode(copy.read_bytes(), PASSWORDS["commune-exemple"])
    new_ca = x509.load_pem_x509_certificate(renewed.read_bytes())
    assert after.chain[0] == new_ca != old_ca
    assert public_key_fingerprint(after.key) == public_key_fingerprint(before.key)
    leaf = folder / "leaf.pem"
    leaf.write_bytes(after.certificate.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", renewed, leaf], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0
