"""A saved plan (`plan --out FILE`, then `apply FILE`) carries what it was made with: the
consultations file and the --limit given to `plan`, and the state it was made for. It is a
document reviewers read in a merge request, and `apply` says plainly why it refuses one."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Runner
from tests.engine_helpers import p12_files, state_rows
from tests.test_consultations import consultations


def test_apply_of_a_saved_plan_uses_its_consultations_file_and_limit(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """The consultations file and --limit given to `plan --out` are those `apply FILE` uses
    (they may not be given again): the binding is recorded and only the limited entity gets
    a key. A saved plan that lost them would be refused as stale."""
    bindings = consultations(tmp_path, name="elsewhere.yaml")  # not named by the manifest
    saved = tmp_path / "change.plan"
    made = cli(
        "plan",
        "--out",
        saved,
        "--consultations",
        bindings,
        "--limit",
        "commune-exemple",
        quickstart,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document["consultations"] == str(bindings)
    assert document["limit"] == ["commune-exemple"]

    done = cli("apply", saved)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Apply complete" in done.stdout
    assert state_rows(quickstart, "SELECT reference, entity FROM consultations") == [
        ("2026-TX-014", "commune-exemple")
    ]
    assert state_rows(quickstart, "SELECT DISTINCT entity FROM generations") == [
        ("commune-exemple",)
    ]


def test_a_saved_plan_made_for_another_state_is_refused_before_anything_is_done(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """A plan file made against a state of another lineage (made in CI against the team's
    state, then applied where the state folder is new or was replaced) is refused before
    anything is done: no key is made, no copy written."""
    saved = tmp_path / "change.plan"
    assert cli("plan", "--out", saved, quickstart).returncode == 0
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document["lineage"] is None  # no state yet where it was made
    document["lineage"] = "3f0c9a52-5d7e-4f43-9a3e-2b8f1c6d7e90"  # as made against another
    saved.write_text(json.dumps(document, indent=2), encoding="utf-8")

    refused = cli("apply", saved)
    assert refused.returncode == 1
    assert "it was made for another state (lineage 3f0c9a52-5d7e-4f43-9a3e" in refused.stderr
    assert p12_files(quickstart) == {}


def test_a_plan_file_of_another_format_version_or_damaged_is_refused_saying_so(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    saved = tmp_path / "change.plan"
    assert cli("plan", "--out", saved, quickstart).returncode == 0
    text = saved.read_text(encoding="utf-8")

    later = tmp_path / "later.plan"  # written by a later release, in its own format
    later.write_text(text.replace('"provisioner-plan/1"', '"provisioner-plan/12"'))
    refused = cli("apply", later)
    assert refused.returncode == 1
    assert f"{later}: not a plan of this provisioner ('provisioner-plan/12')" in refused.stderr

    cut = tmp_path / "cut.plan"  # a copy interrupted half way
    cut.write_text(text[: len(text) // 2])
    refused = cli("apply", cut)
    assert refused.returncode == 1
    assert f"{cut}: unreadable plan file" in refused.stderr
    assert not (quickstart.parent / ".provisioner" / "state.db").exists()


def test_a_saved_plan_reads_as_plan_json_does_one_field_a_line_names_as_written(
    cli: Runner, quickstart: Path, tmp_path: Path
) -> None:
    """Reviewers read and diff the plan file in a merge request: indented JSON, one field a
    line as `plan --json` prints it, and designations with their accents as written (not
    \\u escapes), so that `grep 'Mairie de Sète'` finds them."""
    text = quickstart.read_text(encoding="utf-8")
    quickstart.write_text(
        text.replace("designation: Commune Exemple", "designation: Mairie de Sète")
    )
    saved = tmp_path / "change.plan"
    assert cli("plan", "--out", saved, quickstart).returncode == 0
    written = saved.read_text(encoding="utf-8")
    assert '"designation": "Mairie de Sète"' in written
    assert written == json.dumps(json.loads(written), indent=2, ensure_ascii=False) + "\n"
