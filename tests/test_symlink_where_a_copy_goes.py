"""A symlink (or any special file) standing where a copy goes is not ours: the plan says so,
naming it as such (the tool never follows it to open what it points at), and leaves the
entity alone."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Runner


def test_a_symlink_where_the_first_copy_goes_is_a_conflict_named_as_such(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    folder = quickstart.parent / "demo-out" / "workstations" / "ws-accueil"
    folder.mkdir(parents=True, mode=0o700)
    elsewhere = tmp_path / "elsewhere.p12"
    elsewhere.write_bytes(b"someone's key store")
    link = folder / "commune-exemple.g1.p12"
    link.symlink_to(elsewhere)

    planned = cli("plan", quickstart)
    assert planned.returncode == 1, planned.stdout + planned.stderr  # a conflict: exit 1
    assert (
        f"! conflict g1 on ws-accueil: {link}  [conflict] a file this state did not write "
        "stands where its new copy goes (a symlink or special file): left as it is"
    ) in planned.stdout
    assert "For commune-exemple, apply does only what can lose nothing" in planned.stdout
    document = json.loads(cli("plan", "--json", quickstart).stdout)
    (conflict,) = [a for a in document["actions"] if a["kind"] == "conflict"]
    assert (conflict["entity"], conflict["target"], conflict["path"]) == (
        "commune-exemple",
        "ws-accueil",
        str(link),
    )
    assert not [
        a for a in document["actions"] if a["entity"] == "commune-exemple" and a is not conflict
    ]
    assert link.is_symlink() and elsewhere.read_bytes() == b"someone's key store"
