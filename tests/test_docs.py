"""The docs' commands run (so they do not rot) and the manifest reference matches the schema."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.manifest.reference import render
from tests.conftest import EXAMPLES, REPO


def sh_blocks(doc: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.S)


@pytest.mark.parametrize("name", ["HOWTO.md", "RUNBOOK.md"])
def test_documented_commands_run(name: str, tmp_path: Path) -> None:
    blocks = sh_blocks(REPO / "docs" / name)
    assert len(blocks) >= 2
    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path)
    shutil.copytree(EXAMPLES / "secrets", tmp_path / "secrets")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for i, block in enumerate(blocks):
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{name} block {i + 1}:\n{block}\n{done.stdout}{done.stderr}"


def test_manifest_reference_matches_the_schema() -> None:
    current = (REPO / "docs" / "MANIFEST.md").read_text()
    assert current == render(), (
        "docs/MANIFEST.md is stale: python -m provisioner.manifest.reference > docs/MANIFEST.md"
    )


def test_cli_help_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", "--help"], capture_output=True, text=True, check=True
    )
    for command in (
        "validate",
        "plan",
        "apply",
        "status",
        "check",
        "rehearse",
        "adopt",
        "export",
        "trust",
        "rekey",
        "report",
    ):
        assert re.search(rf"^\s+{command}\s", done.stdout, flags=re.M), command
        assert command in (REPO / "README.md").read_text()
