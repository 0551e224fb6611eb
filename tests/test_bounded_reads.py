"""Every read is bounded and nothing hangs (issue 27, item 4): a named pipe or a device where a
file is expected is refused at once, naming it; a PKCS#12 declaring more key-derivation
iterations than Windows imports is refused before any key is derived; a crash leaves no core
holding a secret. Each test runs the commands a user would and bounds them by a timeout, so a
regression fails instead of hanging the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.crypto import pkcs12
from tests.conftest import Runner
from tests.engine_helpers import p12_files
from tests.oracle import _tlvs

QUICK = 60  # seconds: each command here answers at once; a hang fails the test


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _recount(data: bytes, old: int, new: int) -> tuple[bytes, int]:
    """`data` with every INTEGER equal to `old` made `new`, walking into constructed values and
    OCTET STRINGs that hold DER (a PKCS#12 nests its bags so); the lengths are re-encoded."""
    out, changed = b"", 0
    for tag, value in _tlvs(data):
        if tag == 0x02 and int.from_bytes(value, "big", signed=True) == old:
            value, changed = new.to_bytes((new.bit_length() + 8) // 8, "big"), changed + 1
        elif tag & 0x20 or tag == 0x04:
            try:
                value, inner = _recount(value, old, new)
                changed += inner
            except ValueError:
                pass  # an OCTET STRING of encrypted bytes
        out += _tlv(tag, value)
    return out, changed


def costly_copy(p12: bytes, iterations: int) -> bytes:
    """A PKCS#12 this tool wrote (modern profile, 100,000 iterations), its counts raised to
    `iterations` without deriving anything (its MAC no longer verifies: nobody may know)."""
    out, changed = _recount(p12, pkcs12.PROFILES["modern"].iterations, iterations)
    assert changed >= 2, "the key's and the certificates' counts were rewritten"
    return out


@pytest.mark.real_kdf
def test_declared_iterations_are_read_from_der_and_ber_files(cli: Runner, quickstart: Path) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    written = p12_files(quickstart)["workstations/ws-marches/commune-exemple.g1.p12"].read_bytes()
    assert pkcs12.declared_iterations(written) == 100_000
    costly = costly_copy(written, 2**31 - 1)
    assert pkcs12.declared_iterations(costly) == 2**31 - 1
    # The same file with its outer SEQUENCE in BER's indefinite-length form (as some Windows
    # exports are): the DER reader cannot walk it, the scan still finds the counts.
    ((tag, body),) = _tlvs(costly)
    ber = bytes([tag, 0x80]) + body + b"\x00\x00"
    with pytest.raises(Exception, match="not a readable PKCS#12"):
        pkcs12.inspect(ber)
    assert pkcs12.declared_iterations(ber) == 2**31 - 1


def test_a_copy_declaring_2_31_iterations_is_refused_unopened_and_left_alone(
    cli: Runner, quickstart: Path
) -> None:
    """Dropped in place of an agent's copy, with the entity's password: plan, apply and
    recover answer at once, name the file, and never replace it (it is not this state's)."""
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    copy = p12_files(quickstart)["workstations/ws-marches/commune-exemple.g1.p12"]
    costly = costly_copy(copy.read_bytes(), 2**31 - 1)
    copy.write_bytes(costly)
    planned = cli("plan", quickstart, timeout=QUICK)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert "2,147,483,647 key-derivation iterations" in planned.stdout + planned.stderr
    assert "ws-marches" in planned.stdout + planned.stderr
    applied = cli("apply", "--auto-approve", quickstart, timeout=QUICK)
    assert applied.returncode != 0
    assert copy.read_bytes() == costly, "a file this state did not write is never replaced"
    recovered = cli("recover", quickstart, timeout=QUICK)
    assert "2,147,483,647 key-derivation iterations" in recovered.stdout + recovered.stderr
    assert "Traceback" not in planned.stderr + applied.stderr + recovered.stderr


def test_adopting_a_file_declaring_too_many_iterations_is_refused(
    cli: Runner, quickstart: Path
) -> None:
    assert cli("apply", "--auto-approve", quickstart).returncode == 0
    copy = p12_files(quickstart)["workstations/ws-marches/commune-exemple.g1.p12"]
    dropped = quickstart.parent / "platform.p12"
    dropped.write_bytes(costly_copy(copy.read_bytes(), 2**31 - 1))
    done = cli(
        "adopt",
        quickstart,
        "commune-exemple",
        dropped,
        "--password-file",
        quickstart.parent / "secrets" / "commune-exemple.pass",
        timeout=QUICK,
    )
    assert done.returncode == 1
    assert "platform.p12: cannot adopt: PKCS#12 declares 2,147,483,647" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["named pipe", "device"])
def test_a_consultations_file_that_is_a_pipe_or_a_device_is_named_at_once(
    cli: Runner, quickstart: Path, kind: str
) -> None:
    """Given with --consultations (the manifest's own field is checked when loaded): plan and
    apply refuse it naming the file, without waiting on the pipe or reading /dev/zero."""
    fed = quickstart.parent / "consultations.yaml"
    if kind == "named pipe":
        os.mkfifo(fed)
    else:
        fed.symlink_to("/dev/zero")
    for command in (("plan",), ("apply", "--auto-approve")):
        done = cli(*command, "--consultations", fed, quickstart, timeout=QUICK)
        assert done.returncode == 1, done.stdout + done.stderr
        named = "consultations.yaml" if kind == "named pipe" else "/dev/zero"  # resolved
        assert f"{named}: error: is a {kind}; give a regular file" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (quickstart.parent / "demo-out").exists(), "nothing written"


def test_the_manifests_consultations_field_naming_a_pipe_says_so(
    cli: Runner, quickstart: Path
) -> None:
    os.mkfifo(quickstart.parent / "pipe.yaml")
    with quickstart.open("a") as manifest:
        manifest.write("consultations: pipe.yaml\n")
    done = cli("plan", quickstart, timeout=QUICK)
    assert done.returncode == 1
    assert "consultations: " in done.stderr and "is a named pipe" in done.stderr


def test_apply_on_a_manifest_that_is_a_named_pipe_is_refused_at_once(
    cli: Runner, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "m.yaml")
    for command in (("apply", "--auto-approve"), ("plan",), ("validate",)):
        done = cli(*command, tmp_path / "m.yaml", timeout=QUICK)
        assert done.returncode == 1, (command, done.stderr)
        assert "m.yaml: error: is a named pipe; give a regular file" in done.stderr


def test_a_saved_plan_that_is_a_device_is_refused(cli: Runner, quickstart: Path) -> None:
    """`apply FILE` reads a saved plan bounded too: a symlink to /dev/zero is not read on and on."""
    zero = quickstart.parent / "plan.json"
    zero.symlink_to("/dev/zero")
    done = cli("apply", zero, timeout=QUICK)
    assert done.returncode == 1
    assert "plan.json: error: is a device; give a regular file" in done.stderr


def test_a_command_secret_runs_without_core_dumps(cli: Runner, quickstart: Path) -> None:
    """The password a `command` secret prints is in the process's memory: the core size limit
    is 0 for the run and every child (the secret's program here reports its own)."""
    seen = quickstart.parent / "core-limit"
    script = quickstart.parent / "password.sh"
    script.write_text(
        f"#!/bin/sh\nulimit -c > {seen}\nulimit -H -c >> {seen}\ncat secrets/commune-exemple.pass\n"
    )
    script.chmod(0o700)
    text = quickstart.read_text().replace(
        "password: {file: secrets/commune-exemple.pass}", f"password: {{command: [{script}]}}"
    )
    quickstart.write_text(text)
    # Its own process even under mutation testing: the limit is set by `main` for the process.
    done = cli("plan", "--detailed-exitcode", quickstart, cwd=quickstart.parent, own_process=True)
    assert done.returncode == 2, done.stdout + done.stderr  # changes pending: the secret read
    assert seen.read_text().split() == ["0", "0"]


def test_the_process_is_not_dumpable() -> None:
    """No core file, and no ptrace or /proc/PID/mem reading by another process of the user."""
    probe = (
        "import ctypes, resource\n"
        "from provisioner.cli import no_core_dumps\n"
        "no_core_dumps()\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), *resource.getrlimit(resource.RLIMIT_CORE))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=QUICK
    )
    assert done.stdout.split() == ["0", "0", "0"]  # PR_GET_DUMPABLE, soft and hard limits
