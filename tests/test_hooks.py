"""Notification hooks (real scripts receiving the JSON event) and scheduled-job output."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Runner
from tests.engine_helpers import PASSWORDS


def add_hooks(manifest: Path, hooks: str) -> None:
    manifest.write_text(manifest.read_text().replace("version: 1\n", f"version: 1\n{hooks}"))


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def test_hooks_receive_json_events_without_secrets(cli: Runner, quickstart: Path) -> None:
    folder = quickstart.parent
    log = folder / "events.jsonl"
    script(folder, "record.sh", f"cat >> {log}\necho >> {log}\n")
    add_hooks(quickstart, "hooks:\n  renewed: [[./record.sh]]\n  distributed: [[./record.sh]]\n")
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    renewed = [e for e in events if e["event"] == "renewed"]
    assert {e["entity"] for e in renewed} == {"commune-exemple", "syndicat-eaux"}
    first = next(e for e in renewed if e["entity"] == "commune-exemple")
    assert first["designation"] == "Commune Exemple" and len(first["certificate_sha256"]) == 64
    assert first["reason"] == "missing"
    distributed = [e for e in events if e["event"] == "distributed"]
    assert sum(len(e["copies"]) for e in distributed) == 5
    text = log.read_text()
    assert all(pw not in text for pw in PASSWORDS.values())
    assert "PRIVATE KEY" not in text


def test_a_failing_hook_does_not_fail_the_apply(cli: Runner, quickstart: Path) -> None:
    folder = quickstart.parent
    script(folder, "broken.sh", "echo 'mail server down' >&2\nexit 3\n")
    add_hooks(quickstart, "hooks:\n  renewed: [[./broken.sh], [/no/such/program]]\n")
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 0, done.stderr
    assert "Warning: hook ./broken.sh on renewed: exited with 3: mail server down" in done.stderr
    assert "Warning: hook /no/such/program on renewed: cannot run" in done.stderr
    assert "Apply complete" in done.stdout


def test_failed_and_warning_events(cli: Runner, quickstart: Path) -> None:
    folder = quickstart.parent
    log = folder / "events.jsonl"
    script(folder, "record.sh", f"cat >> {log}\necho >> {log}\n")
    add_hooks(quickstart, "hooks:\n  failed: [[./record.sh]]\n  warning: [[./record.sh]]\n")
    blocker = folder / "demo-out" / "workstations"
    blocker.mkdir(parents=True)
    (blocker / "ws-accueil").write_text("a file where a folder should be")
    done = cli(
        "apply", "--auto-approve", quickstart, env={"PROVISIONER_NOW": "2026-12-01T00:00:00+00:00"}
    )
    assert done.returncode == 1
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    failed = [e for e in events if e["event"] == "failed"]
    assert (
        failed and failed[0]["target"] == "ws-accueil" and failed[0]["entity"] == "commune-exemple"
    )


def test_quiet_scheduled_run_prints_one_summary_line(cli: Runner, quickstart: Path) -> None:
    done = cli("apply", "--auto-approve", "--quiet", quickstart)
    assert done.returncode == 0
    assert done.stdout.strip().splitlines() == ["Apply complete: 7 actions done."]
    again = cli("apply", "--auto-approve", "-q", quickstart)
    assert again.stdout.strip() == "No changes."
    assert "\x1b[" not in done.stdout + again.stdout, "no colour when not a terminal"
    result = json.loads(cli("apply", "--auto-approve", "--json", quickstart).stdout)
    assert result["applied"] is False and result["plan"]["changes"] is False
