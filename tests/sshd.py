"""A real OpenSSH server on loopback for the tests and the SSH benchmark.

It listens on 127.0.0.1 and 127.0.0.2 (both loopback) on a free port, with a temporary host
key, one authorized client key, no password and no root login. As root it logs the tests in as
an unprivileged user, created once if missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.realtime import server_env

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
TEST_USER = "provisioner-test"
HOSTS = ("127.0.0.1", "127.0.0.2")


@dataclass
class SshServer:
    port: int
    user: str
    client_key: Path
    other_key: Path  # a key the server does not authorize
    host_key_line: str  # "ssh-ed25519 AAAA..."
    root: Path  # a folder the test user may write
    base: Path
    process: subprocess.Popen[bytes]
    hosts: tuple[str, ...] = HOSTS

    def known_hosts(self, path: Path, hosts: tuple[str, ...] = HOSTS) -> Path:
        path.write_text("".join(f"[{h}]:{self.port} {self.host_key_line}\n" for h in hosts))
        return path

    def halt(self) -> None:
        """Stop the server, keeping its keys and configuration (a machine switched off)."""
        self.process.terminate()
        self.process.wait(timeout=5)

    def resume(self) -> None:
        """Start a halted server again, same keys, addresses and port."""
        self.process = _launch(self.base / "sshd_config", self.port, self.hosts)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.base, ignore_errors=True)


def available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
    )


def _user() -> tuple[str, int, int]:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return entry.pw_name, entry.pw_uid, entry.pw_gid
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(TEST_USER)
    # A locked account ("!" in shadow) is refused by sshd even for keys: unlock without password.
    subprocess.run(["usermod", "-p", "*", TEST_USER], check=True, capture_output=True)
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def start(
    hosts: tuple[str, ...] = HOSTS, sftp_options: str = "", port: int | None = None
) -> SshServer:
    """Start a server on `hosts` (at most 16: sshd's limit of listening sockets) and `port`
    (default: a free one); `sftp_options` are given to internal-sftp (`-P posix-rename`
    denies that extension, as a locked-down server does)."""
    user, uid, gid = _user()
    base = Path(tempfile.mkdtemp(prefix="provisioner-sshd-"))
    os.chmod(base, 0o755)
    for name in ("host_key", "client_key", "other_key"):
        _keygen(base / name)
    authorized = base / "authorized_keys"
    shutil.copy(base / "client_key.pub", authorized)
    os.chmod(authorized, 0o644)
    root = base / "remote"
    root.mkdir(mode=0o755)
    os.chown(root, uid, gid)
    port = port or free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        + "".join(f"ListenAddress {h}\n" for h in hosts)
        + f"HostKey {base / 'host_key'}\n"
        f"PidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin no\nStrictModes no\nUsePAM no\n"
        f"AllowUsers {user}\nSubsystem sftp internal-sftp {sftp_options}\nLogLevel ERROR\n"
        "MaxStartups 100:30:200\nMaxSessions 100\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = _launch(config, port, hosts)
    host_key_line = " ".join((base / "host_key.pub").read_text().split()[:2])
    for key in ("client_key", "other_key"):
        os.chmod(base / key, 0o600)
    return SshServer(
        port,
        user,
        base / "client_key",
        base / "other_key",
        host_key_line,
        root,
        base,
        process,
        hosts,
    )


def _launch(config: Path, port: int, hosts: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """Run sshd on `config` and wait until it accepts connections on the first address."""
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server_env(),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"sshd exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            with socket.create_connection((hosts[0], port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    return process
