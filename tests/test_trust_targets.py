"""`provisioner trust` names the targets it cannot trust before touching any known_hosts."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Runner


def test_trust_refuses_an_unknown_target_by_name(cli: Runner, quickstart: Path) -> None:
    done = cli("trust", quickstart, "no-such-target", "--yes")
    assert done.returncode == 1
    assert done.stderr == "Error: unknown target(s): no-such-target\n"
    assert "Traceback" not in done.stderr and "Internal error" not in done.stderr


def test_trust_refuses_a_local_target(cli: Runner, quickstart: Path) -> None:
    done = cli("trust", quickstart, "ws-accueil", "--yes")
    assert done.returncode == 1
    assert done.stderr == "Error: ws-accueil is not an SSH target\n"
