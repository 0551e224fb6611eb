"""A consultation bound to a key this tool does not manage (red team, third round, defects 1 and
2): its bids are encrypted to the platform's key, so it is never attached to a key made or
renamed after it was bound, and no generation that may be that key leaves the workstations
while it is not closed."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import p12_files, state_rows

HEADER = "reference;title;entity;designation;status;deadline;opening\n"


def day(n: int) -> dict[str, str]:
    """The program's clock n days after the suite's: a history of steps on distinct days."""
    return {"PROVISIONER_NOW": (TEST_CLOCK + dt.timedelta(days=n)).isoformat()}


def rename(manifest: Path, old: str, new: str) -> None:
    manifest.write_text(manifest.read_text().replace(f"designation: {old}", f"designation: {new}"))


def bound_generation(manifest: Path, reference: str) -> object:
    rows = state_rows(
        manifest, f"SELECT generation FROM consultations WHERE reference = '{reference}'"
    )
    assert rows, reference
    return rows[0][0]


def made_then_restored(
    cli: Runner, manifest: Path, text: str, env: dict[str, str], tmp_path: Path
) -> None:
    """The state backed up, the manifest made `text` and applied at `env` (keys made, copies
    written), then the state restored from the backup: a state older than its keys."""
    state = manifest.parent / ".provisioner"
    backup = tmp_path / "backup"
    shutil.copytree(state, backup)
    manifest.write_text(text)
    done = cli("apply", "--auto-approve", "-q", manifest, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(state)
    shutil.copytree(backup, state)


def test_a_consultation_naming_a_key_before_this_apply_creates_it_is_never_bound_to_it(
    cli: Runner, quickstart: Path
) -> None:
    c = quickstart.parent / "c.csv"
    c.write_text(
        HEADER + "C-1;x;commune-exemple;Commune Exemple;open;28/11/2026 12:00;30/11/2026\n"
    )
    given = ("--consultations", str(c))
    first = cli("apply", "--auto-approve", *given, quickstart)
    assert first.returncode == 0, first.stdout + first.stderr
    # The file names a key before this apply creates one of that name: the consultation was
    # made with another key (the platform's), so the new one is never bound to it.
    said = " ".join(first.stdout.split())
    assert 'creates generation 1 "Commune Exemple" with that name, which is NOT that key' in said
    assert bound_generation(quickstart, "C-1") is None
    for _ in range(2):
        again = cli("apply", "--auto-approve", *given, quickstart)
        assert again.returncode == 0 and "now managed" not in again.stdout, again.stdout
    assert bound_generation(quickstart, "C-1") is None
    check = cli("check", *given, quickstart, env={"PROVISIONER_NOW": "2026-11-27T09:00:00Z"})
    assert check.returncode == 2 and "[unmanaged-key] consultation C-1" in check.stdout


def test_a_rename_after_the_binding_does_not_make_the_platforms_key_managed(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    c = quickstart.parent / "c.csv"
    c.write_text(HEADER + "X-2;x;commune-exemple;Platform Key;open;01/12/2026 12:00;02/12/2026\n")
    given = ("--consultations", str(c))
    assert "unmanaged-key" in cli("check", *given, quickstart).stdout
    assert cli("apply", "--auto-approve", *given, quickstart).returncode == 0
    rename(quickstart, "Commune Exemple", "Platform Key")
    for _ in range(2):
        done = cli("apply", "--auto-approve", *given, quickstart)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "now managed" not in done.stdout
    assert bound_generation(quickstart, "X-2") is None
    # News of the consultation (its status) do not attach it to the renamed key either.
    c.write_text(c.read_text().replace(";open;", ";opening;"))
    news = cli("apply", "--auto-approve", *given, quickstart)
    assert news.returncode == 0 and "now managed" not in news.stdout, news.stdout
    assert bound_generation(quickstart, "X-2") is None
    check = cli("check", *given, quickstart)
    assert check.returncode != 0 and "unmanaged-key" in check.stdout, check.stdout


def test_after_recover_a_generation_that_may_be_the_bound_key_stays_on_the_workstations(
    cli: Runner, quickstart: Path
) -> None:
    # One operator step a day: each name, binding and recovery has its own date.
    rename(quickstart, "Commune Exemple", "Name A")
    assert cli("apply", "--auto-approve", quickstart, env=day(0)).returncode == 0
    rename(quickstart, "Name A", "Name B")
    assert cli("apply", "--auto-approve", quickstart, env=day(1)).returncode == 0
    c = quickstart.parent / "c.csv"
    c.write_text(HEADER + "C-1;x;commune-exemple;Name B;open;01/12/2028 12:00;05/12/2028\n")
    given = ("--consultations", str(c))
    assert cli("apply", "--auto-approve", *given, quickstart, env=day(2)).returncode == 0
    rename(quickstart, "Name B", "Name C")
    assert cli("apply", "--auto-approve", *given, quickstart, env=day(3)).returncode == 0
    shutil.rmtree(quickstart.parent / ".provisioner")
    assert cli("recover", "--auto-approve", *given, quickstart, env=day(4)).returncode == 0
    renewal = {"PROVISIONER_NOW": "2028-10-15T08:00:00Z"}
    done = cli("apply", "--auto-approve", *given, quickstart, env=renewal)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [line for line in done.stdout.splitlines() if "commune-exemple.g1.p12" in line]
    kept = p12_files(quickstart)
    assert "workstations/ws-accueil/commune-exemple.g1.p12" in kept
    assert "workstations/ws-marches/commune-exemple.g1.p12" in kept
    assert "workstations/ws-accueil/commune-exemple.g2.p12" in kept


def test_after_recover_an_older_generation_found_on_the_workstations_stays_for_the_binding(
    cli: Runner, quickstart: Path
) -> None:
    """Red team 5, H2: generation 1, bound under a former designation and kept beside a newer
    generation 2, was recovered retired, then removed from every workstation by the next apply
    while its consultation was open (its bids are encrypted to it)."""
    c = quickstart.parent / "c.csv"
    c.write_text(HEADER + "T-1;Voirie;commune-exemple;Commune B;open;14/12/2026 12:00;15/12/2026\n")
    given = ("--consultations", str(c))

    def apply(at: str, *extra: str) -> None:
        done = cli("apply", "--auto-approve", *extra, quickstart, env={"PROVISIONER_NOW": at})
        assert done.returncode == 0, done.stdout + done.stderr

    apply("2026-11-01T10:00:00Z")
    rename(quickstart, "Commune Exemple", "Commune B")
    apply("2026-11-02T10:00:00Z")
    apply("2026-11-03T10:00:00Z", *given)  # T-1 made with g1 while it was "Commune B"
    rename(quickstart, "Commune B", "Commune C")
    apply("2026-11-04T10:00:00Z", *given)
    quickstart.write_text(quickstart.read_text().replace("size: 2048}", "size: 3072}"))
    apply("2026-11-05T10:00:00Z", *given)  # g2 made, g1 retained for T-1
    shutil.rmtree(quickstart.parent / ".provisioner")
    recovered = cli(
        "recover",
        "--auto-approve",
        *given,
        quickstart,
        env={"PROVISIONER_NOW": "2026-11-06T10:00:00Z"},
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    apply("2026-11-07T10:00:00Z", *given)
    held = p12_files(quickstart)
    for ws in ("ws-accueil", "ws-marches"):
        assert f"workstations/{ws}/commune-exemple.g1.p12" in held, ws

    # The operator names generation 1 by its certificate: the binding becomes managed.
    (fingerprint,) = state_rows(
        quickstart,
        "SELECT cert_sha256 FROM generations WHERE entity = 'commune-exemple' AND number = 1",
    )[0]
    c.write_text(
        "reference;title;entity;certificate_sha256;status;deadline;opening\n"
        f"T-1;Voirie;commune-exemple;{fingerprint};open;14/12/2026 12:00;15/12/2026\n"
    )
    planned = cli("plan", *given, quickstart, env={"PROVISIONER_NOW": "2026-11-08T10:00:00Z"})
    assert "its key is now managed: generation 1" in planned.stdout, planned.stdout
    apply("2026-11-08T10:00:00Z", *given)
    assert bound_generation(quickstart, "T-1") is not None
    again = cli("plan", "--detailed-exitcode", *given, quickstart,
                env={"PROVISIONER_NOW": "2026-11-08T10:00:00Z"})  # fmt: skip
    assert again.returncode == 0, again.stdout


def test_a_consultation_naming_another_entitys_key_is_refused(
    cli: Runner, quickstart: Path
) -> None:
    """Red team 5, H3: it was recorded as a key not managed, and the entity that owns the key
    could then be declared absent, its key leaving every workstation, with exit 0."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    c = quickstart.parent / "c.csv"
    c.write_text(
        HEADER + "X-1;Groupement;commune-exemple;Syndicat Eaux Val 2026;open;14/12/2026 12:00;"
        "15/12/2026\n"
    )
    given = ("--consultations", str(c))
    done = cli("apply", "--auto-approve", *given, quickstart)
    assert done.returncode == 1, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    refusal = re.escape(
        f"Refused: x {c}:2: consultation X-1 names entity commune-exemple, but 'Syndicat Eaux "
        "Val 2026' is entity syndicat-eaux's generation 1 \"Syndicat Eaux Val 2026\" "
        "(certificate FINGERPRINT…): a consultation is bound to a key of its own entity. "
        "Correct the consultations file (the entity whose key opens the bids). "
    ).replace("FINGERPRINT", "[0-9a-f]{16}")
    assert re.match(refusal, said), said
    checked = cli("check", *given, quickstart)
    assert checked.returncode == 2 and "[refused]" in checked.stdout, checked.stdout


@pytest.mark.parametrize("after", [dt.timedelta(days=1), dt.timedelta(seconds=30)])
def test_a_binding_recorded_while_the_state_was_older_than_the_key_is_bound_to_it_by_recover(
    cli: Runner, quickstart: Path, tmp_path: Path, after: dt.timedelta
) -> None:
    """The state restored from a backup older than commune-exemple's key; C-1, naming it,
    recorded then (a day, or half a minute, after the key was made) as a key this state does
    not know (the entity held back by conflicts). `recover` takes generation 1 back, made
    before C-1 was bound and carrying its name in its certificate: from then on C-1 reads
    bound to generation 1 (status), and the next plan only records that."""
    full = quickstart.read_text()
    start, end = full.index("  - id: commune-exemple"), full.index("  - id: syndicat-eaux")
    quickstart.write_text(full[:start] + full[end:])
    assert cli("apply", "--auto-approve", "-q", quickstart, env=day(0)).returncode == 0
    made_then_restored(cli, quickstart, full, day(1), tmp_path)
    c = quickstart.parent / "c.yaml"
    c.write_text(
        "version: 1\nconsultations:\n  - {reference: C-1, entity: commune-exemple, "
        "designation: Commune Exemple, status: open, deadline: 2027-06-10}\n"
    )
    bound_at = {"PROVISIONER_NOW": (TEST_CLOCK + dt.timedelta(days=1) + after).isoformat()}
    held = cli("apply", "--auto-approve", "--consultations", c, quickstart, env=bound_at)
    assert held.returncode == 1 and "[unmanaged-key] consultation C-1" in held.stdout
    assert bound_generation(quickstart, "C-1") is None

    recovered = cli("recover", "--auto-approve", quickstart, env=day(3))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    status = cli("status", quickstart, env=day(3))
    assert 'C-1 (deadline 2027-06-10) -> g1 "Commune Exemple"' in status.stdout, status.stdout
    planned = cli("plan", quickstart, env=day(3))
    assert "its key is now managed: generation 1" in planned.stdout, planned.stdout
    assert "Plan: 0 to create, 1 to update, 0 to remove." in planned.stdout, planned.stdout


def test_a_key_made_minutes_after_the_binding_is_not_its_key_after_recover(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """C-1 recorded while commune-exemple was declared absent (no key of that name then);
    the entity made present two minutes later gets generation 1 under that name. The state
    restored from before, `recover` takes generation 1 back with the instant it was made:
    after the binding, so not the key C-1's bids are encrypted to; C-1 stays not managed."""
    present = quickstart.read_text()
    quickstart.write_text(
        present.replace("  - id: commune-exemple\n", "  - id: commune-exemple\n    state: absent\n")
    )
    c = quickstart.parent / "c.yaml"
    c.write_text(
        "version: 1\nconsultations:\n  - {reference: C-1, entity: commune-exemple, "
        "designation: Commune Exemple, status: open, deadline: 2027-06-10}\n"
    )

    def at(minutes: int) -> dict[str, str]:
        return {"PROVISIONER_NOW": (TEST_CLOCK + dt.timedelta(minutes=minutes)).isoformat()}

    done = cli("apply", "--auto-approve", "-q", "--consultations", c, quickstart, env=at(0))
    assert done.returncode == 0, done.stdout + done.stderr
    made_then_restored(cli, quickstart, present, at(2), tmp_path)

    recovered = cli("recover", "--auto-approve", quickstart, env=at(10))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    status = cli("status", quickstart, env=at(10))
    assert "C-1 (deadline 2027-06-10) -> designation:Commune Exemple (not managed)" in (
        status.stdout
    ), status.stdout
    planned = cli("plan", "--detailed-exitcode", quickstart, env=at(10))
    assert planned.returncode == 0, planned.stdout
    assert (
        'generation 1 "Commune Exemple" shares the name but got it after the binding: not that key'
        in (planned.stdout)
    ), planned.stdout
