"""What the programs the tool starts see, and the bounds on every secret source: hooks and
`{command}` password programs get a minimal environment (invariant 12); a secret file that is a
pipe, a device or a folder is refused at once; a command is timed and read with bounds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from provisioner.errors import Location, SecretError
from provisioner.manifest.model import SecretRef
from provisioner.secrets import MAX_SECRET_BYTES, resolve
from tests.conftest import Runner
from tests.engine_helpers import ESCROW_PASSPHRASE, PASSWORDS

SECRET_NAMES = ("PROV_TEST_ESCROW", "PROV_TEST_COMMUNE", "PROV_TEST_SSH_PASS")


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def secrets_manifest(quickstart: Path) -> None:
    """The quickstart with its secrets in the environment, the README's way, one password
    from a program, hooks, and `pass_environment`."""
    folder = quickstart.parent
    # The password program records its environment, then prints the password.
    script(
        folder / "vault.sh",
        f"env > {folder / 'env.command'}\necho '{PASSWORDS['syndicat-eaux']}'\n",
    )
    script(folder / "hook.sh", f"env > {folder / 'env.hook'}\n")
    text = quickstart.read_text()
    text = text.replace(
        "passphrase: {file: secrets/escrow.pass}", "passphrase: {env: PROV_TEST_ESCROW}"
    )
    text = text.replace(
        "password: {file: secrets/commune-exemple.pass}", "password: {env: PROV_TEST_COMMUNE}"
    )
    text = text.replace(
        "password: {file: secrets/syndicat-eaux.pass}", "password: {command: [./vault.sh]}"
    )
    text = text.replace(
        "version: 1\n",
        "version: 1\npass_environment: [VAULT_ADDR, COPY_OF_PASSPHRASE]\n"
        "hooks:\n  renewed: [[./hook.sh]]\n",
    )
    # An SSH target's key passphrase names a variable too (never contacted: no entity uses it).
    text = text.replace(
        "  workstations:\n",
        "  workstations:\n"
        "    - {name: ws-far, transport: ssh, host: 192.0.2.1, user: u, path: /srv/x,\n"
        "       known_hosts: kh, key_file: id, key_passphrase: {env: PROV_TEST_SSH_PASS}}\n",
        1,
    )
    quickstart.write_text(text)


def test_hooks_and_password_programs_see_no_secret(cli: Runner, quickstart: Path) -> None:
    secrets_manifest(quickstart)
    env = {
        "PROV_TEST_ESCROW": ESCROW_PASSPHRASE,
        "PROV_TEST_COMMUNE": PASSWORDS["commune-exemple"],
        "PROV_TEST_SSH_PASS": "ssh-Key-Passphrase-42",
        "VAULT_ADDR": "https://vault.example.invalid",
        "COPY_OF_PASSPHRASE": ESCROW_PASSPHRASE,  # passed by name, withheld by value
        "UNRELATED_TOKEN": "not-asked-for",
        "LC_TIME": "fr_FR.UTF-8",
    }
    done = cli("apply", "--auto-approve", quickstart, env=env)
    assert done.returncode == 0, done.stderr
    folder = quickstart.parent
    for dump in ("env.command", "env.hook"):
        seen = (folder / dump).read_text()
        names = {line.split("=", 1)[0] for line in seen.splitlines() if "=" in line}
        for name in SECRET_NAMES:
            assert name not in seen, f"{dump} holds {name}"
        for value in (ESCROW_PASSPHRASE, PASSWORDS["commune-exemple"], "ssh-Key-Passphrase-42"):
            assert value not in seen, f"{dump} holds a secret value"
        assert "COPY_OF_PASSPHRASE" not in names, "withheld by value, whatever its name"
        assert "UNRELATED_TOKEN" not in names, "only the minimal set and what is passed"
        assert {"PATH", "HOME", "LC_TIME", "VAULT_ADDR"} <= names
    hook = (folder / "env.hook").read_text()
    assert PASSWORDS["syndicat-eaux"] not in hook, "nor a password a program gave"


def test_a_secret_variable_cannot_be_passed(cli: Runner, quickstart: Path) -> None:
    text = quickstart.read_text().replace(
        "passphrase: {file: secrets/escrow.pass}", "passphrase: {env: PROV_TEST_ESCROW}"
    )
    quickstart.write_text(
        text.replace("version: 1\n", "version: 1\npass_environment: [PATH2, PROV_TEST_ESCROW]\n")
    )
    done = cli("validate", quickstart)
    assert done.returncode == 1
    assert (
        "quickstart.yaml:7:27: error: pass_environment[1]: PROV_TEST_ESCROW holds a secret"
        in done.stderr
    )


def ref(kind: str, value: str | tuple[str, ...], base: Path) -> SecretRef:
    return SecretRef(kind, value, base, Location("m.yaml", 3, 7))


def test_secret_file_that_is_a_pipe_device_or_folder_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in (
        (fifo, "a named pipe"),
        (Path("/dev/zero"), "a device"),
        (tmp_path, "a folder"),
    ):
        started = time.monotonic()
        with pytest.raises(SecretError) as caught:
            resolve(ref("file", str(path), tmp_path), "entity x password")
        assert time.monotonic() - started < 5, "no waiting for a writer"
        assert str(caught.value) == (
            f"m.yaml:3:7: entity x password: secret file {path}: is {kind}; give a regular file"
        )
    big = tmp_path / "big.pass"
    big.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(SecretError, match=r"big.pass: is larger than 4096 bytes \(4097 bytes\)"):
        resolve(ref("file", "big.pass", tmp_path), "pw")


def test_a_pipe_as_password_file_fails_the_plan_without_hanging(
    cli: Runner, quickstart: Path
) -> None:
    pipe = quickstart.parent / "secrets" / "commune-exemple.pass"
    pipe.unlink()
    os.mkfifo(pipe)
    done = cli("plan", quickstart, timeout=60)
    assert done.returncode == 1
    assert "commune-exemple.pass: is a named pipe; give a regular file" in done.stderr
    assert "Traceback" not in done.stderr and "Internal error" not in done.stderr


def test_secret_command_is_timed_on_the_process_not_its_pipe(tmp_path: Path) -> None:
    started = time.monotonic()
    # The shell exits at once; the `sleep` it leaves keeps the output pipe open for 100 s.
    value = resolve(ref("command", ("sh", "-c", "sleep 100 & echo pw-Value-1"), tmp_path), "pw")
    assert value == "pw-Value-1"
    assert time.monotonic() - started < 5


def test_secret_command_output_is_read_up_to_the_bound(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(SecretError, match=r"is too large \(more than 4096 bytes; it was stopped\)"):
        # `yes` never ends by itself: it must be stopped once the bound is passed.
        resolve(ref("command", ("yes", "password"), tmp_path), "pw")
    assert time.monotonic() - started < 5


def test_secret_command_that_never_exits_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("provisioner.secrets.COMMAND_TIMEOUT", 0.5)
    started = time.monotonic()
    with pytest.raises(SecretError, match=r"did not exit within 0\.5 s \(killed\)"):
        resolve(ref("command", ("sh", "-c", "echo pw; exec sleep 100"), tmp_path), "pw")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("p\u2028w-Secret\u0085x\n", "p\u2028w-Secret\u0085x"),  # line separators are kept
        ("pw\x0bsecret\x1c1\r\n", "pw\x0bsecret\x1c1"),
        ("first\nsecond\n", "first"),  # the first line, ended by \n only
        ("no-newline", "no-newline"),
    ],
)
def test_only_a_final_newline_ends_a_password(tmp_path: Path, output: str, expected: str) -> None:
    (tmp_path / "pw").write_bytes(output.encode())
    assert resolve(ref("file", "pw", tmp_path), "pw") == expected
    program = tmp_path / "print.py"
    program.write_text(f"import sys\nsys.stdout.buffer.write({output.encode()!r})\n")
    assert resolve(ref("command", ("python3", str(program)), tmp_path), "pw") == expected


def test_a_hook_that_leaves_a_process_behind_is_done_when_it_exits(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    # The hook starts a notifier in the background (holding its output) and exits at once.
    script(folder / "notify.sh", "sleep 100 &\necho queued\n")
    quickstart.write_text(
        quickstart.read_text().replace(
            "version: 1\n", "version: 1\nhooks: {renewed: [[./notify.sh]]}\n"
        )
    )
    started = time.monotonic()
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stderr
    assert "Warning: hook" not in done.stderr
    assert time.monotonic() - started < 40, "not the 60 s hook timeout"


def test_a_pipe_or_device_as_manifest_is_refused_at_once(cli: Runner, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.yaml")
    for name, kind in (("m.yaml", "a named pipe"), ("/dev/zero", "a device")):
        done = cli("validate", name, cwd=tmp_path, timeout=30)
        assert done.returncode == 1
        assert f"{name}: error: is {kind}; give a regular file" in done.stderr
