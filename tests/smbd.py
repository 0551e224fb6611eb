"""A real Samba server on loopback for the tests and the SMB benchmark.

`smbd` runs in the foreground on 127.0.0.1 on a free port, with its own configuration, private,
lock, state and cache folders in a temporary folder, one share in that folder, one user with a
password (added with `smbpasswd -a -s`, the password on stdin), SMB3 encryption required and
NT ACLs kept in extended attributes (`vfs objects = acl_xattr`), as a Windows-like file server
does. smbd must run as root; the share belongs to an unprivileged user created once if missing.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.realtime import server_env

SMBD = shutil.which("smbd") or "/usr/sbin/smbd"
SMBPASSWD = shutil.which("smbpasswd") or "/usr/bin/smbpasswd"
TEST_USER = "provisioner-test"
OTHER_USER = "provisioner-other"  # another account of the server, in READERS_GROUP
READERS_GROUP = "provisioner-readers"
SHARE = "keys"
PASSWORD = "Samba-test-password-1"  # test only


@dataclass
class SmbServer:
    port: int
    user: str
    password: str
    share: str
    root: Path  # the share's folder on this machine
    base: Path
    config: Path
    process: subprocess.Popen[bytes] | None
    other_user: str
    readers_sid: str  # Samba's SID for READERS_GROUP, which holds other_user

    def fetch_as_other(self, path: str) -> bytes | None:
        """The bytes of `path` (inside the share) as the other account reads them with
        Samba's own smbclient, or None when the server refuses it."""
        auth = self.base / "other-auth"
        auth.write_text(f"username = {self.other_user}\npassword = {PASSWORD}\n")
        out = self.base / "fetched"
        out.unlink(missing_ok=True)
        done = subprocess.run(
            [
                "smbclient",
                f"//127.0.0.1/{self.share}",
                "-p",
                str(self.port),
                "-A",
                str(auth),
                "--client-protection=encrypt",
                "-c",
                f'get "{path}" "{out}"',
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if "NT_STATUS_ACCESS_DENIED" in done.stdout + done.stderr:
            return None
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"smbclient failed: {done.stdout}{done.stderr}")
        return out.read_bytes()

    def stop(self) -> None:
        """Stop the server (its share stays until `remove`)."""
        if self.process is None:
            return
        # smbd forks a process per client and helpers: end the whole group it leads.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # children still closing
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.process = _spawn(self.config, self.port)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def available() -> bool:
    return os.geteuid() == 0 and Path(SMBD).is_file() and Path(SMBPASSWD).is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user(name: str = TEST_USER) -> tuple[str, int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def _readers_group() -> int:
    try:
        gid = grp.getgrnam(READERS_GROUP).gr_gid
    except KeyError:
        subprocess.run(["groupadd", READERS_GROUP], check=True, capture_output=True)
        gid = grp.getgrnam(READERS_GROUP).gr_gid
    subprocess.run(["usermod", "-aG", READERS_GROUP, OTHER_USER], check=True, capture_output=True)
    return gid


def _spawn(config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [SMBD, "--foreground", "--no-process-group", f"--configfile={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its helpers (samba-dcerpcd...) are ended with it
        env=server_env(),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"smbd exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"smbd did not listen on 127.0.0.1:{port} within 20 s")


def start(*, encrypt: bool = True) -> SmbServer:
    """Start a server; `encrypt=False` gives one limited to SMB 2.1, which cannot encrypt
    (an old NAS), signing still mandatory."""
    user, uid, gid = _user()
    other, _, _ = _user(OTHER_USER)
    readers_gid = _readers_group()
    base = Path(tempfile.mkdtemp(prefix="provisioner-smbd-"))
    os.chmod(base, 0o755)
    for sub in ("private", "lock", "state", "cache", "pid", "log", "ncalrpc"):
        (base / sub).mkdir(mode=0o755)
    root = base / "share"
    root.mkdir(mode=0o755)  # others may enter: each copy must protect itself
    os.chown(root, uid, gid)
    port = free_port()
    config = base / "smb.conf"
    config.write_text(
        "[global]\n"
        f"smb ports = {port}\n"
        "interfaces = 127.0.0.1\nbind interfaces only = yes\n"
        f"private dir = {base / 'private'}\nlock directory = {base / 'lock'}\n"
        f"state directory = {base / 'state'}\ncache directory = {base / 'cache'}\n"
        f"pid directory = {base / 'pid'}\nncalrpc dir = {base / 'ncalrpc'}\n"
        f"log file = {base / 'log' / 'smbd.log'}\nlog level = 1\n"
        f"passdb backend = tdbsam:{base / 'private' / 'passdb.tdb'}\n"
        "server role = standalone server\nmap to guest = never\n"
        + (
            "server min protocol = SMB3\nserver smb encrypt = required\n"
            if encrypt
            else "server max protocol = SMB2_10\nserver smb encrypt = off\n"
        )
        + "server signing = mandatory\n"
        "load printers = no\nprinting = bsd\nprintcap name = /dev/null\ndisable spoolss = yes\n"
        "disable netbios = yes\nrpc start on demand helpers = yes\n"
        f"[{SHARE}]\npath = {root}\nread only = no\nbrowseable = yes\n"
        f"valid users = {user} {other}\n"
        "nt acl support = yes\ncreate mask = 0600\ndirectory mask = 0700\n"
    )
    for account in (user, other):
        subprocess.run(
            [SMBPASSWD, "-c", str(config), "-a", "-s", account],
            input=f"{PASSWORD}\n{PASSWORD}\n".encode(),
            check=True,
            capture_output=True,
        )
    process = _spawn(config, port)
    # Samba's SID for a Unix group of a standalone server: S-1-22-2-<gid>.
    return SmbServer(
        port, user, PASSWORD, SHARE, root, base, config, process, other, f"S-1-22-2-{readers_gid}"
    )
