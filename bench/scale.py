"""Region-scale scenarios: validate, first apply, no-op plan, no-op apply, drift repair of 1 %
of copies, renewal of 10 % of entities; N entities x W workstations, local transport.

Each scenario runs the real command in a fresh process; wall time is the median of `runs`
repetitions (first apply and renewal run once: they change the state), peak memory is the
child's maximum resident set (getrusage).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate

ENV = {**os.environ, "BENCH_ESCROW": "Bench-Escrow-Passphrase-1"}
KEY_SIZE = 3072  # the default of the manifest language


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of `provisioner ARGS` in a child process."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "provisioner", *args],
        env=env or ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode not in (0, 2):
        raise SystemExit(f"provisioner {' '.join(args)} failed ({child.returncode}):\n{err}")
    return elapsed, usage.ru_maxrss // 1024


def keygen_seconds(keys: int) -> float:
    """Wall time to generate `keys` RSA keys in the apply's own process pool (one worker per
    core), with nothing else running: N x one key generation / cores, measured."""
    from provisioner.apply.keygen import Workers

    workers = Workers()
    try:
        start = time.perf_counter()
        for _ in workers.keys([KEY_SIZE] * keys):
            pass
        return time.perf_counter() - start
    finally:
        workers.close()


def keygen_bound(entities: int, before: float, after: float, sample: int) -> float:
    """The floor of a first apply of `entities` new keys. RSA generation time varies
    several-fold from key to key (prime search) and this machine's speed drifts, so the mean
    is taken over `sample` keys generated just before the apply and `sample` just after."""
    return entities * (before + after) / (2 * sample)


def scenario_rows(entities: int, workstations: int, runs: int) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix=f"provisioner-bench-{entities}-"))
    try:
        manifest = str(generate(folder, entities, workstations, KEY_SIZE))
        copies = entities * (workstations + 1)
        rows: list[str] = []

        def median(
            args: list[str], n: int = runs, env: dict[str, str] | None = None
        ) -> tuple[float, int]:
            results = [run(args, env) for _ in range(n)]
            return statistics.median(r[0] for r in results), max(r[1] for r in results)

        def row(name: str, seconds: float, mib: int, note: str = "") -> None:
            rows.append(
                f"| {entities:,} x {workstations} | {copies:,} | {name} | "
                f"{seconds:.2f} | {mib} | {note} |"
            )

        secs, mib = median(["validate", manifest])
        row("validate", secs, mib)
        sample = min(entities, 100)
        before = keygen_seconds(sample)
        secs, mib = run(["apply", "--auto-approve", manifest])
        bound = keygen_bound(entities, before, keygen_seconds(sample), sample)
        row("first apply", secs, mib, f"key-generation bound {bound:.1f} s: {secs / bound:.2f}x")
        secs, mib = median(["plan", manifest])
        row("no-op plan", secs, mib)
        secs, mib = median(["apply", "--auto-approve", manifest])
        row("no-op apply", secs, mib)
        files = sorted(folder.glob("out/e*/ws*/*.p12"))
        drift = random.Random(1).sample(files, max(1, len(files) // 100))
        for f in drift:
            f.write_bytes(b"drifted")
        secs, mib = run(["apply", "--auto-approve", manifest])
        row("drift repair (1 % of copies)", secs, mib, f"{len(drift)} copies rewritten")
        # Renewal of 10 %: move those entities' expiry into their window.
        db = sqlite3.connect(folder / ".provisioner" / "state.db")
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        chosen = [f"e{i}" for i in range(0, entities, 10)]
        db.executemany(
            "UPDATE generations SET not_after = ? WHERE entity = ?", [(soon, e) for e in chosen]
        )
        db.commit()
        db.close()
        secs, mib = run(["apply", "--auto-approve", manifest])
        row("renewal of 10 % of entities", secs, mib, f"{len(chosen)} new generations")
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rows(sizes: list[int], workstations: int = 10, runs: int = 3) -> list[str]:
    out = [
        "| entities x workstations | copies | scenario | median s | peak MiB | note |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        out += scenario_rows(n, workstations, runs)
    return out


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [100]
    print("\n".join(rows(sizes)))
