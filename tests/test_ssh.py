"""The ssh transport against a real OpenSSH server on loopback."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from provisioner.crypto import pkcs12
from provisioner.transports.ssh import replace_without_posix_rename
from tests.conftest import Runner
from tests.manifests import Manifest, ssh
from tests.sshd import SshServer, free_port

PASSWORD = "Ssh-Test-Password-42!"
ENV = {"ESCROW": "Escrow-Passphrase-For-Ssh-Tests", "PW": PASSWORD}


def manifest(
    tmp_path: Path,
    server: SshServer,
    *,
    key: Path | None = None,
    known_hosts: Path | None = None,
    down: bool = False,
    hosts: list[tuple[str, str, int]] | None = None,
    known_for: dict[str, Path] | None = None,
) -> Path:
    """A manifest with workstations over SSH (`hosts`: name, address, port; ws-a and ws-b by
    default), each with the known_hosts `known_for` gives it, else `known_hosts`."""
    known = known_hosts or server.known_hosts(tmp_path / "known_hosts")
    remote = server.root / tmp_path.name
    hosts = list(hosts or [("ws-a", "127.0.0.1", server.port), ("ws-b", "127.0.0.2", server.port)])
    if down:
        hosts.append(("ws-down", "127.0.0.1", free_port()))
    m = Manifest().location("nas")
    for name, host, port in hosts:
        known_file = (known_for or {}).get(name, known)
        key_file = key or server.client_key
        where = f"{remote}/{name}"
        fields = ssh(host, port, server.user, where, key_file=key_file, known_hosts=known_file)
        m.workstation(name, **fields, connect_timeout=3)
    m.entity("ville", shared_locations=["nas"], workstations=[h[0] for h in hosts])
    return m.write(tmp_path / "m.yaml")


def remote_copy(server: SshServer, tmp_path: Path, ws: str) -> Path:
    return server.root / tmp_path.name / ws / "ville.g1.p12"


def test_apply_over_ssh_writes_private_copies_and_repairs_drift(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, sshd)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    for ws in ("ws-a", "ws-b"):
        copy = remote_copy(sshd, tmp_path, ws)
        info = copy.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
        assert info.st_uid != 0, "written by the SSH user, not by root"
        assert pkcs12.decode(copy.read_bytes(), PASSWORD).friendly_name == "Ville"
    again = cli("plan", "--detailed-exitcode", m, env=ENV)
    assert again.returncode == 0 and "No changes." in again.stdout

    remote_copy(sshd, tmp_path, "ws-b").write_bytes(b"altered on the workstation")
    planned = cli("plan", m, env=ENV)
    assert "~ rewrite g1 on ws-b:" in planned.stdout and "[drifted]" in planned.stdout
    assert cli("apply", "--auto-approve", m, env=ENV).returncode == 0
    pkcs12.decode(remote_copy(sshd, tmp_path, "ws-b").read_bytes(), PASSWORD)


def host_fingerprint(server: SshServer) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(server.base / "host_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def test_unknown_host_key_is_refused_with_its_fingerprint_and_trust_records_it(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    m = manifest(tmp_path, sshd, known_hosts=empty)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4  # partial: the local share converged
    fp = host_fingerprint(sshd)
    assert (
        f"ws-a: cannot observe the target: unknown host key for [127.0.0.1]:{sshd.port}: "
        f"ssh-ed25519 {fp}" in done.stdout
    )
    assert not (sshd.root / tmp_path.name).exists()

    refused = cli("trust", m, "ws-a", "--fingerprint", "SHA256:not-the-key")
    assert refused.returncode == 1 and "refused" in refused.stderr
    recorded = cli("trust", m, "ws-a", "ws-b", "--fingerprint", fp)
    assert recorded.returncode == 0, recorded.stderr
    assert f"recorded [127.0.0.1]:{sshd.port} ssh-ed25519 {fp}" in recorded.stdout
    assert "already trusted" in cli("trust", m, "ws-a").stdout
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr


def test_changed_host_key_is_refused(cli: Runner, sshd: SshServer, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    line = " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {line}\n[127.0.0.2]:{sshd.port} {line}\n")
    m = manifest(tmp_path, sshd, known_hosts=known)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4  # partial: the local share converged
    assert f"host key for [127.0.0.1]:{sshd.port} CHANGED" in done.stdout
    assert host_fingerprint(sshd) in done.stdout
    trust = cli("trust", m, "ws-a", "--yes")
    assert trust.returncode == 1 and "NOT replaced" in trust.stderr


@pytest.mark.parametrize("first", ["ws-good", "ws-bad"])
def test_each_target_checks_the_host_key_its_own_known_hosts_expects(
    cli: Runner, sshd: SshServer, tmp_path: Path, first: str
) -> None:
    """Issue 28: two workstations on one server, same port, user and key; one's known_hosts
    says the key changed. Whichever connects first, that one is refused with its own error
    in plan and apply and receives nothing; the other gets its copy."""
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    line = " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
    wrong = tmp_path / "known_hosts.wrong"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {line}\n")
    right = sshd.known_hosts(tmp_path / "known_hosts")
    remote = sshd.root / tmp_path.name
    order = ["ws-good", "ws-bad"] if first == "ws-good" else ["ws-bad", "ws-good"]
    m = manifest(
        tmp_path,
        sshd,
        hosts=[(ws, "127.0.0.1", sshd.port) for ws in order],
        known_for={"ws-good": right, "ws-bad": wrong},
    )
    changed = f"host key for [127.0.0.1]:{sshd.port} CHANGED"
    planned = cli("plan", m, env=ENV)
    assert planned.returncode == 4, planned.stdout + planned.stderr
    assert f"ws-bad: cannot observe the target: {changed}" in planned.stdout, planned.stdout
    assert "ws-good: cannot observe" not in planned.stdout
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4, done.stdout + done.stderr  # partial: ws-bad refused
    assert f"ws-bad: cannot observe the target: {changed}" in done.stdout, done.stdout
    pkcs12.decode((remote / "ws-good" / "ville.g1.p12").read_bytes(), PASSWORD)
    assert not (remote / "ws-bad" / "ville.g1.p12").exists(), "a refused host got its copy"


def test_wrong_user_key_is_refused(cli: Runner, sshd: SshServer, tmp_path: Path) -> None:
    m = manifest(tmp_path, sshd, key=sshd.other_key)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4  # partial: the local share converged
    assert f"authentication refused for {sshd.user}@127.0.0.1:{sshd.port}" in done.stdout


def test_one_host_down_leaves_the_others_converged(
    cli: Runner, sshd: SshServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, sshd, down=True)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4  # partial: the reachable targets converged
    assert "ws-down: cannot observe the target: cannot connect to 127.0.0.1:" in done.stdout
    assert "Connection refused" in done.stdout
    # A summary never claims what was not observed.
    assert "Apply complete" not in done.stdout
    assert (
        "Apply incomplete: 4 actions done; 1 target could not be observed, nothing was "
        "checked or done there." in done.stdout
    )
    for ws in ("ws-a", "ws-b"):
        pkcs12.decode(remote_copy(sshd, tmp_path, ws).read_bytes(), PASSWORD)
    status = cli("status", m)
    assert "ws-down: cannot observe the target" in status.stdout
    again = cli("plan", m, env=ENV)
    assert again.returncode == 4
    assert "Every bi-clé is current" not in again.stdout
    assert (
        "No changes on the targets observed; 1 target could not be observed (see Errors "
        "above): their copies were not checked." in again.stdout
    )
    assert again.stdout.rstrip().endswith(
        "Plan: 0 to create, 0 to update, 0 to remove. 1 target could not be observed: "
        "nothing is known of them."
    )
    quiet = cli("apply", "--auto-approve", "--quiet", m, env=ENV)
    assert quiet.returncode == 4
    assert "No changes on the targets observed; 1 target could not be observed." in quiet.stdout


def test_windows_safe_replace_when_posix_rename_is_missing(sshd: SshServer) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts(sshd.base / "kh")))
    client.connect(
        "127.0.0.1",
        port=sshd.port,
        username=sshd.user,
        key_filename=str(sshd.client_key),
        look_for_keys=False,
        allow_agent=False,
    )
    sftp = client.open_sftp()
    folder = str(sshd.root)
    for name, data in (("f.p12", b"old"), ("tmp", b"new")):
        with sftp.open(f"{folder}/{name}", "wb") as handle:
            handle.write(data)
    replace_without_posix_rename(sftp, f"{folder}/tmp", f"{folder}/f.p12")
    client.close()
    assert (sshd.root / "f.p12").read_bytes() == b"new"
    assert sorted(os.listdir(sshd.root)) == ["f.p12"] or "tmp" not in os.listdir(sshd.root)
