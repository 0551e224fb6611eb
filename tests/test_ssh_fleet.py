"""A fleet with workstations down (nothing listening) and hung (a listener that accepts and
never speaks SSH, or sends its banner and stalls), over the tool's own SSH transport: every
command ends within about ceil(unreachable / parallel) x connect_timeout after the reachable
work, the reachable workstations converge, each unreachable one is listed once with its
reason and tried again at the next run, the exit code tells partial from total failure, and
no library traceback reaches the terminal.

Time bounds are loose on purpose (a loaded 2-core machine): each is well under what the same
run would take if connections were made one after the other, and the exact count of
connections each hung listener accepted is asserted too (one per run, whatever the number
of targets on it)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.crypto import pkcs12
from tests import sshd as sshd_helpers
from tests.conftest import Runner, require
from tests.listeners import Dropping, Hung, refusing
from tests.manifests import Manifest, ssh
from tests.sshd import SshServer

PASSWORD = "Fleet-Test-Password-42!"
ENV = {"ESCROW": "Escrow-Passphrase-For-Fleet-Tests", "PW": PASSWORD}
NET = "127.0.18"  # addresses of this module's workstations (all of 127/8 is loopback)
REACHABLE = tuple(f"{NET}.{i}" for i in range(1, 7))
TIMEOUT = 4  # connect_timeout of every workstation, seconds
# Upper bound of a run with 5 or 6 hosts that time out, at --parallel 6 or 8: one round of
# the timeout plus up to 10 s for the reachable work and process start on a loaded machine.
# Connecting one host after the other would take at least 5 x TIMEOUT = 20 s.
BOUND = TIMEOUT + 10
# Library noise that must never reach the operator (paramiko's logger and thread deaths).
NOISE = ("Traceback", "Exception (client)", "EOFError", "Bad file descriptor", "paramiko")


def started(hosts: tuple[str, ...]) -> SshServer:
    require(sshd_helpers.available(), "sshd is not installed", "apt-get install openssh-server")
    return sshd_helpers.start(hosts)


@pytest.fixture(scope="module")
def fleet() -> Iterator[SshServer]:
    """One real sshd serving six workstations, each on its own loopback address."""
    server = started(REACHABLE)
    yield server
    server.stop()


def write_manifest(
    tmp_path: Path,
    server: SshServer,
    workstations: list[tuple[str, str, int]],
    *,
    nas: bool = True,
    extra_known: tuple[SshServer, ...] = (),
    keys: dict[str, Path] | None = None,
) -> Path:
    known = server.known_hosts(tmp_path / "known_hosts", REACHABLE)
    with known.open("a") as handle:
        for other in extra_known:
            handle.writelines(f"[{h}]:{other.port} {other.host_key_line}\n" for h in other.hosts)
    remote = server.root / tmp_path.name
    m = Manifest()
    if nas:
        m.location("nas")
    for name, host, port in workstations:
        key = (keys or {}).get(name, server.client_key)
        where = f"{remote}/{name}"
        fields = ssh(host, port, server.user, where, key_file=key, known_hosts=known)
        m.workstation(name, **fields, connect_timeout=TIMEOUT)
    names = [w[0] for w in workstations]
    m.entity("ville", shared_locations=["nas"] if nas else None, workstations=names)
    return m.write(tmp_path / "m.yaml")


def timed(cli: Runner, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    begin = time.monotonic()
    done = cli(*args, env=ENV)
    return done, time.monotonic() - begin


def quiet_stderr(text: str) -> None:
    for noise in NOISE:
        assert noise not in text, text


def test_down_and_hung_workstations_bounded_listed_once_retried_and_partial(
    cli: Runner, fleet: SshServer, tmp_path: Path
) -> None:
    # A seventh workstation, served by its own sshd that is switched off for the first run.
    late = started((f"{NET}.7",))
    late.halt()
    silent = [Hung(f"{NET}.{i}", "silent") for i in (9, 10)]
    banner = [Hung(f"{NET}.{i}", "banner") for i in (11, 12)]
    off = Dropping(f"{NET}.13")  # switched off: the TCP connect is never answered
    try:
        workstations = [(f"ok{i}", host, fleet.port) for i, host in enumerate(REACHABLE)]
        workstations += [
            ("late", f"{NET}.7", late.port),
            ("down", f"{NET}.8", refusing(f"{NET}.8")),
        ]
        workstations += [(f"mute{i}", h.host, h.port) for i, h in enumerate(silent)]
        workstations += [(f"stall{i}", h.host, h.port) for i, h in enumerate(banner)]
        workstations += [("ws-off", off.host, off.port)]
        m = write_manifest(
            tmp_path, fleet, workstations, extra_known=(late,), keys={"late": late.client_key}
        )
        reasons = {
            "late": f"cannot connect to {NET}.7:{late.port}: Connection refused",
            "down": f"cannot connect to {NET}.8:",
            "ws-off": f"cannot connect to {off.host}:{off.port}: timed out after {TIMEOUT} s",
            **{
                f"mute{i}": f"cannot connect to {h.host}:{h.port}: the server sent no SSH banner "
                f"within {TIMEOUT} s"
                for i, h in enumerate(silent)
            },
            **{
                f"stall{i}": f"cannot connect to {h.host}:{h.port}: the server did not complete "
                f"the SSH handshake within {TIMEOUT} s"
                for i, h in enumerate(banner)
            },
        }

        done, elapsed = timed(cli, "apply", "--auto-approve", "--parallel", "8", m)
        out = done.stdout
        assert done.returncode == 4, out + done.stderr
        quiet_stderr(done.stderr)
        assert TIMEOUT <= elapsed < BOUND, elapsed
        for name, reason in reasons.items():
            assert out.count(f"{name}: cannot observe the target") == 1, out
            assert f"{name}: cannot observe the target: {reason}" in out
        assert "Connection refused" in out.split("down: cannot observe the target:")[1]
        assert "Apply incomplete: 8 actions done; 7 targets could not be observed" in out
        for i in range(6):
            copy = fleet.root / tmp_path.name / f"ok{i}" / "ville.g1.p12"
            assert pkcs12.decode(copy.read_bytes(), PASSWORD).friendly_name == "Ville"
        assert [h.accepted for h in silent + banner] == [1, 1, 1, 1]

        remote = fleet.root / tmp_path.name
        # Every reading command: bounded, each unreachable target once, no library noise.
        for args, code in (
            (("plan", "--detailed-exitcode"), 4),
            (("status",), 0),
            (("check",), 1),
            (("rehearse",), 4),
        ):
            run, elapsed = timed(cli, *args, "--parallel", "8", m)
            text = run.stdout
            assert run.returncode == code, (args, text)
            quiet_stderr(run.stderr)
            assert elapsed < BOUND, (args, elapsed)
            for name, reason in reasons.items():
                listed = f"{name}: cannot observe the target"
                if args[0] == "check":  # its first line (Nagios summary) quotes one again
                    listed = f"[unreachable] {listed}"
                elif args[0] == "rehearse":
                    listed = f"{name}: {remote}/{name}/ville.g1.p12  [unreachable]"
                assert text.count(listed) == 1, (args, name, text)
                assert reason in text, (args, name, text)
        assert [h.accepted for h in silent + banner] == [5, 5, 5, 5]  # once per run

        # The switched-off machine is back: the next run tries it and it converges.
        late.resume()
        again, elapsed = timed(cli, "apply", "--auto-approve", "--parallel", "8", m)
        out = again.stdout
        assert again.returncode == 4, out
        assert "late: cannot observe the target" not in out
        assert "Apply incomplete: 1 action done; 6 targets could not be observed" in out
        copy = remote / "late" / "ville.g1.p12"  # the same machine, another sshd
        assert pkcs12.decode(copy.read_bytes(), PASSWORD).friendly_name == "Ville"
        assert [h.accepted for h in silent + banner] == [6, 6, 6, 6]

        # Switched off again: status does not call its copy "ok" from the record.
        late.halt()
        status = cli("status", "--json", m, env=ENV)
        assert status.returncode == 0, status.stdout + status.stderr
        document = json.loads(status.stdout)
        assert (
            sum(e.startswith("late: cannot observe the target:") for e in document["errors"]) == 1
        )
        assert len(document["errors"]) == 7
        (entity,) = document["entities"]
        states = {c["target"]: c["state"] for c in entity["copies"]}
        assert states["late"] == "unreachable" and states["ok0"] == "ok", states
        assert entity["ready"] is False and "late" in entity["reason"]
    finally:
        for h in silent + banner:
            h.stop()
        off.stop()
        late.stop()


def test_no_workstation_reachable_is_total_failure(
    cli: Runner, fleet: SshServer, tmp_path: Path
) -> None:
    hung = Hung(f"{NET}.20", "banner")
    try:
        m = write_manifest(
            tmp_path,
            fleet,
            [("down", f"{NET}.21", refusing(f"{NET}.21")), ("stall", hung.host, hung.port)],
            nas=False,
        )
        planned = cli("plan", "--detailed-exitcode", m, env=ENV)
        assert planned.returncode == 1, planned.stdout
        done = cli("apply", "--auto-approve", m, env=ENV)
        assert done.returncode == 1, done.stdout
        assert "2 targets could not be observed" in done.stdout
        quiet_stderr(done.stderr)
        # One reachable workstation among them makes it partial.
        m = write_manifest(
            tmp_path,
            fleet,
            [
                ("down", f"{NET}.21", refusing(f"{NET}.21")),
                ("stall", hung.host, hung.port),
                ("ok", REACHABLE[0], fleet.port),
            ],
            nas=False,
        )
        partial = cli("apply", "--auto-approve", m, env=ENV)
        assert partial.returncode == 4, partial.stdout
        rehearsed = cli("rehearse", m, env=ENV)
        assert rehearsed.returncode == 4, rehearsed.stdout
        assert "[unreachable]" in rehearsed.stdout
    finally:
        hung.stop()


def test_hung_hosts_are_connected_in_parallel_and_once_per_host(
    cli: Runner, fleet: SshServer, tmp_path: Path
) -> None:
    hung = [Hung(f"{NET}.{30 + i}", "silent") for i in range(6)]
    # Four more workstations on the first hung host: they share its one connection.
    shared = [(f"same{i}", hung[0].host, hung[0].port) for i in range(4)]
    try:
        m = write_manifest(
            tmp_path,
            fleet,
            [(f"mute{i}", h.host, h.port) for i, h in enumerate(hung)] + shared,
        )
        planned, elapsed = timed(cli, "plan", "--parallel", "6", m)
        assert planned.returncode == 4, planned.stdout
        quiet_stderr(planned.stderr)
        # One after the other: 6 x 4 s = 24 s (10 x 4 s without one attempt per host).
        assert TIMEOUT <= elapsed < BOUND, elapsed
        assert [h.accepted for h in hung] == [1] * 6
        for name in [f"mute{i}" for i in range(6)] + [s[0] for s in shared]:
            assert planned.stdout.count(f"{name}: cannot observe the target") == 1
        # --parallel 2: ceil(6 / 2) = 3 rounds of the timeout, at least.
        planned, elapsed = timed(cli, "plan", "--parallel", "2", m)
        assert planned.returncode == 4
        assert elapsed >= 3 * TIMEOUT, elapsed
    finally:
        for h in hung:
            h.stop()


def test_each_kind_of_unreachable_host_is_named_and_tried_once_per_run(
    fleet: SshServer, tmp_path: Path
) -> None:
    from provisioner.errors import Location
    from provisioner.manifest.model import SshSpec, Target
    from provisioner.transports import TransportPool
    from provisioner.transports.base import Unreachable

    known = fleet.known_hosts(tmp_path / "known_hosts", REACHABLE)
    # known_hosts expecting another key for this address: a changed host key.
    impostor = tmp_path / "impostor_hosts"
    other_key = " ".join(fleet.client_key.with_suffix(".pub").read_text().split()[:2])
    impostor.write_text(f"[{REACHABLE[1]}]:{fleet.port} {other_key}\n")
    stranger = tmp_path / "no_entry_hosts"  # nothing recorded for that address
    stranger.write_text(f"[{REACHABLE[0]}]:{fleet.port} {fleet.host_key_line}\n")
    silent, banner = Hung(f"{NET}.40", "silent"), Hung(f"{NET}.41", "banner")
    dropping = Dropping(f"{NET}.43")
    cases = {
        "refused": (f"{NET}.42", refusing(f"{NET}.42"), fleet.client_key, known),
        "timed out": (dropping.host, dropping.port, fleet.client_key, known),
        "no SSH banner": (silent.host, silent.port, fleet.client_key, known),
        "SSH handshake stalled": (banner.host, banner.port, fleet.client_key, known),
        "auth failed": (REACHABLE[0], fleet.port, fleet.other_key, known),
        "host key mismatch": (REACHABLE[1], fleet.port, fleet.client_key, impostor),
        "host key unknown": (REACHABLE[2], fleet.port, fleet.client_key, stranger),
    }
    pool = TransportPool()
    try:
        for kind, (host, port, key, hosts_file) in cases.items():
            target = Target(
                name=f"ws-{kind.replace(' ', '-')}",
                role="workstation",
                path=str(fleet.root / tmp_path.name),
                location=Location("test"),
                spec=SshSpec(
                    host=host,
                    user=fleet.user,
                    known_hosts=hosts_file,
                    port=port,
                    key_file=key,
                    connect_timeout=1.0,
                ),
            )
            transport = pool.get(target)
            with pytest.raises(Unreachable) as first:
                transport.observe(f"{target.path}/x.p12")
            assert first.value.kind == kind, (kind, str(first.value))
            # The same run never tries that host again: at once, the same reason.
            begin = time.monotonic()
            with pytest.raises(Unreachable) as again:
                pool.get(target).read(f"{target.path}/x.p12")
            assert time.monotonic() - begin < 0.5
            assert again.value.kind == kind
            assert str(first.value).split(": ", 1)[1] in str(again.value)
        assert (silent.accepted, banner.accepted) == (1, 1)
    finally:
        pool.close()
        silent.stop()
        banner.stop()
        dropping.stop()


def test_check_answers_unknown_within_its_timeout_when_a_workstation_hangs(
    cli: Runner, fleet: SshServer, tmp_path: Path
) -> None:
    """`check -t`: a workstation that accepts and never speaks, with a long connect_timeout,
    would hold the probe a minute; the probe answers UNKNOWN within its own timeout, in the
    plugin protocol, before the monitoring gives up on it."""
    hung = Hung(f"{NET}.20", "silent")
    try:
        m = write_manifest(tmp_path, fleet, [("ok0", REACHABLE[0], fleet.port)])
        done = cli("apply", "--auto-approve", m, env=ENV)
        assert done.returncode == 0, done.stdout + done.stderr
        text = m.read_text().replace(
            "  workstations:\n",
            "  workstations:\n"
            f"    - {{name: mute, transport: ssh, host: {hung.host}, port: {hung.port}, "
            f"user: {fleet.user}, key_file: {fleet.client_key}, "
            f"known_hosts: {tmp_path / 'known_hosts'}, path: /srv/mute, connect_timeout: 60}}\n",
        )
        m.write_text(text.replace("workstations: [ok0]", "workstations: [ok0, mute]"))
        _, start_up = timed(cli, "--version")  # what this machine's load costs any command
        run, elapsed = timed(cli, "check", "-t", "3", m)
        assert run.returncode == 3, run.stdout + run.stderr
        assert run.stdout.startswith(
            "PROVISIONER UNKNOWN - no verdict within 3 s (-t/--timeout)"
        ), run.stdout
        # The timeout, plus the start-up a command takes now, plus slack; the workstation
        # alone would hold the probe 60 s.
        assert elapsed < start_up + 3 + 10, (elapsed, start_up)
        quiet_stderr(run.stderr)
    finally:
        hung.stop()
