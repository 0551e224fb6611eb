"""`provisioner audit`: the append-only audit log, filtered by entity, date and action, as text
or JSON (schemas/audit.schema.json); it reads no secret and writes nothing."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import jsonschema
import pytest

from provisioner.manifest.schema import load_schema
from tests.conftest import Runner

FIRST = "2026-12-01T09:00:00+00:00"
LATER = "2026-12-05T09:00:00+00:00"


@pytest.fixture
def history(cli: Runner, quickstart: Path) -> Path:
    """A first apply on 1 December, a password rotation on 5 December."""
    assert (
        cli("apply", "--auto-approve", "-q", quickstart, env={"PROVISIONER_NOW": FIRST}).returncode
        == 0
    )
    (quickstart.parent / "secrets" / "syndicat-eaux.pass").write_text("Another-Password-2027!\n")
    assert (
        cli("apply", "--auto-approve", "-q", quickstart, env={"PROVISIONER_NOW": LATER}).returncode
        == 0
    )
    return quickstart


def stored(manifest: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(manifest.parent / ".provisioner" / "state.db") as db:
        return db.execute("SELECT action, entity FROM audit ORDER BY id").fetchall()


def digest(manifest: Path) -> str:
    return hashlib.sha256((manifest.parent / ".provisioner" / "state.db").read_bytes()).hexdigest()


def test_audit_lists_every_record_oldest_first(cli: Runner, history: Path) -> None:
    before = digest(history)
    done = cli("audit", history)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    records = stored(history)
    assert len(lines) == len(records) > 5
    assert [line.split("  ")[1:3] for line in lines] == [[a, e or "-"] for a, e in records]
    assert lines[0].startswith("2026-12-01T09:00:00Z  generation-created  commune-exemple  ")
    assert "reason=password-changed" in lines[-1] and lines[-1].startswith("2026-12-05T09:00")
    assert digest(history) == before, "audit must write nothing"
    secrets = [p.read_text().strip() for p in (history.parent / "secrets").glob("*.pass")]
    assert not any(s in done.stdout + done.stderr for s in secrets)


def test_filters_by_entity_date_and_action(cli: Runner, history: Path) -> None:
    only = cli("audit", "--limit", "syndicat-eaux", history).stdout.splitlines()
    assert only and all("  syndicat-eaux  " in line for line in only)
    assert len(only) == sum(e == "syndicat-eaux" for _, e in stored(history))
    later = cli("audit", "--since", "05/12/2026", history).stdout.splitlines()
    assert later and all(line.startswith("2026-12-05") for line in later)
    first_day = cli("audit", "--until", "2026-12-01", history).stdout.splitlines()
    assert first_day and all(line.startswith("2026-12-01") for line in first_day)
    assert len(later) + len(first_day) == len(stored(history))
    assert cli("audit", "--last", "2", history).stdout.splitlines() == later[-2:]
    none = cli("audit", "--since", "2027-01-01", history)
    assert none.returncode == 0 and none.stdout.strip() == "No audit record matches."


def test_json_follows_its_schema(cli: Runner, history: Path) -> None:
    done = cli("audit", "--json", "--action", "generation-created", history)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, load_schema("audit.schema.json"))
    assert [r["entity"] for r in document["records"]] == ["commune-exemple", "syndicat-eaux"]
    assert all(len(r["detail"]["cert_sha256"]) == 64 for r in document["records"])
    failed = cli("audit", "--json", "--since", "31/02/2026", history)
    assert failed.returncode == 1
    error = json.loads(failed.stdout)
    jsonschema.validate(error, load_schema("audit.schema.json"))
    assert "--since '31/02/2026' is not a date" in error["error"]["message"]


def test_a_misspelt_filter_is_refused_with_the_name_meant(cli: Runner, history: Path) -> None:
    done = cli("audit", "--limit", "syndicat-eau", history)
    assert done.returncode == 1
    assert "no audit record names the entity 'syndicat-eau' (did you mean 'syndicat-eaux'?)" in (
        done.stderr
    )
    done = cli("audit", "--action", "copy-writen", history)
    assert done.returncode == 1 and "did you mean 'copy-written'?" in done.stderr


def test_no_state_no_audit(cli: Runner, quickstart: Path) -> None:
    done = cli("audit", quickstart)
    assert done.returncode == 1
    assert "no state there, so no audit log" in done.stderr
    assert not (quickstart.parent / ".provisioner" / "state.db").exists()
    as_json = cli("audit", "--json", quickstart)
    assert as_json.returncode == 1
    jsonschema.validate(json.loads(as_json.stdout), load_schema("audit.schema.json"))


def test_a_generation_brought_back_or_retired_says_why_in_the_audit(
    cli: Runner, quickstart: Path
) -> None:
    """Generation 1 of commune-exemple, retired by its renewal, brought back to the
    workstations for consultation AO-7 launched with it (the audit names AO-7), then retired
    again once AO-7 is closed (the audit gives the reason)."""
    assert (
        cli("apply", "--auto-approve", "-q", quickstart, env={"PROVISIONER_NOW": FIRST}).returncode
        == 0
    )
    renewal = {"PROVISIONER_NOW": "2028-10-15T10:00:00+00:00"}
    assert cli("apply", "--auto-approve", "-q", quickstart, env=renewal).returncode == 0
    listed = quickstart.parent / "c.yaml"
    listed.write_text(
        "version: 1\nconsultations:\n"
        + "".join(
            f"  - {{reference: {ref}, entity: commune-exemple, designation: Commune Exemple, "
            f"status: open, deadline: {deadline}}}\n"
            for ref, deadline in (("AO-7", "2028-12-20"), ("AO-8", "2028-12-21"))
        )
    )
    bind = ("--consultations", listed)
    later = {"PROVISIONER_NOW": "2028-10-16T10:00:00+00:00"}
    planned = cli("plan", *bind, quickstart, env=later)
    assert (
        "~ generation 1: retain  [bound-to-open-consultation] generation 1 is brought back to "
        "the workstations: consultations AO-7 (deadline 2028-12-20), AO-8 (deadline "
        "2028-12-21) still need it to open their bids"
    ) in planned.stdout, planned.stdout
    done = cli("apply", "--auto-approve", "-q", *bind, quickstart, env=later)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = cli("audit", "--action", "generation-retained", quickstart).stdout.splitlines()
    assert [line.split("  ")[1:3] for line in lines] == [["generation-retained", "commune-exemple"]]
    assert 'consultations="AO-7, AO-8" ' in lines[0] and "generation=1" in lines[0], lines
    listed.write_text(listed.read_text().replace("status: open", "status: closed"))  # both
    closed = {"PROVISIONER_NOW": "2028-10-17T10:00:00+00:00"}
    done = cli("apply", "--auto-approve", "-q", *bind, quickstart, env=closed)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = cli(
        "audit", "--action", "generation-retired", "--limit", "commune-exemple", quickstart
    ).stdout.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("2028-10-17T10:00:00Z  generation-retired"), (
        lines
    )
    assert "generation=1 reason=unbound" in lines[-1], lines
    # each retirement names the key an operator knows it by, as the platform shows it
    assert all('designation="Commune Exemple"' in line for line in lines), lines
