"""What apply does when part of the work cannot be done, as the operator reads it: a key whose
issuer cannot sign it, a copy whose workstation folder is a file, a leftover that cannot be
removed. The rest is done; each failure is on stderr naming the place, and in the audit log
with its entity, generation, target and path. Issuers' keys are read with their password."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from provisioner.crypto import pkcs12
from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import PASSWORDS

CA_PASSWORD = "Ca-Password-42!"


def encrypted_ca(folder: Path) -> x509.Certificate:
    """A CA valid 3000 days from the suite's clock, its key encrypted with CA_PASSWORD (given
    to the manifest in secrets/ca.pass)."""
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Region CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(TEST_CLOCK - dt.timedelta(days=1))
        .not_valid_after(TEST_CLOCK + dt.timedelta(days=3000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(CA_PASSWORD.encode()),
        )
    )
    (folder / "secrets" / "ca.pass").write_text(CA_PASSWORD + "\n")
    return certificate


def with_issuer(quickstart: Path) -> x509.Certificate:
    """commune-exemple signed by the CA; a third entity asks the CA for ten years, longer
    than the CA itself lives."""
    ca = encrypted_ca(quickstart.parent)
    text = (
        quickstart.read_text()
        .replace(
            "escrow:",
            "issuers:\n  - {name: region, certificate: ca.pem, private_key: ca.key,\n"
            "     password: {file: secrets/ca.pass}}\nescrow:",
            1,
        )
        .replace(
            "designation: Commune Exemple", "designation: Commune Exemple\n      issuer: region"
        )
    )
    text += (
        "  - id: regie\n    name: Régie\n"
        "    key: {designation: Regie, issuer: region, validity_days: 3650}\n"
        "    password: {file: secrets/commune-exemple.pass}\n"
        "    shared_locations: [backup-share]\n"
    )
    quickstart.write_text(text)
    return ca


def audit(cli: Runner, manifest: Path, action: str) -> list[dict[str, Any]]:
    done = cli("audit", "--json", "--action", action, manifest)
    assert done.returncode == 0, done.stderr
    return [{"entity": r["entity"], **r["detail"]} for r in json.loads(done.stdout)["records"]]


def test_failed_keys_and_copies_are_reported_and_audited_the_rest_is_done(
    cli: Runner, quickstart: Path
) -> None:
    ca = with_issuer(quickstart)
    out = quickstart.parent / "demo-out"
    marches = out / "workstations" / "ws-marches"
    marches.parent.mkdir(parents=True)
    marches.write_text("not a folder")  # where ws-marches' copies should go
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    too_long = (
        "the issuer certificate 'CN=Test Region CA' expires on 2035-02-16, before the requested "
        "validity (2036-11-27); renew the CA or shorten validity_days"
    )
    lines = done.stderr.splitlines()
    assert f"  ! regie: create-generation g1: {too_long}" in lines
    for entity in ("commune-exemple", "syndicat-eaux"):
        path = marches / f"{entity}.g1.p12"
        assert (
            f"  ! {entity}: write-copy g1 on ws-marches: ws-marches: cannot write {path}: "
            "Not a directory" in lines
        )
    assert "Apply finished with errors: 5 done, 4 failed;" in done.stdout
    # The key signed by the CA, whose key was opened with its password, is on ws-accueil.
    copy = (out / "workstations" / "ws-accueil" / "commune-exemple.g1.p12").read_bytes()
    bundle = pkcs12.decode(copy, PASSWORDS["commune-exemple"])
    assert bundle.certificate.issuer == ca.subject and bundle.chain == (ca,)
    assert audit(cli, quickstart, "generation-failed") == [
        {"entity": "regie", "generation": 1, "error": too_long}
    ]
    assert sorted(audit(cli, quickstart, "copy-failed"), key=lambda r: r["entity"]) == [
        {
            "entity": entity,
            "target": "ws-marches",
            "path": str(marches / f"{entity}.g1.p12"),
            "generation": 1,
            "error": f"ws-marches: cannot write {marches / f'{entity}.g1.p12'}: Not a directory",
        }
        for entity in ("commune-exemple", "syndicat-eaux")
    ]


def test_an_issuer_that_cannot_be_read_stops_the_apply_naming_it(
    cli: Runner, quickstart: Path
) -> None:
    with_issuer(quickstart)
    secret = quickstart.parent / "secrets" / "ca.pass"
    secret.write_text("Not-The-Password-1\n")
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1
    place = f"{quickstart}:17:5: issuer region"
    assert (
        f"Error: {place}: cannot read the issuer private key (wrong password or bad PEM)"
        in done.stderr
    )
    # A certificate file too large to be one (validate only checks that it is a file).
    secret.write_text(CA_PASSWORD + "\n")
    ca = quickstart.parent / "ca.pem"
    ca.write_bytes(ca.read_bytes() + b"# padding\n" * 110_000)
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1
    size = ca.stat().st_size
    assert f"Error: {place}: is larger than 1048576 bytes ({size} bytes)" in done.stderr
    assert not (quickstart.parent / "demo-out").exists()
