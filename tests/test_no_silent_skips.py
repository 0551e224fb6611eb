"""No suite vanishes silently: under CI=true a test skipped for a missing real component fails
the run; locally the skip stays and the summary names it with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SUITE = """
import pytest

def test_needs_a_browser():
    pytest.skip("chromium is not installed (apt-get install chromium)")

def test_needs_a_user_account():
    pytest.skip("root reads any file: run as a user to test this")

def test_runs():
    assert True
"""


def run_suite(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SUITE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    plugins = ("-p", "tests.conftest", "-p", "no:cacheprovider")
    sample = str(tmp_path / "test_sample.py")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", *plugins, "--rootdir", str(tmp_path), sample],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_under_ci_a_missing_component_fails_the_run(tmp_path: Path) -> None:
    done = run_suite(tmp_path, ci=True)
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 passed, 1 skipped" in done.stdout, done.stdout
    assert "every real component must be installed: " in done.stdout
    assert "chromium is not installed" in done.stdout
    # A test that does not apply to the machine (CI runs as root) stays a skip, named.
    assert "SKIPPED [1]" in done.stdout and "root reads any file" in done.stdout


def test_locally_every_skip_is_named_with_its_reason(tmp_path: Path) -> None:
    done = run_suite(tmp_path, ci=False)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 2 skipped" in done.stdout, done.stdout
    assert "chromium is not installed (apt-get install chromium)" in done.stdout
    assert "root reads any file" in done.stdout
