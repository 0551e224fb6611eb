"""Distribution to one Samba share on loopback: 200 copies, serial (--parallel 1) against
parallel (--parallel 8).

20 entities x 10 shared locations, each location a folder of the same share of one real smbd
(tests/smbd.py: SMB3 encryption and signing required), all reached through one connection.
Medians of 5 runs of the whole command. Measures a no-op plan (observe 200 files: size,
SHA-256 and security descriptor each) and an apply that rewrites all 200 copies (every copy
deleted on the server first).

    .venv/bin/python bench/smb_bench.py      # as root (smbd must run as root)
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import smbd  # noqa: E402
from tests.manifests import Manifest, smb  # noqa: E402

ENTITIES, LOCATIONS = 20, 10
REPEATS = 5
ENV = {**os.environ, "ESCROW": "Bench-Escrow-Passphrase-1", "PW": "Bench-Password-123!"}


def write_manifest(folder: Path, server: smbd.SmbServer) -> Path:
    (folder / "smb-password").write_text(server.password)
    m = Manifest()
    for i in range(LOCATIONS):
        secret = {"file": "smb-password"}
        where = f"/bench/share{i}"
        m.location(
            f"share{i}",
            **smb("127.0.0.1", server.port, server.share, server.user, where, password=secret),
        )
    for e in range(ENTITIES):
        m.entity(f"e{e}", name=f"E{e}", shared_locations=[f"share{i}" for i in range(LOCATIONS)])
    return m.write(folder / "m.yaml")


def timed(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", *args],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 2):
        raise SystemExit(f"provisioner {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed


def run() -> list[str]:
    if not smbd.available():
        return ["SMB benchmark skipped: smbd is not installed or this is not root."]
    server = smbd.start()
    folder = Path(tempfile.mkdtemp(prefix="provisioner-smb-bench-"))
    rows = [
        "| scenario (200 copies, one Samba share) | --parallel 1 | --parallel 8 |",
        "|---|---|---|",
    ]
    try:
        manifest = write_manifest(folder, server)
        timed("apply", "--auto-approve", str(manifest))
        results: dict[str, dict[int, float]] = {
            "no-op plan (observe 200)": {},
            "apply rewriting 200 copies": {},
        }
        for parallel in (1, 8):
            plans, applies = [], []
            for _ in range(REPEATS):
                plans.append(timed("plan", "--parallel", str(parallel), str(manifest)))
                for p in (server.root / "bench").rglob("*.p12"):
                    p.unlink()
                applies.append(
                    timed("apply", "--auto-approve", "--parallel", str(parallel), str(manifest))
                )
            results["no-op plan (observe 200)"][parallel] = statistics.median(plans)
            results["apply rewriting 200 copies"][parallel] = statistics.median(applies)
        for name, by in results.items():
            rows.append(f"| {name} | {by[1]:.2f} s | {by[8]:.2f} s |")
    finally:
        server.remove()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":
    load = os.getloadavg()[0]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}; load average {load:.1f}"
    )
    print("\n".join(run()))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
