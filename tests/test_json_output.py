"""The machine contract: every command takes `--json` and prints one JSON document on stdout
(with `format_version`) whether it succeeds or fails, valid against its schemas/*.schema.json;
a failure is the same error object for every command, with the file and line when known.
Also the global -q/-v and --limit on every command that reads entities."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import EXAMPLES, REPO, Runner, run_cli

COMMANDS = [
    *("init", "validate", "plan", "apply", "status", "check", "rehearse", "rekey", "trust"),
    *("recover", "adopt", "export", "audit", "report", "inventory", "state migrate"),
]


def schema_of(command: str) -> dict[str, Any]:
    """schemas/COMMAND.schema.json (a group's command: `state migrate`, state-migrate)."""
    name = command.replace(" ", "-")
    return dict(json.loads((REPO / "schemas" / f"{name}.schema.json").read_text()))


def document(done: subprocess.CompletedProcess[str], command: str) -> dict[str, Any]:
    """The one JSON document on stdout, checked against the command's schema."""
    doc = json.loads(done.stdout)  # one document, nothing else on stdout
    assert doc["format_version"] == 1
    jsonschema.validate(doc, schema_of(command))
    return dict(doc)


def failed(done: subprocess.CompletedProcess[str], command: str, code: int = 1) -> dict[str, Any]:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    doc = document(done, command)
    assert doc["command"] == command and doc["exit_code"] == code
    defs = schema_of(command)["$defs"]
    jsonschema.validate(doc, {"$defs": defs, "$ref": "#/$defs/failure"})  # not the success
    return doc["error"]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart applied once, shared by the commands that change nothing."""
    folder = tmp_path_factory.mktemp("applied")
    shutil.copy(EXAMPLES / "quickstart.yaml", folder / "quickstart.yaml")
    shutil.copytree(EXAMPLES / "secrets", folder / "secrets")
    manifest = folder / "quickstart.yaml"
    done = run_cli("apply", "--auto-approve", "--json", manifest)
    doc = document(done, "apply")
    assert done.returncode == 0 and doc["applied"] and doc["succeeded"] == 7
    return manifest


def test_every_command_has_json_and_a_schema_with_its_failure() -> None:
    from provisioner.errors import ERROR_KINDS

    failure = schema_of("plan")["$defs"]["failure"]
    # One kind per kind of fault, from the one table the program uses.
    assert failure["properties"]["error"]["properties"]["kind"]["enum"] == [
        kind for _, kind, _ in ERROR_KINDS
    ]
    for command in COMMANDS:
        done = run_cli(*command.split(), "--help")
        assert "--json" in done.stdout, command
        schema = schema_of(command)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$defs"]["failure"] == failure, command  # one error object for all


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("validate", []),
        ("plan", ["--limit", "commune-exemple"]),
        ("status", ["--limit", "commune-exemple"]),
        ("check", ["--limit", "commune-exemple"]),
        ("rehearse", []),
        ("inventory", ["--limit", "commune-exemple"]),
        ("audit", ["--last", "2"]),
        ("recover", []),
        ("trust", []),
    ],
)
def test_success_documents(applied: Path, command: str, args: list[str]) -> None:
    done = run_cli(command, applied, *args, "--json")
    assert done.returncode == 0, done.stderr
    doc = document(done, command)
    if command == "status":  # --limit: that entity only
        assert [e["id"] for e in doc["entities"]] == ["commune-exemple"]
    if command == "check":
        assert doc["status"] == "OK" and "entities=1;" in doc["summary"]
    if command == "inventory":
        entities = {c["entity"] for h in doc["hosts"].values() for c in h["copies"]}
        assert entities == {"commune-exemple"}
    if command == "rehearse":
        assert doc["opened"] == 7 and doc["failed"] == 0
    if command == "recover":
        assert doc["recorded"] is False and "Nothing to recover" in doc["report"][0]


def test_writing_commands_success_documents(applied: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.pem"
    done = run_cli("export", applied, "commune-exemple", "--format", "pem", "--out", out, "--json")
    doc = document(done, "export")
    assert done.returncode == 0 and out.read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert doc["generation"]["number"] == 1 and doc["out"] == str(out)
    p12 = tmp_path / "c.p12"
    assert run_cli("export", applied, "commune-exemple", "--out", p12).returncode == 0
    report = tmp_path / "r.html"
    done = run_cli("report", applied, "--out", report, "--limit", "syndicat-eaux", "--json")
    doc = document(done, "report")
    assert doc["entities"] == 1 and doc["bytes"] == report.stat().st_size
    html = report.read_text()
    assert "syndicat-eaux" in html and "commune-exemple" not in html


def test_rekey_and_adopt_documents(quickstart: Path, tmp_path: Path) -> None:
    assert run_cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    folder = quickstart.parent
    (folder / "new.pass").write_text("a-brand-new-escrow-passphrase-2027\n")
    done = run_cli("rekey", quickstart, "--new-passphrase-file", folder / "new.pass", "--json")
    doc = document(done, "rekey")
    assert done.returncode == 0 and doc["rekeyed"] is True
    # the old passphrase no longer opens the escrow: adopt fails, with the error document
    p12 = next((folder / "demo-out").rglob("commune-exemple.g1.p12"))
    done = run_cli(
        "adopt",
        quickstart,
        "commune-exemple",
        p12,
        "--password-file",
        folder / "secrets" / "commune-exemple.pass",
        "--json",
    )
    error = failed(done, "adopt")
    assert error["kind"] == "state" and "wrong escrow passphrase" in error["message"]


def test_validate_failure_names_file_line_and_column(cli: Runner) -> None:
    done = cli("validate", EXAMPLES / "broken" / "wrong-type.yaml", "--json")
    error = failed(done, "validate")
    doc = json.loads(done.stdout)
    assert doc["valid"] is False and error["kind"] == "invalid"
    assert error["file"].endswith("wrong-type.yaml") and error["line"] and error["column"]


@pytest.mark.parametrize(
    ("command", "args", "code", "kind", "says"),
    [
        ("plan", ["--limit", "nobody"], 1, "usage", "unknown name nobody"),
        ("plan", ["--limt", "x"], 1, "usage", "No such option: --limt"),
        ("apply", [], 1, "usage", "--auto-approve"),  # no prompt under --json
        ("status", ["--limit", "nobody"], 1, "usage", "unknown name nobody"),
        ("check", ["--warn-days", "soon"], 3, "usage", "soon"),
        ("rehearse", [], 1, "state", "no state"),
        ("rekey", [], 1, "usage", "--new-passphrase-env"),
        ("trust", ["no-such-target"], 1, "usage", "no-such-target"),
        ("recover", ["--limit", "nobody"], 1, "usage", "unknown entity nobody"),
        ("adopt", ["commune-exemple", "missing.p12"], 1, "error", "missing.p12"),
        ("adopt", ["nobody", "missing.p12"], 1, "usage", "unknown entity nobody"),
        ("export", ["commune-exemple", "--out", "x.cer", "--format", "der"], 1, "state", "state"),
        ("export", ["commune-exemple", "--out", "x.cer", "--format", "crt"], 1, "usage", "crt"),
        ("audit", [], 1, "state", "state"),
        ("report", ["--out", "quickstart.yaml"], 1, "error", "quickstart.yaml"),
        ("inventory", ["--limit", "nobody"], 1, "usage", "unknown name nobody"),
        ("state migrate", ["--to", "mysql"], 1, "usage", "--to must be sqlite or postgresql"),
        ("state migrate", ["--to", "postgresql"], 1, "usage", "PROVISIONER_STATE_DSN"),
    ],
)
def test_failure_documents(
    cli: Runner, quickstart: Path, command: str, args: list[str], code: int, kind: str, says: str
) -> None:
    done = cli(*command.split(), quickstart, *args, "--json", cwd=quickstart.parent)
    error = failed(done, command, code)
    assert error["kind"] == kind and says in error["message"], error
    if "unknown entity" in says or "unknown name" in says:
        assert error["file"] == str(quickstart)
    assert not (quickstart.parent / "demo-out").exists()  # nothing was written
    assert not (quickstart.parent / ".provisioner").exists()  # not even a state folder


def test_one_kind_per_fault_whatever_the_command(cli: Runner, quickstart: Path) -> None:
    """Issue 31: validate said `invalid` and plan `error` for the same broken manifest; a
    refused prompt was `error` in one command and a bad value `usage` in another."""
    broken = EXAMPLES / "broken" / "wrong-type.yaml"
    for command in ("validate", "plan", "apply", "status", "inventory"):
        done = cli(command, broken, "--json")
        error = failed(done, command)
        assert error["kind"] == "invalid", (command, error)
        assert error["file"].endswith("wrong-type.yaml") and error["line"], (command, error)
    # A bad value: usage, whether click or the command finds it.
    done = cli("audit", quickstart, "--since", "yesterday", "--json")
    assert failed(done, "audit")["kind"] == "usage"
    done = cli("export", quickstart, "commune-exemple", "--out", "x", "--profile", "new", "--json")
    assert failed(done, "export")["kind"] == "usage"
    # A secret that cannot be read.
    secret = quickstart.parent / "secrets" / "commune-exemple.pass"
    kept = secret.read_text()
    secret.unlink()
    for command in ("plan", "apply", "rehearse"):
        extra = ["--auto-approve"] if command == "apply" else []
        done = cli(command, quickstart, "--json", *extra)
        assert failed(done, command)["kind"] == "secret", command
    assert not (quickstart.parent / ".provisioner").exists()
    # The lock another apply holds.
    secret.write_text(kept)
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    with (quickstart.parent / ".provisioner" / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = cli("apply", "--auto-approve", "--json", quickstart)
    assert failed(done, "apply")["kind"] == "locked"


def test_ctrl_c_under_json_still_prints_a_result(quickstart: Path) -> None:
    text = quickstart.read_text()
    quickstart.write_text(
        text
        + "".join(
            f"  - {{id: e{i}, name: E{i}, key: {{designation: E{i}, size: 4096}}, "
            "password: {file: secrets/commune-exemple.pass}, shared_locations: [backup-share]}\n"
            for i in range(12)
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROVISIONER_") or k == "PROVISIONER_NOW"
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "--json", str(quickstart)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    keyring = quickstart.parent / ".provisioner" / "escrow" / "keyring.json"
    deadline = time.monotonic() + 120
    while not keyring.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    error = failed(done, "apply", 130)
    assert error["kind"] == "interrupted"
    assert re.match(r"new keys made and escrowed \d+ of 14", error["done"] or ""), error


def test_global_quiet_and_verbose(cli: Runner, quickstart: Path) -> None:
    # -q before or after the command: only the final line
    for args in (["-q", "plan", quickstart], ["plan", quickstart, "-q"]):
        done = cli(*args)
        assert (
            done.returncode == 0 and done.stdout == "Plan: 7 to create, 0 to update, 0 to remove.\n"
        )
    done = cli("apply", "--auto-approve", quickstart, "--quiet")
    assert done.stdout == "Apply complete: 7 actions done.\n" and done.stderr == ""
    assert cli("-q", "status", quickstart).stdout == "2 of 2 entities ready.\n"
    assert cli("rehearse", quickstart, "-q").stdout.splitlines() == [
        "Rehearsal: 7 of 7 copies and escrowed keys opened."
    ]
    assert len(cli("check", quickstart, "-q").stdout.splitlines()) == 1
    assert "valid" in cli("-q", "validate", quickstart).stdout
    # -v: a plan with changes also lists what is in sync
    quickstart.write_text(
        quickstart.read_text() + "  - {id: e1, name: E1, key: {designation: E1}, "
        "password: {file: secrets/commune-exemple.pass}, shared_locations: [backup-share]}\n"
    )
    quiet_plan = cli("plan", quickstart).stdout
    verbose_plan = cli("-v", "plan", quickstart).stdout
    assert "commune-exemple" not in quiet_plan and "commune-exemple" in verbose_plan
    after = cli("plan", quickstart, "-v").stdout  # -v after the command's name: the same
    assert "commune-exemple" in after and len(after.splitlines()) == len(verbose_plan.splitlines())
    both = cli("-q", "plan", quickstart, "-v")
    assert both.returncode == 1 and "exclude each other" in both.stderr


def test_quiet_lasts_one_invocation(quickstart: Path) -> None:
    """The app called twice in one process (as the stateful suite does): -q is not kept."""
    from typer.testing import CliRunner

    from provisioner.cli import app

    runner = CliRunner()
    env = {"COLUMNS": "200"}
    quiet = runner.invoke(app, ["plan", str(quickstart), "-q"], env=env)
    again = runner.invoke(app, ["plan", str(quickstart)], env=env)
    assert quiet.exit_code == 0 and len(quiet.stdout.splitlines()) == 1
    assert again.exit_code == 0 and len(again.stdout.splitlines()) > 1


def test_a_partial_apply_says_in_its_json_the_exit_code_the_process_gives(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """One workstation folder refused (a link to elsewhere), the others done: the process exits
    4 (partial), and a scheduler that reads the JSON instead of $? sees the same 4."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = quickstart.parent / "demo-out" / "workstations"
    folder.mkdir(parents=True)
    (folder / "ws-accueil").symlink_to(elsewhere)
    done = cli("apply", "--auto-approve", "--json", quickstart)
    doc = document(done, "apply")
    assert done.returncode == 4, done.stderr
    assert doc["exit_code"] == 4 and doc["applied"] and doc["succeeded"] > 0
    assert any("ws-accueil" in error for error in doc["plan"]["errors"])
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
