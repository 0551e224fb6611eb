"""Shared fixtures: run the real command line in a subprocess, as a user would."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import pgserver as pg_helpers
from tests import smbd as smbd_helpers
from tests import sshd as sshd_helpers
from tests.pgserver import PgServer
from tests.smbd import SmbServer
from tests.sshd import SshServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

Runner = Callable[..., subprocess.CompletedProcess[str]]


# The clock every command of the suite runs at unless its test pins another (PROVISIONER_NOW):
# the program dates keys, renewals, designations ({year}) and findings by it, so a test reads
# the same on any day and under a shifted clock (`make test-dates`). A test that must see the
# real time passes PROVISIONER_NOW="" (the program then reads the system clock).
TEST_CLOCK = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)

# Under mutation testing (`make mutation`: mutmut sets MUTANT_UNDER_TEST) the command runs in
# this process, where mutmut's trampolines see which test reaches which function and switch its
# mutants on; a subprocess would import the unmutated package. PROVISIONER_TEST_IN_PROCESS=1
# does the same by hand. A command killed at a fault point still needs its own process.
IN_PROCESS = bool(
    os.environ.get("MUTANT_UNDER_TEST") or os.environ.get("PROVISIONER_TEST_IN_PROCESS")
)

# `make mutation` sets PROVISIONER_TEST_FAST_KDF=1: the PKCS#12 files are written with 1,000
# PBKDF2 iterations instead of the modern profile's 100,000, and the escrow's keyring and the
# plan's digest derive with scrypt n = 2^10 instead of 2^15. Deriving keys was two thirds of
# what a CLI test costs (docs/TESTING.md), and no mutated module sets these costs
# (crypto/pkcs12.py and the constants are not mutated): a mutant changes what is derived or
# when, which the cheaper derivation shows the same. The mutants run in this process, so this
# reaches them; a command in its own process keeps the real costs (every reader takes a
# file's own counts). The tests of the documented costs themselves are left out (real_kdf).
FAST_KDF = bool(os.environ.get("PROVISIONER_TEST_FAST_KDF"))
FAST_PKCS12_ITERATIONS = 1_000
FAST_SCRYPT_N = 2**10


def _lower_kdf_costs() -> None:
    import dataclasses

    from provisioner.crypto import pkcs12
    from provisioner.engine import digests
    from provisioner.state import escrow

    modern = pkcs12.PROFILES["modern"]
    pkcs12.PROFILES["modern"] = dataclasses.replace(modern, iterations=FAST_PKCS12_ITERATIONS)
    escrow.SCRYPT_N = digests.SCRYPT_N = FAST_SCRYPT_N  # type: ignore[misc]
    # Opening a PKCS#12 checks its RSA key (some 40 ms for 2,048 bits, whatever the
    # iterations), and a test's commands open the same copies again and again: the same bytes
    # with the same password open to the same key, so an opening is remembered.
    load = pkcs12.pkcs12.load_pkcs12
    opened: dict[tuple[bytes, bytes | None], object] = {}

    def load_once(data: bytes, password: bytes | None, backend: object = None) -> object:
        if (data, password) not in opened:
            opened[(data, password)] = load(data, password)
        return opened[(data, password)]

    pkcs12.pkcs12.load_pkcs12 = load_once  # type: ignore[assignment]


if FAST_KDF:
    _lower_kdf_costs()


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 300,
    own_process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `provisioner ARGS` in a fresh interpreter, at TEST_CLOCK unless `env` gives
    PROVISIONER_NOW; returns the finished process. `own_process` keeps it a subprocess under
    mutation testing too, for a test of what `main` sets up for the whole process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    full_env["PROVISIONER_NOW"] = TEST_CLOCK.isoformat()
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    if IN_PROCESS and not own_process and "PROVISIONER_FAULT_INJECT" not in full_env:
        return run_in_process([str(a) for a in args], cwd, full_env, input)
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *map(str, args)],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_in_process(
    args: list[str], cwd: Path | None, env: dict[str, str], input: str | None
) -> subprocess.CompletedProcess[str]:
    """`provisioner ARGS` through `provisioner.cli.run` in this process, with the environment,
    folder, umask and standard streams a subprocess would have had, all restored after."""
    from provisioner.cli import run

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    old_umask = os.umask(0o077)
    os.environ.clear()
    os.environ.update(env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        sys.stdin = io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")
        sys.stdout, sys.stderr = stdout, stderr
        code = run(args)  # turns SystemExit, as every error, into its exit code
        stdout.flush()
        stderr.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        os.umask(old_umask)
    return subprocess.CompletedProcess(
        ["provisioner", *args], code, out.getvalue().decode(), err.getvalue().decode()
    )


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program's clock, for what a test runs in its own process (the planner, the engine,
    a command called as a function): TEST_CLOCK, as for every command `run_cli` starts."""
    monkeypatch.setenv("PROVISIONER_NOW", TEST_CLOCK.isoformat())
    if _mutant():
        # The programs a test must still start in their own process (a command killed at a
        # fault point, one at a terminal's prompt, `own_process`) import the mutated tree too,
        # with the same mutant on (MUTANT_UNDER_TEST is inherited): what they show is the
        # mutant's, though mutmut learns which functions they reach only in this process.
        # Not while mutmut collects its stats: its trampolines there need its own process.
        monkeypatch.setenv(
            "PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.getenv("PYTHONPATH")) if p)
        )


@pytest.fixture
def cli() -> Runner:
    return run_cli


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """The backend the manifests of a test keep their state in: sqlite, unless the test is
    marked `both_backends` (then it runs once on each, see pytest_generate_tests)."""
    return str(getattr(request, "param", "sqlite"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `both_backends` runs on SQLite and on a real PostgreSQL server: its
    manifest fixtures (quickstart) declare the state there (docs/TESTING.md)."""
    if metafunc.definition.get_closest_marker("both_backends") is None:
        return
    if "state_backend" in metafunc.fixturenames:
        metafunc.parametrize("state_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def quickstart(tmp_path: Path, state_backend: str, request: pytest.FixtureRequest) -> Path:
    """A private copy of examples/quickstart.yaml and its DEMO ONLY secrets; under the
    postgresql backend its state is a fresh schema of the test server (`state:` added, its
    DSN in secrets/pg.dsn), dropped afterwards."""
    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path / "quickstart.yaml")
    shutil.copytree(EXAMPLES / "secrets", tmp_path / "secrets")
    manifest = tmp_path / "quickstart.yaml"
    if state_backend == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        schema = server.new_schema()
        use_postgresql(manifest, server, schema)
        request.addfinalizer(lambda: server.drop_schema(schema))
    return manifest


def use_postgresql(manifest: Path, server: PgServer, schema: str) -> None:
    """Declare the manifest's state in `schema` of the test server (the DSN, with the owner's
    password, in a secret file beside it)."""
    secret = manifest.parent / "secrets" / "pg.dsn"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(server.dsn() + "\n")
    secret.chmod(0o600)
    text = manifest.read_text()
    block = f"state: {{backend: postgresql, dsn: {{file: secrets/pg.dsn}}, schema: {schema}}}\n"
    manifest.write_text(text.replace("version: 1\n", "version: 1\n" + block, 1))


def require(available: bool, missing: str, install: str) -> None:
    """A real component a suite needs: under CI its absence fails the run (a green run must
    have tested it); locally the suite is skipped, named with the reason in the summary."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}: .ci/run must install it ({install})")
    pytest.skip(f"{missing} ({install})")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server on 127.0.0.1 for the whole run (a throwaway cluster)."""
    require(pg_helpers.available(), "PostgreSQL is not installed", "apt-get install postgresql")
    server = pg_helpers.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    """A real OpenSSH server on 127.0.0.1 and 127.0.0.2 for the module's tests."""
    require(sshd_helpers.available(), "sshd is not installed", "apt-get install openssh-server")
    server = sshd_helpers.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sshd_without_posix_rename() -> Iterator[SshServer]:
    """A second OpenSSH server whose SFTP subsystem refuses posix-rename@openssh.com
    (`internal-sftp -P posix-rename`), as a locked-down or older server does."""
    require(sshd_helpers.available(), "sshd is not installed", "apt-get install openssh-server")
    server = sshd_helpers.start(sftp_options="-P posix-rename")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def smbd() -> Iterator[SmbServer]:
    """A real Samba server on 127.0.0.1 (SMB3 encryption required) for the module's tests."""
    require(
        smbd_helpers.available(), "smbd is not installed (or the tests do not run as root)", "samba"
    )
    server = smbd_helpers.start()
    yield server
    server.remove()


# Skips that say the test does not apply on this machine, not that a real component is missing:
# they stay skips under CI too. Every other skip there is a suite that did not run, and fails.
NOT_APPLICABLE = (
    "root reads any file",  # tests/test_validate_files.py: CI runs as root
    "this OpenSSL cannot write RC4",  # an OpenSSL built without its legacy provider
    "does not apply here",  # tests/test_folders.py: no root, or no immutable files
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI=true a test skipped because a real component (sshd, smbd, chromium, keytool,
    certutil, systemd-analyze...) is missing fails instead: a green CI run has tested every
    transport. Locally the skip stays, and `-rs` (pyproject's addopts) names each in the summary."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (os.environ.get("CI") and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(marker in reason for marker in NOT_APPLICABLE):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI=true, where every real component must be installed: {reason}"
    )


# ------------------------------------------------------------------ mutation testing
# mutmut runs, for each mutant, every test that reached the mutated function (fastest first,
# stopping at the first failure). The CLI tests reach nearly every function, so a survivor
# would run some 250 s of tests. Two things keep `make mutation` near an hour on 2 cores
# (docs/TESTING.md): the test that killed this mutant in an earlier run, then those that
# killed another mutant of the same function, run first (a mutant is mostly killed by what
# killed its siblings), and a mutant is given
# PROVISIONER_MUTATION_BUDGET seconds of tests (by their recorded durations; 0: no limit).
# A mutant that outlives its budget counts as survived: the budget can only lower the score.
MUTATION_KILLS = REPO / "mutation-kills.jsonl"
# The kills of earlier runs, shipped with the tests (one "function test" pair a line), so that
# a first run on a fresh clone starts with what killed each function's mutants before. Made
# anew with `sort -u mutants/mutation-kills.jsonl tests/data/mutation-kills.txt`.
MUTATION_KILLS_SEEN = Path(__file__).resolve().parent / "data" / "mutation-kills.txt"
# What each test costs, setup and teardown included (mutmut records the call alone, and a
# history's setup is most of its cost): written by mutmut's stats run, read by the budget.
MUTATION_DURATIONS = REPO / "mutation-durations.json"
_durations_seen: dict[str, float] = {}


def _pinned_equivalents() -> frozenset[str]:
    """The documented equivalents whose pin holds in mutants/ (tests/mutation_summary.py):
    worked out once, in mutmut's parent while it collects its stats, so that every mutant's
    process, forked from it, has them."""
    if os.environ.get("MUTANT_UNDER_TEST") != "stats":
        return frozenset()
    from tests.mutation_summary import equivalents, holding_pins

    return frozenset(holding_pins(REPO, equivalents(REPO / "docs" / "mutation-equivalents.md")))


PINNED_EQUIVALENTS = _pinned_equivalents()


def _mutant() -> str:
    """The mutant switched on in this process, or "" (read at each hook: mutmut forks its
    workers from a process that imported this module for another purpose)."""
    name = os.environ.get("MUTANT_UNDER_TEST", "")
    return name if "__mutmut_" in name else ""


def _mutated_function(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def _kills_of(mutant: str) -> dict[str, int]:
    """How strongly each test is expected to kill `mutant`: a test that killed this very
    mutant before comes first, then those that killed other mutants of its function, then of
    its module. A kill is recorded as "mutant test" (or "function test", as older runs did);
    a mutant's number names the same change as long as its function's code is unchanged."""
    found: dict[str, int] = {}
    lines = [
        line
        for kills in (MUTATION_KILLS_SEEN, MUTATION_KILLS)
        if kills.is_file()
        for line in kills.read_text(encoding="utf-8").splitlines()
    ]
    function = _mutated_function(mutant)
    module = function.rsplit(".", 1)[0] + "."
    for line in lines:
        killed, _, test = line.partition(" ")
        if killed == mutant:
            weight = 1_000_000
        elif _mutated_function(killed) == function:
            weight = 1000
        elif killed.startswith(module):
            weight = 1
        else:
            continue
        found[test] = found.get(test, 0) + weight
        # and under the test's name without its parameters: a kill recorded before the test
        # was parametrized (or by one parametrization) ranks each of its parametrizations
        base = test.partition("[")[0]
        if base != test:
            found[base] = found.get(base, 0) + weight
    return found


# Last: after `-k` and `--deselect` have dropped their tests, so that the clean-run shortcut and
# a mutant's budget see only what will run (run first, the shortcut found the 18 PostgreSQL
# tests `-k 'not postgresql'` drops "not passed by the stats run" and ran the whole selection).
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import json

    if FAST_KDF:  # what checks the real costs cannot pass with the lowered ones
        real = [i for i in items if i.get_closest_marker("real_kdf")]
        config.hook.pytest_deselected(items=real)
        items[:] = [i for i in items if not i.get_closest_marker("real_kdf")]

    mutant = _mutant()
    if not mutant:
        if items and _clean_run_repeats(items):
            known: dict[str, float] = json.loads(MUTATION_DURATIONS.read_text())
            fastest = min(items, key=lambda i: known.get(i.nodeid, 1.0))
            config.hook.pytest_deselected(items=[i for i in items if i is not fastest])
            items[:] = [fastest]
        return
    durations: dict[str, float] = (
        json.loads(MUTATION_DURATIONS.read_text()) if MUTATION_DURATIONS.is_file() else {}
    )
    kills = _kills_of(mutant)

    def expected(item: pytest.Item) -> int:
        return kills.get(item.nodeid) or kills.get(item.nodeid.partition("[")[0], 0)

    items.sort(key=lambda i: (-expected(i), durations.get(i.nodeid, 1.0)))
    budget = float(os.environ.get("PROVISIONER_MUTATION_BUDGET", "0") or 0)
    if mutant in PINNED_EQUIVALENTS and budget > 0 and items:
        # Read and pinned as equivalent: confirmed against the test most likely to kill it,
        # not the whole budget (a survivor costs some 17 s, this about one).
        budget = min(budget, durations.get(items[0].nodeid, 1.0))
    if budget <= 0:
        return
    kept, spent = [], 0.0
    for item in items:
        cost = durations.get(item.nodeid, 1.0)
        if kept and spent + cost > budget:
            break
        kept.append(item)
        spent += cost
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=items[len(kept) :])
        items[:] = kept
    _stop_a_hang(MUTATION_HANG_FACTOR * spent + MUTATION_HANG_SLACK)


# A mutant can make a command wait forever (one that drops O_NONBLOCK opening a FIFO a test
# leaves in a target folder blocks in open()). mutmut's own wall limit is 15 times the time of
# *every* test reaching the function (often minutes), and a worker held that long halves the
# run. A mutant still running its budgeted tests well past their recorded time is a hang, which
# a user would notice: the process ends with mutmut's timeout code (36), counted as killed. A
# thread, not SIGALRM: the stateful tests use the alarm for their own kills.
# Each hang is written to mutants/mutation-hangs.txt ("mutant test seconds").
MUTATION_HANG_FACTOR = 3.0
MUTATION_HANGS = REPO / "mutation-hangs.txt"
MUTATION_HANG_SLACK = 20.0


def _stop_a_hang(seconds: float) -> None:
    import threading

    def out_of_time() -> None:
        with MUTATION_HANGS.open("a", encoding="utf-8") as hangs:
            hangs.write(f"{_mutant()} {_running_test or '(collection)'} {seconds:.0f}\n")
        os._exit(36)

    timer = threading.Timer(seconds, out_of_time)
    timer.daemon = True
    timer.start()


_running_test = ""


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    global _running_test
    _running_test = nodeid


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        _durations_seen[report.nodeid] = _durations_seen.get(report.nodeid, 0.0) + report.duration
    mutant = _mutant()
    if mutant and report.failed:
        with MUTATION_KILLS.open("a", encoding="utf-8") as kills:
            kills.write(f"{mutant} {report.nodeid}\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("MUTANT_UNDER_TEST") == "stats" and _durations_seen:
        import json

        MUTATION_DURATIONS.write_text(json.dumps(_durations_seen, indent=0, sort_keys=True))
        if exitstatus == 0:
            # Every test passed on the unmutated tree, in this process: see _clean_run_repeats.
            STATS_PASSED.write_text(
                json.dumps({"pid": os.getpid(), "passed": sorted(_durations_seen)})
            )


# mutmut runs the tests twice on the unmutated tree before its first mutant: once to learn
# which test reaches which function (the stats run), then again to see that they pass (the
# clean run), each some 12 minutes in one process. When the stats run of this same process
# has just passed every test, the clean run is a repeat of it: it runs the one fastest test.
STATS_PASSED = REPO / "mutation-stats-passed.json"


def _clean_run_repeats(items: list[pytest.Item]) -> bool:
    """Whether this session is mutmut's clean run of tests that the stats run of this process
    has just passed."""
    if os.environ.get("MUTANT_UNDER_TEST") != "" or not STATS_PASSED.is_file():
        return False
    import json

    seen = json.loads(STATS_PASSED.read_text())
    passed = set(seen["passed"])
    unseen = [i.nodeid for i in items if i.nodeid not in passed]
    repeats = seen["pid"] == os.getpid() and not unseen
    # Why a clean run was run whole, or not (docs/TESTING.md: one whole run spent 7 minutes
    # in its clean phase without saying why: 18 tests that `-k` dropped after this hook).
    with (REPO / "mutation-clean-run.txt").open("a", encoding="utf-8") as log:
        log.write(
            f"pid {os.getpid()} (parent {os.getppid()}), stats pid {seen['pid']}, "
            f"{len(items)} tests, {len(unseen)} not passed by the stats run "
            f"{unseen[:3]}: {'one test' if repeats else 'all run'}\n"
        )
    return repeats
