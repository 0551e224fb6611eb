"""A fleet over SSH with unresponsive workstations: 500 workstations, 25 % of them unreachable,
at --parallel 32 and --parallel 1.

What is simulated, on one machine (loopback; Linux routes all of 127.0.0.0/8 to it):
- 375 reachable workstations, each on its own loopback address, served by 25 real OpenSSH
  servers (sshd listens on at most 16 addresses each: 15 per server here); each workstation
  is its own SSH connection (its own address), with its own folder;
- 125 unreachable ones: 50 refusing (nothing listens: connection refused at once), 25
  switched off (the TCP connect is never answered: a listener whose accept queue is kept full,
  so the kernel drops the SYN, as a machine that is off or a dropping firewall), 25 silent (a
  listener that accepts TCP and never speaks SSH) and 25 stalled (it sends an SSH banner, then
  nothing). The 75 that do not refuse each cost a timeout;
- 50 entities, each on 10 of the workstations (one copy per workstation), RSA 2048;
  connect_timeout 2 s on every workstation.
Client, the 25 servers and the listeners share the same cores.

Per --parallel: a first apply (50 keys, 375 copies written, 125 targets listed), a no-op
plan, and a second apply (nothing to write; the 125 are tried again). The bound is the same
run on the 375 reachable workstations alone, plus ceil(75 / parallel) x 2 s.

Then no-op plans at --parallel 32 back to back on the whole fleet, the reachable alone and the
unreachable alone (the load of a shared machine drifts between runs minutes apart).

`python bench/fleet_bench.py` prints the tables; `--write` also replaces its section of
docs/PERFORMANCE.md (the full `make bench` takes over an hour); `--plans` runs only the
back-to-back plans (with `--write`: replaces only that part).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from perfdoc import replace_section  # noqa: E402

from tests import sshd  # noqa: E402
from tests.listeners import Dropping, Hung, refusing  # noqa: E402
from tests.manifests import Manifest, ssh  # noqa: E402

WORKSTATIONS, ENTITIES, PER_ENTITY = 500, 50, 10
REACHABLE, REFUSING, DROPPING, SILENT, STALLED = 375, 50, 25, 25, 25
PER_SERVER = 15
TIMEOUT = 2
ENV = {**os.environ, "ESCROW": "Bench-Escrow-Passphrase-1", "PW": "Bench-Password-123!"}
SECTION = "## Unreachable workstations at fleet scale (SSH, loopback)"


def address(i: int) -> str:
    return f"127.77.{i // 250}.{i % 250 + 1}"


class Fleet:
    def __init__(self) -> None:
        self.servers: list[sshd.SshServer] = []
        self.hung: list[Hung | Dropping] = []
        # (name, host, port, key_file, folder) per workstation
        self.rows: list[tuple[str, str, int, Path | None, str]] = []

    def start(self) -> None:
        hosts = [address(i) for i in range(WORKSTATIONS)]
        reachable = hosts[:REACHABLE]
        for start in range(0, REACHABLE, PER_SERVER):
            group = tuple(reachable[start : start + PER_SERVER])
            server = sshd.start(group)
            self.servers.append(server)
            for host in group:
                name = f"ws{len(self.rows):03d}"
                self.rows.append((name, host, server.port, server.client_key, str(server.root)))
        rest = hosts[REACHABLE:]
        key = self.servers[0].client_key
        for host in rest[:REFUSING]:
            self.rows.append((f"ws{len(self.rows):03d}", host, refusing(host), key, "/nowhere"))
        for host in rest[REFUSING : REFUSING + DROPPING]:
            off = Dropping(host)
            self.hung.append(off)
            self.rows.append((f"ws{len(self.rows):03d}", host, off.port, key, "/nowhere"))
        for kind, count, offset in (
            ("silent", SILENT, REFUSING + DROPPING),
            ("banner", STALLED, REFUSING + DROPPING + SILENT),
        ):
            for host in rest[offset : offset + count]:
                listener = Hung(host, kind)
                self.hung.append(listener)
                self.rows.append((f"ws{len(self.rows):03d}", host, listener.port, key, "/nowhere"))

    def known_hosts(self, path: Path) -> Path:
        path.write_text(
            "".join(f"[{h}]:{s.port} {s.host_key_line}\n" for s in self.servers for h in s.hosts)
        )
        return path

    def stop(self) -> None:
        for listener in self.hung:
            listener.stop()
        for server in self.servers:
            server.stop()


def write_manifest(
    folder: Path, fleet: Fleet, rows: list[tuple[str, str, int, Path | None, str]]
) -> Path:
    known = fleet.known_hosts(folder / "known_hosts")
    user = fleet.servers[0].user
    m = Manifest().location("nas")
    for name, host, port, key, root in rows:
        where = f"{root}/{folder.name}/{name}"
        fields = ssh(host, port, user, where, key_file=key, known_hosts=known)
        m.workstation(name, **fields, connect_timeout=TIMEOUT)
    # Entity e holds a copy on workstations e, e + 50, e + 100, ...: every entity has some of
    # the unreachable ones, as a real region's groups would.
    for e in range(ENTITIES):
        mine = [rows[i][0] for i in range(e, len(rows), ENTITIES)][:PER_ENTITY]
        m.entity(f"e{e}", name=f"E{e}", shared_locations=["nas"], workstations=mine)
    return m.write(folder / "m.yaml")


def timed(*args: str) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", *args], env=ENV, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 2, 4) or "Traceback" in done.stderr:
        raise SystemExit(
            f"provisioner {' '.join(args)} exit {done.returncode}:\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return elapsed, done.returncode, done.stdout


def scenario(
    fleet: Fleet, rows: list[tuple[str, str, int, Path | None, str]], parallel: int
) -> dict[str, tuple[float, int]]:
    folder = Path(tempfile.mkdtemp(prefix="provisioner-fleet-bench-"))
    try:
        m = str(write_manifest(folder, fleet, rows))
        p = ("--parallel", str(parallel))
        out: dict[str, tuple[float, int]] = {}
        first, code, text = timed("apply", "--auto-approve", "--quiet", *p, m)
        out["first apply"] = (first, code)
        plan, code, text = timed("plan", *p, m)
        out["no-op plan"] = (plan, code)
        if len(rows) == WORKSTATIONS:
            listed = len(re.findall(r"^  ! ws\d+: cannot observe the target", text, re.M))
            assert listed == WORKSTATIONS - REACHABLE, (listed, text[-2000:])
        again, code, _ = timed("apply", "--auto-approve", "--quiet", *p, m)
        out["second apply"] = (again, code)
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for server in fleet.servers:
            shutil.rmtree(server.root / folder.name, ignore_errors=True)


def run() -> list[str]:
    if not sshd.available():
        return ["Fleet benchmark skipped: sshd is not installed."]
    fleet = Fleet()
    try:
        fleet.start()
        hung = DROPPING + SILENT + STALLED
        rows = [
            "| --parallel | command | 500 workstations (125 unreachable) | exit | "
            "the 375 reachable alone | "
            f"difference | ceil({hung} / parallel) x {TIMEOUT} s |",
            "|---|---|---|---|---|---|---|",
        ]
        for parallel in (32, 1):
            full = scenario(fleet, fleet.rows, parallel)
            alone = scenario(fleet, fleet.rows[:REACHABLE], parallel)
            bound = math.ceil(hung / parallel) * TIMEOUT
            for name, (elapsed, code) in full.items():
                base = alone[name][0]
                rows.append(
                    f"| {parallel} | {name} | {elapsed:.1f} s | {code} | {base:.1f} s | "
                    f"{elapsed - base:+.1f} s | {bound} s |"
                )
    finally:
        fleet.stop()
    return rows


INTERLEAVED = "### No-op plans at --parallel 32, back to back"


def plan_rows(rounds: int = 2) -> list[str]:
    """No-op plans at --parallel 32 on the whole fleet, the 375 reachable alone and the 125
    unreachable alone, one after the other (`rounds` times): the machine's load drifts between
    the runs of the main table, minutes apart; back to back, the three compare."""
    fleet = Fleet()
    rows = [
        "| round | 500 workstations | the 375 reachable alone | the 125 unreachable alone |",
        "|---|---|---|---|",
    ]
    try:
        fleet.start()
        sets = (fleet.rows, fleet.rows[:REACHABLE], fleet.rows[REACHABLE:])
        for n in range(1, rounds + 1):
            cells = []
            for chosen in sets:
                folder = Path(tempfile.mkdtemp(prefix="provisioner-fleet-bench-"))
                try:
                    m = str(write_manifest(folder, fleet, chosen))
                    elapsed, code, _ = timed("plan", "--parallel", "32", m)
                    cells.append(f"{elapsed:.1f} s (exit {code})")
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            rows.append(f"| {n} | {' | '.join(cells)} |")
    finally:
        fleet.stop()
    return rows


def interleaved(rows: list[str], command: str) -> list[str]:
    return [
        INTERLEAVED,
        "",
        f"`{command}` (the plan is a fresh state's: it observes every target and writes",
        f"nothing). The ceil(75 / 32) x {TIMEOUT} s = 6 s of timeouts come after the reachable",
        "work (targets are observed in name order, the unreachable ones last here), so the",
        "whole fleet takes about the reachable work plus the unreachable ones alone (which",
        "include the process start, about 1.5 s). Load average "
        f"{os.getloadavg()[0]:.1f} at the end.",
        "",
        *rows,
        "",
    ]


def section(rows: list[str], command: str) -> list[str]:
    load = os.getloadavg()
    return [
        SECTION,
        "",
        "`bench/fleet_bench.py` (its docstring says exactly what is simulated): 500 workstations,",
        "each on its own loopback address; 375 served by 25 real sshd (15 addresses each), 50",
        "refusing, 25 switched off (the TCP connect is never answered), 25 accepting TCP and",
        "never speaking SSH, 25 sending an SSH banner then stalling; 50 entities x 10",
        "workstations, one copy per workstation, RSA 2048, a local shared location,",
        f"`connect_timeout: {TIMEOUT}`. One run of each command (the --parallel 1 runs take",
        "minutes); the same commands on the 375 reachable workstations alone give the",
        "reachable work, and the difference is what the unreachable ones cost. Refusing hosts",
        "cost nothing; each of the 75 others costs one timeout per run, `--parallel` at a time.",
        "The runs of this table are minutes apart on a shared machine whose load drifts: the",
        "--parallel 32 differences above the last column are mostly that (see the back-to-back",
        "plans below); at --parallel 1 the difference is the 75 timeouts one after the other.",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}`, load average",
        f"{load[0]:.1f} at the end on a shared 2-core machine (other jobs running).",
        "",
        *rows,
        "",
    ]


def write(rows: list[str], command: str, plans: list[str] | None = None) -> None:
    """Replace the fleet section of docs/PERFORMANCE.md (`rows`), or only its back-to-back
    plans (`plans`, with `rows` empty)."""
    if not rows and plans is not None:
        path = ROOT / "docs" / "PERFORMANCE.md"
        head, _, _ = path.read_text().partition(INTERLEAVED)
        path.write_text(head.rstrip("\n") + "\n\n" + "\n".join(interleaved(plans, command)))
        return
    new = "\n".join(section(rows, command))
    if plans is not None:
        new = new.rstrip("\n") + "\n\n" + "\n".join(interleaved(plans, command))
    replace_section(SECTION, new)


if __name__ == "__main__":
    if "--plans" in sys.argv:  # only the back-to-back plans (about 3 minutes)
        plans = plan_rows()
        print("\n".join(plans))
        if "--write" in sys.argv:
            write([], "python bench/fleet_bench.py --plans --write", plans)
    else:
        table = run()
        plans = plan_rows()
        print("\n".join([*table, "", *plans]))
        if "--write" in sys.argv:
            write(table, "python bench/fleet_bench.py --write", plans)
