"""No input, state or environment gives "Internal error": each case is a message naming the
file or place and what to do, exit 1 (UNKNOWN 3 for `check`), nothing written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.errors import ManifestError
from provisioner.manifest.loader import read_manifest
from tests.conftest import EXAMPLES, REPO, Runner
from tests.engine_helpers import serial, state_rows

FUTURE = {"PROVISIONER_NOW": "2029-01-01T00:00:00+00:00"}  # every key is due again


def clean(done: subprocess.CompletedProcess[str]) -> str:
    """Its error output, after checking it is a message and not a crash."""
    for text in (done.stdout, done.stderr):
        assert "Traceback" not in text and "Internal error" not in text, text
        assert "rollback" not in text, text
    return done.stderr


def test_a_version_with_5000_digits_is_placed(cli: Runner, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        f"version: {'9' * 5000}\nescrow: {{passphrase: {{env: E}}}}\nentities: []\n"
    )
    done = cli("validate", "m.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "m.yaml:1:10: error: the number 99999999999999999999... is too long to read "
        "(5000 characters)" in clean(done)
    )


def test_lock_path_that_is_a_folder(cli: Runner, quickstart: Path) -> None:
    lock = quickstart.parent / ".provisioner" / "lock"
    lock.mkdir(parents=True)
    done = cli("apply", "--auto-approve", quickstart)
    assert done.returncode == 1
    assert f"Error: {lock}: is a folder, not the lock file" in clean(done)
    assert "move whatever is at that name away" in done.stderr
    assert sorted(p.name for p in lock.parent.iterdir()) == ["lock"], "nothing written"
    assert not (quickstart.parent / "demo-out").exists()


def test_keyring_with_huge_scrypt_parameters(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    keyring = quickstart.parent / ".provisioner" / "escrow" / "keyring.json"
    ring = json.loads(keyring.read_text())
    before = serial(quickstart)
    for n, r, p in ((2**40, 8, 1), (2**20, 1024, 1), (2**15, 8, 10**6), (3, 8, 1), ("x", 8, 1)):
        keyring.write_text(json.dumps(dict(ring, n=n, r=r, p=p)))
        started = time.monotonic()
        done = cli("plan", quickstart)
        assert done.returncode == 1
        assert (
            f"Error: {keyring}: the keyring's scrypt parameters (n={n}, r={r}, p={p}) are out "
            "of bounds" in clean(done)
        )
        assert "restore the escrow folder from a backup" in done.stderr
        assert time.monotonic() - started < 30
    assert serial(quickstart) == before


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_ctrl_c_right_after_a_commit(cli: Runner, quickstart: Path, nth: int) -> None:
    """SIGINT arriving while COMMIT runs: it is raised once COMMIT has returned. The rollback
    that followed failed ("no transaction is active") and hid it as an internal error."""
    done = cli(
        "apply",
        "--auto-approve",
        quickstart,
        env={"PROVISIONER_FAULT_INJECT": f"committed:{nth}:INT"},
    )
    assert done.returncode == 130
    assert "Interrupted (Ctrl-C). What was recorded before is kept" in clean(done)
    again = cli("apply", "--auto-approve", quickstart)
    assert again.returncode == 0, again.stderr
    assert cli("rehearse", quickstart).returncode == 0
    assert "No changes." in cli("plan", quickstart).stdout


def test_ctrl_c_during_key_generation(quickstart: Path) -> None:
    """A real Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while the
    workers generate keys: one message, no worker traceback, the next apply completes."""
    text = quickstart.read_text()
    extra = "".join(
        f"  - {{id: e{i}, name: E{i}, key: {{designation: E{i}, size: 4096}}, "
        "password: {file: secrets/commune-exemple.pass}, shared_locations: [backup-share]}\n"
        for i in range(12)
    )
    quickstart.write_text(text + extra)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROVISIONER_") or k == "PROVISIONER_NOW"
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "apply", "--auto-approve", "-q", str(quickstart)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    keyring = quickstart.parent / ".provisioner" / "escrow" / "keyring.json"
    deadline = time.monotonic() + 120
    while not keyring.exists() and time.monotonic() < deadline:  # the state is open: keys next
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (out, err)
    assert err.strip().startswith("Interrupted (Ctrl-C)") and err.count("\n") <= 3, err
    # What was done, counted: each key it reports made is sealed in the escrow.
    made = re.search(r"Done before the interruption: new keys made and escrowed (\d+) of 14", err)
    assert made, err
    assert int(made[1]) <= len(list(keyring.parent.glob("*.key")))
    from tests.conftest import run_cli

    again = run_cli("apply", "--auto-approve", "-q", quickstart)
    assert again.returncode == 0, again.stderr


# ---------------------------------------------------------------- a full disk


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): " + mounted.stderr.decode())
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, keep: int) -> Path:
    """Fill the file system of `folder`, leaving about `keep` bytes."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - keep))
    return filler


def test_state_on_a_full_disk(cli: Runner, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        shutil.copy(EXAMPLES / "quickstart.yaml", disk / "quickstart.yaml")
        shutil.copytree(EXAMPLES / "secrets", disk / "secrets")
        manifest = disk / "quickstart.yaml"
        assert cli("apply", "--auto-approve", manifest).returncode == 0
        recorded = serial(manifest)
        messages = []
        for keep in (0, 16 * 1024, 64 * 1024):
            filler = fill(disk, keep)
            for _ in range(2):  # a retry meets the same disk, and says the same
                done = cli("apply", "--auto-approve", manifest, env=FUTURE)
                assert done.returncode == 1
                messages.append(clean(done))
                assert "No space left" not in done.stderr, "not from the lock"
                assert "then run the command again" in done.stderr
            probe = cli("check", manifest, env=FUTURE)
            assert probe.returncode in (2, 3), probe.stdout  # CRITICAL (expired) or UNKNOWN
            assert "Traceback" not in probe.stdout + probe.stderr
            filler.unlink()
        assert any("database or disk is full" in m for m in messages), messages
        assert all("the disk is full" in m or "No space" in m for m in messages), messages
        # Steps recorded before the disk filled are kept, whole: the state is intact.
        assert serial(manifest) >= recorded
        assert state_rows(manifest, "PRAGMA integrity_check") == [("ok",)]
        # Space again: the same apply completes, and every copy opens.
        done = cli("apply", "--auto-approve", manifest, env=FUTURE)
        assert done.returncode == 0, done.stderr
        assert cli("rehearse", manifest, env=FUTURE).returncode == 0


# ---------------------------------------------------------------- hostile values, anywhere

QUICKSTART = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())


def _leaves(node: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))] or [path]
    return [path]


LEAVES = _leaves(QUICKSTART)
HOSTILE_SCALARS = [
    "9" * 5000,
    "-" + "9" * 5000,
    "0x" + "f" * 5000,
    "1e999999",
    ".nan",
    "-.inf",
    "0o777",
    "1_000",
    "1:20:30",
    "2026-02-30",
    "~",
    "yes",
    "''",
    '"\\0"',
    '"\\u202e"',
    '"\\ud800"',
    '"C:\\\\Users\\\\x"',
    "con",
    "[]",
    "{}",
    "[[[[[]]]]]",
    "{a: {b: {c: 1}}}",
    "!!binary aGVsbG8=",
    "!!python/object:os.system x",
    "&a x",
    "*nowhere",
    '"' + "x" * 100_000 + '"',
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(LEAVES), st.sampled_from(HOSTILE_SCALARS)),
        min_size=1,
        max_size=3,
    )
)
def test_hostile_values_anywhere_give_placed_errors(
    tmp_path: Path, changes: list[tuple[tuple[object, ...], str]]
) -> None:
    text = (EXAMPLES / "quickstart.yaml").read_text()
    lines = text.splitlines()
    for path, value in changes:
        key = path[-1] if path and isinstance(path[-1], str) else None
        if key is None:
            continue
        for i, line in enumerate(lines):  # the first `key:` line: replace its value
            stripped = line.lstrip(" -")
            if stripped.startswith(f"{key}:"):
                lines[i] = line[: len(line) - len(stripped)] + f"{key}: {value}"
                break
    manifest = tmp_path / "m.yaml"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        read_manifest(manifest)
    except ManifestError as exc:
        for d in exc.diagnostics:
            assert d.location.file == str(manifest) and d.location.line is not None, str(d)
