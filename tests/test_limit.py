"""`--limit` as Ansible users expect it: an entity, or a workstation, a group or a shared
location, meaning the entities that have a copy there and only the copies there.

Safety: a limited run looks at, writes and removes only the copies within the limit; a target
outside it is never taken for missing; what concerns every target of an entity (a new key, a
retirement, a rename, a binding) waits for a run that sees them all.

The quickstart: commune-exemple on backup-share, ws-marches (group service-marches) and
ws-accueil; syndicat-eaux on backup-share and ws-marches."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import escrow_blob, out_of_reach, p12_files, set_escrow_blob, state_rows

ACCUEIL = "workstations/ws-accueil/commune-exemple.g1.p12"
MARCHES = "workstations/ws-marches/commune-exemple.g1.p12"
MARCHES_SYNDICAT = "workstations/ws-marches/syndicat-eaux.g1.p12"
RENEWAL = {"PROVISIONER_NOW": (TEST_CLOCK + dt.timedelta(days=690)).isoformat()}


def applied(cli: Runner, quickstart: Path) -> dict[str, Path]:
    done = cli("apply", "--auto-approve", "-q", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    return {rel.removeprefix("demo-out/"): path for rel, path in p12_files(quickstart).items()}


def test_a_workstation_limits_the_run_to_its_copies(cli: Runner, quickstart: Path) -> None:
    files = applied(cli, quickstart)
    files[ACCUEIL].unlink()
    files[MARCHES].unlink()  # outside the limit: neither repaired nor reported
    planned = cli("plan", "--limit", "ws-accueil", quickstart)
    assert planned.returncode == 0, planned.stderr
    assert f"+ write g1 on ws-accueil: {files[ACCUEIL]}  [missing]" in planned.stdout
    assert "ws-marches" not in planned.stdout and "syndicat-eaux" not in planned.stdout
    assert planned.stdout.rstrip().endswith("Plan: 1 to create, 0 to update, 0 to remove.")
    status = cli("status", "--limit", "ws-accueil", quickstart).stdout
    assert "missing      g1 ws-accueil" in status and "ws-marches" not in status
    assert "backup-share" not in status  # not looked at, so not reported "ok" either
    done = cli("apply", "--auto-approve", "--limit", "ws-accueil", quickstart)
    assert done.returncode == 0 and "Apply complete: 1 action done." in done.stdout
    assert files[ACCUEIL].is_file() and not files[MARCHES].exists()
    probe = cli("check", "--limit", "ws-accueil", quickstart)
    assert probe.returncode == 0, probe.stdout
    assert probe.stdout.startswith("PROVISIONER OK - 1 entity, 1 copy in sync")
    assert cli("check", quickstart).returncode == 1  # the whole picture: ws-marches pending


def test_a_group_and_a_shared_location_name_their_targets(cli: Runner, quickstart: Path) -> None:
    files = applied(cli, quickstart)
    for rel in (ACCUEIL, MARCHES, MARCHES_SYNDICAT, "shared/backup/syndicat-eaux.g1.p12"):
        files[rel].unlink()
    planned = cli("plan", "--limit", "service-marches", quickstart).stdout
    writes = [line.split(":")[0].strip() for line in planned.splitlines() if "+ write" in line]
    assert writes == ["+ write g1 on ws-marches", "+ write g1 on ws-marches"], planned
    assert "# commune-exemple" in planned and "# syndicat-eaux" in planned
    planned = cli("plan", "--limit", "backup-share", "--limit", "ws-accueil", quickstart).stdout
    assert "+ write g1 on backup-share" in planned and "+ write g1 on ws-accueil" in planned
    assert "ws-marches" not in planned
    # An entity and a target together: the entity whole, the other entities on the target.
    planned = cli("plan", "--limit", "syndicat-eaux", "--limit", "ws-accueil", quickstart).stdout
    assert planned.count("+ write") == 3 and "commune-exemple.g1.p12  [missing]" in planned
    assert f"{files[MARCHES]}" not in planned


def test_a_limited_apply_never_removes_a_copy_outside_it(cli: Runner, quickstart: Path) -> None:
    files = applied(cli, quickstart)
    # ws-accueil leaves commune-exemple: its copy there is to be removed, by a run that sees it.
    text = quickstart.read_text()
    quickstart.write_text(text.replace("[service-marches, ws-accueil]", "[service-marches]"))
    assert "- remove g1 on ws-accueil" in cli("plan", quickstart).stdout
    for limit in ("ws-marches", "backup-share", "service-marches"):
        planned = cli("plan", "--limit", limit, "--detailed-exitcode", quickstart)
        assert planned.returncode == 0, (limit, planned.stdout)
        done = cli("apply", "--auto-approve", "--limit", limit, quickstart)
        assert done.returncode == 0 and files[ACCUEIL].is_file(), limit
    # Named by its entity, the run sees every copy and removes it.
    cli("apply", "--auto-approve", "--limit", "commune-exemple", quickstart)
    assert not files[ACCUEIL].exists()


def test_what_concerns_every_target_waits_for_a_run_that_sees_them(
    cli: Runner, quickstart: Path
) -> None:
    files = applied(cli, quickstart)
    files[ACCUEIL].unlink()
    planned = cli("plan", "--limit", "ws-accueil", quickstart, env=RENEWAL)
    assert planned.returncode == 0, planned.stderr
    assert "generation 2: create" not in planned.stdout
    assert "No changes within --limit; what it holds back is under Warnings." in planned.stdout
    assert (
        "commune-exemple: [limit-held] create-generation g2 [renewal-due] (and 2 copy changes "
        "planned with it): held back, since --limit names only some of its targets and this "
        "concerns all of them; run with --limit commune-exemple, or without --limit"
    ) in planned.stdout
    status = cli("status", "--limit", "ws-accueil", quickstart, env=RENEWAL).stdout
    assert "Not ready: limit-held: create-generation g2" in status
    done = cli("apply", "--auto-approve", "--limit", "ws-accueil", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    count = "SELECT count(*) FROM generations"
    assert state_rows(quickstart, count) == [(2,)]  # no new key made
    assert not files[ACCUEIL].exists()  # nor a copy of the one being replaced
    # The entity named: the renewal is made, every copy written.
    cli("apply", "--auto-approve", "--limit", "commune-exemple", quickstart, env=RENEWAL)
    assert state_rows(quickstart, count) == [(3,)]


def test_bound_keys_outside_the_limit_are_not_taken_for_missing(
    cli: Runner, quickstart: Path
) -> None:
    (quickstart.parent / "c.yaml").write_text(
        "version: 1\nconsultations:\n  - reference: R-1\n    entity: commune-exemple\n"
        "    designation: Commune Exemple\n    status: open\n    deadline: 2026-12-10\n"
    )
    files = applied(cli, quickstart)
    bind = ["--consultations", quickstart.parent / "c.yaml"]
    assert cli("apply", "--auto-approve", "-q", *bind, quickstart).returncode == 0
    files[MARCHES].unlink()
    full = cli("check", *bind, quickstart)
    assert full.returncode == 2 and "bound-missing" in full.stdout
    limited = cli("check", *bind, "--limit", "ws-accueil", quickstart)
    assert limited.returncode == 0, limited.stdout  # ws-marches is not looked at
    planned = cli("plan", *bind, "--limit", "ws-marches", quickstart).stdout
    assert "[bound-missing]" in planned and "+ write g1 on ws-marches" in planned


def test_an_unknown_name_is_named_with_the_closest(cli: Runner, quickstart: Path) -> None:
    done = cli("plan", "--limit", "ws-acceuil", quickstart)
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: {quickstart}: error: --limit: unknown name ws-acceuil: no entity, workstation, "
        "group or shared location of that name (did you mean 'ws-accueil'?)\n"
    )
    # recover rebuilds a state from every copy of an entity: it takes entities only.
    done = cli("recover", "--limit", "ws-accueil", quickstart)
    assert done.returncode == 1
    assert "--limit ws-accueil is a workstation: here it takes entity ids" in done.stderr


def test_rehearse_inventory_and_a_saved_plan_keep_to_the_limit(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    files = applied(cli, quickstart)
    rehearsed = cli("rehearse", "--limit", "ws-accueil", "--json", quickstart)
    assert rehearsed.returncode == 0, rehearsed.stdout
    targets = {c["target"] for c in json.loads(rehearsed.stdout)["copies"]}
    assert targets == {"ws-accueil", "escrow"}
    inventory = json.loads(cli("inventory", "--limit", "ws-accueil", "--json", quickstart).stdout)
    assert list(inventory["hosts"]) == ["ws-accueil"]
    assert [c["entity"] for c in inventory["hosts"]["ws-accueil"]["copies"]] == ["commune-exemple"]
    files[ACCUEIL].unlink()
    files[MARCHES].unlink()
    saved = tmp_path / "accueil.plan"
    assert cli("plan", "--limit", "ws-accueil", "--out", saved, quickstart).returncode == 0
    done = cli("apply", saved)
    assert done.returncode == 0, done.stdout + done.stderr
    assert files[ACCUEIL].is_file() and not files[MARCHES].exists()


def test_bindings_held_back_by_a_limit_are_each_named_and_nothing_else_is_counted(
    cli: Runner, quickstart: Path
) -> None:
    """Two consultations launched with commune-exemple's key, seen by a run limited to one
    of its workstations: neither binding is recorded, the warning names both by reference,
    and no copy change is counted with them (there is none)."""
    applied(cli, quickstart)
    c = quickstart.parent / "c.yaml"
    c.write_text(
        "version: 1\nconsultations:\n"
        + "".join(
            f"  - {{reference: {ref}, entity: commune-exemple, designation: Commune Exemple, "
            "status: open, deadline: 2027-01-10}\n"
            for ref in ("C-1", "C-2")
        )
    )
    planned = cli("plan", "--consultations", c, "--limit", "ws-accueil", quickstart)
    assert planned.returncode == 0, planned.stderr
    assert (
        "commune-exemple: [limit-held] bind-consultation C-1, bind-consultation C-2: held "
        "back, since --limit names only some of its targets and this concerns all of them; "
        "run with --limit commune-exemple, or without --limit"
    ) in planned.stdout, planned.stdout
    done = cli("apply", "--auto-approve", "--consultations", c, "--limit", "ws-accueil", quickstart)
    assert done.returncode == 0, done.stdout + done.stderr
    assert state_rows(quickstart, "SELECT count(*) FROM consultations") == [(0,)]


def test_a_held_renewal_counts_only_its_copy_changes_not_the_repairs_that_go_ahead(
    cli: Runner, quickstart: Path
) -> None:
    """Under --limit, a renewal is held back with its copies, while the escrow key taken back
    from the copy within the limit goes ahead: the warning counts the one copy change held
    (the new generation's copy on the shared location), not the restore."""
    applied(cli, quickstart)
    commune = state_rows(
        quickstart, "SELECT key_sha256 FROM generations WHERE entity = 'commune-exemple'"
    )[0][0]
    set_escrow_blob(quickstart, f"{commune}.key", None)
    planned = cli("plan", "--limit", "backup-share", quickstart, env=RENEWAL)
    assert planned.returncode == 0, planned.stderr
    assert "restore escrowed key from backup-share" in planned.stdout, planned.stdout
    assert (
        "commune-exemple: [limit-held] create-generation g2 [renewal-due] (and 1 copy change "
        "planned with it): held back"
    ) in planned.stdout, planned.stdout
    done = cli("apply", "--auto-approve", "--limit", "backup-share", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert escrow_blob(quickstart, f"{commune}.key") is not None, "the restore went ahead"
    assert state_rows(quickstart, "SELECT count(*) FROM generations") == [(2,)]


def test_a_file_where_the_next_generation_goes_is_said_now_within_the_limit(
    cli: Runner, quickstart: Path
) -> None:
    """A file this state did not write stands where commune-exemple's generation 2 will go on
    ws-accueil (a copy put there by hand): the plan says so today, not on renewal day, when
    its run covers ws-accueil (the shared location before it in the entity's list outside the
    limit), and not when the run is limited to another workstation."""
    files = applied(cli, quickstart)
    stray = files["workstations/ws-accueil/commune-exemple.g1.p12"].with_name(
        "commune-exemple.g2.p12"
    )
    stray.write_bytes(files["workstations/ws-accueil/commune-exemple.g1.p12"].read_bytes())
    within = cli("plan", "--limit", "ws-accueil", quickstart)
    assert within.returncode == 1, within.stdout + within.stderr
    said = [line.strip() for line in within.stdout.splitlines() if "! conflict" in line]
    assert len(said) == 1, within.stdout  # said once, as the next generation's place
    assert said[0].startswith(
        f"! conflict g2 on ws-accueil: {stray}  [conflict] a file this state did not write "
        "stands where its next generation goes"
    ), within.stdout
    elsewhere = cli("plan", "--detailed-exitcode", "--limit", "ws-marches", quickstart)
    assert elsewhere.returncode == 0, elsewhere.stdout
    assert (
        stray.read_bytes() == files["workstations/ws-accueil/commune-exemple.g1.p12"].read_bytes()
    )


def test_an_entity_limited_run_sees_its_copies_whatever_entity_comes_first(
    cli: Runner, quickstart: Path
) -> None:
    """--limit syndicat-eaux, the second entity of the manifest: its copies are looked at and
    found as written, so nothing is planned, and a deleted one is written again."""
    files = applied(cli, quickstart)
    limited = cli("plan", "--detailed-exitcode", "--limit", "syndicat-eaux", quickstart)
    assert limited.returncode == 0, limited.stdout
    files[MARCHES_SYNDICAT].unlink()
    again = cli("plan", "--limit", "syndicat-eaux", quickstart)
    assert f"+ write g1 on ws-marches: {files[MARCHES_SYNDICAT]}  [missing]" in again.stdout
    assert "Plan: 1 to create, 0 to update, 0 to remove." in again.stdout, again.stdout
    # a file where its next generation goes is looked at too
    stray = files[MARCHES_SYNDICAT].with_name("syndicat-eaux.g2.p12")
    stray.write_bytes(b"not a key")
    held = cli("plan", "--limit", "syndicat-eaux", quickstart)
    assert f"! conflict g2 on ws-marches: {stray}" in held.stdout, held.stdout


def test_a_target_only_another_entity_uses_is_not_looked_at_and_its_outage_does_not_count(
    cli: Runner, quickstart: Path
) -> None:
    """ws-accueil holds commune-exemple's copies only: down, it does not concern a run
    limited to syndicat-eaux, which exits 0 and does not name it (an operator fixing one
    entity is not told of another's outage, nor given the partial exit code)."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    workstations = quickstart.parent / "demo-out" / "workstations"
    out_of_reach(workstations / "ws-accueil", workstations / "elsewhere")
    limited = cli("plan", "--limit", "syndicat-eaux", quickstart)
    assert limited.returncode == 0, limited.stdout + limited.stderr
    assert "ws-accueil" not in limited.stdout + limited.stderr
    whole = cli("plan", quickstart)
    assert whole.returncode == 4 and "ws-accueil" in whole.stdout + whole.stderr


def test_a_target_outside_the_limit_is_not_looked_at_even_when_it_is_out_of_reach(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """ws-marches is out of reach (its folder replaced by a symlink) while an operator repairs
    ws-accueil alone: the limited plan never looks at ws-marches, so it neither reports it
    unreachable nor exits as if a target of the run were down."""
    applied(cli, quickstart)
    marches = quickstart.parent / "demo-out/workstations/ws-marches"
    out_of_reach(marches, tmp_path / "away")
    planned = cli("plan", "--detailed-exitcode", "--limit", "ws-accueil", quickstart)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "ws-marches" not in planned.stdout + planned.stderr
    whole = cli("plan", "--detailed-exitcode", quickstart)
    assert whole.returncode != 0 and "ws-marches" in whole.stdout + whole.stderr
