"""A target renamed, its folder spelt anew, or its copies moving to a target not reached yet:
the operator's routine edits of the inventory, walked with a bound key (consultation C-1 open,
bound to commune-exemple's generation 1). Before these tests, a workstation renamed with its
path unchanged had its copy written under the new name and then removed under the old one:
`apply` said "Apply complete" and the bound key was on no workstation."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_CLOCK, Runner
from tests.engine_helpers import key_fingerprints, state_rows

HEADER = "reference;title;entity;designation;status;deadline;opening\n"


def at(when: dt.datetime) -> dict[str, str]:
    return {"PROVISIONER_NOW": when.isoformat()}


DAY_AFTER = at(TEST_CLOCK + dt.timedelta(days=1))


def bound(cli: Runner, manifest: Path) -> tuple[str, str]:
    """Both entities applied, then C-1 bound to commune-exemple's generation 1."""
    assert cli("apply", "--auto-approve", manifest).returncode == 0
    c = manifest.parent / "c.csv"
    c.write_text(HEADER + "C-1;x;commune-exemple;Commune Exemple;open;10/11/2028;20/11/2028\n")
    given = ("--consultations", str(c))
    done = cli("apply", "--auto-approve", *given, manifest, env=DAY_AFTER)
    assert done.returncode == 0, done.stdout + done.stderr
    return given


def edit(manifest: Path, *pairs: tuple[str, str]) -> None:
    text = manifest.read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    manifest.write_text(text)


def said(result: object) -> str:
    return str(getattr(result, "stdout", "")) + str(getattr(result, "stderr", ""))


RENAME_WORKSTATION = (
    ("- name: ws-accueil", "- name: ws-front"),
    ("[service-marches, ws-accueil]", "[service-marches, ws-front]"),
)
RENAME_LOCATION = (("- name: backup-share", "- name: nas"), ("[backup-share]", "[nas]"))
SWAP_PATHS = (
    ("path: demo-out/workstations/ws-accueil", "path: SWAP"),
    ("path: demo-out/workstations/ws-marches", "path: demo-out/workstations/ws-accueil"),
    ("path: SWAP", "path: demo-out/workstations/ws-marches"),
)
THROUGH_A_LINK = (("path: demo-out/workstations/ws-marches", "path: dd/workstations/ws-marches"),)


@pytest.mark.parametrize(
    "edits",
    [RENAME_WORKSTATION, RENAME_LOCATION, SWAP_PATHS, THROUGH_A_LINK],
    ids=["workstation renamed", "shared location renamed", "two paths swapped", "through a link"],
)
def test_a_target_renamed_or_spelt_anew_keeps_every_copy(
    cli: Runner, quickstart: Path, edits: tuple[tuple[str, str], ...]
) -> None:
    given = bound(cli, quickstart)
    (quickstart.parent / "dd").symlink_to("demo-out")
    held = key_fingerprints(quickstart)
    workstations = {rel for rel in held if rel.startswith("workstations/")}
    edit(quickstart, *edits)
    done = cli("apply", "--auto-approve", *given, quickstart, env=DAY_AFTER)
    assert done.returncode == 0, said(done)
    assert not re.search(r" - remove g1 on .*/commune-exemple", done.stdout), done.stdout
    after = key_fingerprints(quickstart)
    if edits is SWAP_PATHS:
        # syndicat-eaux's one workstation, ws-marches, now writes into ws-accueil's folder.
        moved = "workstations/ws-marches/syndicat-eaux.g1.p12"
        assert after.pop("workstations/ws-accueil/syndicat-eaux.g1.p12") == held.pop(moved)
        workstations.discard(moved)
    assert after == held, done.stdout
    assert workstations <= set(after)
    again = cli("plan", *given, quickstart, env=DAY_AFTER)
    assert again.returncode == 0, said(again)
    assert "Plan: 0 to create, 0 to update, 0 to remove." in again.stdout, again.stdout
    checked = cli("check", *given, quickstart, env=DAY_AFTER)
    assert checked.returncode == 0, said(checked)


def test_the_record_of_a_renamed_workstation_goes_and_its_file_stays(
    cli: Runner, quickstart: Path
) -> None:
    """What the reviewer reads: the file is rewritten under the new name, and the old
    name's record is forgotten (`~`, not `-`); the audit log says which."""
    given = bound(cli, quickstart)
    edit(quickstart, *RENAME_WORKSTATION)
    planned = cli("plan", *given, quickstart, env=DAY_AFTER)
    copy = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g1.p12"
    assert (
        f"    ~ forget the record of g1 on ws-accueil: {copy}  [same-file] the file is "
        f"ws-front's copy at {copy} now (one file under another target name or path): only "
        "this record goes, the file stays\n"
    ) in planned.stdout, planned.stdout
    assert f"    ~ rewrite g1 on ws-front: {copy}  [unrecorded]" in planned.stdout
    assert "Plan: 0 to create, 2 to update, 0 to remove." in planned.stdout
    # The report reads it the same way: the old name's cell is no removal.
    html = quickstart.parent / "report.html"
    assert cli("report", *given, quickstart, "--out", html, env=DAY_AFTER).returncode in (0, 1)
    cells = re.findall(r'<td class="copy (\w+)" title="([^"]*)">([^<]*)</td>', html.read_text())
    assert [(c, word) for c, title, word in cells if "only this record goes" in title] == [
        ("drifted", "same-file")
    ]
    assert cli("apply", "--auto-approve", *given, quickstart, env=DAY_AFTER).returncode == 0
    rows = state_rows(quickstart, "SELECT target, path FROM copies")
    assert [t for t, path in rows if path == str(copy)] == ["ws-front"]
    assert copy.is_file()
    audit = json.loads(cli("audit", "--json", quickstart).stdout)["records"]
    actions = [(r["action"], r["detail"].get("target")) for r in audit]
    assert ("copy-forgotten", "ws-accueil") in actions, actions
    assert ("copy-removed", "ws-accueil") not in actions, actions


UNREACHABLE_WORKSTATION = (
    "    - {name: ws-new, transport: ssh, host: 127.0.0.1, port: 1, user: x, "
    "known_hosts: kh, path: /tmp/ws-new, connect_timeout: 2}\n"
    "    - {name: ws-new-2, transport: ssh, host: 127.0.0.1, port: 1, user: x, "
    "known_hosts: kh, path: /tmp/ws-new-2, connect_timeout: 2}\n  groups:"
)


def test_a_workstation_dropped_from_the_inventory_keeps_its_copy_until_its_successor_is_seen(
    cli: Runner, quickstart: Path
) -> None:
    """ws-accueil deleted from the inventory altogether (known only to the state now) and
    replaced by ws-new, still offline: the copy on ws-accueil is a workstation's, and stays
    until the workstation that should hold it instead is seen."""
    given = bound(cli, quickstart)
    (quickstart.parent / "kh").write_text("")
    copy = quickstart.parent / "demo-out" / "workstations" / "ws-accueil" / "commune-exemple.g1.p12"
    assert copy.is_file()
    edit(
        quickstart,
        (
            "    - name: ws-accueil\n      transport: local\n"
            "      path: demo-out/workstations/ws-accueil\n",
            "",
        ),
        ("  groups:", UNREACHABLE_WORKSTATION),
        ("workstations: [service-marches, ws-accueil]", "workstations: [service-marches, ws-new]"),
    )
    done = cli("apply", "--auto-approve", *given, quickstart, env=DAY_AFTER)
    assert done.returncode == 4, said(done)
    assert "- remove g1 on ws-accueil" not in done.stdout, done.stdout
    assert (
        "  ! commune-exemple: [removals-held] 1 removal held back while ws-new could not be "
        "observed: the old copies stay until the targets that should hold them instead are seen"
    ) in done.stdout, done.stdout
    assert copy.is_file()


def test_copies_wait_for_a_new_workstation_not_reached_yet(cli: Runner, quickstart: Path) -> None:
    """The agents' PCs replaced by one still offline: the old workstations keep the bound key
    until the new one is seen holding it, and the plan says why nothing is removed."""
    given = bound(cli, quickstart)
    (quickstart.parent / "kh").write_text("")
    before = key_fingerprints(quickstart)
    edit(
        quickstart,
        ("  groups:", UNREACHABLE_WORKSTATION),
        ("workstations: [service-marches, ws-accueil]", "workstations: [ws-new, ws-new-2]"),
    )
    done = cli("apply", "--auto-approve", *given, quickstart, env=DAY_AFTER)
    assert done.returncode == 4, said(done)
    assert (
        "  ! commune-exemple: [removals-held] 2 removals held back while ws-new, ws-new-2 "
        "could not be observed: the old copies stay until the targets that should hold them "
        "instead are seen\n"
    ) in done.stdout, done.stdout
    assert key_fingerprints(quickstart) == before
    checked = cli("check", *given, quickstart, env=DAY_AFTER)
    assert checked.returncode == 1, said(checked)
    assert "[removals-held]" in checked.stdout
    # The new workstation reached (here: a folder of this machine): its copy is written, and
    # only then are the old ones taken off.
    edit(
        quickstart,
        (
            UNREACHABLE_WORKSTATION,
            "    - {name: ws-new, transport: local, path: demo-out/workstations/ws-new}\n"
            "    - {name: ws-new-2, transport: local, path: demo-out/workstations/ws-new-2}\n"
            "  groups:",
        ),
    )
    planned = cli("plan", "--json", *given, quickstart, env=DAY_AFTER)
    removals = [
        {k: a[k] for k in ("kind", "symbol", "entity", "generation", "reason", "target")}
        for a in json.loads(planned.stdout)["actions"]
        if a["kind"] == "remove-copy"
    ]
    assert removals == [
        {
            "kind": "remove-copy",
            "symbol": "-",
            "entity": "commune-exemple",
            "generation": 1,
            "reason": "decommissioned",
            "target": target,
        }
        for target in ("ws-accueil", "ws-marches")
    ], removals
    done = cli("apply", "--auto-approve", *given, quickstart, env=DAY_AFTER)
    assert done.returncode == 0, said(done)
    workstations = {rel for rel in key_fingerprints(quickstart) if rel.startswith("workstations/")}
    assert workstations == {
        "workstations/ws-new/commune-exemple.g1.p12",
        "workstations/ws-new-2/commune-exemple.g1.p12",
        "workstations/ws-marches/syndicat-eaux.g1.p12",
    }


def test_the_shared_copies_wait_for_a_new_shared_location_not_reached_yet(
    cli: Runner, quickstart: Path
) -> None:
    """Every generation of both entities stays on the old shared location while the new one
    is not reached: the copy that is never lost is never the one given up first, a retired
    generation's included (both keys were renewed: commune-exemple's generation 1 is kept
    for C-1, syndicat-eaux's retired)."""
    given = bound(cli, quickstart)
    (quickstart.parent / "kh").write_text("")
    renamed = (
        (
            "  workstations:\n",
            "    - {name: nas2, transport: ssh, host: 127.0.0.1, port: 1, user: x, "
            "known_hosts: kh, path: /tmp/nas2, connect_timeout: 2}\n  workstations:\n",
        ),
        ("[backup-share]", "[nas2]"),
    )
    # Before the renewal, one copy each: one removal held, said in the singular.
    text = quickstart.read_text()
    edit(quickstart, *renamed)
    planned = cli("plan", *given, quickstart, env=DAY_AFTER)
    assert (
        "  ! syndicat-eaux: [removals-held] 1 removal held back while nas2 could not be "
        "observed: the old copies stay until the targets that should hold them instead are "
        "seen\n"
    ) in planned.stdout, planned.stdout
    quickstart.write_text(text)
    renewal = at(TEST_CLOCK + dt.timedelta(days=685))  # inside the 60-day window
    renewed = cli("apply", "--auto-approve", *given, quickstart, env=renewal)
    assert renewed.returncode == 0, said(renewed)
    before = key_fingerprints(quickstart)
    assert {rel for rel in before if rel.startswith("shared/")} == {
        f"shared/backup/{entity}.g{n}.p12"
        for entity in ("commune-exemple", "syndicat-eaux")
        for n in (1, 2)
    }
    edit(quickstart, *renamed)
    done = cli("apply", "--auto-approve", *given, quickstart, env=renewal)
    assert done.returncode == 4, said(done)
    for entity in ("commune-exemple", "syndicat-eaux"):
        assert f"{entity}: [removals-held] 2 removals held back while nas2" in done.stdout
    assert key_fingerprints(quickstart) == before


def test_two_workstations_that_are_one_folder_by_a_bind_mount_are_refused(
    cli: Runner, quickstart: Path
) -> None:
    """`validate` compares paths (symlinks resolved); a bind mount makes two paths one
    folder all the same. Observed (the same device and inode), the plan is refused: else
    each apply rewrites the other's copy, and a removal on one deletes the other's."""
    given = bound(cli, quickstart)
    other = quickstart.parent / "elsewhere"
    other.mkdir()
    accueil = quickstart.parent / "demo-out/workstations/ws-accueil"
    mounted = subprocess.run(["mount", "--bind", str(accueil), str(other)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a bind mount needs privileges: {mounted.stderr.decode().strip()}")
    try:
        before = key_fingerprints(quickstart)
        edit(
            quickstart,
            ("path: demo-out/workstations/ws-marches", f"path: {other}"),
            # A target no entity uses is not observed: the check goes on past it.
            (
                "  locations:\n",
                "  locations:\n    - {name: spare, transport: local, path: spare}\n",
            ),
        )
        planned = cli("plan", *given, quickstart, env=DAY_AFTER)
        assert planned.returncode == 1, said(planned)
        assert (
            f"workstation 'ws-marches' ({other}) is the folder of workstation 'ws-accueil' "
            f"({accueil}), one folder reached by two paths (a bind mount, a disk mounted "
            "twice): two targets may not share a folder"
        ) in " ".join(said(planned).split()), said(planned)
        done = cli("apply", "--auto-approve", *given, quickstart, env=DAY_AFTER)
        assert done.returncode == 1, said(done)
        assert key_fingerprints(quickstart) == before
    finally:
        subprocess.run(["umount", str(other)], check=True)


def test_a_shared_location_renamed_after_a_renewal_keeps_every_generation(
    cli: Runner, quickstart: Path
) -> None:
    """Its copies of retired generations too: the new name keeps every generation ever
    made, so none of its files is removed under the old name."""
    given = bound(cli, quickstart)
    renewal = at(TEST_CLOCK + dt.timedelta(days=685))  # inside the 60-day window
    assert cli("apply", "--auto-approve", *given, quickstart, env=renewal).returncode == 0
    held = key_fingerprints(quickstart)
    assert "shared/backup/syndicat-eaux.g1.p12" in held  # retired, kept on the share
    edit(quickstart, *RENAME_LOCATION)
    done = cli("apply", "--auto-approve", *given, quickstart, env=renewal)
    assert done.returncode == 0, said(done)
    assert " - remove " not in done.stdout, done.stdout
    assert key_fingerprints(quickstart) == held
    again = cli("plan", "--detailed-exitcode", *given, quickstart, env=renewal)
    assert again.returncode == 0, said(again)


def test_a_copy_damaged_on_a_renamed_workstation_is_repaired_not_left_as_someone_elses(
    cli: Runner, quickstart: Path
) -> None:
    """Found by the stateful long profile: ws-accueil renamed, then its copy garbled before
    the next apply. The file is this state's (written under the old name): drift to repair,
    not a file someone else put there."""
    given = bound(cli, quickstart)
    held = key_fingerprints(quickstart)
    edit(quickstart, *RENAME_WORKSTATION)
    copy = quickstart.parent / "demo-out/workstations/ws-accueil/commune-exemple.g1.p12"
    copy.write_bytes(copy.read_bytes()[:100])
    done = cli("apply", "--auto-approve", *given, quickstart, env=DAY_AFTER)
    assert done.returncode == 0, said(done)
    assert f"    ~ rewrite g1 on ws-front: {copy}  [drifted]" in done.stdout, done.stdout
    assert "! conflict" not in done.stdout
    assert key_fingerprints(quickstart) == held


def test_a_workstation_renamed_at_a_renewal_loses_the_retired_copy(
    cli: Runner, quickstart: Path
) -> None:
    """ws-accueil renamed ws-front (same folder) by the apply that renews commune-exemple:
    generation 2 is written there, and generation 1, retired and bound to nothing, leaves
    the folder as it leaves every workstation (only shared locations keep old generations);
    the shared location keeps both."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    edit(quickstart, *RENAME_WORKSTATION)
    renewal = at(dt.datetime(2028, 10, 15, 10, 0, tzinfo=dt.UTC))
    done = cli("apply", "--auto-approve", quickstart, env=renewal)
    assert done.returncode == 0, said(done)
    out = quickstart.parent / "demo-out"
    assert sorted(p.name for p in (out / "workstations" / "ws-accueil").glob("commune-*")) == [
        "commune-exemple.g2.p12"
    ], said(done)
    assert {"commune-exemple.g1.p12", "commune-exemple.g2.p12"} <= {
        p.name for p in (out / "shared" / "backup").iterdir()
    }
    assert cli("plan", "--detailed-exitcode", quickstart, env=renewal).returncode == 0


def test_a_folder_gone_and_declared_elsewhere_is_a_move_not_the_same_file(
    cli: Runner, quickstart: Path
) -> None:
    """ws-accueil's folder deleted and its path declared anew at a folder not made yet: the
    two places are looked at by their paths (neither folder is there to show a device and
    inode), so the copy recorded in the old folder is a copy the target's folder moved away
    from, not the file the new path names: the plan writes the new copy and removes the old
    record as moved, and the apply leaves nothing to do."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    workstations = quickstart.parent / "demo-out" / "workstations"
    old, new = workstations / "ws-accueil", workstations / "ws-front"
    shutil.rmtree(old)
    edit(
        quickstart,
        ("path: demo-out/workstations/ws-accueil", "path: demo-out/workstations/ws-front"),
    )
    planned = cli("plan", quickstart)
    assert planned.returncode == 0, said(planned)
    name = "commune-exemple.g1.p12"
    assert f"+ write g1 on ws-accueil: {new / name}  [missing] no file there" in planned.stdout
    assert (
        f"- remove g1 on ws-accueil: {old / name}  [moved] the target's folder changed"
    ) in planned.stdout, planned.stdout
    assert "Plan: 1 to create, 0 to update, 1 to remove." in planned.stdout, planned.stdout
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    assert (new / name).is_file() and not old.exists()
    again = cli("plan", "--detailed-exitcode", quickstart)
    assert again.returncode == 0, again.stdout
