"""Shared fixtures: run the real command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import smbd as smbd_helpers
from tests import sshd as sshd_helpers
from tests.smbd import SmbServer
from tests.sshd import SshServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

Runner = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run `provisioner ARGS` in a fresh interpreter; returns the finished process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *map(str, args)],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli() -> Runner:
    return run_cli


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A private copy of examples/quickstart.yaml and its DEMO ONLY secrets."""
    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path / "quickstart.yaml")
    shutil.copytree(EXAMPLES / "secrets", tmp_path / "secrets")
    return tmp_path / "quickstart.yaml"


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    """A real OpenSSH server on 127.0.0.1 and 127.0.0.2 for the module's tests."""
    if not sshd_helpers.available():
        if os.environ.get("CI"):
            pytest.fail("sshd is not installed: .ci/run must install openssh-server")
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    server = sshd_helpers.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sshd_without_posix_rename() -> Iterator[SshServer]:
    """A second OpenSSH server whose SFTP subsystem refuses posix-rename@openssh.com
    (`internal-sftp -P posix-rename`), as a locked-down or older server does."""
    if not sshd_helpers.available():
        if os.environ.get("CI"):
            pytest.fail("sshd is not installed: .ci/run must install openssh-server")
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    server = sshd_helpers.start(sftp_options="-P posix-rename")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def smbd() -> Iterator[SmbServer]:
    """A real Samba server on 127.0.0.1 (SMB3 encryption required) for the module's tests."""
    if not smbd_helpers.available():
        if os.environ.get("CI"):
            pytest.fail("smbd is not installed (or not root): .ci/run must install samba")
        pytest.skip("smbd is not installed or the tests do not run as root (apt-get install samba)")
    server = smbd_helpers.start()
    yield server
    server.remove()
