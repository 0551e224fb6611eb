"""What the monitoring says matches what `plan` would do: a password changed in its file is
pending re-encodings for `status`, `check` and the report as for `plan`, although they read no
secret (they compare a stamp of the file's identity, size and time, never its content)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Runner


def test_a_password_file_changed_reads_pending_until_apply_re_encodes(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("check", quickstart).returncode == 0
    secret = quickstart.parent / "secrets" / "commune-exemple.pass"
    secret.write_text("Demo-Only-Commune-43!\n")

    plan = cli("plan", "--detailed-exitcode", quickstart)
    assert plan.returncode == 2 and plan.stdout.count("[password-changed]") == 3, plan.stdout
    status = cli("status", quickstart)
    assert "commune-exemple (Commune d'Exemple)  Not ready: password-changed: " in status.stdout
    assert "syndicat-eaux (Syndicat des Eaux du Val)  Ready: up to date" in status.stdout
    probe = cli("check", quickstart)
    assert probe.returncode == 1, probe.stdout
    assert (
        "WARNING: commune-exemple: [pending] 3 changes pending (password-changed)" in probe.stdout
    ), probe.stdout
    assert "Demo-Only-Commune-43!" not in status.stdout + probe.stdout

    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("check", quickstart).returncode == 0
    doc = json.loads(cli("status", "--json", quickstart).stdout)
    assert all(e["ready"] for e in doc["entities"]), doc


def test_a_password_file_touched_reads_pending_until_an_apply_reads_it_again(
    cli: Runner, quickstart: Path
) -> None:
    """A file rewritten with the same password: status and check cannot tell without reading
    it, so they say it may have changed; the next apply, which reads it, re-encodes nothing
    and settles it."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    secret = quickstart.parent / "secrets" / "syndicat-eaux.pass"
    stat = secret.stat()
    os.utime(secret, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    probe = cli("check", quickstart)
    assert probe.returncode == 1 and "[pending]" in probe.stdout, probe.stdout
    assert "password file changed since the last apply read it" in cli("status", quickstart).stdout
    again = cli("apply", "--auto-approve", quickstart)
    assert again.returncode == 0 and "No changes." in again.stdout, again.stdout
    assert cli("check", quickstart).returncode == 0
