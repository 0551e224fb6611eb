"""Key store settings of the manifest (`install`), `provisioner inventory`, and the receipts
that status, check and rehearse read (what the agents' stores hold)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import jsonschema
import pytest

from provisioner.manifest.loader import read_manifest
from provisioner.manifest.model import FILE_ONLY
from tests.conftest import EXAMPLES, REPO, Runner
from tests.manifests import Manifest, ssh

HEAD = """version: 1
defaults: {key: {size: 2048}}
escrow: {passphrase: {file: secrets/escrow.pass}}
"""


def secrets(tmp_path: Path) -> None:
    """The escrow's and commune-exemple's password files, in `tmp_path/secrets`."""
    folder = tmp_path / "secrets"
    if not folder.exists():
        folder.mkdir()
        for name in ("escrow.pass", "commune-exemple.pass"):
            (folder / name).write_text((EXAMPLES / "secrets" / name).read_text())


def write(tmp_path: Path, inventory: str) -> Path:
    """A manifest with `inventory` (YAML, indented under `inventory:`), as text: the tests of
    its errors read their line and column in it."""
    secrets(tmp_path)
    path = tmp_path / "m.yaml"
    path.write_text(
        HEAD
        + "inventory:\n"
        + inventory
        + """entities:
  - id: commune-exemple
    name: Commune
    key: {designation: Commune Exemple}
    password: {file: secrets/commune-exemple.pass}
    shared_locations: [share]
    workstations: [marches, ws-accueil]
"""
    )
    return path


def site() -> Manifest:
    """The inventory below (INVENTORY) as data, before its entity: a shared location, a
    workstation with its own Windows store, ws-m1 with its group's NSS stores, ws-m2 whose
    own `store: file` wins over its group's."""
    return (
        Manifest(escrow={"passphrase": {"file": "secrets/escrow.pass"}})
        .location("share", path="out/share")
        .workstation(
            "ws-accueil",
            path="out/ws-accueil",
            install={"store": "windows", "users": ["CORP\\agent1"], "exportable": True},
        )
        .workstation("ws-m1", path="out/ws-m1")
        .workstation("ws-m2", path="out/ws-m2", install={"store": "file"})
        .group(
            "marches",
            ["ws-m1", "ws-m2"],
            install={"store": "nss", "users": ["alice", "bob"], "nss_database": "/srv/nss/{user}"},
        )
    )


def written(tmp_path: Path, m: Manifest | None = None, *more: str) -> Path:
    """`m` (else site()) with commune-exemple on the share, the group marches, ws-accueil
    and the workstations `more`, written to `tmp_path/m.yaml` beside its secrets."""
    secrets(tmp_path)
    m = m or site()
    m.entity(
        "commune-exemple",
        name="Commune",
        designation="Commune Exemple",
        password={"file": "secrets/commune-exemple.pass"},
        shared_locations=["share"],
        workstations=["marches", "ws-accueil", *more],
    )
    return m.write(tmp_path / "m.yaml")


# site() as YAML text, for the tests of its errors (their line and column).
INVENTORY = """  locations:
    - {name: share, transport: local, path: out/share}
  workstations:
    - name: ws-accueil
      transport: local
      path: out/ws-accueil
      install: {store: windows, users: ['CORP\\agent1'], exportable: true}
    - {name: ws-m1, transport: local, path: out/ws-m1}
    - name: ws-m2
      transport: local
      path: out/ws-m2
      install: {store: file}
  groups:
    marches:
      members: [ws-m1, ws-m2]
      install: {store: nss, users: [alice, bob], nss_database: "/srv/nss/{user}"}
"""


def test_install_settings_come_from_the_workstation_else_its_groups(tmp_path: Path) -> None:
    manifest, _ = read_manifest(written(tmp_path))
    accueil = manifest.workstations["ws-accueil"].install
    assert (accueil.store, accueil.users, accueil.exportable) == (
        "windows",
        ("CORP\\agent1",),
        True,
    )
    assert accueil.windows_location == "CurrentUser"
    m1 = manifest.workstations["ws-m1"].install
    assert (m1.store, m1.users, m1.nss_database) == ("nss", ("alice", "bob"), "/srv/nss/{user}")
    # Its own `install: {store: file}` wins over the group's.
    assert manifest.workstations["ws-m2"].install == FILE_ONLY
    entity = manifest.entity("commune-exemple")
    assert entity is not None
    assert [t.name for t in entity.workstations] == ["ws-m1", "ws-m2", "ws-accueil"]


@pytest.mark.parametrize(
    ("inventory", "place", "message"),
    [
        (
            INVENTORY.replace("{store: nss, users: [alice, bob], ", "{store: nss, "),
            "m.yaml:20:16",
            "missing required key 'users'",
        ),
        (
            INVENTORY.replace("exportable: true}", "nss_database: /x}"),
            "m.yaml:11:57",
            "nss_database does not apply to store 'windows'",
        ),
        (
            INVENTORY.replace("/srv/nss/{user}", "nss/{user}"),
            "m.yaml:20:64",
            "must be an absolute folder path",
        ),
        (
            INVENTORY.replace(
                "path: out/share}", "path: out/share, install: {store: windows, users: [a]}}"
            ),
            "m.yaml:6:",
            "install applies to workstations only",
        ),
        (
            INVENTORY.replace("members: [ws-m1, ws-m2]", "members: [ws-m1, ws-nope]"),
            "m.yaml:19:24",
            "'ws-nope' is neither a workstation nor a group",
        ),
        (
            INVENTORY + "    all-ws:\n      members: [ws-m1]\n"
            "      install: {store: windows, users: [carol]}\n",
            "m.yaml:23:16",
            "workstation 'ws-m1' gets different install settings from groups 'marches' and "
            "'all-ws'",
        ),
    ],
    ids=[
        "nss-without-users",
        "misplaced-option",
        "relative-nss",
        "on-location",
        "member",
        "conflict",
    ],
)
def test_bad_install_settings_are_refused_at_their_place(
    cli: Runner, tmp_path: Path, inventory: str, place: str, message: str
) -> None:
    path = write(tmp_path, inventory)
    done = cli("validate", path, cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert place in done.stderr and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def sha1(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def test_inventory_lists_each_host_its_copies_keep_and_remove(cli: Runner, tmp_path: Path) -> None:
    """After a renewal the retired generation is `remove`; a generation bound to an open
    consultation stays `keep` (bound) on every workstation, with its references."""
    path = written(tmp_path)
    created = "2026-01-10T09:00:00Z"
    assert cli("apply", "--auto-approve", path, env={"PROVISIONER_NOW": created}).returncode == 0
    (tmp_path / "c.yaml").write_text(
        "version: 1\nconsultations:\n  - {reference: AO-1, entity: commune-exemple,"
        " designation: Commune Exemple,"
        " status: open, deadline: 2028-06-01, opening: 2028-06-02}\n"
    )
    renew = "2027-12-15T09:00:00Z"  # within the 60-day window of a 730-day key: generation 2
    done = cli(
        "apply",
        "--auto-approve",
        path,
        "--consultations",
        tmp_path / "c.yaml",
        env={"PROVISIONER_NOW": renew},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    later = "2027-12-16T09:00:00Z"
    done = cli("inventory", "--json", path, env={"PROVISIONER_NOW": later})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["format_version"] == 1
    jsonschema.validate(doc, json.loads((REPO / "schemas" / "inventory.schema.json").read_text()))
    assert doc["groups"] == {"marches": ["ws-m1", "ws-m2"]}
    assert sorted(doc["hosts"]) == ["ws-accueil", "ws-m1", "ws-m2"]
    ders = {}
    for n in (1, 2):
        out = tmp_path / f"g{n}.cer"
        done = cli(
            "export",
            path,
            "commune-exemple",
            "--format",
            "der",
            "--generation",
            str(n),
            "--out",
            out,
        )
        assert done.returncode == 0, done.stderr
        ders[n] = out.read_bytes()
    for name, store in (("ws-accueil", "windows"), ("ws-m1", "nss"), ("ws-m2", "file")):
        host = doc["hosts"][name]
        assert host["install"]["store"] == store, name
        copies = {c["generation"]: c for c in host["copies"]}
        assert sorted(copies) == [1, 2], name
        g1, g2 = copies[1], copies[2]
        assert (g2["state"], g2["reason"]) == ("keep", "current")
        assert (g1["state"], g1["reason"], g1["consultations"]) == ("keep", "bound", ["AO-1"])
        for n, c in copies.items():
            assert c["thumbprint_sha1"] == sha1(ders[n]), (name, n)
            assert c["cert_sha256"] == hashlib.sha256(ders[n]).hexdigest()
            assert c["controller_path"] == str(
                tmp_path / "out" / name / f"commune-exemple.g{n}.p12"
            )
            assert c["receipt_path"].endswith(f"/out/{name}/commune-exemple.g{n}.receipt.json")
    assert doc["hosts"]["ws-accueil"]["install"]["exportable"] is True
    assert doc["hosts"]["ws-m1"]["install"]["users"] == ["alice", "bob"]
    # The consultation closes: generation 1 may leave the stores.
    closed = (tmp_path / "c.yaml").read_text().replace("status: open", "status: closed")
    (tmp_path / "c.yaml").write_text(closed)
    done = cli(
        "inventory",
        "--json",
        path,
        "--consultations",
        tmp_path / "c.yaml",
        env={"PROVISIONER_NOW": later},
    )
    doc = json.loads(done.stdout)
    g1 = next(c for c in doc["hosts"]["ws-m1"]["copies"] if c["generation"] == 1)
    # The state still records AO-1 open until the next apply: the key stays.
    assert g1["state"] == "keep"
    assert (
        cli(
            "apply",
            "--auto-approve",
            path,
            "--consultations",
            tmp_path / "c.yaml",
            env={"PROVISIONER_NOW": later},
        ).returncode
        == 0
    )
    done = cli(
        "inventory",
        "--json",
        path,
        "--consultations",
        tmp_path / "c.yaml",
        env={"PROVISIONER_NOW": later},
    )
    g1 = next(
        c for c in json.loads(done.stdout)["hosts"]["ws-m1"]["copies"] if c["generation"] == 1
    )
    assert (g1["state"], g1["reason"]) == ("remove", "retired")
    assert not os.path.exists(tmp_path / "out" / "ws-m1" / "commune-exemple.g1.p12")


def test_status_reads_receipts_and_believes_only_those_of_the_recorded_certificate(
    cli: Runner, tmp_path: Path
) -> None:
    path = written(tmp_path)
    assert cli("apply", "--auto-approve", path).returncode == 0
    doc = json.loads(cli("inventory", "--json", path).stdout)
    copy = doc["hosts"]["ws-m1"]["copies"][0]
    folder = tmp_path / "out" / "ws-m1"
    receipt = folder / "commune-exemple.g1.receipt.json"

    def stores() -> dict[str, tuple[str, str]]:
        done = cli("status", "--json", path)
        assert done.returncode == 0, done.stderr
        return {
            s["user"]: (s["state"], s["detail"])
            for s in json.loads(done.stdout)["stores"]
            if s["target"] == "ws-m1"
        }

    def leave(**changes: object) -> None:
        entries = [
            {
                "user": "alice",
                "store": "nss:/srv/nss/alice",
                "installed_at": "2027-01-02T03:04:05Z",
                "private_key": True,
            },
        ]
        document = {
            "format_version": 1,
            "entity": "commune-exemple",
            "generation": 1,
            "thumbprint_sha1": copy["thumbprint_sha1"],
            "cert_sha256": copy["cert_sha256"],
            "stores": entries,
        } | changes
        jsonschema.validate(
            document, json.loads((REPO / "schemas" / "receipt.schema.json").read_text())
        )
        receipt.write_text(json.dumps(document))

    assert stores() == {
        "alice": ("not-imported", "file present, not imported"),
        "bob": ("not-imported", "file present, not imported"),
    }
    leave()
    found = stores()
    assert found["alice"][0] == "installed"
    assert found["alice"][1].startswith("in the store of user alice since 2027-01-02 03:04")
    assert found["bob"][0] == "not-imported"
    text = cli("status", path).stdout
    assert "ok             commune-exemple g1 ws-m1 [alice]: in the store of user alice" in text
    leave(thumbprint_sha1="00" * 20)  # a receipt for another certificate proves nothing
    assert stores()["alice"][0] == "other-key"
    leave(
        stores=[
            {
                "user": "alice",
                "store": "nss:/x",
                "installed_at": "2027-01-02T03:04:05Z",
                "private_key": False,
            }
        ]
    )
    assert stores()["alice"][0] == "no-private-key"
    receipt.write_text("{not json")
    assert stores()["alice"][0] == "unreadable"
    receipt.unlink()
    (folder / "commune-exemple.g1.p12").unlink()
    assert stores()["alice"] == ("missing", "file absent, not imported")
    # Workstations on `store: file` are never judged by receipts.
    assert not [
        s
        for s in json.loads(cli("status", "--json", path).stdout)["stores"]
        if s["target"] == "ws-m2"
    ]


def test_a_store_workstation_down_is_reported_once_not_waited_for_per_receipt(
    cli: Runner, tmp_path: Path
) -> None:
    import socket
    import time

    hung = socket.socket()  # accepts TCP (the kernel's backlog), never speaks SSH
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    port = hung.getsockname()[1]
    (tmp_path / "known_hosts").write_text("")
    down = ssh(
        "127.0.0.1", port, "agent", "/srv/provisioner", known_hosts="known_hosts", connect_timeout=2
    )
    stores = {"store": "nss", "users": ["alice", "bob", "carol"]}
    m = site().workstation("ws-down", **down, install=stores)
    path = written(tmp_path, m, "ws-down")
    assert cli("apply", "--auto-approve", path).returncode == 4  # ws-down: partial failure
    started = time.monotonic()
    done = cli("status", "--json", path)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    found = [s for s in json.loads(done.stdout)["stores"] if s["target"] == "ws-down"]
    assert [s["user"] for s in found] == ["alice", "bob", "carol"]
    assert {s["state"] for s in found} == {"unreachable"}
    hung.close()
    # The plan's attempt (2 s), not one more per agent store (3 x 2 s more): the survey
    # skips a target the plan found down.
    assert elapsed < 5.5, elapsed


def test_the_report_shows_each_agent_store_as_its_receipt_says(cli: Runner, tmp_path: Path) -> None:
    """`provisioner report`: "in the store ... since" from a receipt, "file present, not
    imported" without one (issue 21: copies by target, in store where known)."""
    from html.parser import HTMLParser

    path = written(tmp_path)
    assert cli("apply", "--auto-approve", path).returncode == 0
    copy = json.loads(cli("inventory", "--json", path).stdout)["hosts"]["ws-m1"]["copies"][0]
    (tmp_path / "out" / "ws-m1" / "commune-exemple.g1.receipt.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "entity": "commune-exemple",
                "generation": 1,
                "thumbprint_sha1": copy["thumbprint_sha1"],
                "cert_sha256": copy["cert_sha256"],
                "stores": [
                    {
                        "user": "alice",
                        "store": "nss:/srv/nss/alice",
                        "installed_at": "2027-01-02T03:04:05Z",
                        "private_key": True,
                    }
                ],
            }
        )
    )
    out = tmp_path / "report.html"
    done = cli("report", path, "--out", out)
    assert done.returncode == 0, done.stderr

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[str, list[str]]] = []
            self.cls: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            cls = dict(attrs).get("class") or ""
            if tag == "tr" and cls.startswith("store "):
                self.cls = cls
                self.rows.append((cls, []))

        def handle_endtag(self, tag: str) -> None:
            if tag == "tr":
                self.cls = None

        def handle_data(self, data: str) -> None:
            if self.cls is not None and data.strip():
                self.rows[-1][1].append(data.strip())

    parser = Rows()
    parser.feed(out.read_text())
    rows = {" ".join(cells[:2]): (cls, cells) for cls, cells in parser.rows}
    cls, cells = rows["ws-m1 alice"]
    assert cls == "store installed"
    assert "in the store since 02/01/2027 04:04" in cells, cells  # Paris time
    cls, cells = rows["ws-m1 bob"]
    assert cls == "store not-imported"
    assert "file present, not imported" in cells
    assert "ws-m2 alice" not in rows  # store: file is never judged by receipts


def test_inventory_without_a_state_fails_instead_of_listing_nothing(
    cli: Runner, tmp_path: Path
) -> None:
    """A wrong --state-dir must not hand a distribution engine an empty inventory."""
    path = written(tmp_path)
    done = cli("inventory", "--json", path, "--state-dir", tmp_path / "elsewhere")
    assert done.returncode == 1
    assert f"{tmp_path / 'elsewhere'}: no state there, so no inventory" in done.stderr, done.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_a_receipt_is_an_observation_and_says_when_it_was_made(cli: Runner, tmp_path: Path) -> None:
    """Issue 28: a receipt records what the role's last run observed in each store (the key
    installed, its import failed, the store unreadable) and when. status shows the outcome and
    its age; check reads a failed import of a bound key near its opening as CRITICAL, and a
    receipt older than --receipt-max-age (7 days) as "not observed since"."""
    from tests.conftest import TEST_CLOCK

    path = written(tmp_path)
    assert cli("apply", "--auto-approve", path).returncode == 0
    copy = json.loads(cli("inventory", "--json", path).stdout)["hosts"]["ws-m1"]["copies"][0]
    receipt = tmp_path / "out" / "ws-m1" / "commune-exemple.g1.receipt.json"
    schema = json.loads((REPO / "schemas" / "receipt.schema.json").read_text())

    def leave(alice: dict[str, object]) -> None:
        document = {
            "format_version": 2,
            "entity": "commune-exemple",
            "generation": 1,
            "thumbprint_sha1": copy["thumbprint_sha1"],
            "cert_sha256": copy["cert_sha256"],
            "stores": [
                {"user": "alice", "store": "nss:/srv/nss/alice"} | alice,
                {
                    "user": "bob",
                    "store": "nss:/srv/nss/bob",
                    "outcome": "installed",
                    "private_key": True,
                    "installed_at": day(-1),
                    "observed_at": day(-1),
                },
            ],
        }
        jsonschema.validate(document, schema)
        receipt.write_text(json.dumps(document))

    def day(offset: int) -> str:
        return (TEST_CLOCK + dt.timedelta(days=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def installed(observed: int) -> dict[str, object]:
        """alice's entry: installed 20 days ago, last observed `observed` days from now."""
        return {
            "outcome": "installed",
            "private_key": True,
            "installed_at": day(-20),
            "observed_at": day(observed),
        }

    def store(user: str, *args: str) -> tuple[str, str]:
        done = cli("status", "--json", path, *args)
        assert done.returncode == 0, done.stderr
        (found,) = [
            (s["state"], s["detail"])
            for s in json.loads(done.stdout)["stores"]
            if s["target"] == "ws-m1" and s["user"] == user
        ]
        return found

    def findings(*args: str) -> tuple[int, list[tuple[str, str, str]]]:
        done = cli("check", "--json", *args, path)
        return done.returncode, [
            (f["severity"], f["code"], f["message"])
            for f in json.loads(done.stdout)["findings"]
            if "ws-m1 [alice]" in f["message"]
        ]

    # Observed yesterday: installed, and the line says when the role looked.
    leave(installed(observed=-1))
    state, detail = store("alice")
    assert state == "installed"
    assert "since 2026-11-10 09:00" in detail and "observed 2026-11-29 09:00 (1 day ago)" in detail
    assert findings()[1] == []

    # Observed 8 days ago: it proves nothing any more.
    leave(installed(observed=-8))
    state, detail = store("alice")
    assert state == "not-observed"
    assert "not observed since 2026-11-22 09:00" in detail
    code, found = findings()
    assert [(s, c) for s, c, _ in found] == [("WARNING", "store-not-observed")]
    assert "run the agent_stores role to look again" in found[0][2]
    assert findings("--receipt-max-age", "10")[1] == []  # the operator's window

    # The last run found it absent and could not import it: the reason, never "in the store".
    leave(
        {
            "outcome": "import-failed",
            "private_key": False,
            "observed_at": day(0),
            "detail": "pk12util: SEC_ERROR_BAD_PASSWORD",
        }
    )
    state, detail = store("alice")
    assert state == "import-failed"
    assert "import failed" in detail and "SEC_ERROR_BAD_PASSWORD" in detail
    assert "in the store" not in detail
    assert [(s, c) for s, c, _ in findings()[1]] == [("WARNING", "not-in-store")]
    leave({"outcome": "unreadable", "private_key": False, "observed_at": day(0), "detail": "x"})
    assert store("alice")[0] == "store-unreadable"

    # Bound to a consultation opening in 10 days: a failed import, or a receipt too old, is
    # CRITICAL (the agent may not open those bids).
    listed = tmp_path / "consultations.yaml"
    listed.write_text(
        "version: 1\nconsultations:\n  - {reference: AO-9, entity: commune-exemple, "
        f"designation: Commune Exemple, status: open, deadline: '{day(8)}', "
        f"opening: '{day(10)}'}}\n"
    )
    assert cli("apply", "--auto-approve", "--consultations", listed, path).returncode == 0
    leave(
        {
            "outcome": "import-failed",
            "private_key": False,
            "observed_at": day(0),
            "detail": "pk12util: SEC_ERROR_BAD_PASSWORD",
        }
    )
    code, found = findings("--consultations", str(listed))
    assert code == 2
    assert [(s, c) for s, c, _ in found] == [("CRITICAL", "bound-not-in-store")]
    assert "AO-9" in found[0][2]
    leave(installed(observed=-8))
    code, found = findings("--consultations", str(listed))
    assert (code, [(s, c) for s, c, _ in found]) == (2, [("CRITICAL", "store-not-observed")])
    assert "AO-9" in found[0][2]
