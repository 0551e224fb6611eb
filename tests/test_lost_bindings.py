"""Bindings given with `--consultations` only (the manifest names no consultations file),
then the state lost and recovered: the recovered state keeps generation 1 retained beside
generation 2 but knows no consultation. It used to retire it at the next run ("no open
consultation holds this generation any more") and take it off every workstation while C-1,
bound to it, was still open. Observe, do not assume: it stays, and the plan says why."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import key_fingerprints, lose_state, state_rows

HEADER = "reference;title;entity;designation;status;deadline;opening\n"
RENEWAL = TEST_CLOCK + dt.timedelta(days=685)  # inside the 60-day window of a 730-day key


def at(when: dt.datetime) -> dict[str, str]:
    return {"PROVISIONER_NOW": when.isoformat()}


def test_a_recovered_state_keeps_a_retained_generation_whose_bindings_it_lost(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    c = quickstart.parent / "c.csv"
    c.write_text(HEADER + "C-1;x;commune-exemple;Commune Exemple;open;10/11/2028;20/11/2028\n")
    given = ("--consultations", str(c))
    day_after = at(TEST_CLOCK + dt.timedelta(days=1))
    assert cli("apply", "--auto-approve", *given, quickstart, env=day_after).returncode == 0
    renewed = cli("apply", "--auto-approve", *given, quickstart, env=at(RENEWAL))
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    g1 = "workstations/ws-accueil/commune-exemple.g1.p12"
    assert g1 in key_fingerprints(quickstart)

    lose_state(quickstart)
    later = at(RENEWAL + dt.timedelta(days=1))
    recovered = cli("recover", "--auto-approve", quickstart, env=later)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    statuses = dict(
        state_rows(
            quickstart,
            "SELECT number, status FROM generations WHERE entity = 'commune-exemple'",
        )
    )
    assert statuses == {1: "retained", 2: "current"}

    planned = cli("plan", quickstart, env=later)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    said = " ".join(planned.stdout.split())
    assert "retire" not in said and "remove g1" not in said, planned.stdout
    assert (
        'commune-exemple: [bindings-unknown] generation 1 "Commune Exemple" is retained, but no '
        "consultation this state records was ever bound to it"
    ) in said, said
    done = cli("apply", "--auto-approve", quickstart, env=later)
    assert done.returncode == 0, done.stdout + done.stderr
    assert g1 in key_fingerprints(quickstart)
    checked = cli("check", quickstart, env=later)
    assert checked.returncode == 1 and "[bindings-unknown]" in checked.stdout, checked.stdout

    # The consultations file given again: C-1 is recorded, bound to generation 1, and the
    # warning goes.
    again = cli("apply", "--auto-approve", *given, quickstart, env=later)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "bindings-unknown" not in again.stdout
    bound = state_rows(
        quickstart,
        "SELECT c.reference, g.number FROM consultations c JOIN generations g "
        "ON g.id = c.generation",
    )
    assert bound == [("C-1", 1)]
    assert g1 in key_fingerprints(quickstart)
