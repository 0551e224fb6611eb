"""What the monitoring says matches what `plan` would do: a password changed in its file is
pending re-encodings for `status`, `check` and the report as for `plan`, although they read no
secret (they compare a stamp of the file's identity, size and time, never its content)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

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
    assert (
        "Not ready: password-changed: the entity's password file changed since the last apply "
        "read it: the copy is re-encoded with the same key if the password changed (`plan` "
        "reads it and says)\n"
    ) in cli("status", quickstart).stdout
    again = cli("apply", "--auto-approve", quickstart)
    assert again.returncode == 0 and "No changes." in again.stdout, again.stdout
    assert cli("check", quickstart).returncode == 0


def test_a_re_encoding_that_fails_keeps_the_password_change_pending_for_status(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The password file changed, the plan saved, then `apply PLAN` cannot write ws-accueil's
    copy (its folder immutable): the copies elsewhere are re-encoded, but the entity's copy
    there is still under the former password, so status and check, which read no secret,
    still say the change is pending until an apply re-encodes it too."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a folder immutable: does not apply here")
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    (quickstart.parent / "secrets" / "commune-exemple.pass").write_text("Demo-Only-Commune-43!\n")
    saved = tmp_path / "rewrite.plan"
    assert cli("plan", "-q", "--out", saved, quickstart).returncode == 0
    folder = quickstart.parent / "demo-out" / "workstations" / "ws-accueil"
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable files (chattr +i): does not apply here")
    try:
        done = cli("apply", "--auto-approve", saved)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert done.returncode == 1, done.stdout + done.stderr
    status = cli("status", quickstart)
    assert "commune-exemple (Commune d'Exemple)  Not ready: password-changed: " in status.stdout, (
        status.stdout
    )
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    assert (
        "commune-exemple (Commune d'Exemple)  Ready: up to date" in cli("status", quickstart).stdout
    )
