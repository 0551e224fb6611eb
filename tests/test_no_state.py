"""Every command that reads the state says the same thing when there is none where it looked:
where it looked, what it cannot do, and the ways on (apply, point at the state, recover a lost
one); an error exit, no traceback, and nothing written there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Runner


@pytest.mark.parametrize(
    ("args", "code", "cannot"),
    [
        (["check"], 3, "nothing can be judged"),
        (["rehearse"], 1, "no copy to rehearse"),
        (
            ["export", "{manifest}", "commune-exemple", "--format", "pem", "--out", "x.cer"],
            1,
            "no generation to export",
        ),
        (["inventory", "--json"], 1, "no inventory to give"),
        (["audit"], 1, "no audit log"),
    ],
)
def test_a_command_without_a_state_says_where_it_looked_and_the_ways_on(
    cli: Runner, quickstart: Path, tmp_path: Path, args: list[str], code: int, cannot: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    words = [str(quickstart) if a == "{manifest}" else a for a in args]
    if str(quickstart) not in words:
        words.append(str(quickstart))
    done = cli(*words, "--state-dir", elsewhere)
    assert done.returncode == code, (done.stdout, done.stderr)
    said = done.stdout + done.stderr
    assert f"{elsewhere}: no state there, so {cannot}: apply first" in said
    assert "provisioner recover" in said and "Traceback" not in said
    assert not elsewhere.exists()  # nothing created where it looked
