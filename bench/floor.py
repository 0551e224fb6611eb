"""A no-op run against its floor (issue 30, item 6): `python bench/floor.py [--write]`.

A no-op `plan` must read every copy and hash it, after one Python start: its floor is that
work done as cheaply as the system does it, `python -c pass` plus one `sha256sum` over every
copy (the files read once, hashed in C). Measured on bench/generate.py's region at 1,000 x 10
(11,000 copies) and on a 20 x 5 one, whose no-op apply is what a scheduled run costs most
days. RSA 2048 keys: the no-op work reads files, whose size barely depends on the key, and
the first apply that makes them is a third of the time at 3072. Each figure is the median of
five runs, the plans and their floors alternating, so that the machine's drifting load falls
on both alike. With --write, replaces its section of docs/PERFORMANCE.md.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate
from perfdoc import replace_section

SECTION = "## A no-op run against its floor"
BEFORE = "## A team's state: PostgreSQL beside SQLite"
ENV = {**os.environ, "BENCH_ESCROW": "Bench-Escrow-Passphrase-1"}
RUNS = 5


def seconds(argv: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=ENV, cwd=cwd, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{done.stderr!r}")
    return elapsed


def provisioner(*args: str) -> list[str]:
    return [sys.executable, "-m", "provisioner", *args]


def modules_imported(manifest: str) -> int:
    """How many of the program's own modules a no-op plan imports (`-X importtime`)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "provisioner", "plan", manifest],
        env=ENV,
        capture_output=True,
        text=True,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    return sum(1 for n in names if n == "provisioner" or n.startswith("provisioner."))


def region(entities: int, workstations: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix=f"provisioner-floor-{entities}-"))
    try:
        manifest = str(generate(folder, entities, workstations, 2048))
        seconds(provisioner("apply", "--auto-approve", manifest))
        copies = sorted(str(p) for p in folder.glob("out/**/*.p12"))
        plans, applies, floors = [], [], []
        for _ in range(RUNS):
            plans.append(seconds(provisioner("plan", manifest)))
            applies.append(seconds(provisioner("apply", "--auto-approve", manifest)))
            start = seconds([sys.executable, "-c", "pass"])
            floors.append(start + seconds(["sha256sum", *copies]))
        return {
            "copies": len(copies),
            "plan": statistics.median(plans),
            "apply": statistics.median(applies),
            "floor": statistics.median(floors),
            "modules": modules_imported(manifest),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rows() -> list[str]:
    out = [
        "| entities x workstations | copies | floor s | no-op plan s | plan / floor | "
        "no-op apply s | apply / floor | own modules a plan imports |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entities, workstations in ((1000, 10), (20, 5)):
        r = region(entities, workstations)
        out.append(
            f"| {entities:,} x {workstations} | {int(r['copies']):,} | {r['floor']:.2f} | "
            f"{r['plan']:.2f} | {r['plan'] / r['floor']:.1f}x | {r['apply']:.2f} | "
            f"{r['apply'] / r['floor']:.1f}x | {int(r['modules'])} |"
        )
    return out


def startup() -> tuple[float, float]:
    """Medians of `python -c pass` and of importing the command line (`provisioner.cli.app`),
    each a fresh process: what every command pays before it reads anything."""
    bare = [seconds([sys.executable, "-c", "pass"]) for _ in range(RUNS)]
    cli = [seconds([sys.executable, "-c", "import provisioner.cli.app"]) for _ in range(RUNS)]
    return statistics.median(bare), statistics.median(cli)


def section(table: list[str], command: str) -> list[str]:
    bare, cli = startup()
    return [
        SECTION,
        "",
        f"`{command}` (bench/floor.py's docstring says what is measured), load average "
        f"{os.getloadavg()[0]:.1f} at the end. Goals (issue 30): a no-op plan at 1,000 x 10",
        "within 2x of its floor, a 20 x 5 no-op apply under 0.2 s.",
        "",
        *table,
        "",
        f"Where the time goes: `python -c pass` takes {bare:.2f} s and importing the command",
        f"line (`provisioner.cli.app`) {cli:.2f} s (medians of {RUNS} processes, same run). The",
        "command line imports the engine package whole (the escrow, the state backends, the",
        "planner and cryptography's x509) before any command is chosen, so a small no-op apply",
        "is mostly imports; making each command import only what it runs is the next step of",
        "issue 30, item 6. Under load every second here is several times its idle value (the",
        "Region scale table above is idle): the ratios compare, the seconds do not.",
        "",
    ]


def write(table: list[str], command: str) -> None:
    # After the region's table, whose no-op rows it reads against their floor.
    replace_section(SECTION, "\n".join(section(table, command)), before=BEFORE)


if __name__ == "__main__":
    table = rows()
    print("\n".join(table))
    if "--write" in sys.argv:
        write(table, "python bench/floor.py --write")
