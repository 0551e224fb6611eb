"""Hostile input: each case gives a clear error or a planned repair, never a traceback, a hang,
or a write outside the declared targets."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioner.consultations import read_consultations
from provisioner.errors import ManifestError
from tests.conftest import Runner
from tests.engine_helpers import p12_files


def test_symlinked_target_folder_is_refused(cli: Runner, quickstart: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = quickstart.parent / "demo-out" / "workstations"
    folder.mkdir(parents=True)
    (folder / "ws-accueil").symlink_to(elsewhere)
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 4  # partial: that target refused, the others converged
    assert "ws-accueil: cannot observe the target: the target folder" in done.stdout
    assert "is a symlink" in done.stdout
    assert list(elsewhere.iterdir()) == [], "nothing written through the link"
    assert "Traceback" not in done.stderr


def test_copy_replaced_by_another_entitys_file_is_repaired(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    files = p12_files(quickstart)
    target = files["workstations/ws-marches/commune-exemple.g1.p12"]
    target.write_bytes(files["workstations/ws-marches/syndicat-eaux.g1.p12"].read_bytes())
    planned = cli("plan", quickstart)
    assert "~ rewrite g1 on ws-marches:" in planned.stdout and "[drifted]" in planned.stdout
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    assert cli("rehearse", quickstart).returncode == 0


def test_huge_scalar_and_control_characters(cli: Runner, tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(
        "version: 1\nescrow: {passphrase: {env: E}}\nentities:\n"
        f"  - {{id: a, name: A, key: {{designation: '{'x' * 5_000_000}'}}, "
        "password: {env: P}}\n"
    )
    done = cli("validate", m)
    assert done.returncode == 1 and "is too long" in done.stderr
    m.write_text(
        "version: 1\nescrow: {passphrase: {env: E}}\nentities:\n"
        '  - {id: a, name: A, key: {designation: "Ville\\u0007A"}, password: {env: P}}\n'
    )
    done = cli("validate", m)
    assert done.returncode == 1 and "designation contains control characters" in done.stderr
    m.write_text(
        "version: 1\nescrow: {passphrase: {env: E}}\nentities:\n"
        "  - {id: ../etc, name: A, key: {designation: A}, password: {env: P}}\n"
    )
    done = cli("validate", m)
    assert done.returncode == 1 and 'entities[0].id: "../etc" is not a valid name' in done.stderr


CSV_BITS = [
    "reference",
    "entity",
    "designation",
    "status",
    "open",
    "closed",
    ",",
    ";",
    "\n",
    '"',
    "x",
    "15/12/2026",
    "2026-13-45",
    "\x00",
    "é",
    "a" * 70,
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.sampled_from(CSV_BITS) | st.text(max_size=6), max_size=40),
    st.sampled_from([".csv", ".yaml"]),
)
@example(parts=["\r", "reference"], suffix=".csv")  # a lone \r ends a CSV line (was IndexError)
def test_consultations_loader_never_crashes(tmp_path: Path, parts: list[str], suffix: str) -> None:
    path = tmp_path / f"c{suffix}"
    text = "".join(parts)
    if suffix == ".csv":
        text = "reference,entity,designation,status,deadline,opening\n" + text
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        read_consultations(path, {"x"})
    except ManifestError as exc:
        assert exc.diagnostics and all(d.message for d in exc.diagnostics)
