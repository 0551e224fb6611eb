"""examples/scheduled/ runs as written: the cron lines in cron's shell with cron's environment,
the systemd unit checked by `systemd-analyze verify` and its command lines run with its
environment and credential, the Icinga command line and its sudoers rule agreeing."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.manifest.loader import read_manifest
from tests.conftest import EXAMPLES

SCHEDULED = EXAMPLES / "scheduled"
PROVISIONER = str(Path(sys.executable).parent / "provisioner")
PASSPHRASE = "correct horse battery staple 2026"


def installed(tmp_path: Path, secret: str) -> dict[str, str]:
    """The paths the examples name, made in tmp_path: /etc/provisioner holds the quickstart as
    region.yaml with its escrow passphrase given by `secret`, /var/lib/provisioner the state."""
    etc = tmp_path / "etc" / "provisioner"
    etc.mkdir(parents=True)
    text = (EXAMPLES / "quickstart.yaml").read_text()
    text = text.replace("passphrase: {file: secrets/escrow.pass}", f"passphrase: {secret}")
    text = text.replace("path: demo-out/", f"path: {tmp_path}/srv/provisioner/")
    if "systemd-creds" in secret:
        text = text.replace("escrow:\n", "pass_environment: [CREDENTIALS_DIRECTORY]\n\nescrow:\n")
    (etc / "region.yaml").write_text(text)
    shutil.copytree(EXAMPLES / "secrets", etc / "secrets")
    (etc / "secrets" / "escrow.pass").unlink()  # the passphrase comes from elsewhere now
    state = tmp_path / "var" / "lib" / "provisioner"
    state.mkdir(parents=True)
    return {
        "/opt/provisioner/bin/provisioner": PROVISIONER,
        "/etc/provisioner": str(etc),
        "/var/lib/provisioner": str(state),
        "/etc/credstore": str(tmp_path / "credstore"),
        "/usr/local/bin/notify-it-team": "cat",
    }


def substitute(line: str, paths: dict[str, str]) -> str:
    for old, new in paths.items():
        line = line.replace(old, new)
    return line


def cron_jobs() -> tuple[dict[str, str], list[str]]:
    """The crontab's variables and the command of each job (after time fields and user)."""
    variables: dict[str, str] = {}
    commands: list[str] = []
    for line in (SCHEDULED / "crontab").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        assignment = re.match(r"^([A-Z_]+)=(.*)$", line)
        if assignment:
            variables[assignment[1]] = assignment[2]
        else:
            commands.append(line.split(None, 6)[6])
    return variables, commands


def test_cron_jobs_run_in_cron_s_shell_and_environment(tmp_path: Path) -> None:
    paths = installed(tmp_path, "{env: PROVISIONER_ESCROW_PASSPHRASE}")
    env_file = Path(paths["/etc/provisioner"]) / "secrets.env"
    # As the crontab says: KEY='value' lines (sh and systemd's EnvironmentFile= read them alike).
    env_file.write_text(f"PROVISIONER_ESCROW_PASSPHRASE='{PASSPHRASE}'\n")
    env_file.chmod(0o600)
    variables, (apply, probe) = cron_jobs()
    # cron runs each job with /bin/sh, its own few variables and those of the crontab.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh", "LOGNAME": "x"}
    env.update({k: substitute(v, paths) for k, v in variables.items()})
    done = subprocess.run(
        ["/bin/sh", "-c", substitute(apply, paths)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Apply complete:") and done.stdout.count("\n") == 1
    assert (Path(paths["/var/lib/provisioner"]) / "state.db").is_file()
    assert list((tmp_path / "srv" / "provisioner").rglob("*.p12"))
    done = subprocess.run(
        ["/bin/sh", "-c", substitute(probe, paths)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = Path(paths["/var/lib/provisioner"]) / "check.txt"
    assert report.read_text().startswith("PROVISIONER OK - ")
    assert done.stdout == ""  # nobody notified

    def probe_job() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", substitute(probe, paths)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    # A WARNING (a copy drifted: the next apply repairs it) is logged, not sent.
    drifted(tmp_path)
    done = probe_job()
    assert report.read_text().startswith("PROVISIONER WARNING - "), report.read_text()
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
    # A CRITICAL (a key missing from the escrow) reaches the team (notify-it-team is `cat`).
    escrow_key_lost(paths)
    done = probe_job()
    assert done.stdout.startswith("PROVISIONER CRITICAL - "), done.stdout + done.stderr


def drifted(tmp_path: Path) -> None:
    """A copy of the installed quickstart changed since it was written: WARNING pending."""
    copy = sorted((tmp_path / "srv" / "provisioner").rglob("*.p12"))[0]
    copy.write_bytes(copy.read_bytes() + b"\0")


def escrow_key_lost(paths: dict[str, str]) -> None:
    """An escrowed key file deleted: CRITICAL escrow-missing until apply takes it back."""
    keys = sorted((Path(paths["/var/lib/provisioner"]) / "escrow").glob("*.key"))
    keys[0].unlink()


def test_the_cron_line_without_set_a_would_fail(tmp_path: Path) -> None:
    """What the issue saw: `. FILE` alone sets shell variables that the program never sees."""
    paths = installed(tmp_path, "{env: PROVISIONER_ESCROW_PASSPHRASE}")
    (Path(paths["/etc/provisioner"]) / "secrets.env").write_text(
        f"PROVISIONER_ESCROW_PASSPHRASE='{PASSPHRASE}'\n"
    )
    _, (apply, _) = cron_jobs()
    broken = substitute(apply, paths).replace("set -a && ", "").replace(" && set +a", "")
    done = subprocess.run(
        ["/bin/sh", "-c", broken],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "PROVISIONER_ESCROW_PASSPHRASE is not set" in done.stderr


def unit(name: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, by key (the section is not needed here)."""
    keys: dict[str, list[str]] = {}
    for line in (SCHEDULED / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing in CI (.ci/run installs systemd)")
        pytest.skip("systemd-analyze not installed (package systemd)")
    names = ["provisioner-apply.service", "provisioner-apply.timer", "provisioner-alert@.service"]
    for name in names:
        # The program must exist for verify: the one under test stands for /opt/provisioner.
        text = (SCHEDULED / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/provisioner/bin/provisioner", PROVISIONER))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *[str(tmp_path / n) for n in names]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # verify exits 0 on a key in the wrong section, which systemd then ignores (OnFailure= in
    # [Service] did): any remark about our files is a failure.
    ours = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    assert ours == [], done.stderr


def test_the_systemd_service_s_commands_run_with_its_credential(tmp_path: Path) -> None:
    paths = installed(tmp_path, "{command: [systemd-creds, cat, escrow-passphrase]}")
    keys = unit("provisioner-apply.service")
    (credential,) = keys["LoadCredential"]
    name, source = credential.split(":", 1)
    credstore = Path(substitute(source, paths))
    credstore.parent.mkdir(parents=True)
    credstore.write_text(PASSPHRASE + "\n")
    if shutil.which("systemd-creds") is None:
        pytest.skip("systemd-creds not installed (package systemd)")
    # What systemd does for LoadCredential=: a private folder holding a copy, mode 0400.
    credentials = tmp_path / "run-credentials"
    credentials.mkdir(mode=0o700)
    shutil.copy(credstore, credentials / name)
    (credentials / name).chmod(0o400)
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)}
    for assignment in keys["Environment"]:
        key, value = assignment.split("=", 1)
        env[key] = substitute(value, paths)
    cwd = substitute(keys["WorkingDirectory"][0], paths)

    def run(key: str) -> subprocess.CompletedProcess[str]:
        (command,) = keys[key]
        # systemd's own unescaping ($$ is a literal $), then its word splitting.
        return subprocess.run(
            shlex.split(substitute(command, paths).replace("$$", "$")),
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    for key in ("ExecStart", "ExecStartPost"):
        done = run(key)
        assert done.returncode == 0, f"{key}: {done.stdout}{done.stderr}"
    assert PASSPHRASE not in done.stdout + done.stderr
    assert list((tmp_path / "srv" / "provisioner").rglob("*.p12"))
    # The probe fails the unit (OnFailure= alerts) on CRITICAL, not on WARNING.
    drifted(tmp_path)
    done = run("ExecStartPost")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("PROVISIONER WARNING - "), done.stdout  # in the journal
    escrow_key_lost(paths)
    done = run("ExecStartPost")
    assert done.returncode != 0 and done.stdout.startswith("PROVISIONER CRITICAL - "), done.stdout


def test_protect_system_leaves_every_local_target_of_the_region_writable() -> None:
    """ProtectSystem=strict: a local target outside ReadWritePaths= is read-only to the job."""
    keys = unit("provisioner-apply.service")
    assert keys["ProtectSystem"] == ["strict"]
    writable = [Path(p) for p in keys["ReadWritePaths"][0].split()]
    state = Path(keys["Environment"][0].split("=", 1)[1])
    manifest, _ = read_manifest(EXAMPLES / "region.yaml")
    local = [
        Path(t.path)
        for t in (*manifest.locations.values(), *manifest.workstations.values())
        if t.transport == "local"
    ]
    assert local, "region.yaml has local targets"
    for path in [state, *local]:
        assert any(path.is_relative_to(w) for w in writable), f"{path} is not in ReadWritePaths"


def test_icinga_command_is_the_one_sudoers_allows(tmp_path: Path) -> None:
    conf = (SCHEDULED / "icinga-command.conf").read_text()
    command = re.search(r"command = \[(.*)\]", conf)
    assert command
    argv = [a.strip().strip('"') for a in command[1].split(",")]
    assert argv[:5] == ["/usr/bin/sudo", "-n", "-u", "provisioner", argv[4]]
    rule = [
        line
        for line in (SCHEDULED / "sudoers-icinga").read_text().splitlines()
        if line.startswith("icinga ")
    ]
    assert rule == [f"icinga ALL=(provisioner) NOPASSWD: {' '.join(argv[4:])}"]
    # The probe's own command line, as the provisioner user would run it.
    paths = installed(tmp_path, "{file: secrets/commune-exemple.pass}")
    probe = [substitute(a, paths) for a in argv[4:]]
    done = subprocess.run(
        probe,
        env={"PATH": "/usr/bin:/bin", "PROVISIONER_STATE_DIR": paths["/var/lib/provisioner"]},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # No state yet: UNKNOWN, in the plugin protocol.
    assert done.returncode == 3 and done.stdout.startswith("PROVISIONER UNKNOWN - "), done.stdout
    visudo = shutil.which("visudo")
    if visudo:
        checked = subprocess.run(
            [visudo, "-cf", str(SCHEDULED / "sudoers-icinga")], capture_output=True, check=False
        )
        assert checked.returncode == 0, checked.stderr
