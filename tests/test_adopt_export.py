"""adopt: an existing bi-clé comes under management; export: hand-exports from the escrow."""

from __future__ import annotations

import subprocess
from pathlib import Path

from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from tests.conftest import Runner
from tests.engine_helpers import PASSWORDS, mode, openssl_p12, p12_files, state_rows

WINDOWS_PASSWORD = "Exported-From-Windows-1"


def test_adopt_then_apply_distributes_the_adopted_key(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    pfx = openssl_p12(tmp_path, WINDOWS_PASSWORD)
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
            assert bundle.friendly_name == "Ancienne cle"
    rows = state_rows(
        quickstart, "SELECT origin, status FROM generations WHERE entity = 'commune-exemple'"
    )
    assert rows == [("adopted", "current")]


def test_adopt_refuses_a_wrong_password_and_writes_nothing(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    pfx = openssl_p12(tmp_path, WINDOWS_PASSWORD)
    done = cli("adopt", quickstart, "commune-exemple", pfx)  # entity password: wrong here
    assert done.returncode == 1
    assert "wrong password" in done.stderr
    assert not (quickstart.parent / ".provisioner").exists()


def test_adopt_refuses_a_second_current_generation(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    pfx = openssl_p12(tmp_path, WINDOWS_PASSWORD)
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
