"""Makes docs/images/report-region.png: the report of examples/region.yaml, applied.

The region's targets are SSH hosts and mounts of a real network; here each becomes a local
folder under a temporary directory (same names, same entities, issuer, profiles and
consultations), its passwords a DEMO ONLY file. It is applied on 27/11/2026 (the region CA's
first day), then the consultations launched with its keys are bound (the platform's export,
region-consultations.csv), the departement's copy on cd-juridique-01 is deleted, a plan is
saved, and the report of 01/12/2026 with that plan is laid out by headless chromium (1000 x
1250 pixels).

    .venv/bin/python docs/region_report.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
OUT = REPO / "docs" / "images" / "report-region.png"
APPLIED = "2026-11-27T08:00:00+00:00"
REPORTED = "2026-12-01T08:00:00+00:00"


def provisioner(folder: Path, *args: str, now: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "provisioner", *args],
        cwd=folder,
        env={**env, "PROVISIONER_NOW": now},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="region-report-"))
    try:
        document = yaml.safe_load((EXAMPLES / "region.yaml").read_text())
        inventory = document["inventory"]
        for role in ("locations", "workstations"):
            inventory[role] = [
                {"name": t["name"], "transport": "local", "path": f"targets/{t['name']}"}
                for t in inventory[role]
            ]
        for entity in document["entities"]:
            entity["password"] = {"file": "secrets/bicle.pass"}  # DEMO ONLY
        manifest = folder / "region.yaml"
        manifest.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
        shutil.copytree(EXAMPLES / "region-ca", folder / "region-ca")
        (folder / "secrets").mkdir()
        shutil.copy(EXAMPLES / "secrets" / "region-ca.pass", folder / "secrets")
        (folder / "secrets" / "bicle.pass").write_text("Demo-Only-Password-2026\n")
        shutil.copy(EXAMPLES / "region-consultations.yaml", folder)
        shutil.copy(EXAMPLES / "region-consultations.csv", folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
        env["PROVISIONER_ESCROW_PASSPHRASE"] = "Demo-Only-Escrow-Passphrase"
        provisioner(folder, "apply", "--auto-approve", "region.yaml", now=APPLIED, env=env)
        # The consultations launched afterwards with those keys (the platform's export).
        provisioner(
            folder, "apply", "--auto-approve", "--consultations", "region-consultations.csv",
            "region.yaml", now=APPLIED, env=env,
        )  # fmt: skip
        (folder / "targets" / "cd-juridique-01" / "departement.g1.p12").unlink()
        provisioner(folder, "plan", "region.yaml", "--out", "repair.plan", now=REPORTED, env=env)
        provisioner(
            folder, "report", "region.yaml", "--plan", "repair.plan", "--out", "report.html",
            now=REPORTED, env=env,
        )  # fmt: skip
        page = folder / "report.html"
        shot = folder / "report.png"
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={folder / 'profile'}", "--window-size=1000,1250",
             f"--screenshot={shot}", page.as_uri()],
            check=True,
            capture_output=True,
        )  # fmt: skip
        OUT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, OUT)
        print(f"{OUT}: {OUT.stat().st_size} bytes")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
