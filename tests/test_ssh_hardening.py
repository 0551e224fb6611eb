"""The SSH transport keeps its promises against real OpenSSH servers: copies private from their
first byte, the posix-rename fallback chosen per server and safe when killed, leftovers
reported then cleared, folders closed, one clear line per failure and no library logging."""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.crypto import pkcs12
from provisioner.errors import TransportError
from provisioner.manifest.model import SshSpec, Target
from provisioner.transports import TransportPool
from provisioner.transports.ssh import SshTransport, replace_without_posix_rename
from tests.conftest import Runner
from tests.manifests import Fields, Manifest, ssh
from tests.sshd import SshServer

PASSWORD = "Ssh-Test-Password-42!"
NEW_PASSWORD = "Ssh-Test-Password-43?"
ENV = {"ESCROW": "Escrow-Passphrase-For-Ssh-Tests", "PW": PASSWORD}
PINNED = {"PROVISIONER_NOW": "2026-11-27T08:00:00+00:00"}


def make_manifest(
    tmp_path: Path,
    server: SshServer,
    *,
    entities: int = 1,
    workstations: tuple[tuple[str, str, int], ...] | None = None,
    key: Path | None = None,
    agent_only: bool = False,
    key_passphrase: Fields | None = None,
    timeout: float = 3,
) -> Path:
    """`entities` on a local share and SSH `workstations` (default: ws-a on `server`), reached
    with `key` (default: the server's client key; `agent_only`: no key_file at all)."""
    known = server.known_hosts(tmp_path / "known_hosts")
    remote = server.root / tmp_path.name
    hosts = workstations or (("ws-a", "127.0.0.1", server.port),)
    m = Manifest().location("nas")
    for name, host, port in hosts:
        key_file = None if agent_only else key or server.client_key
        fields = ssh(
            host,
            port,
            server.user,
            f"{remote}/{name}",
            key_file=key_file,
            key_passphrase=key_passphrase,
            known_hosts=known,
            connect_timeout=timeout,
        )
        m.workstation(name, **fields)
    names = [h[0] for h in hosts]
    for i in range(entities):
        m.entity(f"ville{i}", name=f"Ville {i}", shared_locations=["nas"], workstations=names)
    return m.write(tmp_path / "m.yaml")


def remote_folder(server: SshServer, tmp_path: Path, ws: str = "ws-a") -> Path:
    return server.root / tmp_path.name / ws


def leftovers(folder: Path) -> list[str]:
    """What an interrupted write leaves: a temporary, or the old copy moved aside."""
    return sorted(
        n for n in os.listdir(folder) if n.startswith(".provisioner-tmp-") or ".old-" in n
    )


def owned_by_test_user(server: SshServer, *folders: Path) -> None:
    entry = pwd.getpwnam(server.user)
    for folder in folders:
        os.chown(folder, entry.pw_uid, entry.pw_gid)


def target(server: SshServer, folder: Path, name: str = "ws-a") -> Target:
    from provisioner.errors import Location

    return Target(
        name=name,
        role="workstation",
        path=str(folder),
        location=Location("test"),
        spec=SshSpec(
            host="127.0.0.1",
            user=server.user,
            known_hosts=server.known_hosts(server.base / f"kh-{name}"),
            port=server.port,
            key_file=server.client_key,
            connect_timeout=3.0,
        ),
    )


# ------------------------------------------------------------------ private from the first byte


def test_a_watcher_on_the_server_never_sees_a_copy_byte_others_may_read(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = make_manifest(
        tmp_path,
        sshd,
        entities=6,
        workstations=(("ws-a", "127.0.0.1", sshd.port), ("ws-b", "127.0.0.2", sshd.port)),
    )
    watched = sshd.root / tmp_path.name
    exposed: list[str] = []
    stop = threading.Event()
    polls = 0

    def watch() -> None:
        nonlocal polls
        while not stop.is_set():
            polls += 1
            for folder, _, names in os.walk(watched):
                for name in names:
                    try:
                        info = os.lstat(os.path.join(folder, name))
                    except FileNotFoundError:
                        continue
                    if info.st_mode & 0o077 and info.st_size > 0:
                        exposed.append(f"{name} {stat.S_IMODE(info.st_mode):04o}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for password in (PASSWORD, NEW_PASSWORD):  # written, then re-encoded in place
            done = cli("apply", "--auto-approve", m, env={**ENV, "PW": password})
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        stop.set()
        watcher.join()
    assert polls > 100, "the watcher must have looked during the writes"
    assert exposed == []
    copy = remote_folder(sshd, tmp_path, "ws-b") / "ville5.g1.p12"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    pkcs12.decode(copy.read_bytes(), NEW_PASSWORD)


# ------------------------------------------------------------------ folders


def test_an_open_remote_folder_is_planned_and_closed_by_apply(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = make_manifest(tmp_path, sshd)
    parent = sshd.root / tmp_path.name
    folder = remote_folder(sshd, tmp_path)
    folder.mkdir(parents=True)
    owned_by_test_user(sshd, parent, folder)
    os.chmod(folder, 0o1777)
    planned = cli("plan", m, env=ENV)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert (
        f"~ secure folder on ws-a: {folder}  [folder-permissions] folder mode 1777 lets "
        "others reach the copies: set to 0700" in planned.stdout
    )
    status = cli("status", m)
    assert f"folder-permissions ws-a: {folder}" in status.stdout
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    again = cli("plan", "--detailed-exitcode", m, env=ENV)
    assert again.returncode == 0, again.stdout


def test_a_folder_the_ssh_user_does_not_own_fails_that_action_only(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = make_manifest(tmp_path, sshd)
    parent = sshd.root / tmp_path.name
    folder = remote_folder(sshd, tmp_path)
    folder.mkdir(parents=True)
    owned_by_test_user(sshd, parent)
    os.chmod(folder, 0o777)  # owned by root: the SSH user may write, not chmod
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 1
    assert (
        f"  ! secure-folder: ws-a: cannot set mode 0700 on {folder} on 127.0.0.1: "
        "Permission denied\n" in done.stderr
    )
    assert "Apply finished with errors: 3 done, 1 failed" in done.stdout
    copy = folder / "ville0.g1.p12"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    pkcs12.decode(copy.read_bytes(), PASSWORD)


# ------------------------------------------------------------------ posix-rename


def test_a_server_refusing_posix_rename_is_written_through_the_fallback(
    cli: Runner, sshd_without_posix_rename: SshServer, tmp_path: Path
) -> None:
    server = sshd_without_posix_rename
    m = make_manifest(tmp_path, server)
    first = cli("apply", "--auto-approve", m, env=ENV)
    assert first.returncode == 0, first.stdout + first.stderr
    copy = remote_folder(server, tmp_path) / "ville0.g1.p12"
    pkcs12.decode(copy.read_bytes(), PASSWORD)
    # A replacement over an existing copy: the old one is moved aside, then removed.
    again = cli("apply", "--auto-approve", m, env={**ENV, "PW": NEW_PASSWORD})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[password-changed]" in again.stdout
    pkcs12.decode(copy.read_bytes(), NEW_PASSWORD)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert os.listdir(copy.parent) == ["ville0.g1.p12"]


def test_a_folder_at_a_final_name_fails_that_file_only(
    sshd: SshServer, sshd_without_posix_rename: SshServer
) -> None:
    for server in (sshd, sshd_without_posix_rename):
        folder = server.root / f"dir-at-name-{server.port}"
        folder.mkdir()
        owned_by_test_user(server, folder)
        (folder / "a.g1.p12").mkdir()
        (folder / "a.g1.p12" / "inside").write_text("not ours")
        pool = TransportPool()
        try:
            transport = pool.get(target(server, folder))
            assert isinstance(transport, SshTransport)
            with pytest.raises(TransportError) as failure:
                transport.write(f"{folder}/a.g1.p12", b"copy")
            assert f"a folder stands at {folder}/a.g1.p12" in str(failure.value) or (
                f"something that is not a file stands at {folder}/a.g1.p12" in str(failure.value)
            )
            # One file's failure decides nothing for the server: the next write replaces in
            # one step where the server allows it.
            assert transport.conn.posix_rename is (server is sshd)
            transport.write(f"{folder}/b.g1.p12", b"other copy")
            transport.write(f"{folder}/b.g1.p12", b"other copy again")
        finally:
            pool.close()
        assert (folder / "b.g1.p12").read_bytes() == b"other copy again"
        assert (folder / "a.g1.p12" / "inside").read_text() == "not ours"
        assert sorted(os.listdir(folder)) == ["a.g1.p12", "b.g1.p12"], "nothing left as .old-*"


def test_the_fallback_puts_the_old_copy_back_when_the_second_rename_fails(
    sshd_without_posix_rename: SshServer,
) -> None:
    server = sshd_without_posix_rename
    folder = server.root / "put-back"
    folder.mkdir()
    owned_by_test_user(server, folder)
    pool = TransportPool()
    try:
        transport = pool.get(target(server, folder))
        assert isinstance(transport, SshTransport)
        transport.write(f"{folder}/a.g1.p12", b"old copy")
        sftp = transport.conn.connect()
        with pytest.raises(FileNotFoundError):  # the new file vanished before its rename
            replace_without_posix_rename(sftp, f"{folder}/gone", f"{folder}/a.g1.p12")
    finally:
        pool.close()
    assert (folder / "a.g1.p12").read_bytes() == b"old copy"
    assert os.listdir(folder) == ["a.g1.p12"]


def test_sftp_status_codes_reach_the_transport(sshd: SshServer) -> None:
    """The fallback decision rests on the server's status code, which paramiko drops: a real
    OpenSSH answers an extension it lacks with "operation unsupported" (8)."""
    from paramiko.sftp import CMD_EXTENDED, SFTP_OP_UNSUPPORTED

    from provisioner.transports.ssh import SftpStatusError

    pool = TransportPool()
    try:
        transport = pool.get(target(sshd, sshd.root))
        assert isinstance(transport, SshTransport)
        sftp = transport.conn.connect()
        with pytest.raises(SftpStatusError) as unsupported:
            sftp._request(CMD_EXTENDED, "no-such-extension@provisioner.invalid")  # type: ignore[attr-defined]
        assert unsupported.value.status == SFTP_OP_UNSUPPORTED
        with pytest.raises(FileNotFoundError):  # the codes that have an errno keep it
            sftp.lstat(f"{sshd.root}/missing")
    finally:
        pool.close()


@pytest.mark.parametrize("point", ["ssh-uploaded", "fallback-moved-aside", "fallback-renamed-in"])
def test_a_client_killed_in_the_fallback_is_reported_then_recovered(
    cli: Runner, sshd_without_posix_rename: SshServer, tmp_path: Path, point: str
) -> None:
    server = sshd_without_posix_rename
    m = make_manifest(tmp_path, server)
    first = cli("apply", "--auto-approve", m, env=ENV)
    assert first.returncode == 0, first.stdout + first.stderr
    folder = remote_folder(server, tmp_path)
    changed = {**ENV, "PW": NEW_PASSWORD}
    killed = cli("apply", "--auto-approve", m, env={**changed, "PROVISIONER_FAULT_INJECT": point})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    left = leftovers(folder)
    assert left, f"{point}: the kill should leave a temporary or a moved-aside copy"
    planned = cli("plan", m, env=changed)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    for name in left:
        assert f"leftover on ws-a: {folder}/{name}  [leftover]" in planned.stdout
    if point == "fallback-moved-aside":  # the name is free: the old copy goes back first
        aside = next(name for name in left if ".old-" in name)
        assert f"~ put back leftover on ws-a: {folder}/{aside}" in planned.stdout
        assert not (folder / "ville0.g1.p12").exists()
    status = cli("status", m)
    for name in left:
        assert f"leftover           ws-a: {folder}/{name}" in status.stdout
    done = cli("apply", "--auto-approve", m, env=changed)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.listdir(folder) == ["ville0.g1.p12"]
    pkcs12.decode((folder / "ville0.g1.p12").read_bytes(), NEW_PASSWORD)
    again = cli("plan", "--detailed-exitcode", m, env=changed)
    assert again.returncode == 0, again.stdout


# ------------------------------------------------------------------ leftovers


def test_leftovers_on_an_ssh_target_are_listed_then_cleared_foreign_files_untouched(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = make_manifest(tmp_path, sshd)
    renewal = {"PROVISIONER_NOW": "2028-11-20T08:00:00+00:00"}
    first = cli("apply", "--auto-approve", m, env={**ENV, **PINNED})
    assert first.returncode == 0, first.stdout + first.stderr
    rotated = cli("apply", "--auto-approve", m, env={**ENV, **renewal})
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    folder = remote_folder(sshd, tmp_path)
    assert not (folder / "ville0.g1.p12").exists(), "g1 is retired from the workstation"
    # What a client killed mid-write leaves, for the retired g1 and the current g2, and
    # files that are not ours with look-alike names.
    ours = [
        ".provisioner-tmp-ville0.g1.p12.0a1b2c3d",
        "ville0.g2.p12.old-89abcdef",
    ]
    foreign = [".provisioner-tmp-notes.txt.0a1b2c3d", "report.old-89abcdef", "ville0.g2.p12.old"]
    for name in ours + foreign:
        (folder / name).write_bytes(b"a PKCS#12 of a retired key")
    planned = cli("plan", m, env={**ENV, **renewal})
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert f"- remove leftover on ws-a: {folder}/{ours[0]}  [leftover]" in planned.stdout
    assert f"- remove leftover on ws-a: {folder}/{ours[1]}  [leftover]" in planned.stdout
    assert "No changes" not in planned.stdout
    for name in foreign:
        assert f"{folder}/{name} " not in planned.stdout
    status = cli("status", m, env=renewal)
    assert "Target folders:" in status.stdout and ours[0] in status.stdout
    done = cli("apply", "--auto-approve", m, env={**ENV, **renewal})
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(folder)) == sorted(["ville0.g2.p12", *foreign])
    again = cli("plan", "--detailed-exitcode", m, env={**ENV, **renewal})
    assert again.returncode == 0, again.stdout


# ------------------------------------------------------------------ messages


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_sends_no_banner_gives_one_line_and_no_traceback(
    cli: Runner, sshd: SshServer, tmp_path: Path, silent_server: int
) -> None:
    m = make_manifest(
        tmp_path, sshd, workstations=(("ws-mute", "127.0.0.1", silent_server),), timeout=1
    )
    started = time.monotonic()
    planned = cli("plan", m, env=ENV)
    elapsed = time.monotonic() - started
    assert planned.returncode == 4  # partial: the local share was observed
    assert (
        f"ws-mute: cannot observe the target: cannot connect to 127.0.0.1:{silent_server}: the "
        "server sent no SSH banner within 1 s (is an SSH server listening there?)" in planned.stdout
    )
    assert planned.stderr == "", planned.stderr  # no paramiko log, no traceback
    assert elapsed < 10


def test_an_encrypted_key_without_passphrase_says_to_give_it(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    key = tmp_path / "locked_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-C", "", "-f", str(key)],
        check=True,
    )
    m = make_manifest(tmp_path, sshd, key=key)
    planned = cli("plan", m, env=ENV)
    assert planned.returncode == 4  # partial: the local share was observed
    assert f"ws-a: cannot observe the target: the key {key} is encrypted: give key_passphrase" in (
        planned.stdout
    )
    assert "authentication refused" not in planned.stdout
    assert planned.stderr == ""
    # Given, it opens the key and the server lets it in; a wrong one is named as such.
    authorized = sshd.base / "authorized_keys"
    before = authorized.read_text()
    authorized.write_text(before + key.with_suffix(".pub").read_text())
    try:
        m = make_manifest(tmp_path, sshd, key=key, key_passphrase={"env": "KP"})
        opened = cli("plan", m, env={**ENV, "KP": "a passphrase"})
        assert opened.returncode == 0, opened.stdout + opened.stderr
        wrong = cli("plan", m, env={**ENV, "KP": "not it"})
        assert wrong.returncode == 4  # partial: the local share was observed
        assert (
            f"cannot decrypt the key {key} with key_passphrase (wrong passphrase?)" in wrong.stdout
        )
    finally:
        authorized.write_text(before)


def test_no_agent_and_no_key_file_gives_one_line_at_once(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = make_manifest(tmp_path, sshd, agent_only=True)
    started = time.monotonic()
    planned = cli("plan", m, env={**ENV, "SSH_AUTH_SOCK": str(tmp_path / "no-agent")})
    elapsed = time.monotonic() - started
    assert planned.returncode == 4  # partial: the local share was observed
    assert "no key_file is given for" in planned.stdout
    assert "no SSH agent key is available" in planned.stdout
    assert "No authentication methods available" not in planned.stdout
    assert planned.stderr == ""
    assert elapsed < 5, "no retries"
    # With an agent holding the authorized key, the same manifest connects.
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(
            ["ssh-add", "-q", str(sshd.client_key)],
            env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
            check=True,
            capture_output=True,
        )
        with_agent = cli("plan", m, env={**ENV, "SSH_AUTH_SOCK": str(sock)})
        assert with_agent.returncode == 0, with_agent.stdout + with_agent.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=5)


def test_a_fingerprint_without_its_prefix_is_accepted_and_a_wrong_form_explained(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = make_manifest(tmp_path, sshd)
    (tmp_path / "known_hosts").write_text("")
    fp = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.base / "host_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    wrong_form = cli("trust", m, "ws-a", "--fingerprint", "aa:bb:cc")
    assert wrong_form.returncode == 1
    assert "give the SHA-256 form `ssh-keygen -lf` prints" in wrong_form.stderr
    recorded = cli("trust", m, "ws-a", "--fingerprint", fp.removeprefix("SHA256:"))
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert f"recorded [127.0.0.1]:{sshd.port} ssh-ed25519 {fp}" in recorded.stdout
