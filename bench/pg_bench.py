"""A team's state in PostgreSQL beside the embedded SQLite, in the same run on the same
machine: a first apply and a no-op plan at N entities x W workstations (bench/generate.py's
region, local transport, RSA 3072), each backend's own copy of the region.

The server is a throwaway cluster on loopback (tests/pgserver.py) with fsync on, as in
production (SQLite's state is fsynced too: `synchronous=FULL`); the DSN is TCP with a password
(scram-sha-256), so each command pays its connections' authentication, as it would against
a real server. The no-op plans alternate between the backends (the machine's speed drifts),
and the medians are compared; the goal (issue 29) is a no-op plan within 1.5x of SQLite's.

    python bench/pg_bench.py [ENTITIES [WORKSTATIONS [RUNS]]]   # default 1000 10 5
    python bench/pg_bench.py ... --write   # and replace its section of docs/PERFORMANCE.md
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scale
from generate import generate
from perfdoc import replace_section

from tests.pgserver import running

SECTION = "## A team's state: PostgreSQL beside SQLite"


def measure(entities: int, workstations: int, runs: int) -> list[str]:
    """The table rows: first apply and no-op plan on each backend."""
    base = Path(tempfile.mkdtemp(prefix="provisioner-pg-bench-"))
    try:
        with running(fsync=True) as server:
            sqlite = generate(base / "sqlite", entities, workstations, scale.KEY_SIZE)
            state = {
                "backend": "postgresql",
                "dsn": {"file": "secrets/state.dsn"},
                "schema": "bench",
            }
            postgresql = generate(
                base / "postgresql", entities, workstations, scale.KEY_SIZE, state=state
            )
            dsn = base / "postgresql" / "secrets" / "state.dsn"
            dsn.write_text(server.dsn() + "\n")
            first = {
                name: scale.run(["apply", "--auto-approve", "-q", str(m)])
                for name, m in (("SQLite", sqlite), ("PostgreSQL", postgresql))
            }
            plans: dict[str, list[tuple[float, int]]] = {"SQLite": [], "PostgreSQL": []}
            for _ in range(runs):
                plans["SQLite"].append(scale.run(["plan", str(sqlite)]))
                plans["PostgreSQL"].append(scale.run(["plan", str(postgresql)]))
        copies = entities * (workstations + 1)
        size = f"{entities:,} x {workstations}"
        rows = [
            "| entities x workstations | copies | scenario | SQLite s | PostgreSQL s | ratio "
            "| SQLite peak MiB | PostgreSQL peak MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        s, p = first["SQLite"], first["PostgreSQL"]
        rows.append(
            f"| {size} | {copies:,} | first apply | {s[0]:.2f} | {p[0]:.2f} | "
            f"{p[0] / s[0]:.2f}x | {s[1]} | {p[1]} |"
        )
        med = {k: statistics.median(t for t, _ in v) for k, v in plans.items()}
        peak = {k: max(m for _, m in v) for k, v in plans.items()}
        rows.append(
            f"| {size} | {copies:,} | no-op plan (median of {runs}) | {med['SQLite']:.2f} | "
            f"{med['PostgreSQL']:.2f} | {med['PostgreSQL'] / med['SQLite']:.2f}x | "
            f"{peak['SQLite']} | {peak['PostgreSQL']} |"
        )
        return rows
    finally:
        shutil.rmtree(base, ignore_errors=True)


def section(rows: list[str], command: str, load: float | None = None) -> list[str]:
    load = os.getloadavg()[0] if load is None else load
    return [
        SECTION,
        "",
        "`bench/pg_bench.py` (its docstring says what is measured): bench/generate.py's region,",
        "RSA 3072, local transport, once with the state in a SQLite folder and once in a",
        "PostgreSQL 15 schema of a throwaway cluster on loopback (fsync on, TCP with a",
        "scram-sha-256 password), in the same run; the first applies one after the other,",
        "then the no-op plans alternating between the two. Goal: a no-op plan within 1.5x of",
        "SQLite's.",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}`, load average",
        f"{load:.1f} at the end on a shared 2-core machine (other jobs running): under such a",
        "load every time is several times its idle value (the Region scale table above), and",
        "the ratios are what compare. A first apply is the key generations of a process pool",
        "on both backends, so its ratio follows the machine's load between the two runs, minutes",
        "apart, more than the backend.",
        "",
        *rows,
        "",
        "Where the difference goes: the snapshot is read over the wire (11,000 copy rows at",
        "1,000 x 10) instead of from a local file, each command opens two sessions (the state's,",
        "and the escrow's, whose listing fetches every sealed key at once so that the plan's",
        "check of every key's tag is one query, not one per key), and a first apply commits",
        "each generation's transaction and seals each key over the network (a key is committed",
        "before its generation is recorded). Reading the snapshot as psycopg's rows cost",
        "1.0 s at 1,000 x 10 (its pure-Python row loading, 23,000 rows), against 0.2 s from",
        "SQLite: each table is now fetched as one JSON document the server builds (0.26 s).",
        "",
    ]


def write(rows: list[str], command: str, load: float | None = None) -> None:
    new = "\n".join(section(rows, command, load))
    replace_section(SECTION, new, before="## The HTML report")


if __name__ == "__main__":
    numbers = [int(a) for a in sys.argv[1:] if not a.startswith("-")]
    entities, workstations, runs = (numbers + [1000, 10, 5][len(numbers) :])[:3]
    table = measure(entities, workstations, runs)
    print("\n".join(table))
    if "--write" in sys.argv:
        write(table, "python bench/pg_bench.py " + " ".join(sys.argv[1:]))
