"""The Ansible collection of ansible/provisioner, built and installed from its tarball into a
temporary path, driven for real: `ansible-inventory --list` from a manifest, and the NSS path
of the agent_stores role by `ansible-playbook`, three runs in all, on two hosts at once:
`ws-linux` over SSH to the loopback sshd fixture (its agent is the SSH user: the fixture
admits one user and has no sudo), and, when the tests run as root, `ws-local` reached with
`ansible_connection=local` whose agent is another account, so the import really runs as that
agent (`become` with su). The Windows tasks cannot run here: ansible-lint (production
profile) and `ansible-doc` check them."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import EXAMPLES, REPO, TEST_CLOCK, Runner, require
from tests.manifests import Manifest, ssh
from tests.sshd import SshServer

BIN = Path(sys.executable).parent
CREATED = "2026-01-10T09:00:00Z"
RENEWED = "2027-12-15T09:00:00Z"  # in the 60-day window of a 730-day key: generation 2
LATER = "2027-12-16T09:00:00Z"


def _need(program: str) -> str:
    found = shutil.which(program, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    require(
        found is not None,
        f"{program} is not installed",
        "pip install -e '.[test]'; apt-get install libnss3-tools",
    )
    assert found is not None
    return found


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The collection built with ansible-galaxy and installed offline from its tarball; the
    environment of the ansible commands that use it."""
    galaxy = _need("ansible-galaxy")
    base = tmp_path_factory.mktemp("ansible")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PROVISIONER_", "ANSIBLE_"))},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOME": str(base / "home"),
        "ANSIBLE_COLLECTIONS_PATH": str(base / "collections"),
        "ANSIBLE_LOCAL_TEMP": str(base / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",  # an inventory error is an error
        "ANSIBLE_PIPELINING": "1",  # module arguments (a password) go over stdin, not a file
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
    }
    done = subprocess.run(
        [galaxy, "collection", "build", REPO / "ansible" / "provisioner", "--output-path", base],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tarball = base / "provisioner-keystore-1.1.0.tar.gz"
    assert tarball.is_file(), done.stdout
    done = subprocess.run(
        [galaxy, "collection", "install", "--offline", tarball, "-p", base / "collections"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    installed = base / "collections" / "ansible_collections" / "provisioner" / "keystore"
    assert (installed / "plugins" / "inventory" / "provisioner.py").is_file()
    yield env | {"COLLECTION": str(installed)}


def _plain(value: Any) -> Any:
    """ansible-inventory's JSON without ansible-core 2.19's `__ansible_unsafe` wrappers (the
    plugin's values are untrusted: a designation is never templated)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _manifest(tmp_path: Path, sshd: SshServer, agent: str | None = None) -> Path:
    for name in ("escrow.pass", "commune-exemple.pass", "syndicat-eaux.pass"):
        (tmp_path / "secrets").mkdir(exist_ok=True)
        shutil.copy(EXAMPLES / "secrets" / name, tmp_path / "secrets" / name)
    known = sshd.known_hosts(tmp_path / "known_hosts")
    nss = f"{sshd.root}/nss-{tmp_path.name}/{{user}}"
    m = Manifest(
        escrow={"passphrase": {"file": "secrets/escrow.pass"}},
        top={"consultations": "consultations.yaml"},
    )
    m.location("share")
    where = f"{sshd.root}/ws-{tmp_path.name}"
    linux = ssh(
        "127.0.0.1",
        sshd.port,
        sshd.user,
        where,
        key_file=sshd.client_key,
        known_hosts=known,
        connect_timeout=5,
    )
    m.workstation("ws-linux", **linux)
    agents = ["CORP\\agent1", "CORP\\agent2"]
    m.workstation("ws-windows", install={"store": "windows", "users": agents})
    m.workstation("ws-files")
    also: list[str] = []
    if agent:  # a workstation whose agent is another account than the connection's (become)
        m.workstation("ws-local", install={"store": "nss", "users": [agent]})
        also = ["ws-local"]
    nss_stores = {"store": "nss", "users": [sshd.user], "nss_database": nss}
    m.group("marches-linux", ["ws-linux"], install=nss_stores)
    m.group("service.marches", ["marches-linux", "ws-windows"])
    m.entity(
        "commune-exemple",
        name="Commune d'Exemple",
        designation="Commune Exemple",
        password={"file": "secrets/commune-exemple.pass"},
        shared_locations=["share"],
        workstations=["service.marches", "ws-files", *also],
    )
    m.entity(
        "syndicat-eaux",
        name="Syndicat des Eaux",
        designation="Syndicat Eaux",
        password={"file": "secrets/syndicat-eaux.pass"},
        shared_locations=["share"],
        workstations=["marches-linux", *also],
    )
    path = m.write(tmp_path / "manifest.yaml")
    (tmp_path / "consultations.yaml").write_text("version: 1\nconsultations: []\n")
    (tmp_path / "provisioner.yml").write_text(
        f"plugin: provisioner.keystore.provisioner\nmanifest: manifest.yaml\n"
        f"executable: {BIN / 'provisioner'}\n"
    )
    return path


def _ansible(
    collection: dict[str, str], program: str, *args: str | Path, now: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_need(program), *map(str, args)],
        env=collection | {"PROVISIONER_NOW": now},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _recap(output: str, host: str) -> dict[str, int]:
    """The PLAY RECAP counters of `host`."""
    line = next(x for x in output.splitlines() if x.startswith(f"{host} "))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def _agent_user() -> str | None:
    """An unprivileged agent account (created once) with no NSS database yet, when the tests
    run as root; None otherwise (the become part is then not run)."""
    if os.geteuid() != 0:
        return None
    name = "provisioner-agent"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    shutil.rmtree(Path(entry.pw_dir) / ".pki", ignore_errors=True)
    return name


def _certutil(*args: str) -> str:
    return subprocess.run(
        ["certutil", *args], capture_output=True, text=True, check=False, input=""
    ).stdout


def test_inventory_plugin_lists_hosts_groups_and_copies(
    collection: dict[str, str], sshd: SshServer, tmp_path: Path, cli: Runner
) -> None:
    manifest = _manifest(tmp_path, sshd)
    assert (
        cli("apply", "--auto-approve", manifest, env={"PROVISIONER_NOW": CREATED}).returncode == 0
    )
    done = _ansible(
        collection, "ansible-inventory", "-i", tmp_path / "provisioner.yml", "--list", now=CREATED
    )
    assert done.returncode == 0, done.stderr
    listed = _plain(json.loads(done.stdout))
    tool = json.loads(cli("inventory", "--json", manifest, env={"PROVISIONER_NOW": CREATED}).stdout)
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars, done.stderr
    assert sorted(hostvars) == ["ws-files", "ws-linux", "ws-windows"]
    # Groups of the manifest, named as Ansible accepts them, and one group per store.
    assert listed["marches_linux"]["hosts"] == ["ws-linux"]
    assert sorted(listed["service_marches"]["hosts"]) == ["ws-linux", "ws-windows"]
    assert listed["provisioner_nss"]["hosts"] == ["ws-linux"]
    assert listed["provisioner_windows"]["hosts"] == ["ws-windows"]
    assert listed["provisioner_file"]["hosts"] == ["ws-files"]
    linux = hostvars["ws-linux"]
    assert (linux["ansible_host"], linux["ansible_port"]) == ("127.0.0.1", sshd.port)
    assert linux["ansible_user"] == sshd.user
    assert linux["ansible_ssh_private_key_file"] == str(sshd.client_key)
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in linux["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in linux["ansible_ssh_common_args"]
    assert linux["provisioner_install"]["store"] == "nss"
    assert linux["provisioner_install"]["users"] == [sshd.user]
    assert linux["provisioner_manifest"] == str(manifest)
    windows = hostvars["ws-windows"]
    assert "ansible_host" not in windows  # the manifest gives no connection for a local folder
    assert windows["provisioner_install"] == {
        "store": "windows",
        "users": ["CORP\\agent1", "CORP\\agent2"],
        "windows_location": "CurrentUser",
        "exportable": False,
        "nss_database": None,
    }
    assert hostvars["ws-files"]["provisioner_install"]["store"] == "file"
    for name in hostvars:
        # Host by host, the copies are the tool's own document, thumbprints included.
        assert hostvars[name]["provisioner_copies"] == tool["hosts"][name]["copies"], name
    copies = {(c["entity"], c["generation"]): c for c in linux["provisioner_copies"]}
    assert sorted(copies) == [("commune-exemple", 1), ("syndicat-eaux", 1)]
    g1 = copies[("commune-exemple", 1)]
    assert g1["host_path"] == f"{sshd.root}/ws-{tmp_path.name}/commune-exemple.g1.p12"
    assert g1["controller_path"] == str(tmp_path / "share" / "commune-exemple.g1.p12")
    assert re.fullmatch(r"[0-9A-F]{40}", g1["thumbprint_sha1"])
    assert (g1["state"], g1["consultations"]) == ("keep", [])
    # A manifest the tool refuses is an inventory error naming the place, not an empty list.
    manifest.write_text(manifest.read_text().replace("users: [", "users: [[", 1))
    done = _ansible(
        collection, "ansible-inventory", "-i", tmp_path / "provisioner.yml", "--list", now=CREATED
    )
    assert done.returncode != 0
    assert "manifest.yaml:" in done.stderr


def test_nss_path_imports_keeps_bound_removes_retired_and_leaves_receipts(
    collection: dict[str, str], sshd: SshServer, tmp_path: Path, cli: Runner
) -> None:
    _need("certutil")
    _need("pk12util")
    agent = _agent_user()
    manifest = _manifest(tmp_path, sshd, agent)
    nss = Path(f"{sshd.root}/nss-{tmp_path.name}/{sshd.user}")
    folder = Path(f"{sshd.root}/ws-{tmp_path.name}")
    # The provisioner inventory gives hosts and copies; how to reach a local-folder
    # workstation comes from a second source, as AWX would add it.
    (tmp_path / "connection.yml").write_text(
        "all:\n  hosts:\n    ws-local:\n      ansible_connection: local\n"
        "      ansible_become_method: ansible.builtin.su\n"
    )
    sources = ("-i", tmp_path / "provisioner.yml", "-i", tmp_path / "connection.yml")
    hosts = "ws-linux:ws-local" if agent else "ws-linux"
    playbook = "provisioner.keystore.agent_stores"
    agent_nss = Path(pwd.getpwnam(agent).pw_dir) / ".pki" / "nssdb" if agent else None

    def env(now: str) -> dict[str, str]:
        return {"PROVISIONER_NOW": now}

    def role(limit: str, now: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """The collection's playbook on the hosts `limit` names, at the clock `now`."""
        return _ansible(
            collection, "ansible-playbook", *sources, "-l", limit, *extra, playbook, now=now
        )

    assert cli("apply", "--auto-approve", manifest, env=env(CREATED)).returncode == 0
    before = cli("status", manifest, env=env(CREATED))
    assert f"ws-linux [{sshd.user}]: file present, not imported" in before.stdout

    # Run 1: the NSS database is created for the agent, both current keys imported.
    done = role(hosts, CREATED)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (nss / "cert9.db").is_file()
    keys = _certutil("-K", "-d", f"sql:{nss}")
    assert "Commune Exemple" in keys and "Syndicat Eaux" in keys, keys
    receipt = json.loads((folder / "commune-exemple.g1.receipt.json").read_text())
    assert receipt["stores"][0]["user"] == sshd.user
    assert receipt["stores"][0]["store"] == f"nss:{nss}"
    assert receipt["stores"][0]["private_key"] is True
    # The store itself opened a test bid encrypted to the certificate (cmsutil -E, -D).
    assert receipt["stores"][0]["opened_at"] == CREATED, receipt
    secret = (tmp_path / "secrets" / "commune-exemple.pass").read_text().strip()
    schema = json.loads((REPO / "schemas" / "receipt.schema.json").read_text())
    for f in folder.glob("*.receipt.json"):
        jsonschema.validate(json.loads(f.read_text()), schema)
        assert secret not in f.read_text()
        assert f.stat().st_mode & 0o077 == 0, f
    assert secret not in done.stdout + done.stderr
    if agent_nss is not None:  # imported as the agent, who owns the database
        assert (agent_nss / "cert9.db").stat().st_uid == pwd.getpwnam(agent).pw_uid
        keys = _certutil("-K", "-d", f"sql:{agent_nss}")
        assert "Commune Exemple" in keys and "Syndicat Eaux" in keys, keys
        receipt = json.loads((tmp_path / "ws-local" / "syndicat-eaux.g1.receipt.json").read_text())
        assert (receipt["stores"][0]["user"], receipt["stores"][0]["store"]) == (
            agent,
            f"nss:{agent_nss}",
        )

    # AO-1 binds generation 1 of the commune, opened within the warning window; both entities
    # renew: the commune's generation 1 is retained, the syndicat's retired.
    (tmp_path / "consultations.yaml").write_text(
        "version: 1\nconsultations:\n  - {reference: AO-1, entity: commune-exemple, "
        "designation: Commune Exemple, status: open, deadline: 2027-12-30, opening: 2028-01-02}\n"
    )
    done = cli("apply", "--auto-approve", manifest, env=env(RENEWED))
    assert done.returncode == 0, done.stdout + done.stderr

    # Run 2: the new generations imported, the bound one kept, the retired one removed.
    done = role(hosts, LATER)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(_recap(done.stdout, host)["failed"] == 0 for host in hosts.split(":"))
    keys = _certutil("-K", "-d", f"sql:{nss}")
    assert "Commune Exemple (2)" in keys and "Syndicat Eaux (2)" in keys, keys
    certs = _certutil("-L", "-d", f"sql:{nss}")
    assert re.search(r"^Commune Exemple\s+u,u,u$", certs, re.M), certs  # bound to AO-1: kept
    assert not re.search(r"^Syndicat Eaux\s+u,u,u$", certs, re.M), certs  # retired: removed
    assert not (folder / "syndicat-eaux.g1.receipt.json").exists()
    assert (folder / "commune-exemple.g1.receipt.json").exists()
    if agent_nss is not None:
        certs = _certutil("-L", "-d", f"sql:{agent_nss}")
        assert re.search(r"^Commune Exemple\s+u,u,u$", certs, re.M), certs
        assert re.search(r"^Syndicat Eaux \(2\)\s+u,u,u$", certs, re.M), certs
        assert not re.search(r"^Syndicat Eaux\s+u,u,u$", certs, re.M), certs
        assert not (tmp_path / "ws-local" / "syndicat-eaux.g1.receipt.json").exists()
    since = json.loads((folder / "commune-exemple.g1.receipt.json").read_text())["stores"][0]

    # Run 3: nothing to change, and a first import keeps its time.
    done = role(hosts, LATER)
    assert done.returncode == 0, done.stdout + done.stderr
    for host in hosts.split(":"):
        recap = _recap(done.stdout, host)
        assert (recap["changed"], recap["failed"]) == (0, 0), done.stdout
    assert (
        json.loads((folder / "commune-exemple.g1.receipt.json").read_text())["stores"][0] == since
    )

    # The tool reads the receipts: status says whose store holds what, check is content.
    status = cli("status", manifest, env=env(LATER))
    assert status.returncode == 0, status.stderr
    for line in (
        f"commune-exemple g1 ws-linux [{sshd.user}]: in the store of user {sshd.user} since",
        f"commune-exemple g2 ws-linux [{sshd.user}]: in the store of user {sshd.user} since",
        f"syndicat-eaux g2 ws-linux [{sshd.user}]: in the store of user {sshd.user} since",
    ):
        assert line in status.stdout, status.stdout
    if agent:
        assert f"syndicat-eaux g2 ws-local [{agent}]: in the store of user {agent} since" in (
            status.stdout
        )
    stores = json.loads(cli("status", "--json", manifest, env=env(LATER)).stdout)["stores"]
    assert {
        (s["entity"], s["generation"], s["state"]) for s in stores if s["target"] == "ws-linux"
    } == {
        ("commune-exemple", 1, "installed"),
        ("commune-exemple", 2, "installed"),
        ("syndicat-eaux", 2, "installed"),
    }

    # ws-windows (no Windows here) is not imported: check says so; ws-linux is content.
    def linux_findings(args: tuple[str, ...]) -> tuple[int, list[tuple[str, str]]]:
        done = cli("check", "--json", *args, manifest, env=env(LATER))
        found = json.loads(done.stdout)["findings"]
        return done.returncode, [
            (f["severity"], f["code"]) for f in found if "ws-linux" in f["message"]
        ]

    assert linux_findings(()) == (2, [])

    # The bound generation's receipt is lost (the store was wiped): with AO-1 opening in 17
    # days, within the 30-day warning window, that is CRITICAL; rehearse says so too.
    (folder / "commune-exemple.g1.receipt.json").unlink()
    assert linux_findings(()) == (2, [("CRITICAL", "bound-not-in-store")])
    check = cli("check", manifest, env=env(LATER))
    assert f"ws-linux [{sshd.user}]: file present, not imported; bound to AO-1" in check.stdout
    # With the opening beyond the window, the same gap is a WARNING.
    assert linux_findings(("--warn-days", "7")) == (1, [("WARNING", "not-in-store")])
    rehearse = cli("rehearse", manifest, env=env(LATER))
    assert f"commune-exemple g1 ws-linux [{sshd.user}]: file present, not imported" in (
        rehearse.stdout
    )

    # Issue 28: the Windows role stops before any task, naming the agents, when their runas
    # passwords are missing (every logon would otherwise fail, and lock their accounts).
    done = role("ws-windows", LATER)
    assert done.returncode != 0, done.stdout
    assert "no runas password for CORP\\agent1, CORP\\agent2" in done.stdout, done.stdout
    assert "Read each live copy" not in done.stdout
    partly = json.dumps({"agent_stores_agent_passwords": {"CORP\\agent1": "x"}})
    done = role("ws-windows", LATER, "-e", partly)
    assert "no runas password for CORP\\agent2 in" in done.stdout, done.stdout

    # Issue 28: a receipt is what the last run observed. The key is taken out of the agent's
    # database (certutil -F then -D): the next run sees it absent, imports it again and
    # stamps that import; check is content again.
    g1 = folder / "commune-exemple.g1.receipt.json"

    def take_out() -> None:
        _certutil("-F", "-d", f"sql:{nss}", "-n", "Commune Exemple")
        _certutil("-D", "-d", f"sql:{nss}", "-n", "Commune Exemple")
        assert not re.search(
            r"^Commune Exemple\s+u,u,u$", _certutil("-L", "-d", f"sql:{nss}"), re.M
        )

    def ws_linux(when: str) -> dict[str, str]:
        (found,) = [
            s
            for s in json.loads(cli("status", "--json", manifest, env=env(when)).stdout)["stores"]
            if (s["target"], s["generation"], s["entity"]) == ("ws-linux", 1, "commune-exemple")
        ]
        return found

    take_out()
    again = "2027-12-17T09:00:00Z"
    done = role("ws-linux", again)
    assert done.returncode == 0, done.stdout + done.stderr
    entry = json.loads(g1.read_text())["stores"][0]
    assert (entry["outcome"], entry["installed_at"], entry["observed_at"]) == (
        "installed",
        again,
        again,
    ), entry
    assert re.search(r"^Commune Exemple\s+u,u,u$", _certutil("-L", "-d", f"sql:{nss}"), re.M)
    assert ws_linux(again)["state"] == "installed"
    assert "a test bid opened from it 2027-12-17 09:00" in ws_linux(again)["detail"]
    rehearsed = cli("rehearse", manifest, env=env(again))
    assert "a test bid opened from it 2027-12-17 09:00" in rehearsed.stdout, rehearsed.stdout
    assert linux_findings(()) == (2, [])

    # Taken out again, and the import fails (a wrong password): the run fails naming what,
    # the receipt says so, and check is CRITICAL for AO-1 instead of "in the store".
    take_out()
    failed_at = "2027-12-18T09:00:00Z"
    wrong = json.dumps({"agent_stores_passwords": {"commune-exemple": "not-the-password"}})
    done = role("ws-linux", failed_at, "-e", wrong)
    assert done.returncode != 0, done.stdout
    assert "commune-exemple g1 is not in the NSS database" in done.stdout, done.stdout
    assert "not-the-password" not in done.stdout + done.stderr
    entry = json.loads(g1.read_text())["stores"][0]
    assert (entry["outcome"], entry["observed_at"]) == ("import-failed", failed_at), entry
    assert "installed_at" not in entry and entry["private_key"] is False
    jsonschema.validate(json.loads(g1.read_text()), schema)
    seen = ws_linux(failed_at)
    assert seen["state"] == "import-failed" and "import failed" in seen["detail"], seen
    assert linux_findings(()) == (2, [("CRITICAL", "bound-not-in-store")])

    # A database that cannot be read is said so, for every key it should hold.
    for name in ("cert9.db", "key4.db"):
        (nss / name).write_bytes(b"not a database" * 64)
    broken_at = "2027-12-19T09:00:00Z"
    done = role("ws-linux", broken_at)
    assert done.returncode != 0, done.stdout
    entry = json.loads(g1.read_text())["stores"][0]
    assert (entry["outcome"], entry["observed_at"]) == ("unreadable", broken_at), entry
    assert ws_linux(broken_at)["state"] == "store-unreadable"

    # A database with a primary password (Firefox): refused naming it without the password,
    # imported with it (agent_stores_nss_passwords, from Ansible Vault in use).
    shutil.rmtree(nss)
    nss.mkdir(mode=0o700)
    primary = tmp_path / "primary.pass"
    primary.write_text("Primary-Password-7")
    assert subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "-f", primary]).returncode == 0
    owner = pwd.getpwnam(sshd.user)
    for path in (nss, *nss.iterdir()):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    locked_at = "2027-12-20T09:00:00Z"
    done = role("ws-linux", locked_at)
    assert done.returncode != 0, done.stdout
    assert "the NSS database has a password" in done.stdout, done.stdout
    entry = json.loads(g1.read_text())["stores"][0]
    assert entry["outcome"] == "import-failed" and "has a password" in entry["detail"], entry
    given = json.dumps({"agent_stores_nss_passwords": {sshd.user: "Primary-Password-7"}})
    done = role("ws-linux", locked_at, "-e", given)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Primary-Password-7" not in done.stdout + done.stderr
    keys = _certutil("-K", "-d", f"sql:{nss}", "-f", str(primary))
    assert "Commune Exemple" in keys, keys
    assert json.loads(g1.read_text())["stores"][0]["outcome"] == "installed"
    assert not [p for p in Path(tempfile.gettempdir()).glob("provisioner-nss-*")], "left behind"


def test_windows_tasks_pass_ansible_lint_and_match_the_ansible_windows_modules(
    collection: dict[str, str],
) -> None:
    """ansible-lint (production profile) over the collection, and every argument of every
    ansible.windows module the Windows tasks use checked against that module's documented
    options, as the installed ansible.windows states them: names, choices, required options;
    win_certificate_store imports with no option meant for exports, and never exports."""
    installed = Path(collection["COLLECTION"])
    done = subprocess.run(
        [_need("ansible-lint"), "--offline", "--profile", "production", "."],
        cwd=installed,
        env=collection,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tasks = installed / "roles" / "agent_stores" / "tasks"
    used: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for file in sorted(tasks.glob("windows*.yml")):
        for task in _tasks(yaml.safe_load(file.read_text())):
            for key, args in task.items():
                if key.startswith("ansible.windows."):
                    used.append((f"{file.name}: {task['name']}", task, {key: args}))
    modules = sorted({next(iter(m)) for _, _, m in used})
    assert modules == [
        "ansible.windows.win_certificate_store",
        "ansible.windows.win_copy",
        "ansible.windows.win_file",
        "ansible.windows.win_powershell",
    ]
    found = _ansible(collection, "ansible-doc", "-j", *modules, now=CREATED)
    assert found.returncode == 0, found.stderr
    docs = {name: entry["doc"]["options"] for name, entry in json.loads(found.stdout).items()}
    imports = removals = 0
    for where, task, module in used:
        ((name, args),) = module.items()
        options = docs[name]
        for option, value in args.items():
            assert option in options, f"{where}: {name} has no option {option}"
            choices = options[option].get("choices")
            if choices and "{{" not in str(value):
                assert value in choices, f"{where}: {option}: {value} not in {choices}"
        for option, spec in options.items():
            if spec.get("required"):
                assert option in args, f"{where}: {name} requires {option}"
        if name != "ansible.windows.win_certificate_store":
            continue
        described = {
            o: d if isinstance(d := spec["description"], str) else " ".join(d)
            for o, spec in options.items()
        }
        present_only = {o for o, text in described.items() if "state=present) only" in text}
        assert present_only == {"key_exportable", "key_storage"}, described
        assert "state=exported" in described["file_type"]  # an option of exports only
        assert "file_type" not in args, where
        assert args.get("store_name") == "My", where
        if args["state"] == "present":
            imports += 1
            assert task.get("no_log") is True, where  # the password
            assert task.get("become_method") == "ansible.builtin.runas", where
            assert "key_exportable" in args and "password" in args, where
            assert "thumbprint" not in args, where  # what an export or a removal names
        else:
            removals += 1
            assert args["state"] == "absent", where
            assert not present_only & set(args) and "password" not in args, where
    assert (imports, removals) == (1, 1)


def _tasks(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items or []:
        yield item
        for key in ("block", "always", "rescue"):
            yield from _tasks(item.get(key, []))


def test_every_task_given_a_password_or_a_pkcs12_is_no_log() -> None:
    """The role's tasks whose module arguments carry an entity password or PKCS#12 bytes
    hide their arguments and results (no_log), on Linux and on Windows."""
    tasks = REPO / "ansible" / "provisioner" / "roles" / "agent_stores" / "tasks"
    secret_bearing = 0
    for file in sorted(tasks.glob("*.yml")):
        for task in _tasks(yaml.safe_load(file.read_text())):
            module = next(
                (k for k in task if "." in k and k not in ("ansible.builtin.include_tasks",)), None
            )
            if module is None:
                continue
            args = json.dumps(task[module])
            # a password given to the module (an option, a lookup, an entry of a passwords
            # map), or PKCS#12 bytes; a map's keys alone (which agents have one) are no secret
            secret = re.search(r"password\"?:|passwords\[|keystore\.password", args)
            if secret or ".content" in args or "agent_stores_pkcs12" in str(task):
                secret_bearing += 1
                assert task.get("no_log") is True, f"{file.name}: {task['name']}"
    # two slurps, the NSS and Windows imports, the Windows staging, the NSS removal (the
    # database's own password)
    assert secret_bearing == 6


def _filters(name: str) -> Any:
    """The collection's filter plugin `name` (plugins/filter/NAME.py), imported as Ansible
    does: the functions the role's templates call."""
    pytest.importorskip("ansible")
    path = REPO / "ansible" / "provisioner" / "plugins" / "filter" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"provisioner_keystore_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stamp(offset_days: float = 0) -> str:
    """TEST_CLOCK moved by `offset_days`, as receipts write times."""
    return (TEST_CLOCK + dt.timedelta(days=offset_days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _windows_manifest(tmp_path: Path) -> Path:
    """One entity on two Windows workstations whose folders are on the controller: ws-windows
    (each agent's CurrentUser\\My) and ws-machine (LocalMachine\\My, read by its agent)."""
    (tmp_path / "secrets").mkdir()
    for name in ("escrow.pass", "commune-exemple.pass"):
        shutil.copy(EXAMPLES / "secrets" / name, tmp_path / "secrets" / name)
    agents = ["CORP\\agent1", "CORP\\agent2"]
    machine = {"store": "windows", "users": agents[:1], "windows_location": "LocalMachine"}
    m = Manifest(escrow={"passphrase": {"file": "secrets/escrow.pass"}})
    m.location("share")
    m.workstation("ws-windows", install={"store": "windows", "users": agents})
    m.workstation("ws-machine", install=machine)
    m.entity(
        "commune-exemple",
        name="Commune d'Exemple",
        designation="Commune Exemple",
        password={"file": "secrets/commune-exemple.pass"},
        shared_locations=["share"],
        workstations=["ws-windows", "ws-machine"],
    )
    path = m.write(tmp_path / "manifest.yaml")
    (tmp_path / "provisioner.yml").write_text(
        f"plugin: provisioner.keystore.provisioner\nmanifest: manifest.yaml\n"
        f"executable: {BIN / 'provisioner'}\n"
    )
    return path


def test_windows_role_refuses_before_any_task_what_it_could_not_do_right(
    collection: dict[str, str], tmp_path: Path, cli: Runner
) -> None:
    """Issue 28: the Windows role stops on the controller, before it connects or reads a
    copy, naming the host and the reason: LocalMachine with no agent to grant read access to
    the key; a workstation the tool writes through an SMB share without the share's folder on
    that machine (agent_stores_share_root), or with one that is not a folder there."""
    manifest = _windows_manifest(tmp_path)
    assert cli("apply", "--auto-approve", manifest).returncode == 0
    runas = {"agent_stores_agent_passwords": {"CORP\\agent1": "x", "CORP\\agent2": "y"}}

    def role(**extra: Any) -> str:
        done = _ansible(
            collection,
            "ansible-playbook",
            "-i",
            tmp_path / "provisioner.yml",
            "-l",
            "ws-windows",
            "-e",
            json.dumps(runas | extra),
            "provisioner.keystore.agent_stores",
            now=_stamp(),
        )
        assert done.returncode != 0, done.stdout
        assert _recap(done.stdout, "ws-windows")["failed"] == 1, done.stdout
        # Nothing was attempted on the host: no copy read, no store looked at.
        assert "Read each live copy" not in done.stdout, done.stdout
        assert "Look in the store" not in done.stdout, done.stdout
        assert not list((tmp_path / "ws-windows").glob("*.receipt.json"))
        return " ".join(done.stdout.split())

    # The manifest requires agents; an inventory from elsewhere (or a hand-edited one) may not.
    machine = {"store": "windows", "users": [], "windows_location": "LocalMachine"}
    out = role(provisioner_install=machine | {"exportable": False, "nss_database": None})
    assert "windows_location LocalMachine lists no agent in install.users" in out, out
    assert "no agent could open a bid with it" in out and "nothing was done on ws-windows" in out

    out = role(provisioner_transport="smb")
    assert (
        "ws-windows is written by the tool through an SMB share (transport smb) and "
        "agent_stores_share_root: it is not set"
    ) in out, out
    assert "(C:\\ for the share C$)" in out and "Nothing was done on ws-windows" in out, out
    out = role(provisioner_transport="smb", agent_stores_share_root="\\\\fs01\\postes")
    assert "agent_stores_share_root: \\\\fs01\\postes is a network path" in out, out
    out = role(provisioner_transport="smb", agent_stores_share_root="/srv/postes")
    assert "/srv/postes is not a folder of a Windows drive" in out, out


def test_share_paths_put_an_smb_workstations_receipts_where_the_tool_reads_them() -> None:
    """A workstation the tool writes through an SMB share: the role, on that machine, reads
    the copy and leaves the receipt in the share's folder there (agent_stores_share_root),
    at the very file the tool reads through the share."""
    from provisioner.errors import Location
    from provisioner.manifest.model import Install, SmbSpec, Target
    from provisioner.receipts import receipt_path

    share = _filters("share")
    target = Target(
        "ws-mairie-01",
        "workstation",
        "/ProgramData/Provisioner",
        Location("m.yaml", 1, 1),
        SmbSpec(
            host="ws-mairie-01.mairie.local",
            user="MAIRIE\\svc-provisioner",
            share="C$",
            password=None,
            port=445,
        ),
        install=Install(store="windows", users=("MAIRIE\\agent1",)),
    )
    copy = {
        "entity": "commune-exemple",
        "generation": 2,
        "host_path": None,
        "controller_path": None,
        "receipt_path": receipt_path(target, "commune-exemple", 2),  # as the inventory says
    }
    assert copy["receipt_path"] == "/ProgramData/Provisioner/commune-exemple.g2.receipt.json"
    (seen,) = share.share_paths([copy], "smb", "C:\\")
    assert seen["receipt_path"] == "C:\\ProgramData\\Provisioner\\commune-exemple.g2.receipt.json"
    assert seen["host_path"] == "C:\\ProgramData\\Provisioner\\commune-exemple.g2.p12"
    assert seen["controller_path"] is None and copy["host_path"] is None  # a new dict
    # A share of a folder (D:\Partages exported as postes, path /ws-01 in it).
    (seen,) = share.share_paths(
        [copy | {"receipt_path": "/ws-01/commune-exemple.g2.receipt.json"}], "smb", "D:/Partages/"
    )
    assert seen["receipt_path"] == "D:\\Partages\\ws-01\\commune-exemple.g2.receipt.json"
    # A Linux workstation sharing a folder with Samba (NSS store).
    (seen,) = share.share_paths([copy], "smb", "/srv/samba/c", False)
    assert (
        seen["receipt_path"]
        == "/srv/samba/c/ProgramData/Provisioner/commune-exemple.g2.receipt.json"
    )
    # ssh and local copies are the host's or the controller's already: left as they are.
    assert share.share_paths([copy], "ssh", None) == [copy]
    assert share.share_paths([copy], "local", "C:\\") == [copy]
    # Roots that are not the share's folder on the workstation.
    problem = share.root_problem
    assert problem(None, True) == problem("  ", True) == "it is not set"
    assert "is a network path" in problem("\\\\fs01\\postes", True)
    assert "is a network path" in problem("//fs01/postes", False)
    assert "not a folder of a Windows drive" in problem("Provisioner", True)
    assert "not an absolute path" in problem("srv/samba", False)
    assert problem("C:", True) == problem("c:\\", True) == problem("/srv", False) == ""
    with pytest.raises(Exception, match="agent_stores_share_root: it is not set"):
        share.share_paths([copy], "smb", None)
    with pytest.raises(Exception, match="leaves the share"):
        share.share_paths([copy | {"receipt_path": "/../x.g1.receipt.json"}], "smb", "C:\\")


# What win_powershell registers for the role's check of one copy ($Ansible.Result in `result`).
def _checked(outcome: str, opened: bool, msg: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {"outcome": outcome, "opened": opened}
    if msg:
        result["msg"] = msg
    return {"changed": False, "failed": False, "result": result, "output": [], "error": []}


def test_receipt_filter_records_a_test_bid_opened_from_a_windows_store() -> None:
    """The receipt filter reads the Windows check's result as it reads nss_pkcs12's: a test
    bid opened from the store stamps opened_at with the run's time; a bid that does not open
    is a failed import with its reason, and no opened_at; a failed runas logon too."""
    receipts = _filters("receipt")
    schema = json.loads((REPO / "schemas" / "receipt.schema.json").read_text())
    copy = {
        "entity": "commune-exemple",
        "generation": 1,
        "thumbprint_sha1": "0F3A0ADEFC3C91728620934210E8D87E5BB0B74B",
        "cert_sha256": "ab" * 32,
    }

    def run(slurped: Any, entries: list[dict[str, Any]], at: str) -> dict[str, Any]:
        document = json.loads(receipts.receipt(copy, slurped, entries, now=at))
        jsonschema.validate(document, schema)
        return document

    def slurp(document: dict[str, Any]) -> dict[str, str]:
        return {"content": base64.b64encode(json.dumps(document).encode()).decode()}

    # First run: imported (the import task changed) and a test bid opened from the store.
    first = receipts.entry(_checked("present", True), "CORP\\agent1", "CurrentUser\\My", True)
    assert (first["outcome"], first["imported"], first["opened"]) == ("installed", True, True)
    one = run(None, [first], _stamp(-2))
    assert one["stores"] == [
        {
            "user": "CORP\\agent1",
            "store": "CurrentUser\\My",
            "outcome": "installed",
            "private_key": True,
            "installed_at": _stamp(-2),
            "observed_at": _stamp(-2),
            "opened_at": _stamp(-2),
        }
    ]
    # Next run: already there (no import), opened again: the import time stays.
    again = receipts.entry(_checked("present", True), "CORP\\agent1", "CurrentUser\\My", False)
    two = run(slurp(one), [again], _stamp())
    assert (two["stores"][0]["installed_at"], two["stores"][0]["opened_at"]) == (
        _stamp(-2),
        _stamp(),
    )
    # The key is there but a bid encrypted to it does not open: a failed import, the reason.
    why = (
        "CurrentUser\\My holds 0F3A0ADEFC3C91728620934210E8D87E5BB0B74B but a test bid "
        "encrypted to it does not open with its key: Keyset does not exist"
    )
    broken = receipts.entry(
        _checked("import-failed", False, why), "CORP\\agent1", "CurrentUser\\My", False
    )
    three = run(slurp(two), [broken], _stamp())["stores"][0]
    assert (three["outcome"], three["private_key"], three["detail"]) == (
        "import-failed",
        False,
        why,
    )
    assert "opened_at" not in three and "installed_at" not in three
    # The store looked at without a proof (opened false): no opened_at is claimed.
    unproved = receipts.entry(_checked("present", False), "CORP\\agent2", "CurrentUser\\My")
    assert "opened_at" not in run(None, [unproved], _stamp())["stores"][0]
    # runas could not log the agent on: the task failed with no result of the script.
    refused = {"failed": True, "msg": "Failed to become user CORP\\agent2: logon failure"}
    entry = receipts.entry(refused, "CORP\\agent2", "CurrentUser\\My", False)
    assert (entry["outcome"], entry["opened"]) == ("import-failed", False)
    assert "Failed to become user CORP\\agent2" in entry["detail"]
    # LocalMachine: one entry for the machine's store, its agents' access checked.
    unread = "LocalMachine\\My: the private key of 0F3A cannot be read by CORP\\agent1"
    machine = receipts.entry(
        _checked("import-failed", False, unread), "LocalMachine", "LocalMachine\\My", False
    )
    assert run(None, [machine], _stamp())["stores"][0]["detail"] == unread


def test_status_shows_the_test_bid_opened_from_a_windows_store(tmp_path: Path, cli: Runner) -> None:
    """A receipt in the format the Windows role writes (written here by hand, and the same as
    the role's filters make of the Windows check's results): status, rehearse and check say
    which agent's store opened a test bid and when, which did not and why, and the machine
    store's."""
    receipts = _filters("receipt")
    manifest = _windows_manifest(tmp_path)
    assert cli("apply", "--auto-approve", manifest).returncode == 0
    hosts = json.loads(cli("inventory", "--json", manifest).stdout)["hosts"]
    schema = json.loads((REPO / "schemas" / "receipt.schema.json").read_text())
    why = "CurrentUser\\My holds it but a test bid encrypted to it does not open with its key"
    for host, stores in (
        (
            "ws-windows",
            [
                {
                    "user": "CORP\\agent1",
                    "store": "CurrentUser\\My",
                    "outcome": "installed",
                    "private_key": True,
                    "installed_at": _stamp(-3),
                    "observed_at": _stamp(-1),
                    "opened_at": _stamp(-1),
                },
                {
                    "user": "CORP\\agent2",
                    "store": "CurrentUser\\My",
                    "outcome": "import-failed",
                    "private_key": False,
                    "observed_at": _stamp(-1),
                    "detail": why,
                },
            ],
        ),
        (
            "ws-machine",
            [
                {
                    "user": "LocalMachine",
                    "store": "LocalMachine\\My",
                    "outcome": "installed",
                    "private_key": True,
                    "installed_at": _stamp(-1),
                    "observed_at": _stamp(-1),
                    "opened_at": _stamp(-1),
                }
            ],
        ),
    ):
        (copy,) = hosts[host]["copies"]
        document = {
            "format_version": 2,
            "entity": "commune-exemple",
            "generation": 1,
            "thumbprint_sha1": copy["thumbprint_sha1"],
            "cert_sha256": copy["cert_sha256"],
            "stores": stores,
        }
        jsonschema.validate(document, schema)
        Path(copy["receipt_path"]).write_text(json.dumps(document, indent=2, sort_keys=True))
        # The role's filters make the same of the Windows check's results (after a first run
        # that imported the keys, 3 days before).
        earlier = {
            "content": base64.b64encode(
                json.dumps(
                    document | {"stores": [{**s, "observed_at": _stamp(-3)} for s in stores]}
                ).encode()
            ).decode()
        }
        made = receipts.receipt(
            copy,
            earlier,
            [
                receipts.entry(
                    _checked("present", True)
                    if s["outcome"] == "installed"
                    else _checked("import-failed", False, why),
                    s["user"],
                    s["store"],
                    s.get("installed_at") == _stamp(-1),
                )
                for s in stores
            ],
            now=_stamp(-1),
        )
        assert json.loads(made) == document

    status = cli("status", manifest)
    assert status.returncode == 0, status.stderr
    text = " ".join(status.stdout.split())
    assert (
        "ok commune-exemple g1 ws-windows [CORP\\agent1]: in the store of user CORP\\agent1 "
        "since 2026-11-27 09:00 (CurrentUser\\My), observed 2026-11-29 09:00 (1 day ago); "
        "a test bid opened from it 2026-11-29 09:00"
    ) in text, status.stdout
    assert (
        "import-failed commune-exemple g1 ws-windows [CORP\\agent2]: CurrentUser\\My: import "
        f"failed, observed 2026-11-29 09:00 (1 day ago): {why}"
    ) in text, status.stdout
    assert (
        "ok commune-exemple g1 ws-machine [LocalMachine]: in the machine store since "
        "2026-11-29 09:00 (LocalMachine\\My), observed 2026-11-29 09:00 (1 day ago); a test bid "
        "opened from it 2026-11-29 09:00"
    ) in text, status.stdout
    stores = {
        (s["target"], s["user"]): s["state"]
        for s in json.loads(cli("status", "--json", manifest).stdout)["stores"]
    }
    assert stores == {
        ("ws-windows", "CORP\\agent1"): "installed",
        ("ws-windows", "CORP\\agent2"): "import-failed",
        ("ws-machine", "LocalMachine"): "installed",
    }
    rehearsed = cli("rehearse", manifest)
    assert "CORP\\agent1 since 2026-11-27 09:00" in rehearsed.stdout, rehearsed.stdout
    assert "a test bid opened from it 2026-11-29 09:00" in rehearsed.stdout, rehearsed.stdout
    found = json.loads(cli("check", "--json", manifest).stdout)["findings"]
    assert [(f["severity"], f["code"]) for f in found if "[CORP\\agent2]" in f["message"]] == [
        ("WARNING", "not-in-store")
    ]
    assert not [
        f for f in found if "[CORP\\agent1]" in f["message"] or "ws-machine" in f["message"]
    ]
