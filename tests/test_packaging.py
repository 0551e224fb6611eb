"""The wheel: its name and metadata, and that it installs and runs outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO

DIST = "bicle-provisioner"


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # The test venv holds the build backend (setuptools>=77, test extra): no index needed.
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--quiet", "-w", out, REPO, cwd=out,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("bicle_provisioner-*.whl")
    return found


def test_wheel_metadata_names_the_tool_and_its_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(z.read(meta_name).decode())
        (license_name,) = [n for n in names if n.endswith("LICENSE")]
        license_text = z.read(license_name).decode()
        entry_points = z.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    assert meta["Name"] == DIST
    assert meta["License-Expression"] == "MIT"
    assert license_text.startswith("MIT License")
    assert meta["Author"] == "provisioner maintainers"
    assert meta.get_all("Project-URL")
    assert "Topic :: Security :: Cryptography" in meta.get_all("Classifier")
    assert "bi-clé" in meta["Keywords"]
    assert "provisioner = provisioner.cli:main" in entry_points
    # The schemas the manifest loader reads travel with the package.
    assert "provisioner/schemas/manifest.schema.json" in names
    assert "provisioner/py.typed" in names
    # The examples too (issue 31): what `init` points at, the quickstart's $schema resolving.
    for example in ("quickstart.yaml", "region.yaml", "secrets/escrow.pass", "scheduled/crontab"):
        assert f"provisioner/examples/{example}" in names, example
    assert not [n for n in names if n.startswith("tests/")]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert declared["name"] == DIST
    assert declared["version"] == meta["Version"]


def test_wheel_installs_and_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv outside the repository: the wheel is installed without its dependencies
    (there may be no index here), which the venv finds in the test environment's
    site-packages through a .pth line. The `provisioner` it imports is the wheel's."""
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    py = venv / "bin" / "python"
    installed = run(
        py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr
    site = run(py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    # Appended after the venv's own site-packages, so the wheel's package comes first.
    (Path(site.stdout.strip()) / "_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    where = run(py, "-c", "import provisioner; print(provisioner.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    shown = run(py, "-m", "pip", "show", DIST, cwd=tmp_path)
    # The fields the issue found empty (which fields pip shows depends on its version).
    assert "Author: provisioner maintainers" in shown.stdout, shown.stdout

    command = venv / "bin" / "provisioner"
    version = run(command, "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("provisioner ")

    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path)
    shutil.copytree(EXAMPLES / "secrets", tmp_path / "secrets")
    valid = run(command, "validate", "quickstart.yaml", cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr
    assert "quickstart.yaml: valid (2 entities" in valid.stdout
    planned = run(command, "plan", "quickstart.yaml", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "Plan: " in planned.stdout
    # init writes a starter pointing at the installed schema; the shipped examples validate.
    started = run(command, "init", "starter", cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    first = (tmp_path / "starter" / "manifest.yaml").read_text().splitlines()[0]
    assert first.startswith(f"# yaml-language-server: $schema={venv}"), first
    examples = Path(started.stdout.split("More examples: ", 1)[1].strip())
    assert examples.is_relative_to(venv)
    valid = run(command, "validate", examples / "quickstart.yaml", cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr
