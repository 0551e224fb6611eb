"""`provisioner report` at region scale: N entities x W workstations (bench/generate.py), two
consultations per entity, applied once, then reported in the renewal window with a saved plan.
Prints the wall time and peak memory of `report`, the file's size, and the time a headless
chromium takes to lay it out (dump its DOM) and to take a screenshot of it.

    python bench/report.py 1000 10
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate
from scale import ENV, run

CREATED = "2026-12-01T09:00:00+00:00"
REPORTED = "2028-10-20T09:00:00+00:00"  # every entity inside its renewal window


def consultations(folder: Path, entities: int) -> Path:
    lines = ["version: 1", "consultations:"]
    for e in range(entities):
        lines += [
            f"  - {{reference: C{e}-A, title: Travaux lot {e}, entity: e{e}, "
            f'designation: "Entity {e} 2026", status: open, '
            "deadline: 2028-12-20T12:00:00+01:00, opening: 2029-01-10}",
            f"  - {{reference: C{e}-B, title: Fournitures {e}, entity: e{e}, "
            f'designation: "Entity {e} 2026", status: opening, '
            "deadline: 2028-09-15T12:00:00+02:00, opening: 2028-10-28}",
        ]
    path = folder / "consultations.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def chromium(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True,
        check=True,
        timeout=600,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("entities", type=int)
    parser.add_argument("workstations", type=int)
    parser.add_argument(
        "--site", type=Path, help="Make the site in this folder and keep it (reused if applied)."
    )
    args = parser.parse_args()
    folder = args.site or Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        cons = folder / "consultations.yaml"
        manifest = folder / "manifest.yaml"
        if not (folder / ".provisioner" / "state.db").exists():
            manifest = generate(folder, args.entities, args.workstations, key_size=2048)
            cons = consultations(folder, args.entities)
            apply_env = {**ENV, "PROVISIONER_NOW": CREATED}
            seconds, _ = run(
                ["apply", "--auto-approve", str(manifest), "--consultations", str(cons)], apply_env
            )
            print(f"first apply: {seconds:.1f} s")
        env = {**ENV, "PROVISIONER_NOW": REPORTED}
        plan = folder / "renewal.plan"
        run(["plan", str(manifest), "--consultations", str(cons), "--out", str(plan)], env)
        out = folder / "report.html"
        for extra in ([], ["--plan", str(plan)]):
            out.unlink(missing_ok=True)
            cmd = ["report", str(manifest), "--consultations", str(cons), "--out", str(out)]
            seconds, rss = run(cmd + extra, env)
            size = out.stat().st_size
            with_plan = "with --plan" if extra else "without plan"
            print(f"report {with_plan}: {seconds:.2f} s, {rss} MiB, {size:,} bytes")
        url = out.resolve().as_uri()
        print(f"chromium --dump-dom: {chromium(['--dump-dom', url]):.1f} s")
        shot = folder / "report.png"
        seconds = chromium(["--window-size=1100,1400", f"--screenshot={shot}", url])
        print(f"chromium --screenshot: {seconds:.1f} s")
    finally:
        if args.site is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
