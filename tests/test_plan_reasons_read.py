"""What each planned copy change says, as the reviewer of a dry run reads it: the action, the
target, the path, the reason code and its words, for a first apply, a renewal, a workstation
taken off the entity and a workstation's folder moved. One line each, exactly."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Runner

RENEWAL = {"PROVISIONER_NOW": "2028-10-15T10:00:00Z"}


def changes(stdout: str, target: str) -> list[str]:
    """The plan's lines of copy changes on `target`, in order."""
    return [
        line.strip()
        for line in stdout.splitlines()
        if line.strip()[:2] in ("+ ", "- ", "~ ") and f" on {target}: " in line
    ]


def test_each_copy_change_says_what_and_why(cli: Runner, quickstart: Path) -> None:
    out = quickstart.parent / "demo-out" / "workstations"
    first = cli("plan", quickstart)
    assert changes(first.stdout, "ws-accueil") == [
        f"+ write g1 on ws-accueil: {out}/ws-accueil/commune-exemple.g1.p12  [new-generation] "
        "copy of the new generation"
    ], first.stdout
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0

    renewal = cli("plan", quickstart, env=RENEWAL)
    assert changes(renewal.stdout, "ws-accueil") == [
        f"+ write g2 on ws-accueil: {out}/ws-accueil/commune-exemple.g2.p12  [new-generation] "
        "copy of the new generation",
        f"- remove g1 on ws-accueil: {out}/ws-accueil/commune-exemple.g1.p12  [retired] "
        "the generation is retired; the key stays in the escrow",
    ], renewal.stdout

    declared = quickstart.read_text()
    quickstart.write_text(
        declared.replace(
            "workstations: [service-marches, ws-accueil]", "workstations: [service-marches]"
        )
    )
    taken_off = cli("plan", quickstart)
    assert changes(taken_off.stdout, "ws-accueil") == [
        f"- remove g1 on ws-accueil: {out}/ws-accueil/commune-exemple.g1.p12  [decommissioned] "
        "the target is no longer declared for the entity"
    ], taken_off.stdout

    # The workstation gone from the inventory too: the state says where its copy is.
    quickstart.write_text(
        declared.replace(
            "workstations: [service-marches, ws-accueil]", "workstations: [service-marches]"
        ).replace(
            "    - name: ws-accueil\n      transport: local\n"
            "      path: demo-out/workstations/ws-accueil\n",
            "",
        )
    )
    forgotten = cli("plan", quickstart)
    assert changes(forgotten.stdout, "ws-accueil") == changes(taken_off.stdout, "ws-accueil")

    quickstart.write_text(
        declared.replace(
            "path: demo-out/workstations/ws-accueil\n", "path: demo-out/workstations/ws-accueil-2\n"
        )
    )
    moved = cli("plan", quickstart)
    assert changes(moved.stdout, "ws-accueil") == [
        f"+ write g1 on ws-accueil: {out}/ws-accueil-2/commune-exemple.g1.p12  [missing] "
        "no file there",
        f"- remove g1 on ws-accueil: {out}/ws-accueil/commune-exemple.g1.p12  [moved] "
        "the target's folder changed",
    ], moved.stdout


def test_a_renewal_also_puts_back_an_older_generations_lost_copy_on_the_shared_location(
    cli: Runner, quickstart: Path
) -> None:
    """Generation 1's copy on the backup share deleted, then the renewal: the share gets
    generation 2 and generation 1 back (shared locations keep every generation), in one
    plan."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    backup = quickstart.parent / "demo-out" / "shared" / "backup"
    (backup / "commune-exemple.g1.p12").unlink()
    renewal = cli("plan", quickstart, env=RENEWAL)
    assert [c for c in changes(renewal.stdout, "backup-share") if "commune-exemple" in c] == [
        f"+ write g2 on backup-share: {backup}/commune-exemple.g2.p12  [new-generation] "
        "copy of the new generation",
        f"+ write g1 on backup-share: {backup}/commune-exemple.g1.p12  [missing] no file there",
    ], renewal.stdout


def test_a_file_where_the_new_generation_goes_does_not_hide_what_else_the_share_needs(
    cli: Runner, quickstart: Path
) -> None:
    """At the renewal, someone's file stands where generation 2 goes on the backup share and
    generation 1's copy there was deleted: the plan names the conflict and still plans
    generation 1 back, so the reviewer sees every repair the share needs, not the first."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    backup = quickstart.parent / "demo-out" / "shared" / "backup"
    (backup / "commune-exemple.g1.p12").unlink()
    (backup / "commune-exemple.g2.p12").write_bytes(b"someone else's file")
    renewal = cli("plan", quickstart, env=RENEWAL)
    assert renewal.returncode == 1, renewal.stdout + renewal.stderr
    said = renewal.stdout + renewal.stderr
    assert f"{backup}/commune-exemple.g2.p12" in said and "where its new copy goes" in said
    assert f"+ write g1 on backup-share: {backup}/commune-exemple.g1.p12  [missing] " in said


def test_a_share_moved_at_the_renewal_keeps_its_old_folder_and_workstations_drop_the_old_key(
    cli: Runner, quickstart: Path
) -> None:
    """The backup share's folder moved in the manifest in the run that renews: the old folder's
    copy of generation 1 is kept (a shared location never loses a generation), and the
    workstations, which sort after it, still have generation 1 removed."""
    assert cli("apply", "--auto-approve", "-q", quickstart).returncode == 0
    root = quickstart.parent / "demo-out"
    quickstart.write_text(
        quickstart.read_text().replace(
            "path: demo-out/shared/backup\n", "path: demo-out/shared/backup-2\n"
        )
    )
    renewal = cli("plan", quickstart, env=RENEWAL)
    assert changes(renewal.stdout, "ws-accueil") == [
        f"+ write g2 on ws-accueil: {root}/workstations/ws-accueil/commune-exemple.g2.p12  "
        "[new-generation] copy of the new generation",
        f"- remove g1 on ws-accueil: {root}/workstations/ws-accueil/commune-exemple.g1.p12  "
        "[retired] the generation is retired; the key stays in the escrow",
    ], renewal.stdout
    assert not [c for c in changes(renewal.stdout, "backup-share") if c.startswith("- ")]
    done = cli("apply", "--auto-approve", "-q", quickstart, env=RENEWAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (root / "workstations" / "ws-accueil" / "commune-exemple.g1.p12").exists()
    assert (root / "shared" / "backup" / "commune-exemple.g1.p12").is_file()
    assert (root / "shared" / "backup-2" / "commune-exemple.g1.p12").is_file()
