"""`make bench`: measure and write docs/PERFORMANCE.md (machine, command, medians).

Scenarios: crypto primitives (key generation per size, PKCS#12 encode/decode per profile),
region scale (bench/scale.py), a no-op run against its floor (bench/floor.py; alone:
`make bench-floor`), a team's state in PostgreSQL beside SQLite (bench/pg_bench.py),
distribution over SSH (bench/ssh_bench.py), unreachable workstations at fleet scale
(bench/fleet_bench.py; alone: `make bench-fleet`).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet_bench
import floor
import pg_bench
import scale
import smb_bench
import ssh_bench

from provisioner.crypto import certificates, keys, pkcs12

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "PERFORMANCE.md"
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "100 1000 10000").split()]


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def crypto_rows() -> list[str]:
    rows = ["| operation | runs | median ms | min ms | max ms |", "|---|---|---|---|---|"]
    for size, runs in ((2048, 15), (3072, 9), (4096, 5)):
        med, lo, hi = median_ms(lambda size=size: keys.generate_key(size), runs)  # type: ignore[misc]
        rows.append(f"| RSA {size} key generation | {runs} | {med:.1f} | {lo:.1f} | {hi:.1f} |")
    key = keys.generate_key(3072)
    cert = certificates.build_certificate(
        key, certificates.CertificateSpec("Bench", 730), dt.datetime.now(dt.UTC)
    )
    for profile in ("modern", "legacy"):
        data = pkcs12.encode(key, cert, (), "Bench", "Bench-Password-1", profile)
        med, lo, hi = median_ms(
            lambda p=profile: pkcs12.encode(key, cert, (), "Bench", "Bench-Password-1", p), 15
        )  # type: ignore[misc]
        rows.append(f"| PKCS#12 encode, {profile} | 15 | {med:.1f} | {lo:.1f} | {hi:.1f} |")
        med, lo, hi = median_ms(lambda d=data: pkcs12.decode(d, "Bench-Password-1"), 15)  # type: ignore[misc]
        rows.append(f"| PKCS#12 decode + check, {profile} | 15 | {med:.1f} | {lo:.1f} | {hi:.1f} |")
    return rows


def main() -> None:
    # Measure the tool as installed (pip compiles the bytecode), not as first run from a source
    # tree with PYTHONDONTWRITEBYTECODE set, which recompiles every module on every command.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "provisioner")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    lines = [
        "# Performance",
        "",
        "Written by `make bench` (`python bench/run.py`); do not edit by hand. `make bench-fleet`",
        "rewrites only the last section.",
        "",
        f"- Machine: {machine()}",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        "## Crypto primitives",
        "",
        "PKCS#12 iteration counts: modern 100,000 (PBKDF2-HMAC-SHA256), legacy 2,048.",
        "",
        *crypto_rows(),
        "",
        "## Region scale (local transport)",
        "",
        "Synthetic manifests from `bench/generate.py`: N entities, each with its own 10",
        "workstation folders and a copy on one of 10 shared locations; RSA 3072 (the default),",
        "modern PKCS#12 profile. Median of 3 runs of the whole command (first apply, drift",
        "repair and renewal once: they change what they measure), peak resident memory of",
        "that process (the largest of its runs).",
        "",
        *scale.rows(SIZES),
        "",
        "Reading the figures: a no-op run spends its time loading the manifest (the YAML of",
        "every target), reading the state, and hashing every copy (checksums only: no PKCS#12",
        "is opened); the no-op apply adds the lock. A first apply costs the key generations",
        "plus one PKCS#12 encoding per generation (PBKDF2 at 100,000 rounds, about a fifth of",
        "an RSA 3072 generation), both in one process pool; escrow, state commits and the",
        "fsynced writes overlap them. The key-generation bound is N x one RSA 3072 generation /",
        "cores, measured by generating min(N, 100) keys in the same process pool just before",
        "the apply and as many just after (RSA generation time varies several-fold from key to",
        "key, and this machine's speed drifts).",
        "",
        "Targets (issue 8): no-op plan at 1,000 x 10 under 1.5 s; at 10,000 x 10 under 15 s",
        "and 400 MB; first apply within 1.3x of the key-generation bound; 20 x 5 no-op apply",
        "under 1 s. See the closing note of the performance issue for which are met.",
        "",
        *floor.section(floor.rows(), "python bench/run.py"),
        "## Distribution over SSH (loopback)",
        "",
        "20 entities x 10 workstations, each workstation on its own loopback address of one",
        "real sshd; medians of 3 runs of the whole command (process start and escrow unlock",
        "included). Client and server share the same 2 cores.",
        "",
        *ssh_bench.run(),
        "",
        "## Distribution to an SMB share (loopback)",
        "",
        "20 entities x 10 shared locations, each a folder of the same share of one real smbd",
        "(SMB3 encryption and signing required), all through one connection; medians of 5 runs",
        "of the whole command. Each copy observed costs an lstat, an open, a read and a query of",
        "its security descriptor; each copy written about 9 round trips (create, ACL query and",
        "set, write, close, stat, rename). Operations are serialised on the connection (run at",
        "once they exhaust smbprotocol's credits), so --parallel only overlaps the local work.",
        "",
        *smb_bench.run(),
        "",
        *pg_bench.section(pg_bench.measure(1000, 10, 5), "python bench/run.py"),
        *fleet_bench.section(fleet_bench.run(), "python bench/run.py"),
        *fleet_bench.interleaved(fleet_bench.plan_rows(), "python bench/run.py"),
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
