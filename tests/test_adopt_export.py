"""adopt: an existing bi-clé comes under management; export: hand-exports from the escrow."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption
from cryptography.hazmat.primitives.serialization import pkcs12 as raw_pkcs12
from cryptography.x509.oid import NameOID

from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from tests.conftest import REPO, TEST_CLOCK, Runner
from tests.engine_helpers import (
    PASSWORDS,
    dated_certificate,
    mode,
    openssl_p12,
    p12_files,
    state_rows,
)

WINDOWS_PASSWORD = "Exported-From-Windows-1"
# The keys from elsewhere are made "now" on the program's clock (TEST_CLOCK), whatever the date.
NOW = TEST_CLOCK


def pfx_from_windows(folder: Path, **kwargs: Any) -> Path:
    return openssl_p12(folder, WINDOWS_PASSWORD, NOW, **kwargs)


def test_adopt_then_apply_distributes_the_adopted_key(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    pfx = pfx_from_windows(tmp_path)
    (tmp_path / "pw").write_text(WINDOWS_PASSWORD + "\n")
    done = cli("adopt", quickstart, "commune-exemple", pfx, "--password-file", tmp_path / "pw")
    assert done.returncode == 0, done.stderr
    assert "Adopted" in done.stdout and "generation 1 (current)" in done.stdout
    planned = cli("plan", "--limit", "commune-exemple", quickstart)
    assert "create" not in planned.stdout.split("Plan:")[0]
    assert "Plan: 3 to create" in planned.stdout  # three copies, no new key
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    adopted = pkcs12.decode(pfx.read_bytes(), WINDOWS_PASSWORD)
    for rel, path in p12_files(quickstart).items():
        if rel.endswith("commune-exemple.g1.p12"):
            bundle = pkcs12.decode(path.read_bytes(), PASSWORDS["commune-exemple"])
            assert public_key_fingerprint(bundle.key) == public_key_fingerprint(adopted.key)
            assert bundle.friendly_name == "Ancienne cle"  # the name the platform knows
    rows = state_rows(
        quickstart, "SELECT origin, status FROM generations WHERE entity = 'commune-exemple'"
    )
    assert rows == [("adopted", "current")]


def test_adopt_refuses_a_wrong_password_and_writes_nothing(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    pfx = pfx_from_windows(tmp_path)
    done = cli("adopt", quickstart, "commune-exemple", pfx)  # entity password: wrong here
    assert done.returncode == 1
    assert "wrong password" in done.stderr
    assert not (quickstart.parent / ".provisioner").exists()


def test_adopt_refuses_a_second_current_generation(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    pfx = pfx_from_windows(tmp_path)
    env = {"OLD_PW": WINDOWS_PASSWORD}
    done = cli("adopt", quickstart, "commune-exemple", pfx, "--password-env", "OLD_PW", env=env)
    assert done.returncode == 1 and "already has a current generation" in done.stderr
    done = cli(
        "adopt",
        quickstart,
        "commune-exemple",
        pfx,
        "--password-env",
        "OLD_PW",
        "--retained",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "generation 2 (retained)" in done.stdout


def test_adopt_refuses_another_entitys_key(cli: Runner, quickstart: Path) -> None:
    """Red team 4, L2: syndicat-eaux's key adopted as commune-exemple's would be written under
    commune-exemple's password to its agents."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    theirs = p12_files(quickstart)["shared/backup/syndicat-eaux.g1.p12"]
    before = state_rows(quickstart, "SELECT count(*) FROM generations")
    done = cli(
        "adopt",
        quickstart,
        "commune-exemple",
        theirs,
        "--retained",
        "--designation",
        "Cross",
        "--password-env",
        "PW",
        env={"PW": PASSWORDS["syndicat-eaux"]},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "this key is entity syndicat-eaux's generation 1" in done.stderr
    assert state_rows(quickstart, "SELECT count(*) FROM generations") == before


def test_export_with_a_new_password_and_profile_from_the_escrow(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    new = "Recovered-Password-2026!"
    out = tmp_path / "recovered.p12"
    done = cli(
        "export",
        quickstart,
        "commune-exemple",
        "--out",
        out,
        "--profile",
        "legacy",
        "--password-env",
        "NEW_PW",
        env={"NEW_PW": new},
    )
    assert done.returncode == 0, done.stderr
    bundle = pkcs12.decode(out.read_bytes(), new)
    assert bundle.friendly_name == "Commune Exemple"
    assert pkcs12.inspect(out.read_bytes()).profile == "legacy"
    assert mode(out) == 0o600
    shared = p12_files(quickstart)["shared/backup/commune-exemple.g1.p12"]
    original = pkcs12.decode(shared.read_bytes(), PASSWORDS["commune-exemple"])
    assert public_key_fingerprint(bundle.key) == public_key_fingerprint(original.key)

    cer = tmp_path / "commune.cer"
    assert (
        cli("export", quickstart, "commune-exemple", "--format", "der", "--out", cer).returncode
        == 0
    )
    shown = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-in", cer, "-noout", "-subject"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "CN = Commune Exemple" in shown.stdout

    again = cli("export", quickstart, "commune-exemple", "--format", "der", "--out", cer)
    assert again.returncode == 1 and "exists; add --force" in again.stderr
    weak = cli(
        "export",
        quickstart,
        "commune-exemple",
        "--out",
        tmp_path / "w.p12",
        "--password-env",
        "WEAK",
        env={"WEAK": "weak"},
    )
    assert weak.returncode == 1 and "export password is refused" in weak.stderr
    assert not (tmp_path / "w.p12").exists()


def test_export_never_replaces_the_escrow_the_state_or_a_copy_even_with_force(
    cli: Runner, quickstart: Path
) -> None:
    """One typo in --out must not replace what bids are opened with: the escrow's keyring,
    an escrowed key, the state database, a workstation's copy."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    state = quickstart.parent / ".provisioner"
    copy = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g1.p12"
    kept = [state / "escrow" / "keyring.json", state / "state.db", copy]
    kept += sorted((state / "escrow").glob("*.key"))[:1]
    before = {path: path.read_bytes() for path in kept}
    for path in kept:
        done = cli(
            "export", quickstart, "commune-exemple", "--format", "der", "--force", "--out", path
        )
        assert done.returncode == 1, done.stdout + done.stderr
        if path == copy:
            assert (
                f"{path}: is ws-accueil's copy, written and recorded by this state: an export "
                "never replaces it; choose another --out"
            ) in done.stderr, done.stderr
        else:
            assert (
                f"{path}: is inside the state folder {state}: an export never replaces the "
                "state or the escrow; choose another --out"
            ) in done.stderr, done.stderr
    assert {path: path.read_bytes() for path in kept} == before
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0


def adopt_cli(
    cli: Runner, manifest: Path, pfx: Path, *extra: str, at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PW": WINDOWS_PASSWORD, **({"PROVISIONER_NOW": at} if at else {})}
    return cli("adopt", manifest, "commune-exemple", pfx, "--password-env", "PW", *extra, env=env)


def mismatched_p12(folder: Path) -> Path:
    """A PKCS#12 whose private key is not the certificate's (a botched export)."""
    key, other = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ancienne cle")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(other.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=400))
        .sign(other, hashes.SHA256())
    )
    data = raw_pkcs12.serialize_key_and_certificates(
        b"Ancienne cle",
        key,
        None,
        [cert],
        BestAvailableEncryption(WINDOWS_PASSWORD.encode()),
    )
    out = folder / "mismatch.pfx"
    out.write_bytes(data)
    return out


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (
            "signing-only",
            "its certificate's key usage has no keyEncipherment (it allows digital_signature), "
            "so companies could not encrypt bids to it",
        ),
        ("expired", "its certificate expired on "),
        ("mismatch", "the private key does not belong to the certificate"),
        ("ec", "PKCS#12 private key is not RSA"),
    ],
)
def test_adopt_refuses_a_key_companies_could_not_encrypt_to(
    cli: Runner, quickstart: Path, tmp_path: Path, kind: str, reason: str
) -> None:
    at = None
    if kind == "signing-only":
        pfx = pfx_from_windows(tmp_path, legacy=False, key_usage=("digital_signature",))
    elif kind == "expired":
        pfx = pfx_from_windows(tmp_path, days=30, legacy=False)
        at = (NOW + dt.timedelta(days=60)).isoformat()
    elif kind == "mismatch":
        pfx = mismatched_p12(tmp_path)
    else:
        pfx = pfx_from_windows(tmp_path, legacy=False, ec=True)
    done = adopt_cli(cli, quickstart, pfx, at=at)
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith(f"Error: {pfx}: "), done.stderr
    assert reason in done.stderr
    assert "Traceback" not in done.stderr
    assert not (quickstart.parent / ".provisioner").exists()  # nothing written


def test_an_expired_key_is_adopted_as_retained_for_its_consultation(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    later = (NOW + dt.timedelta(days=60)).isoformat()
    assert (
        cli("apply", "--auto-approve", quickstart, env={"PROVISIONER_NOW": later}).returncode == 0
    )
    pfx = pfx_from_windows(tmp_path, days=30, legacy=False)
    done = adopt_cli(cli, quickstart, pfx, "--retained", at=later)
    assert done.returncode == 0, done.stderr
    assert "as generation 2 (retained)" in done.stdout
    assert (
        'Recorded as "Ancienne cle": the file\'s friendly name, the name the platform knows this '
        'key by. The manifest would name it "Commune Exemple (2)"' in done.stdout
    )


def test_adopt_keeps_the_name_the_platform_knows_and_renewals_take_the_manifests(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Issue 31: a PFX the platform knows as "Syndicat Eaux Val 2025" (friendly name and CN),
    adopted in 2027 under a manifest saying "Syndicat Eaux Val {year}", keeps that name on
    the agents' copies; only the next generation takes the manifest's."""
    adopted_at = NOW + dt.timedelta(days=120)  # 2027
    pfx = openssl_p12(
        tmp_path,
        WINDOWS_PASSWORD,
        NOW - dt.timedelta(days=500),  # made on the platform in 2025
        name="Syndicat Eaux Val 2025",
        days=1000,
        legacy=False,
    )
    at = {"PROVISIONER_NOW": adopted_at.isoformat(), "PW": WINDOWS_PASSWORD}
    done = cli("adopt", quickstart, "syndicat-eaux", pfx, "--password-env", "PW", env=at)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        'Recorded as "Syndicat Eaux Val 2025": the file\'s friendly name, the name the platform '
        'knows this key by. The manifest would name it "Syndicat Eaux Val 2027": its renewals '
        "take the manifest's designation; give --designation to record another name for this "
        "one.\n"
    ), done.stdout
    assert '"Syndicat Eaux Val 2025", valid until' in done.stdout
    assert cli("apply", "--auto-approve", "-q", quickstart, env=at).returncode == 0
    copies = [path for rel, path in p12_files(quickstart).items() if "syndicat-eaux.g1" in rel]
    assert len(copies) == 2
    for path in copies:
        bundle = pkcs12.decode(path.read_bytes(), PASSWORDS["syndicat-eaux"])
        assert bundle.friendly_name == "Syndicat Eaux Val 2025", path
    # Not renamed afterwards: the next plan has nothing to do.
    again = cli("plan", "--detailed-exitcode", quickstart, env=at)
    assert again.returncode == 0, again.stdout
    assert 'syndicat-eaux: generation 1 "Syndicat Eaux Val 2025" valid until' in (
        cli("-v", "plan", quickstart, env=at).stdout
    )
    # Its renewal is named by the manifest, the year it is made; the adopted one keeps its name.
    renewal = {"PROVISIONER_NOW": (NOW + dt.timedelta(days=470)).isoformat()}  # 2028
    planned = cli("plan", quickstart, env=renewal).stdout
    assert 'designation    = "Syndicat Eaux Val 2028"' in planned, planned
    assert "update designation" not in planned


def test_adopt_falls_back_to_the_certificates_cn(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(65537, 2048)
    cert = dated_certificate(key, "Commune Exemple 2025", NOW)
    pfx = tmp_path / "no-name.pfx"
    pfx.write_bytes(
        raw_pkcs12.serialize_key_and_certificates(
            None, key, cert, None, BestAvailableEncryption(WINDOWS_PASSWORD.encode())
        )
    )
    done = adopt_cli(cli, quickstart, pfx, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "adopt.schema.json").read_text()))
    assert doc["generation"]["designation"] == "Commune Exemple 2025"
    assert doc["designation_from"] == "common-name"
    assert doc["notice"].startswith(
        'Recorded as "Commune Exemple 2025": its certificate\'s CN, the name the platform knows '
        "this key by (the file has no friendly name)."
    )


def test_adopt_designation_option_records_the_operators_name_and_keeps_the_files(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    pfx = pfx_from_windows(tmp_path, legacy=False)
    done = adopt_cli(cli, quickstart, pfx, "--designation", "Commune Exemple")
    assert done.returncode == 0, done.stderr
    assert (
        'Recorded as "Commune Exemple": given by --designation. The file names it "Ancienne '
        'cle": kept as a former designation, so a consultation naming either refers to this '
        "key." in done.stdout
    )
    status = cli("status", quickstart)
    assert 'g1 current  "Commune Exemple" (formerly "Ancienne cle")' in status.stdout
    # A consultation exported with the file's name refers to this generation.
    (quickstart.parent / "c.yaml").write_text(
        "version: 1\nconsultations:\n  - reference: R-1\n    entity: commune-exemple\n"
        "    designation: Ancienne cle\n    status: open\n"
    )
    planned = cli("plan", quickstart, "--consultations", quickstart.parent / "c.yaml")
    assert 'consultation R-1 is bound to generation 1 "Commune Exemple" (definitive)' in (
        planned.stdout
    )


def test_adopt_refuses_a_designation_another_generation_has(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    pfx = pfx_from_windows(tmp_path, name="Commune Exemple", legacy=False)
    done = adopt_cli(cli, quickstart, pfx, "--retained")
    assert done.returncode == 1
    assert 'the designation "Commune Exemple" is generation 1\'s; give --designation' in (
        done.stderr
    )
    done = adopt_cli(cli, quickstart, pfx, "--retained", "--designation", "Commune 2024")
    assert done.returncode == 0, done.stderr
    assert (
        'Recorded as "Commune 2024": given by --designation. The file names it "Commune '
        "Exemple\", another generation's name: not kept." in done.stdout
    )
    assert "generation 2 (retained)" in done.stdout


def test_an_unknown_entity_is_named_as_typed_not_as_a_limit(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Issue 31: `export` on a misspelt entity said `--limit: unknown entity`, an option the
    operator never gave."""
    out = tmp_path / "x.cer"
    done = cli("export", quickstart, "commune-exmple", "--format", "der", "--out", out)
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: {quickstart}: error: unknown entity commune-exmple "
        "(did you mean 'commune-exemple'?)\n"
    )
    pfx = pfx_from_windows(tmp_path)
    done = cli("adopt", quickstart, "nobody", pfx, "--password-env", "PW", env={"PW": "x"})
    assert done.returncode == 1 and "--limit" not in done.stderr
    assert "unknown entity nobody (known: commune-exemple, syndicat-eaux)" in done.stderr
    assert not out.exists() and not (quickstart.parent / ".provisioner").exists()
    # Through --limit, the option is named.
    done = cli("plan", quickstart, "--limit", "commune-exmple")
    assert done.returncode == 1
    assert (
        "--limit: unknown name commune-exmple: no entity, workstation, group or shared location "
        "of that name (did you mean 'commune-exemple'?)" in done.stderr
    )
