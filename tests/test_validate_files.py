"""`validate` checks the files the manifest references (without reading a secret), suggests the
name meant for an unknown reference, and `--help` lists choices and whole summaries."""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest

from tests.conftest import Runner


def edit(manifest: Path, old: str, new: str) -> None:
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new, 1))


def test_a_missing_secret_file_is_an_error_at_its_place(cli: Runner, quickstart: Path) -> None:
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").unlink()
    done = cli("validate", quickstart)
    assert done.returncode == 1
    missing = quickstart.parent / "secrets" / "syndicat-eaux.pass"
    assert (
        f"quickstart.yaml:48:15: error: entity syndicat-eaux password: file not found: {missing}"
        in done.stderr
    )
    assert "invalid (1 error)" in done.stderr


def test_a_secret_file_that_is_a_folder_or_a_pipe_is_refused_without_waiting(
    cli: Runner, quickstart: Path
) -> None:
    secrets = quickstart.parent / "secrets"
    (secrets / "escrow.pass").unlink()
    (secrets / "escrow.pass").mkdir()
    (secrets / "commune-exemple.pass").unlink()
    os.mkfifo(secrets / "commune-exemple.pass")  # reading it would wait for a writer
    started = time.monotonic()
    done = cli("validate", quickstart)
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert f"escrow passphrase: {secrets / 'escrow.pass'} is a folder" in done.stderr
    assert (
        f"entity commune-exemple password: {secrets / 'commune-exemple.pass'} is not a "
        "regular file" in done.stderr
    )


def test_validate_never_prints_a_secret(cli: Runner, quickstart: Path) -> None:
    secrets = quickstart.parent / "secrets"
    values = [p.read_text().strip() for p in secrets.glob("*.pass")]
    for args in (["validate", quickstart], ["validate", "--json", quickstart]):
        done = cli(*args)
        assert done.returncode == 0, done.stderr
        for value in values:
            assert value not in done.stdout + done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: run as a user to test this")
def test_an_unreadable_secret_file_is_an_error(cli: Runner, quickstart: Path) -> None:
    secret = quickstart.parent / "secrets" / "escrow.pass"
    secret.chmod(0)
    done = cli("validate", quickstart)
    assert done.returncode == 1
    assert f"escrow passphrase: {secret}: cannot be read by this user" in done.stderr


def test_secret_commands_and_hooks_must_be_programs(cli: Runner, quickstart: Path) -> None:
    edit(
        quickstart,
        "password: {file: secrets/syndicat-eaux.pass}",
        "password: {command: [no-such-password-program, show]}",
    )
    edit(quickstart, "entities:\n", "hooks:\n  renewed: [[./notify.sh, x]]\n\nentities:\n")
    done = cli("validate", quickstart)
    assert done.returncode == 1
    assert (
        "entity syndicat-eaux password: program 'no-such-password-program' not found on PATH"
        in done.stderr
    )
    assert f"hooks.renewed: file not found: {quickstart.parent / 'notify.sh'}" in done.stderr
    hook = quickstart.parent / "notify.sh"
    hook.write_text("#!/bin/sh\n")
    assert f"hooks.renewed: {hook} is not executable" in cli("validate", quickstart).stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "workstations: [service-marches, ws-accueil]",
            "workstations: [service-marche, ws-accueil]",
            "'service-marche' is neither a workstation nor a group (did you mean "
            "'service-marches'?)",
        ),
        (
            "workstations: [service-marches, ws-accueil]",
            "workstations: [service-marches, ws-acceuil]",
            "'ws-acceuil' is neither a workstation nor a group (did you mean 'ws-accueil'?)",
        ),
        (
            "service-marches: [ws-marches]",
            "service-marches: [ws-marche]",
            "'ws-marche' is neither a workstation nor a group (did you mean 'ws-marches'?)",
        ),
        (
            "shared_locations: [backup-share]\n    workstations: [service-marches, ws-accueil]",
            "shared_locations: [backup-shares]\n    workstations: [service-marches, ws-accueil]",
            "unknown shared location 'backup-shares' (did you mean 'backup-share'?)",
        ),
        (
            "designation: Commune Exemple\n",
            "designation: Commune Exemple\n      issuer: self-signe\n",
            "unknown issuer 'self-signe' (did you mean 'self-signed'?)",
        ),
    ],
)
def test_did_you_mean(cli: Runner, quickstart: Path, old: str, new: str, expected: str) -> None:
    edit(quickstart, old, new)
    done = cli("validate", quickstart)
    assert done.returncode == 1
    assert re.search(r"quickstart\.yaml:\d+:\d+: error: entities\[0\]|inventory", done.stderr)
    assert expected in done.stderr, done.stderr


def test_help_lists_choices_and_whole_summaries(cli: Runner) -> None:
    main = cli("--help", env={"COLUMNS": "80"})
    assert main.returncode == 0
    commands = main.stdout.split("Commands:")[1]
    assert "..." not in commands
    assert re.search(
        r"apply +Create or renew keys, escrow them, write and remove copies\.", commands
    )
    export = cli("export", "--help", env={"COLUMNS": "80"}).stdout
    assert "--format [p12|pem|der]" in export
    assert "--profile [modern|legacy]" in export


def test_every_command_shows_one_example_that_parses(cli: Runner) -> None:
    from provisioner.cli import EXAMPLES, app, state_app

    names = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    names |= {f"state {c.name}" for c in state_app.registered_commands}
    assert names == set(EXAMPLES)
    for name, example in EXAMPLES.items():
        shown = cli(*name.split(), "--help", env={"COLUMNS": "80"})
        assert f"Example:\n    {example}\n" in shown.stdout, name
        # Its options exist: click refuses an unknown option before it reaches --help.
        parsed = cli(*shlex.split(example)[1:], "--help")
        assert parsed.returncode == 0, f"{example}: {parsed.stderr}"


@pytest.mark.parametrize("inside", [".provisioner/escrow", ".provisioner", "state/copies"])
def test_a_target_inside_the_state_folder_is_refused(
    cli: Runner, quickstart: Path, inside: str
) -> None:
    """Losing the state folder, or moving its escrow aside (docs/RECOVERY.md), must never
    take the copy that is never lost with it: validate and plan refuse, nothing written."""
    edit(quickstart, "path: demo-out/shared/backup", f"path: {inside}")
    env = {"PROVISIONER_STATE_DIR": str(quickstart.parent / "state")} if "state/" in inside else {}
    state = quickstart.parent / ("state" if env else ".provisioner")
    said = (
        f"quickstart.yaml:21:7: error: location 'backup-share' ({quickstart.parent / inside}) "
        f"is inside the state folder {state}: the copies must outlive the state; declare a "
        "folder outside it"
    )
    checked = cli("validate", quickstart, env=env)
    assert checked.returncode == 1 and said in checked.stderr, checked.stderr
    planned = cli("apply", "--auto-approve", quickstart, env=env)
    assert planned.returncode == 1 and said in planned.stderr, planned.stderr
    assert not state.exists() and not (quickstart.parent / "demo-out").exists()


def test_a_path_starting_with_a_tilde_is_refused_not_made_a_folder_named_tilde(
    cli: Runner, quickstart: Path
) -> None:
    edit(quickstart, "path: demo-out/shared/backup", "path: ~/backup")
    checked = cli("validate", quickstart)
    assert checked.returncode == 1, checked.stderr
    assert (
        "quickstart.yaml:23:13: error: inventory.locations[0].path: '~/backup': a leading '~' "
        "is not a home folder here (it would be a folder named '~' beside the manifest): "
        "write the absolute path"
    ) in checked.stderr, checked.stderr
    assert cli("apply", "--auto-approve", quickstart).returncode == 1
    assert not (quickstart.parent / "~").exists()
