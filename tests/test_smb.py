"""The smb transport against a real Samba server on loopback (SMB3 encryption required)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from provisioner.errors import Location, TransportError
from provisioner.manifest.model import SecretRef, SmbSpec, Target
from provisioner.transports.base import FileFacts
from tests import smbd as smbd_helpers
from tests.conftest import REPO, Runner
from tests.manifests import Fields, Manifest, smb
from tests.smbd import SmbServer
from tests.sshd import free_port

PASSWORD = "Smb-Test-Password-42!"
NEW_PASSWORD = "Smb-Test-Password-43!"
LOC = Location("m.yaml", 1, 1)
ENV = {"ESCROW": "Escrow-Passphrase-For-Smb-Tests", "PW": PASSWORD}
SECRET = {"file": "smb-password"}


def site(
    tmp_path: Path,
    server: SmbServer,
    *,
    password: str | None = None,
    down: bool = False,
    readers: str | None = None,
    **location: Any,
) -> Manifest:
    """The SMB shared location `backup` on `server` (and `backup-down`, on a port nobody
    listens on, if `down`), `location` over their fields; the password in `smb-password`."""
    (tmp_path / "smb-password").write_text(password or server.password)
    places = [("backup", "127.0.0.1", server.port)]
    if down:
        places.append(("backup-down", "127.0.0.1", free_port()))
    m = Manifest()
    for name, host, port in places:
        where = f"/{tmp_path.name}/{name}"
        fields = smb(host, port, server.share, server.user, where, password=SECRET, readers=readers)
        m.location(name, **{**fields, "connect_timeout": 3, **location})
    return m


def manifest(
    tmp_path: Path,
    server: SmbServer,
    *,
    password: str | None = None,
    down: bool = False,
    readers: str | None = None,
    ws: Fields | None = None,
    **location: Any,
) -> Path:
    """site() and the workstation ws-a (local unless `ws` gives its fields), ville on all."""
    m = site(tmp_path, server, password=password, down=down, readers=readers, **location)
    m.workstation("ws-a", **(ws or {}))
    m.entity("ville", shared_locations=[t["name"] for t in m.locations], workstations=["ws-a"])
    return m.write(tmp_path / "m.yaml")


def share_copy(server: SmbServer, tmp_path: Path, name: str = "backup") -> Path:
    return server.root / tmp_path.name / name / "ville.g1.p12"


def opens_with_openssl(path: Path, password: str) -> bool:
    done = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-noout", "-passin", "env:P12PW"],
        env={"P12PW": password, "PATH": "/usr/bin:/bin"},
        capture_output=True,
    )
    return done.returncode == 0


def test_apply_writes_encrypted_share_copies_and_a_second_plan_is_a_no_op(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    copy = share_copy(smbd, tmp_path)
    assert opens_with_openssl(copy, PASSWORD)
    again = cli("plan", "--detailed-exitcode", m, env=ENV)
    assert again.returncode == 0, again.stdout
    assert os.listdir(copy.parent) == ["ville.g1.p12"]  # no temporary left behind
    # Another account of the server is refused the copy (its ACL names the tool's account).
    assert smbd.fetch_as_other(f"{tmp_path.name}/backup/ville.g1.p12") is None


def test_a_deleted_and_a_garbled_share_copy_are_repaired(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd)
    assert cli("apply", "--auto-approve", m, env=ENV).returncode == 0
    copy = share_copy(smbd, tmp_path)
    copy.unlink()
    planned = cli("plan", m, env=ENV)
    assert f"+ write g1 on backup: /{tmp_path.name}/backup/ville.g1.p12  [missing]" in (
        planned.stdout
    )
    assert cli("apply", "--auto-approve", m, env=ENV).returncode == 0
    assert opens_with_openssl(copy, PASSWORD)
    size = copy.stat().st_size
    copy.write_bytes(b"\0" * size)  # damaged in place: same size, no longer a PKCS#12
    planned = cli("plan", m, env=ENV)
    assert "~ rewrite g1 on backup" in planned.stdout and "[drifted]" in planned.stdout
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert opens_with_openssl(copy, PASSWORD)
    assert cli("plan", "--detailed-exitcode", m, env=ENV).returncode == 0


def test_a_write_killed_after_the_upload_leaves_the_old_copy_then_is_cleared(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd)
    assert cli("apply", "--auto-approve", m, env=ENV).returncode == 0
    copy = share_copy(smbd, tmp_path)
    before = copy.read_bytes()
    changed = {**ENV, "PW": NEW_PASSWORD}
    killed = cli(
        "apply", "--auto-approve", m, env={**changed, "PROVISIONER_FAULT_INJECT": "smb-uploaded"}
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert copy.read_bytes() == before  # the old copy whole at the final name, never a part
    left = [n for n in os.listdir(copy.parent) if n.startswith(".provisioner-tmp-")]
    assert len(left) == 1
    planned = cli("plan", m, env=changed)
    assert f"leftover on backup: /{tmp_path.name}/backup/{left[0]}  [leftover]" in planned.stdout
    done = cli("apply", "--auto-approve", m, env=changed)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.listdir(copy.parent) == ["ville.g1.p12"]
    assert opens_with_openssl(copy, NEW_PASSWORD)
    assert cli("plan", "--detailed-exitcode", m, env=changed).returncode == 0


def test_a_first_write_killed_leaves_no_file_at_the_final_name(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd)
    killed = cli(
        "apply", "--auto-approve", m, env={**ENV, "PROVISIONER_FAULT_INJECT": "smb-uploaded"}
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert not share_copy(smbd, tmp_path).exists()
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.listdir(share_copy(smbd, tmp_path).parent) == ["ville.g1.p12"]


def test_a_wrong_password_names_the_target_and_the_others_converge(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd, password="not-the-password")
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4  # partial: the other targets converged
    assert (
        f"backup: cannot observe the target: authentication refused for "
        f"{smbd.user}@127.0.0.1:{smbd.port} (wrong user or password?)" in done.stdout
    )
    assert "not-the-password" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert opens_with_openssl(tmp_path / "ws-a" / "ville.g1.p12", PASSWORD)
    assert not share_copy(smbd, tmp_path).exists()


def test_a_server_down_fails_its_copies_only(cli: Runner, smbd: SmbServer, tmp_path: Path) -> None:
    m = manifest(tmp_path, smbd, down=True)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4  # partial: the other targets converged
    assert "backup-down: cannot observe the target: cannot connect to 127.0.0.1:" in done.stdout
    assert "Traceback" not in done.stderr
    assert opens_with_openssl(share_copy(smbd, tmp_path), PASSWORD)
    assert opens_with_openssl(tmp_path / "ws-a" / "ville.g1.p12", PASSWORD)


def test_no_first_key_is_made_while_none_of_the_entitys_targets_is_reached(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    """Red team 5, H1: after a lost state with every host down, apply made brand-new keys that
    later took the real keys' designation (and their consultations)."""
    sites = site(tmp_path, smbd, down=True).entity("ville", shared_locations=["backup-down"])
    m = sites.write(tmp_path / "m.yaml")
    text = m.read_text()
    assert "backup-down" in text and "ws-a" not in text, text
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode in (1, 4), done.stdout + done.stderr
    assert "[first-key-held] no bi-clé is made while none of its targets is reached" in (
        done.stdout
    ), done.stdout
    escrow = tmp_path / ".provisioner" / "escrow"
    assert not list(escrow.glob("*.key")) if escrow.exists() else True


def test_a_copy_others_may_read_is_reported_and_its_acl_tightened(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd)
    assert cli("apply", "--auto-approve", m, env=ENV).returncode == 0
    copy = share_copy(smbd, tmp_path)
    inside = f"{tmp_path.name}/backup/ville.g1.p12"
    # Loosened on the server (Samba maps the file's NT ACL to its POSIX permissions): the
    # transport sees it through SMB as an allow entry for Everyone, and anyone may read it.
    # (the folders too: Samba checks traversal, where Windows by default does not)
    for path in (copy, copy.parent, copy.parent.parent):
        os.chmod(path, 0o644 if path == copy else 0o755)
    assert smbd.fetch_as_other(inside) == copy.read_bytes()
    planned = cli("plan", m, env=ENV)
    assert (
        f"~ rewrite g1 on backup: /{inside}  [permissions] readable by S-1-1-0 (Everyone)"
        in planned.stdout
    )
    assert ": ACL set back to the tool's account alone" in planned.stdout
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert smbd.fetch_as_other(inside) is None
    assert cli("plan", "--detailed-exitcode", m, env=ENV).returncode == 0


def test_the_declared_readers_group_may_read_and_nobody_else(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    group = smbd.readers_sid  # a group the server's other account belongs to
    m = manifest(tmp_path, smbd, readers=group)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    copy = share_copy(smbd, tmp_path)
    assert smbd.fetch_as_other(f"{tmp_path.name}/backup/ville.g1.p12") == copy.read_bytes()
    assert cli("plan", "--detailed-exitcode", m, env=ENV).returncode == 0
    os.chmod(copy, 0o644)
    planned = cli("plan", m, env=ENV)
    assert (
        f"[permissions] readable by S-1-1-0 (Everyone): ACL set back to the tool's account "
        f"and {group}" in planned.stdout
    )


def test_a_file_the_tool_did_not_write_on_the_share_is_a_conflict_left_alone(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd)
    copy = share_copy(smbd, tmp_path)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"somebody's own file")
    for folder in (copy.parent.parent, copy.parent):
        os.chown(folder, os.stat(smbd.root).st_uid, -1)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert "! conflict g1 on backup" in done.stdout, done.stdout
    assert "a file this state did not write" in done.stdout
    assert copy.read_bytes() == b"somebody's own file"


def test_the_planner_compares_an_smb_copys_readers_not_its_mode() -> None:
    from provisioner.plan.policies import CopyContext, permissions
    from tests.test_planner import copy, generation

    owner, group = "S-1-5-21-1-2-3-1001", "S-1-5-21-1-2-3-1105"
    target = Target(
        "backup",
        "location",
        "/keys",
        LOC,
        SmbSpec(host="nas", user="svc", share="partage", password=None, readers=group),
    )
    record = copy(target)

    def reason(facts: FileFacts) -> str | None:
        ctx = CopyContext(target, record.path, generation(), facts, record, "modern", "pw1", "V")
        found = permissions(ctx)
        return None if found is None else found.message

    assert reason(FileFacts(1, "x", 0o777, owner=owner, readers=(owner, group))) is None
    assert reason(FileFacts(1, "x", 0, owner=owner, readers=(owner, "S-1-1-0", group))) == (
        "readable by S-1-1-0 (Everyone): ACL set back to the tool's account and S-1-5-21-1-2-3-1105"
    )
    # The declared group was added to the manifest after the copy was written.
    assert reason(FileFacts(1, "x", 0, owner=owner, readers=(owner,))) == (
        "S-1-5-21-1-2-3-1105 (readers) may not read it: ACL set to let it"
    )
    # No security descriptor from the server: nothing to compare (docs/SECURITY.md says so).
    assert reason(FileFacts(1, "x", 0)) is None


def test_a_server_that_never_answers_times_out_naming_the_target(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        m = manifest(tmp_path, smbd, port=port)
        started = time.monotonic()
        done = cli("apply", "--auto-approve", m, env=ENV)
        elapsed = time.monotonic() - started
    assert done.returncode == 4  # partial: the other targets converged
    assert (
        f"backup: cannot observe the target: cannot connect to 127.0.0.1:{port}: no SMB answer "
        "within 3 s" in done.stdout
    )
    assert done.stderr == ""  # smbprotocol's own logging never reaches the terminal
    assert elapsed < 60
    assert opens_with_openssl(tmp_path / "ws-a" / "ville.g1.p12", PASSWORD)


def test_the_connection_is_shared_and_comes_back_after_a_server_restart(
    smbd: SmbServer, tmp_path: Path
) -> None:
    from provisioner.transports import TransportPool

    def target(name: str) -> Target:
        return Target(
            name,
            "location",
            f"/{tmp_path.name}/{name}",
            LOC,
            SmbSpec(
                host="127.0.0.1",
                user=smbd.user,
                share=smbd.share,
                password=SecretRef("env", "SMB_PW", tmp_path, LOC),
                port=smbd.port,
                connect_timeout=3,
            ),
        )

    os.environ["SMB_PW"] = smbd.password
    pool = TransportPool()
    try:
        one, two = pool.get(target("one")), pool.get(target("two"))
        assert one.conn is two.conn  # one connection for the server
        one.write(f"/{tmp_path.name}/one/a.g1.p12", b"first")
        smbd.restart()  # the session dies with the server process
        two.write(f"/{tmp_path.name}/two/a.g1.p12", b"second")
        facts = one.observe(f"/{tmp_path.name}/one/a.g1.p12")
        assert facts is not None and facts.size == 5
    finally:
        pool.close()
        del os.environ["SMB_PW"]
    assert (smbd.root / tmp_path.name / "two" / "a.g1.p12").read_bytes() == b"second"


def test_smb_targets_are_validated_naming_the_place(cli: Runner, tmp_path: Path) -> None:
    head = "version: 1\nescrow: {passphrase: {env: ESCROW}}\ninventory:\n  locations:\n"
    m = tmp_path / "m.yaml"
    m.write_text(
        head + "    - {name: backup, transport: smb, host: nas, share: keys, user: svc,\n"
        "       password: {env: SMB_PW}, path: 'keys\\\\ville'}\nentities: []\n"
    )
    done = cli("validate", m)
    assert done.returncode == 1
    assert f"{m}:6:39: error: inventory.locations[0].path: " in done.stderr
    assert "is the folder inside the share, from its root, with forward slashes" in done.stderr
    m.write_text(head + "    - {name: other, transport: smb, host: nas, share: keys, path: /x}\n")
    done = cli("validate", m)
    assert done.returncode == 1
    assert f"{m}:5:7: error: inventory.locations[0]: missing required key 'password'" in (
        done.stderr
    )


def test_a_server_that_cannot_encrypt_is_refused_unless_the_target_allows_it(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    old = smbd_helpers.start(encrypt=False)  # SMB 2.1 only: no encryption, signing mandatory
    try:
        m = manifest(tmp_path, old)
        done = cli("apply", "--auto-approve", m, env=ENV)
        assert done.returncode == 4  # partial: the other targets converged
        assert (
            f"backup: cannot observe the target: {old.user}@127.0.0.1:{old.port}: the server "
            "cannot encrypt (SMB3 encryption is required" in done.stdout
        ), done.stdout
        assert not share_copy(old, tmp_path).exists()
        m = manifest(tmp_path, old, encrypt=False)
        done = cli("apply", "--auto-approve", m, env=ENV)
        assert done.returncode == 0, done.stdout + done.stderr
        assert opens_with_openssl(share_copy(old, tmp_path), PASSWORD)
    finally:
        old.remove()


def test_a_workstation_reached_through_its_administrative_share(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    where = f"/{tmp_path.name}/ProgramData/Provisioner"
    ws = smb("127.0.0.1", smbd.port, smbd.share, smbd.user, where, password=SECRET)
    m = manifest(tmp_path, smbd, ws=ws)
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    on_ws = smbd.root / tmp_path.name / "ProgramData" / "Provisioner" / "ville.g1.p12"
    assert opens_with_openssl(on_ws, PASSWORD)
    rehearsed = cli("rehearse", m, env=ENV)
    assert rehearsed.returncode == 0, rehearsed.stdout + rehearsed.stderr
    assert cli("plan", "--detailed-exitcode", m, env=ENV).returncode == 0


def test_a_saved_plan_is_stale_once_a_copys_acl_changed(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd)
    assert cli("apply", "--auto-approve", m, env=ENV).returncode == 0
    saved = tmp_path / "reviewed.plan"
    assert cli("plan", "--out", saved, m, env=ENV).returncode == 0
    os.chmod(share_copy(smbd, tmp_path), 0o644)  # same bytes, Everyone may read now
    done = cli("apply", saved, env=ENV)
    assert done.returncode == 1
    assert "stale" in (done.stdout + done.stderr).lower(), done.stdout + done.stderr


def test_a_share_the_server_does_not_offer_is_named(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    m = manifest(tmp_path, smbd, share="nosuch")
    done = cli("apply", "--auto-approve", m, env=ENV)
    assert done.returncode == 4  # partial: the other targets converged
    assert (
        "backup: cannot observe the target: the share 'nosuch' does not exist on 127.0.0.1"
        in done.stdout
    ), done.stdout
    assert opens_with_openssl(tmp_path / "ws-a" / "ville.g1.p12", PASSWORD)


def test_a_server_that_stops_answering_mid_run_fails_within_the_operation_timeout(
    smbd: SmbServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provisioner.transports import smb, smb_connection

    monkeypatch.setattr(smb_connection, "OPERATION_TIMEOUT", 4.0)  # 60 s in use
    hung = smbd_helpers.start()
    try:
        target = Target(
            "backup", "location", "/d", LOC, SmbSpec(host="127.0.0.1", port=hung.port,
            user=hung.user, share=hung.share, password=None, connect_timeout=3),
        )  # fmt: skip
        transport = smb.SmbTransport(target, smb.SmbConnection(target, hung.password))
        transport.write("/d/ville.g1.p12", b"bytes")
        time.sleep(3)  # the receiver's first wait, begun while connecting, is over
        assert transport.observe("/d/ville.g1.p12") is not None
        assert hung.process is not None
        os.killpg(hung.process.pid, signal.SIGSTOP)  # the server hangs, connections open
        started = time.monotonic()
        with pytest.raises(TransportError) as failed:
            transport.observe("/d/ville.g1.p12")
        assert time.monotonic() - started < 20
        assert str(failed.value).startswith(f"backup: cannot connect to 127.0.0.1:{hung.port}")
        # Issue 28: the copies after it do not wait again, one connect timeout each.
        started = time.monotonic()
        for n in range(10):
            with pytest.raises(TransportError) as again:
                transport.write(f"/d/ville.g{n + 2}.p12", b"bytes")
            assert str(again.value) == str(failed.value)
        assert time.monotonic() - started < 3, "each copy waited for the hung server"
    finally:
        if hung.process is not None:
            os.killpg(hung.process.pid, signal.SIGCONT)
        hung.remove()


def test_an_smb_workstation_is_listed_in_the_inventory_as_its_schema_says(
    cli: Runner, smbd: SmbServer, tmp_path: Path
) -> None:
    """A workstation the tool writes through a share is a host of the inventory (transport
    smb, its copies' receipt paths share-relative), in a document its schema accepts."""
    where = f"/{tmp_path.name}/ws-a"
    ws = smb(
        "127.0.0.1", smbd.port, smbd.share, smbd.user, where, password=SECRET, connect_timeout=3
    )
    ws["install"] = {"store": "windows", "users": ["agent1"]}
    m = manifest(tmp_path, smbd, ws=ws)
    assert cli("apply", "--auto-approve", m, env=ENV).returncode == 0
    done = cli("inventory", "--json", m, env=ENV)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "inventory.schema.json").read_text()))
    host = doc["hosts"]["ws-a"]
    assert host["transport"] == "smb"
    assert [c["generation"] for c in host["copies"]] == [1]
    assert host["copies"][0]["receipt_path"].startswith(f"/{tmp_path.name}/ws-a/")
