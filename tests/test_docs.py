"""The docs' commands run (so they do not rot) and the manifest reference matches the schema."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.manifest.manual import render
from tests.conftest import EXAMPLES, REPO, TEST_CLOCK
from tests.pgserver import ADMIN_PASSWORD, PgServer
from tests.pgserver import bindir as pg_bindir


def sh_blocks(doc: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.S)


def test_howto_pasted_into_a_fresh_shell(tmp_path: Path) -> None:
    """The HOWTO as a reader pastes it: one bash session, started in the checkout, with an
    empty home folder and no virtualenv on PATH (its First run puts the venv there)."""
    blocks = sh_blocks(REPO / "docs" / "HOWTO.md")
    assert "make .venv/.installed" in blocks[0] and "cd ~/" in blocks[0]
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISIONER_", "VIRTUAL"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin
    )
    env["HOME"] = str(tmp_path)
    # The reader's day is the suite's (the HOWTO's dated steps, such as a renewal rehearsed with
    # PROVISIONER_NOW=2028-10-15, are written from it), whatever the date the suite runs on.
    env["PROVISIONER_NOW"] = TEST_CLOCK.isoformat()
    assert subprocess.run(
        ["bash", "-c", "command -v provisioner"], env=env, capture_output=True, check=False
    ).returncode, "provisioner must not be on PATH before the First run block"
    script = "set -euo pipefail\n" + "".join(
        f"echo '::block {i + 1}' >&2\n{block}" for i, block in enumerate(blocks)
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    reached = re.findall(r"::block (\d+)", done.stderr)
    last = int(reached[-1]) if reached else 0
    assert done.returncode == 0, (
        f"HOWTO.md block {last}:\n{blocks[last - 1]}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    assert last == len(blocks)
    assert (tmp_path / "provisioner-first-run" / ".provisioner" / "state.db").is_file()


@pytest.mark.parametrize("name", ["RUNBOOK.md"])
def test_documented_commands_run(name: str, tmp_path: Path) -> None:
    blocks = sh_blocks(REPO / "docs" / name)
    assert len(blocks) >= 2
    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path)
    shutil.copytree(EXAMPLES / "secrets", tmp_path / "secrets")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PROVISIONER_NOW"] = TEST_CLOCK.isoformat()
    for i, block in enumerate(blocks):
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{name} block {i + 1}:\n{block}\n{done.stdout}{done.stderr}"


def test_first_manifest_backup_recipe_runs(quickstart: Path) -> None:
    """FIRST-MANIFEST.md's backup and its test, in one shell session after a first apply: the
    copy taken under the tool's lock plans and rehearses as the state itself."""
    blocks = sh_blocks(REPO / "docs" / "FIRST-MANIFEST.md")
    assert len(blocks) == 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PROVISIONER_NOW"] = TEST_CLOCK.isoformat()
    first = subprocess.run(
        ["provisioner", "apply", "--auto-approve", "-q", str(quickstart)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    # The recipe needs no `sqlite3` tool (the README's requirements do not list it): one
    # that is "not installed" comes first on PATH.
    shims = quickstart.parent / "shims"
    shims.mkdir()
    (shims / "sqlite3").write_text("#!/bin/sh\necho 'sqlite3: not installed' >&2\nexit 127\n")
    (shims / "sqlite3").chmod(0o755)
    env["PATH"] = f"{shims}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "".join(blocks)],
        cwd=quickstart.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("2\n")  # state.db and keyring.json in the copy
    assert re.search(r"^Rehearsal: \d+ copies opened the test bid, 0 failed\.$", done.stdout, re.M)


def test_first_manifest_says_what_prov_is_where_it_first_uses_it() -> None:
    text = (REPO / "docs" / "FIRST-MANIFEST.md").read_text()
    first = text.index("`prov ")
    defined = text.index("prov() {")
    assert first < defined  # used before its definition: so it must say what it is
    assert "`prov` is `provisioner` run as the provisioner user" in text[first : first + 400]


def test_make_demo_writes_no_escape_codes_into_a_file(tmp_path: Path) -> None:
    """Issue 31: `make demo > demo.log` wrote the bold escape codes of its command lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env |= {"PROVISIONER_NOW": TEST_CLOCK.isoformat(), "TMPDIR": str(tmp_path)}
    env.pop("NO_COLOR", None)
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        done = subprocess.run(
            ["make", "-s", "demo"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    text = log.read_bytes()
    assert done.returncode == 0, text.decode()
    assert b"\x1b" not in text
    assert b"\n$ provisioner validate quickstart.yaml\n" in text
    assert b"Apply complete: 7 actions done." in text


def test_manifest_reference_matches_the_schema() -> None:
    current = (REPO / "docs" / "MANIFEST.md").read_text()
    assert current == render(), (
        "docs/MANIFEST.md is stale: python -m provisioner.manifest.manual > docs/MANIFEST.md"
    )


def test_cli_help_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", "--help"], capture_output=True, text=True, check=True
    )
    for command in (
        "init",
        "validate",
        "plan",
        "apply",
        "status",
        "check",
        "rehearse",
        "adopt",
        "export",
        "trust",
        "rekey",
        "report",
        "audit",
        "inventory",
        "recover",
        "state",
    ):
        assert re.search(rf"^\s+{command}\s", done.stdout, flags=re.M), command
        assert command in (REPO / "README.md").read_text()


def test_make_man_writes_a_page_that_lists_every_command_and_option() -> None:
    """Issue 31: no man page. `make man` renders provisioner(1) from the help texts."""
    from typer.main import get_command

    from provisioner.cli import app

    page = REPO / "build" / "man" / "provisioner.1"
    page.unlink(missing_ok=True)
    done = subprocess.run(["make", "-s", "man"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    root = get_command(app)
    shown = subprocess.run(
        [sys.executable, "-m", "provisioner", "--help"], capture_output=True, text=True, check=True
    ).stdout.split("Commands:", 1)[1]
    commands = re.findall(r"^  (\w+) ", shown, flags=re.M)  # as `provisioner --help` lists them
    assert len(commands) == 16 and commands[0] == "init"
    listed = re.findall(r'^\.SS "provisioner (\S+)', text, flags=re.M)
    assert listed == commands  # every command, in --help order
    for name in commands:
        section = text.split(f'.SS "provisioner {name} ', 1)[1].split(".SS ", 1)[0]
        command = root.commands[name]  # type: ignore[attr-defined]
        # a group (`state`): the options of its commands, in its section
        for each in [command, *getattr(command, "commands", {}).values()]:
            for param in each.params:
                for opt in getattr(param, "opts", []):
                    if opt.startswith("--") and opt != "--help":
                        assert opt.replace("-", "\\-") in section, (name, opt)
    if shutil.which("groff"):  # the page is valid roff: no warning at all
        checked = subprocess.run(
            ["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True
        )
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr


def test_team_state_recipe_runs(pg_server: PgServer, tmp_path: Path) -> None:
    """docs/TEAM.md as an administrator pastes it, against a real PostgreSQL server: roles,
    schema and grants, the manifest's `state`, `state migrate` of the existing SQLite state,
    the locked job, the read-only probe, a backup restored into a scratch database and tested,
    then (the database lost) the schema made again and the state recovered from the copies."""
    blocks = sh_blocks(REPO / "docs" / "TEAM.md")
    assert len(blocks) == 8
    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path / "manifest.yaml")
    shutil.copytree(EXAMPLES / "secrets", tmp_path / "secrets")
    home = tmp_path / "home"
    home.mkdir()
    # The administrator's own password file, for the superuser steps (never in the page).
    (home / ".pgpass").write_text(f"127.0.0.1:{pg_server.port}:*:postgres:{ADMIN_PASSWORD}\n")
    (home / ".pgpass").chmod(0o600)
    tools = pg_bindir()
    assert tools is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISIONER_", "PG"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(tools), env["PATH"]])
    env |= {"HOME": str(home), "DB_HOST": "127.0.0.1", "DB_PORT": str(pg_server.port)}
    env["PROVISIONER_NOW"] = TEST_CLOCK.isoformat()

    def session(script: list[str]) -> None:
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + "".join(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    first = subprocess.run(
        ["provisioner", "apply", "--auto-approve", "-q", "manifest.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    try:
        session(blocks[:-1])
        assert (tmp_path / ".provisioner.before-postgresql" / "state.db").is_file()
        assert pg_server.sql("SELECT count(*) FROM bicles_region.generations") == [(2,)]
        pg_server.sql("DROP SCHEMA bicles_region CASCADE")  # the database is lost
        session(blocks[-1:])
        assert pg_server.sql("SELECT count(*) FROM bicles_region.generations") == [(2,)]
    finally:
        pg_server.sql(
            "DROP SCHEMA IF EXISTS bicles_region CASCADE",
            "DROP OWNED BY provisioner_team, provisioner_probe",
        )
        pg_server.sql("DROP DATABASE IF EXISTS bicles_scratch", database="postgres")
        pg_server.sql(
            "DROP ROLE IF EXISTS provisioner_team",
            "DROP ROLE IF EXISTS provisioner_probe",
            database="postgres",
        )
