"""A team's state in PostgreSQL (issue 29), against a real server (tests/pgserver.py): the
invariants enforced by the database, the advisory lock scoped to the project's schema and its
refusal naming the holder, two administrators and the scheduled job racing, an apply killed
or its server stopped mid-apply, read-only grants for the probe, the DSN's password kept out
of everything, and `state migrate` both ways. Every test runs the real command line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest

from provisioner import clock
from provisioner.apply.executor import Executor
from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from provisioner.engine import load_inputs, make_plan, observe, open_state
from provisioner.errors import StateError
from provisioner.state.escrow import Escrow
from provisioner.state.pg_lock import lock_key
from provisioner.state.store import hold
from tests.conftest import REPO, TEST_CLOCK, Runner, use_postgresql
from tests.engine_helpers import (
    ESCROW_PASSPHRASE,
    PASSWORDS,
    escrow_of,
    escrowed_keys,
    p12_files,
    postgresql_of,
    state_rows,
)
from tests.manifests import Manifest
from tests.pgserver import OWNER_PASSWORD, PROBE, PgServer

CONSULTATIONS = (
    "reference;title;entity;designation;status;deadline;opening\n"
    "2027-TX-001;Voirie;commune-exemple;Commune Exemple;open;15/03/2027 12:00;20/03/2027\n"
)


@pytest.fixture
def state_backend() -> str:
    """Every manifest of this module keeps its state in PostgreSQL (tests/conftest.py)."""
    return "postgresql"


def schema_of(manifest: Path) -> str:
    found = postgresql_of(manifest)
    assert found is not None
    return found[1]


def owner(manifest: Path) -> psycopg.Connection[Any]:
    """A session as the project's owner role, on its schema (what an administrator with psql
    could do)."""
    found = postgresql_of(manifest)
    assert found is not None
    conn = psycopg.connect(found[0], autocommit=True)
    conn.execute(f'SET search_path TO "{found[1]}"'.encode())
    return conn


def refused(conn: psycopg.Connection[Any], statement: str, *args: object) -> str:
    """The database's refusal of `statement` (it must refuse)."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement.encode(), args or None)
    return str(caught.value)


# ---------------------------------------------------------------- invariants in the database


def test_the_database_enforces_the_states_invariants(cli: Runner, quickstart: Path) -> None:
    """What the SQLite triggers refuse, the PostgreSQL schema refuses too, against any client
    with the owner's grants (not only this tool): the audit is append-only, a binding is
    definitive and names its generation by certificate, consultations and designations are
    kept, an escrowed key is never deleted, an entity has one current generation, a sealed
    blob is bounded."""
    (quickstart.parent / "c.csv").write_text(CONSULTATIONS)
    done = cli(
        "apply", "--auto-approve", "--consultations", quickstart.parent / "c.csv", quickstart
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with contextlib.closing(owner(quickstart)) as conn:
        assert "append-only" in refused(conn, "UPDATE audit SET actor = 'someone else'")
        assert "append-only" in refused(conn, "DELETE FROM audit")
        assert "append-only" in refused(conn, "TRUNCATE audit")
        assert "definitive" in refused(conn, "UPDATE consultations SET key_ref = 'designation:x'")
        assert "definitive" in refused(conn, "UPDATE consultations SET entity = 'syndicat-eaux'")
        assert "never deleted" in refused(conn, "DELETE FROM consultations")
        assert "designation history is kept" in refused(conn, "DELETE FROM designations")
        assert "escrowed keys are never deleted" in refused(
            conn, "DELETE FROM escrow WHERE name LIKE '%.key'"
        )
        assert "escrowed keys are never deleted" in refused(conn, "TRUNCATE escrow")
        other = conn.execute("SELECT id FROM generations WHERE entity = 'syndicat-eaux'").fetchone()
        assert other is not None
        assert "by certificate" in refused(
            conn,
            "INSERT INTO consultations (reference, entity, key_ref, generation, title, status,"
            " bound_at, cert_sha256) VALUES ('X-1', 'syndicat-eaux', 'designation:y', %s, 't',"
            " 'open', '2026-11-30T09:00:00Z', 'not its certificate')",
            other[0],
        )
        assert "one_current" in refused(
            conn,
            "INSERT INTO generations SELECT id || '-twin', entity, number + 1, designation,"
            " common_name, issuer, key_size, subject, certificate, chain, cert_sha256,"
            " key_sha256, chain_sha256, not_before, not_after, status, origin, created_at,"
            " retired_at FROM generations WHERE entity = 'commune-exemple'",
        )
        assert "escrow_data_check" in refused(
            conn,
            "INSERT INTO escrow (name, data) VALUES ('f.key', %s)",
            b"x" * (64 * 1024 + 1),
        )
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(1,)], "the migrations applied are recorded, one per version"
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0


def test_a_state_of_a_newer_schema_is_refused(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    with contextlib.closing(owner(quickstart)) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, '2031-01-01T00:00:00Z')")
    done = cli("plan", quickstart)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "written by a newer provisioner (schema version 99" in done.stderr


# ---------------------------------------------------------------- the escrow seam


def test_the_escrow_in_the_database_is_the_escrow_folder_byte_for_byte(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The escrow's blobs are the files an escrow folder holds (same format, same associated
    data): copied out, they open as a folder with the passphrase; every check the escrow
    makes holds in the database too."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    folder = tmp_path / "escrow-out"
    folder.mkdir()
    for name, data in state_rows(quickstart, "SELECT name, data FROM escrow"):
        (folder / name).write_bytes(data)
    recorded = {k for (k,) in state_rows(quickstart, "SELECT key_sha256 FROM generations")}
    from_files = Escrow.unlock(folder, ESCROW_PASSPHRASE)
    from_database = Escrow.unlock(escrow_of(quickstart), ESCROW_PASSPHRASE)
    for key in recorded:
        assert from_files.read(key).authenticated and from_database.read(key).authenticated
        assert public_key_fingerprint(from_database.get(key)) == key
    with pytest.raises(StateError, match="wrong escrow passphrase"):
        Escrow.unlock(escrow_of(quickstart), "not the passphrase at all")
    # An entity field altered in the database: the AEAD tag refuses it, as for a file.
    key = sorted(recorded)[0]
    with contextlib.closing(owner(quickstart)) as conn:
        row = conn.execute("SELECT data FROM escrow WHERE name = %s", (f"{key}.key",)).fetchone()
        assert row is not None
        record = json.loads(bytes(row[0]))
        record["entity"] = "intrus"
        conn.execute(
            "UPDATE escrow SET data = %s WHERE name = %s",
            (json.dumps(record).encode(), f"{key}.key"),
        )
        found = conn.execute("SELECT data FROM escrow WHERE name = 'keyring.json'").fetchone()
        assert found is not None
        ring = json.loads(bytes(found[0]))
        ring["n"] = 2**30  # a hostile keyring asking scrypt for a terabyte
        conn.execute(
            "UPDATE escrow SET data = %s WHERE name = 'keyring.json'", (json.dumps(ring).encode(),)
        )
    assert not Escrow(escrow_of(quickstart), from_database._data_key).intact(key)
    with pytest.raises(StateError, match=r"scrypt parameters .* are out of bounds"):
        Escrow.unlock(escrow_of(quickstart), ESCROW_PASSPHRASE)


class FailingBlobsEscrow(Escrow):
    """An escrow whose database refuses the write (the server gone, a full disk)."""

    def put(self, key: object, entity: str, serial: int | None = None) -> str:  # type: ignore[override]
        raise StateError("the database refused the write")


def test_escrow_first_nothing_is_recorded_or_distributed_when_the_seal_fails(
    quickstart: Path,
) -> None:
    """Invariant 1 on PostgreSQL: a key whose seal did not commit is neither recorded nor
    written anywhere."""
    with open_state(load_inputs(quickstart, None), create=True) as session:
        assert session.db is not None and session.escrow is not None
        plan = make_plan(session, observe(session), clock.now())
        failing = FailingBlobsEscrow(session.escrow.folder, session.escrow._data_key)
        result = Executor(
            desired=session.desired(),
            recorded=session.recorded,
            db=session.db,
            escrow=failing,
            passwords=session.passwords,
            plan=plan,
            now=clock.now(),
            parallel=8,
            pool=session.pool,
            issuers={},
        ).run()
    made = [o for o in result.failures if o.action.kind == "create-generation"]
    assert len(made) == 2 and all("refused the write" in (o.error or "") for o in made)
    assert state_rows(quickstart, "SELECT * FROM generations") == []
    assert p12_files(quickstart) == {} if (quickstart.parent / "demo-out").exists() else True


# ---------------------------------------------------------------- the lock


def holder_process(manifest: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process (another administrator) holding the project's lock for `seconds`."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from provisioner.engine import load_inputs\n"
        "from provisioner.state.store import hold\n"
        "with hold(load_inputs(Path(sys.argv[1]), None).location, 'apply'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(float(sys.argv[2]))\n"
    )
    env = {**os.environ, "PROVISIONER_NOW": TEST_CLOCK.isoformat()}
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(manifest), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_the_lock_names_its_holder_and_blocks_only_its_own_project(
    cli: Runner, quickstart: Path, tmp_path: Path, pg_server: PgServer
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(REPO / "examples" / "quickstart.yaml", other / "quickstart.yaml")
    shutil.copytree(REPO / "examples" / "secrets", other / "secrets")
    second = pg_server.new_schema()
    use_postgresql(other / "quickstart.yaml", pg_server, second)
    try:
        assert lock_key(schema_of(quickstart)) != lock_key(second)
        holder = holder_process(quickstart, 60)
        try:
            refused_run = cli("apply", "--auto-approve", quickstart)
            assert refused_run.returncode == 1
            assert f"is locked by pid {holder.pid} (" in refused_run.stderr
            assert "running `apply` since 2026-11-30T09:00:00Z" in refused_run.stderr
            assert f"schema {schema_of(quickstart)}" in refused_run.stderr
            waited = cli("apply", "--auto-approve", "--lock-timeout", "0.5", quickstart)
            assert waited.returncode == 1 and "is locked by pid" in waited.stderr
            # Another project in the same database is not blocked.
            elsewhere = cli("apply", "--auto-approve", other / "quickstart.yaml")
            assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr
            # Readers take no lock.
            assert cli("plan", quickstart).returncode == 0
        finally:
            holder.kill()
            holder.wait()
    finally:
        pg_server.drop_schema(second)


def test_a_crashed_holders_lock_falls_away_with_its_connection(
    cli: Runner, quickstart: Path
) -> None:
    holder = holder_process(quickstart, 600)
    holder.send_signal(signal.SIGKILL)  # kill -9: no cleanup at all
    holder.wait()
    deadline = time.monotonic() + 30
    done = cli("apply", "--auto-approve", quickstart)
    while done.returncode != 0 and "is locked by" in done.stderr and time.monotonic() < deadline:
        time.sleep(0.2)  # the server notices the closed socket at once; allow it a moment
        done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"replaced the stale lock of pid {holder.pid}" in done.stderr + done.stdout


def team_manifest(folder: Path, shared: Path, entities: int) -> Path:
    m = Manifest().location("nas", path=shared / "nas").workstation("ws", path=shared / "ws")
    for i in range(entities):
        m.entity(f"e{i}", name=f"E{i}", shared_locations=["nas"], workstations=["ws"])
    folder.mkdir(parents=True)
    return m.write(folder / "m.yaml")


TEAM_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")},
    "PROVISIONER_NOW": TEST_CLOCK.isoformat(),
    "ESCROW": "Team-Escrow-Passphrase-1",
    "PW": "Team-Password-2026!",
}


def start(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", *map(str, args)],
        env={**TEAM_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def team(tmp_path: Path, pg_server: PgServer) -> Iterator[list[Path]]:
    """Two administrators' checkouts and the scheduled job's, on three "machines" (three
    folders), one manifest, one PostgreSQL schema, the same shared targets."""
    schema = pg_server.new_schema()
    manifests = []
    for who in ("alice", "bob", "job"):
        m = team_manifest(tmp_path / who, tmp_path / "targets", 30)
        use_postgresql(m, pg_server, schema)
        manifests.append(m)
    yield manifests
    pg_server.drop_schema(schema)


def lock_taken(manifest: Path, process: subprocess.Popen[str]) -> None:
    """Wait until `process` holds the project's lock (its holder record is written)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error), contextlib.closing(owner(manifest)) as conn:
            row = conn.execute("SELECT holder FROM lock_holder").fetchone()
            if row is not None and json.loads(row[0])["pid"] == process.pid:
                return
        assert process.poll() is None, "the apply ended before taking the lock"
        time.sleep(0.02)
    raise AssertionError("the apply never took the lock")


def test_two_administrators_and_the_scheduled_job_race(cli: Runner, team: list[Path]) -> None:
    """One writes; the second administrator and the job (no --lock-timeout) are refused with
    the holder named and write nothing; the job run again with --lock-timeout waits, then has
    nothing to do; every key is escrowed and recorded once, every copy opens."""
    alice, bob, job = team
    first = start("apply", "--auto-approve", alice)
    lock_taken(alice, first)
    racing = [start("apply", "--auto-approve", bob), start("apply", "--auto-approve", "-q", job)]
    outcomes = [(p.returncode, *p.communicate(timeout=120)) for p in racing]
    waiting = start("apply", "--auto-approve", "-q", "--lock-timeout", "300", job)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    for process, (_, stdout, stderr) in zip(racing, outcomes, strict=True):
        assert process.returncode == 1, stdout + stderr
        assert f"is locked by pid {first.pid} (" in stderr and "running `apply`" in stderr
        assert "Traceback" not in stderr
    w_out, w_err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, w_out + w_err
    assert "0 to create" in w_out or "No changes" in w_out, w_out
    for manifest in team:
        again = cli("plan", "--detailed-exitcode", manifest, env=TEAM_ENV)
        assert again.returncode == 0, again.stdout + again.stderr
    recorded = {k for (k,) in state_rows(alice, "SELECT key_sha256 FROM generations")}
    assert len(recorded) == 30 and set(escrowed_keys(alice)) == recorded, "one key each"
    copies = sorted((alice.parent.parent / "targets").rglob("*.p12"))
    assert len(copies) == 60
    for copy in copies:
        bundle = pkcs12.decode(copy.read_bytes(), TEAM_ENV["PW"])
        assert public_key_fingerprint(bundle.key) in recorded


# ---------------------------------------------------------------- crashes and lost servers


def test_an_apply_killed_mid_transaction_records_nothing_half(
    cli: Runner, quickstart: Path
) -> None:
    """kill -9 between the last statement of the first generation's transaction and its
    COMMIT: the key is sealed (escrow first), the generation is not recorded, the serial has
    not moved; the next apply converges around it."""
    killed = cli(
        "apply", "--auto-approve", quickstart, env={"PROVISIONER_FAULT_INJECT": "mid-commit"}
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert state_rows(quickstart, "SELECT * FROM generations") == []
    assert state_rows(quickstart, "SELECT value FROM meta WHERE key = 'serial'") == [("0",)]
    assert len(escrowed_keys(quickstart)) == 1, "the key was sealed before anything else"
    assert p12_files(quickstart) == {} if (quickstart.parent / "demo-out").exists() else True
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0
    recorded = {k for (k,) in state_rows(quickstart, "SELECT key_sha256 FROM generations")}
    assert len(recorded) == 2 and recorded <= set(escrowed_keys(quickstart))


def test_the_server_stopped_mid_apply_loses_nothing(
    cli: Runner, tmp_path: Path, pg_server: PgServer
) -> None:
    """The database goes away while an apply writes (a fast shutdown cuts every session):
    the apply stops with a message, not a traceback; what it recorded is whole; once the
    server is back the next apply converges, every recorded key is escrowed and every copy
    holds one of them."""
    schema = pg_server.new_schema()
    manifest = team_manifest(tmp_path / "admin", tmp_path / "targets", 40)
    use_postgresql(manifest, pg_server, schema)
    try:
        running = start("apply", "--auto-approve", manifest)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error):
                if len(state_rows(manifest, "SELECT id FROM generations")) >= 3:
                    break
            assert running.poll() is None, running.communicate()
            time.sleep(0.05)
        pg_server.stop(signal.SIGINT)
        try:
            out, err = running.communicate(timeout=180)
        finally:
            pg_server.start()
        assert running.returncode == 1, out + err
        assert "Traceback" not in err and "Internal error" not in err, err
        assert "the connection to the database was lost" in err, err
        done = cli("apply", "--auto-approve", manifest, env=TEAM_ENV)
        assert done.returncode == 0, done.stdout + done.stderr
        assert cli("plan", "--detailed-exitcode", manifest, env=TEAM_ENV).returncode == 0
        recorded = {k for (k,) in state_rows(manifest, "SELECT key_sha256 FROM generations")}
        assert len(recorded) == 40 and recorded <= set(escrowed_keys(manifest))
        for copy in (tmp_path / "targets").rglob("*.p12"):
            bundle = pkcs12.decode(copy.read_bytes(), TEAM_ENV["PW"])
            assert public_key_fingerprint(bundle.key) in recorded, copy
    finally:
        if pg_server.process is None:
            pg_server.start()
        pg_server.drop_schema(schema)


# ---------------------------------------------------------------- grants and secrets


def test_read_only_grants_are_enough_for_the_probe_and_the_readers(
    cli: Runner, quickstart: Path, pg_server: PgServer
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    pg_server.grant_probe(schema_of(quickstart))
    probe = {"PROVISIONER_STATE_DSN": pg_server.dsn(PROBE)}
    before = state_rows(quickstart, "SELECT value FROM meta WHERE key = 'serial'")
    checked = cli("check", quickstart, env=probe)
    assert checked.returncode == 0 and checked.stdout.startswith("PROVISIONER OK"), checked.stdout
    for command in (("plan", "--detailed-exitcode"), ("status",), ("rehearse",), ("audit",)):
        done = cli(*command, quickstart, env=probe)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    inventory = cli("inventory", "--json", quickstart, env=probe)
    assert inventory.returncode == 0 and PROBE in json.loads(inventory.stdout)["state_dir"]
    writer = cli("apply", "--auto-approve", quickstart, env=probe)
    assert writer.returncode == 1 and "permission denied" in writer.stderr
    assert "grants" in writer.stderr and "Traceback" not in writer.stderr
    assert state_rows(quickstart, "SELECT value FROM meta WHERE key = 'serial'") == before


def test_a_lost_escrow_passphrase_is_recovered_as_docs_team_says(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The escrow passphrase lost for good: the refusal names docs/TEAM.md's procedure; its
    SQL (the sealed keys deleted by the table's owner, the trigger that keeps them disabled
    in that one transaction) then `recover` rebuild the escrow from the copies under a new
    passphrase, the state kept."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    schema = schema_of(quickstart)
    generations = state_rows(quickstart, "SELECT id FROM generations")
    new = tmp_path / "new-escrow.pass"
    new.write_text("Another-Escrow-Passphrase-2027\n")
    text = quickstart.read_text().replace("{file: secrets/escrow.pass}", f"{{file: {new}}}")
    quickstart.write_text(text)
    lost = cli("plan", quickstart)
    assert lost.returncode == 1 and "wrong escrow passphrase" in lost.stderr, lost.stderr
    assert f"keep a pg_dump of schema {schema} and empty its escrow table" in lost.stderr
    assert 'docs/TEAM.md, "A lost escrow passphrase"' in lost.stderr
    page = (REPO / "docs" / "TEAM.md").read_text().split("## A lost escrow passphrase", 1)[1]
    (script,) = re.findall(r"```sql\n(.*?)```", page.split("\n## ", 1)[0], flags=re.S)
    with contextlib.closing(owner(quickstart)) as conn:
        conn.execute(script.replace("bicles_region", schema).encode())
    assert escrowed_keys(quickstart) == []
    recovered = cli("recover", "--auto-approve", quickstart)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert cli("plan", "--detailed-exitcode", quickstart).returncode == 0
    assert state_rows(quickstart, "SELECT id FROM generations") == generations
    assert len(escrowed_keys(quickstart)) == len(generations)
    assert cli("rehearse", quickstart).returncode == 0


def test_the_dsn_password_never_appears(
    cli: Runner, quickstart: Path, tmp_path: Path, pg_server: PgServer
) -> None:
    """Invariant 4 for the state's own secret: the DSN's password is in no output (success
    or failure, human or JSON), plan file, state row, audit record or escrow blob, nor in the
    environment of a hook, even when the DSN comes from an environment variable."""
    schema = schema_of(quickstart)
    dump = tmp_path / "hook-env.json"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import json, os, sys\nsys.stdin.read()\n"
        f"open({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))\n"
    )
    text = quickstart.read_text().replace("dsn: {file: secrets/pg.dsn}", "dsn: {env: TEAM_DSN}")
    text += f"hooks:\n  renewed: [[{sys.executable}, {hook}]]\n"
    quickstart.write_text(text)
    env = {"TEAM_DSN": pg_server.dsn()}
    outputs = [
        cli("validate", quickstart, env=env),
        cli("plan", "--out", tmp_path / "p.plan", quickstart, env=env),
        cli("apply", "--auto-approve", "--json", quickstart, env=env),
        cli("status", "--json", quickstart, env=env),
        cli("check", "--json", quickstart, env=env),
        cli("audit", "--json", quickstart, env=env),
        cli("inventory", "--json", quickstart, env=env),
        cli("plan", "-v", quickstart, env=env),
    ]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    wrong = pg_server.dsn(password="Wrong-Secret-Pw-77")
    outputs += [
        cli("plan", quickstart, env={"TEAM_DSN": wrong}),
        cli("apply", "--auto-approve", "--json", quickstart, env={"TEAM_DSN": wrong}),
        cli("check", quickstart, env={"TEAM_DSN": wrong.replace(str(pg_server.port), "1")}),
    ]
    assert outputs[-3].returncode == 1 and "password authentication failed" in outputs[-3].stderr
    secrets = [OWNER_PASSWORD, "Wrong-Secret-Pw-77"]
    texts = [o.stdout + o.stderr for o in outputs]
    texts.append((tmp_path / "p.plan").read_text())
    for table in ("meta", "generations", "copies", "targets", "audit", "consultations",
                  "designations", "escrow", "lock_holder", "schema_migrations"):  # fmt: skip
        texts.append(repr(pg_server.sql(f'SELECT * FROM "{schema}".{table}')))
    texts.append((pg_server.base / "server.log").read_text(errors="replace"))
    texts.append(dump.read_text())
    assert "TEAM_DSN" not in json.loads(dump.read_text()), "the hook got the DSN's variable"
    for secret in secrets:
        assert not [t for t in texts if secret in t], f"{secret[:6]}... appeared"


# ---------------------------------------------------------------- options and migration


def test_the_backend_comes_from_the_option_the_environment_or_the_manifest(
    cli: Runner, quickstart: Path, pg_server: PgServer
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    local = cli("plan", "--state-backend", "sqlite", quickstart)
    assert local.returncode == 1 and "! conflict" in local.stdout, "no SQLite state there"
    assert not (quickstart.parent / ".provisioner").exists(), "plan wrote nothing"
    by_env = cli("plan", quickstart, env={"PROVISIONER_STATE_BACKEND": "sqlite"})
    assert by_env.returncode == 1 and "! conflict" in by_env.stdout
    unknown = cli("plan", "--state-backend", "mysql", quickstart)
    assert unknown.returncode == 1 and "unknown state backend 'mysql'" in unknown.stderr
    # A manifest without `state`: PostgreSQL from the environment alone.
    bare = quickstart.with_name("bare.yaml")
    bare.write_text(
        "\n".join(x for x in quickstart.read_text().splitlines() if not x.startswith("state:"))
        + "\n"
    )
    missing = cli("plan", "--state-backend", "postgresql", bare)
    assert missing.returncode == 1 and "PROVISIONER_STATE_DSN" in missing.stderr
    given = {
        "PROVISIONER_STATE_BACKEND": "postgresql",
        "PROVISIONER_STATE_DSN": pg_server.dsn(),
        "PROVISIONER_STATE_SCHEMA": schema_of(quickstart),
    }
    same = cli("plan", "--detailed-exitcode", bare, env=given)
    assert same.returncode == 0, same.stdout + same.stderr


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_state_migrate_both_ways_copies_and_verifies_leaving_the_source_untouched(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """SQLite -> PostgreSQL -> SQLite: the same serial, lineage, generations (a renewal, a
    retired one), copies, bindings, designations, audit and escrowed keys; plan is a no-op on
    each copy; the source is only read; a lock held or a target in use refuses it."""
    (quickstart.parent / "c.csv").write_text(CONSULTATIONS)
    given = ("--consultations", quickstart.parent / "c.csv")
    renewal = {"PROVISIONER_NOW": "2028-10-15T10:00:00Z"}
    local = ("--state-backend", "sqlite")
    assert cli("apply", "--auto-approve", *local, *given, quickstart).returncode == 0
    assert cli("apply", "--auto-approve", *local, *given, quickstart, env=renewal).returncode == 0
    folder = quickstart.parent / ".provisioner"
    before = digest_tree(folder)
    tables = ("generations", "copies", "consultations", "designations", "targets")

    with hold(load_inputs(quickstart, None).location, "apply"):
        locked = cli("state", "migrate", "--to", "postgresql", quickstart)
    assert locked.returncode == 1 and "is locked by pid" in locked.stderr, locked.stderr

    done = cli("state", "migrate", "--to", "postgresql", "--json", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    jsonschema.validate(
        doc, json.loads((REPO / "schemas" / "state-migrate.schema.json").read_text())
    )
    assert doc["verified"] is True and doc["generations"] == 4 and doc["escrowed_keys"] == 4
    assert doc["consultations"] == 1 and doc["source"] == str(folder)
    assert digest_tree(folder) == before, "the source is only read"
    on_pg = cli("plan", "--detailed-exitcode", *given, quickstart, env=renewal)
    assert on_pg.returncode == 0, on_pg.stdout + on_pg.stderr
    serial = state_rows(quickstart, "SELECT value FROM meta WHERE key = 'serial'")
    assert doc["serial"] == int(serial[0][0])

    again = cli("state", "migrate", "--to", "postgresql", quickstart)
    assert again.returncode == 1 and "never writes over one" in again.stderr

    back_dir = tmp_path / "back"
    back = cli("state", "migrate", "--to", "sqlite", "--state-dir", back_dir, quickstart)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "read back and verified" in back.stdout

    def sqlite_rows(db: Path, table: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return sorted(conn.execute(f"SELECT * FROM {table}"))

    for table in (*tables, "audit"):
        assert sqlite_rows(back_dir / "state.db", table) == sqlite_rows(
            folder / "state.db", table
        ), table
    meta = dict(sqlite_rows(back_dir / "state.db", "meta"))
    original = dict(sqlite_rows(folder / "state.db", "meta"))
    assert meta.pop("home") == str(back_dir.resolve()) and original.pop("home")
    assert meta == original, "the same lineage and serial"
    assert digest_tree(back_dir / "escrow") == digest_tree(folder / "escrow")
    planned = cli("plan", "--detailed-exitcode", "--state-dir", back_dir, "--state-backend",
                  "sqlite", *given, quickstart, env=renewal)  # fmt: skip
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert PASSWORDS["commune-exemple"] not in done.stdout + back.stdout
