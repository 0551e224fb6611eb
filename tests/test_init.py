"""`provisioner init`: a starter a newcomer can validate, plan and apply at once, whose secrets
are private DEMO values, and which never writes over a file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jsonschema

from tests.conftest import REPO, Runner

FILES = (
    "manifest.yaml",
    "consultations.yaml",
    "secrets/escrow.pass",
    "secrets/commune-exemple.pass",
)


def test_init_writes_a_starter_that_applies_and_checks_ok(cli: Runner, tmp_path: Path) -> None:
    folder = tmp_path / "region"
    done = cli("init", folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Wrote a starter in {folder}:\n  manifest.yaml  ")
    assert "The secrets are DEMO values in files" in done.stdout
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "secrets").stat().st_mode) == 0o700
    for name in FILES:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    secret = (folder / "secrets" / "escrow.pass").read_text()
    assert secret.startswith("DEMO-escrow-") and len(secret) > 30  # random, not a known value
    other = tmp_path / "other"
    assert cli("init", other, "-q").stdout == f"Wrote a starter in {other}:\n"
    assert (other / "secrets" / "escrow.pass").read_text() != secret
    manifest = folder / "manifest.yaml"
    text = manifest.read_text()
    assert text.count("DEMO ONLY") == 2 and "# The agents' workstations" in text
    schema = text.splitlines()[0].split("$schema=", 1)[1]
    assert Path(schema).is_file()  # editors find the schema the package carries
    assert cli("validate", manifest).stdout == (
        f"{manifest}: valid (1 entity, 1 workstation, 1 shared location)\n"
    )
    applied = cli("apply", "--auto-approve", manifest)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply complete: 3 actions done." in applied.stdout
    probe = cli("check", manifest)
    assert probe.returncode == 0 and probe.stdout.startswith("PROVISIONER OK - 1 entity"), probe


def test_init_writes_nothing_over_a_file(cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "escrow.pass").write_text("my real passphrase\n")
    done = cli("init", tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: {tmp_path / 'secrets' / 'escrow.pass'}: exists; init writes nothing over a "
        "file: give an empty or new folder (provisioner init FOLDER)\n"
    )
    assert (tmp_path / "secrets" / "escrow.pass").read_text() == "my real passphrase\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["escrow.pass", "secrets"]
    # A symlink counts as a file there: nothing is written through it.
    (tmp_path / "secrets" / "escrow.pass").unlink()
    (tmp_path / "manifest.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    assert cli("init", tmp_path).returncode == 1
    assert not (tmp_path / "elsewhere.yaml").exists()


def test_init_given_a_file_names_it_and_writes_nothing(cli: Runner, tmp_path: Path) -> None:
    """`provisioner init quickstart.yaml`, a manifest given where a folder goes: a clear
    error naming it, exit 1, no traceback, the file untouched and nothing written beside."""
    manifest = tmp_path / "quickstart.yaml"
    manifest.write_text("version: 1\n")
    done = cli("init", manifest)
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: {manifest}: is a file, not a folder; init writes its starter into a folder "
        "(provisioner init FOLDER)\n"
    )
    assert manifest.read_text() == "version: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["quickstart.yaml"]
    # Inside a file: the folder cannot be made, said as such.
    inside = cli("init", manifest / "region")
    assert inside.returncode == 1
    assert (
        inside.stderr == f"Error: {manifest / 'region'}: cannot make the folder: Not a directory\n"
    )
    assert "Traceback" not in done.stderr + inside.stderr


def test_init_json_document(cli: Runner, tmp_path: Path) -> None:
    schema = json.loads((REPO / "schemas" / "init.schema.json").read_text())
    done = cli("init", tmp_path / "s", "--json")
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, schema)
    assert [f["path"] for f in doc["files"]] == [str(tmp_path / "s" / f) for f in FILES]
    assert Path(doc["examples"], "quickstart.yaml").is_file()
    again = cli("init", tmp_path / "s", "--json")
    failed = json.loads(again.stdout)
    jsonschema.validate(failed, schema)
    assert again.returncode == 1 and failed["error"]["kind"] == "error"
