"""Invariant 6, a saved plan as the reviewer and the operator see it: `apply PLAN` does what the
plan says, with the state folder, the entities (--limit) and the consultations file it was made
with, or refuses it as stale saying why; a plan with nothing to do does nothing; an unreachable
target makes it partial (exit 4), as an apply of the manifest; it waits for the lock when told,
says so when it replaced a dead holder's lock, observes with --parallel, reports progress."""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from provisioner.flows import apply as apply_run
from provisioner.state import lock
from tests.conftest import Runner
from tests.engine_helpers import record_workers, state_rows

CONSULTATION = (
    "version: 1\nconsultations:\n  - reference: C-1\n    entity: commune-exemple\n"
    "    designation: Commune Exemple\n    status: open\n"
)


def applied(cli: Runner, manifest: Path, *args: str) -> Path:
    done = cli("apply", "--auto-approve", *args, manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    return manifest.parent / "demo-out"


def saved(cli: Runner, manifest: Path, plan: Path, *args: str, code: int = 0) -> Path:
    done = cli("plan", "--out", plan, *args, manifest)
    assert done.returncode == code, done.stdout + done.stderr
    return plan


def test_a_saved_plan_keeps_its_state_folder_entities_and_consultations(
    cli: Runner, quickstart: Path
) -> None:
    folder = quickstart.parent
    state = folder / "state"
    out = applied(cli, quickstart, "--state-dir", str(state))
    marches = out / "workstations" / "ws-marches"
    for copy in marches.iterdir():
        copy.unlink()
    (folder / "c.yaml").write_text(CONSULTATION)
    plan = saved(
        cli,
        quickstart,
        folder / "p.plan",
        "--state-dir",
        str(state),
        "--limit",
        "commune-exemple",
        "--consultations",
        str(folder / "c.yaml"),
    )
    done = cli("apply", plan)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Apply complete: 2 actions done." in done.stdout
    assert sorted(p.name for p in marches.iterdir()) == ["commune-exemple.g1.p12"]
    assert not (folder / ".provisioner").exists()
    status = cli("status", "--state-dir", str(state), quickstart)
    assert 'open     commune-exemple C-1 -> g1 "Commune Exemple"' in status.stdout


@pytest.fixture
def site(quickstart: Path) -> Path:
    """The quickstart with one entity (one key to make): commune-exemple, on backup-share,
    ws-accueil and ws-marches."""
    text = quickstart.read_text()
    quickstart.write_text(text[: text.index("  - id: syndicat-eaux")])
    return quickstart


def refused(cli: Runner, plan: Path, why: str) -> None:
    done = cli("apply", plan)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == f"Error: stale plan {plan}: {why}\n"


def test_a_plan_is_stale_once_a_copy_changed(cli: Runner, site: Path, tmp_path: Path) -> None:
    out = applied(cli, site)
    plan = saved(cli, site, tmp_path / "p.plan")
    (out / "workstations" / "ws-accueil" / "commune-exemple.g1.p12").unlink()
    refused(cli, plan, "files on the targets changed since the plan was made; make a new plan")


def test_a_plan_is_stale_once_a_secret_changed(cli: Runner, site: Path, tmp_path: Path) -> None:
    applied(cli, site)
    plan = saved(cli, site, tmp_path / "p.plan")
    (site.parent / "secrets" / "commune-exemple.pass").write_text("Another-Secret-99!\n")
    refused(
        cli,
        plan,
        "the manifest, a file it references or a secret changed since the plan was made; "
        "make a new plan",
    )


def test_a_plan_is_stale_once_another_apply_changed_the_state(
    cli: Runner, site: Path, tmp_path: Path
) -> None:
    """Reviewed on Monday, applied on Tuesday after the scheduled job ran: refused, naming
    the state's serial then and now, before anything is observed or written."""
    out = applied(cli, site)
    copy = out / "workstations" / "ws-accueil" / "commune-exemple.g1.p12"
    copy.unlink()
    plan = saved(cli, site, tmp_path / "p.plan")
    then = json.loads(plan.read_text())["serial"]
    applied(cli, site)  # the scheduled job repairs the copy meanwhile
    [(now,)] = state_rows(site, "SELECT value FROM meta WHERE key = 'serial'")
    assert int(now) > then
    written = copy.read_bytes()
    refused(
        cli,
        plan,
        f"the state changed since the plan was made (serial {then}, now {now}); make a new plan",
    )
    assert copy.read_bytes() == written


def test_an_edited_plan_is_refused(cli: Runner, site: Path, tmp_path: Path) -> None:
    out = applied(cli, site)
    (out / "workstations" / "ws-accueil" / "commune-exemple.g1.p12").unlink()
    plan = saved(cli, site, tmp_path / "p.plan")
    document = json.loads(plan.read_text())
    assert [a["kind"] for a in document["plan"]["actions"]] == ["write-copy"]
    document["plan"]["actions"] = []  # "only the harmless part"
    plan.write_text(json.dumps(document))
    refused(cli, plan, "the plan no longer matches; make a new plan")


def test_a_plan_made_for_another_state_is_refused(cli: Runner, site: Path, tmp_path: Path) -> None:
    folder = site.parent
    other = tmp_path / "other-site"  # the same site, applied apart: another state
    shutil.copytree(folder, other)
    applied(cli, site)
    applied(cli, other / site.name)
    plan = saved(cli, site, tmp_path / "p.plan")
    ours = json.loads(plan.read_text())["lineage"]
    [(theirs,)] = state_rows(other / site.name, "SELECT value FROM meta WHERE key = 'lineage'")
    assert theirs != ours
    shutil.rmtree(folder / ".provisioner")  # a backup of another site's state restored here
    shutil.copytree(other / ".provisioner", folder / ".provisioner")
    refused(cli, plan, f"it was made for another state (lineage {ours}, this state is {theirs})")


def test_a_saved_plan_with_nothing_to_do_and_a_target_unreached_is_partial(
    cli: Runner, site: Path, tmp_path: Path
) -> None:
    out = applied(cli, site)
    accueil = out / "workstations" / "ws-accueil"
    accueil.rename(tmp_path / "moved")
    accueil.symlink_to(tmp_path / "moved")  # an unusable target folder: ws-accueil unreached
    plan = saved(cli, site, tmp_path / "p.plan", code=4)
    done = cli("apply", plan)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "Apply" not in done.stdout, "nothing to do: nothing is run"


def test_a_saved_plan_done_where_a_target_is_unreached_is_partial(
    cli: Runner, site: Path, tmp_path: Path
) -> None:
    out = applied(cli, site)
    accueil = out / "workstations" / "ws-accueil"
    accueil.rename(tmp_path / "moved")
    accueil.symlink_to(tmp_path / "moved")
    (out / "workstations" / "ws-marches" / "commune-exemple.g1.p12").unlink()
    plan = saved(cli, site, tmp_path / "p.plan", code=4)
    done = cli("apply", plan)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "Apply incomplete: 1 action done; 1 target could not be observed," in done.stdout
    assert (out / "workstations" / "ws-marches" / "commune-exemple.g1.p12").is_file()


def test_a_saved_plan_waits_for_the_lock_when_told(
    cli: Runner, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = applied(cli, site) / "workstations" / "ws-marches" / "commune-exemple.g1.p12"
    copy.unlink()
    plan = saved(cli, site, tmp_path / "p.plan")
    held = os.open(site.parent / ".provisioner" / "lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # another apply, which ends once this one waits for it
    waits: list[float] = []
    sleep = time.sleep

    def waiting(seconds: float) -> None:
        if not waits:
            fcntl.flock(held, fcntl.LOCK_UN)
        waits.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(lock.time, "sleep", waiting)
    try:
        _, run = apply_run.apply_saved(plan, lock_timeout=30, parallel=1)
    finally:
        os.close(held)
    assert waits, "it waited for the other apply"
    assert run.result is not None and run.result.succeeded == 1
    assert copy.is_file()


def test_a_saved_plan_says_it_replaced_the_lock_of_a_dead_apply(
    cli: Runner, site: Path, tmp_path: Path
) -> None:
    copy = applied(cli, site) / "workstations" / "ws-marches" / "commune-exemple.g1.p12"
    copy.unlink()
    plan = saved(cli, site, tmp_path / "p.plan")
    holder = {"pid": 4242, "actor": "ops@host", "command": "apply", "started": "2026-11-30T08:00Z"}
    note = (
        "Note: replaced the stale lock of pid 4242 (ops@host), running `apply` since "
        "2026-11-30T08:00Z, which is no longer running\n"
    )
    for name in ("nothing.plan", None):  # a plan with work, then one with nothing to do
        (site.parent / ".provisioner" / "lock").write_text(json.dumps(holder))  # a killed apply's
        done = cli("apply", plan)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == note
        assert copy.is_file()
        if name:
            plan = saved(cli, site, tmp_path / name)


def test_a_saved_plan_observes_with_the_parallelism_given_and_reports_progress(
    cli: Runner, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = applied(cli, site)
    (out / "workstations" / "ws-marches" / "commune-exemple.g1.p12").unlink()
    plan = saved(cli, site, tmp_path / "p.plan")
    workers = record_workers(monkeypatch, "provisioner.engine.observe", "provisioner.apply.copies")
    pools = importlib.import_module("provisioner.transports")
    opened: list[object] = []
    real_init = pools.TransportPool.__init__

    def counted(self: object, *args: object, **kwargs: object) -> None:
        opened.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(pools.TransportPool, "__init__", counted)
    phases: list[tuple[str, int, int]] = []
    _, run = apply_run.apply_saved(
        plan, lock_timeout=0, parallel=1, progress=lambda *p: phases.append(p)
    )
    assert run.result is not None and run.result.succeeded == 1
    assert workers and set(workers) == {1}, "--parallel 1: one host observed, one written at a time"
    assert len(workers) == 2, "the observation's pool and the writers'"
    assert len(opened) == 1, "one connection per target for the whole run: the session's"
    assert ("writing copies", 1, 1) in phases


def test_a_plan_made_on_the_backend_given_on_the_command_line_applies_there(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The manifest keeps the team's state in PostgreSQL; an operator works on a SQLite state
    (`--state-backend sqlite`, e.g. after `state migrate --to sqlite` during an outage). The
    plan saved there is applied there, without the option again: never to the manifest's
    backend, which this run cannot even reach."""
    text = quickstart.read_text()
    block = "state: {backend: postgresql, dsn: {env: TEAM_DSN}, schema: provisioner}\n"
    quickstart.write_text(text.replace("version: 1\n", "version: 1\n" + block, 1))
    plan = saved(cli, quickstart, tmp_path / "p.plan", "--state-backend", "sqlite")
    done = cli("apply", plan)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Apply complete: 7 actions done." in done.stdout
    db = sqlite3.connect(quickstart.parent / ".provisioner" / "state.db")
    try:
        assert db.execute("SELECT count(*) FROM generations").fetchall() == [(2,)]
    finally:
        db.close()
