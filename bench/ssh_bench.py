"""Distribution over SSH on loopback: 200 copies, serial (--parallel 1) against parallel.

20 entities x 10 workstations, each workstation on its own loopback address (127.0.0.1-10) of
one real sshd. Measures a no-op plan (observe 200 remote files) and an apply that rewrites all
200 copies (every copy deleted on the server first).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import sshd  # noqa: E402
from tests.manifests import Manifest, ssh  # noqa: E402

ENTITIES, WORKSTATIONS = 20, 10
HOSTS = tuple(f"127.0.0.{i}" for i in range(1, WORKSTATIONS + 1))
ENV = {**os.environ, "ESCROW": "Bench-Escrow-Passphrase-1", "PW": "Bench-Password-123!"}


def write_manifest(folder: Path, server: sshd.SshServer) -> Path:
    known = server.known_hosts(folder / "known_hosts", HOSTS)
    m = Manifest()
    for i, host in enumerate(HOSTS):
        where = f"{server.root}/ws{i}"
        key = server.client_key
        m.workstation(
            f"ws{i}", **ssh(host, server.port, server.user, where, key_file=key, known_hosts=known)
        )
    for e in range(ENTITIES):
        m.entity(f"e{e}", name=f"E{e}", workstations=[f"ws{i}" for i in range(WORKSTATIONS)])
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
    if not sshd.available():
        return ["SSH benchmark skipped: sshd is not installed."]
    server = sshd.start(HOSTS)
    folder = Path(tempfile.mkdtemp(prefix="provisioner-ssh-bench-"))
    rows = ["| scenario (200 copies over SSH) | --parallel 1 | --parallel 8 |", "|---|---|---|"]
    try:
        manifest = write_manifest(folder, server)
        timed("apply", "--auto-approve", str(manifest))
        results: dict[str, dict[int, float]] = {
            "no-op plan (observe 200)": {},
            "apply rewriting 200 copies": {},
        }
        for parallel in (1, 8):
            plans, applies = [], []
            for _ in range(3):
                plans.append(timed("plan", "--parallel", str(parallel), str(manifest)))
                for p in server.root.rglob("*.p12"):
                    p.unlink()
                applies.append(
                    timed("apply", "--auto-approve", "--parallel", str(parallel), str(manifest))
                )
            results["no-op plan (observe 200)"][parallel] = statistics.median(plans)
            results["apply rewriting 200 copies"][parallel] = statistics.median(applies)
        for name, by in results.items():
            rows.append(f"| {name} | {by[1]:.2f} s | {by[8]:.2f} s |")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":
    print("\n".join(run()))
