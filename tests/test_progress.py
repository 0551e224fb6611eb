"""Apply's progress as a person sees it: one live display on a terminal (rich), redrawn in
place, with a row for keys, encodings, copies and targets, then the summary line; piped, no
progress and no escape code, only the summary."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.conftest import run_cli

ROWS = ("keys generated", "PKCS#12 encoded", "copies written", "targets complete")


def bigger(quickstart: Path) -> Path:
    """12 more entities of 3072-bit keys on three targets: a run of a few seconds."""
    quickstart.write_text(
        quickstart.read_text()
        + "".join(
            f"  - {{id: e{i}, name: E{i}, key: {{designation: E{i}, size: 3072}}, "
            "password: {file: secrets/commune-exemple.pass}, shared_locations: [backup-share], "
            "workstations: [ws-accueil, ws-marches]}\n"
            for i in range(12)
        )
    )
    return quickstart


def in_terminal(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run the CLI with a 120x40 terminal on stdin, stdout and stderr; everything it wrote."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROVISIONER_") or k == "PROVISIONER_NOW"
    }
    env |= {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=cwd,
        env=env,
    )
    os.close(terminal)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif process.poll() is not None:
            break
    os.close(main)
    return process.wait(timeout=120), out


def screen(raw: bytes) -> list[str]:
    """What the terminal shows at the end: a small emulator of the sequences rich and the
    command use (line feeds, carriage returns, cursor up, erase line; colours ignored)."""
    lines: list[str] = [""]
    row = col = 0
    text = raw.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\x1b":
            m = re.match(r"\x1b\[([0-9;?]*)([A-Za-z])", text[i:])
            assert m, repr(text[i : i + 10])
            arg, code = m.group(1), m.group(2)
            if code == "A":
                row = max(0, row - int(arg or 1))
            elif code == "K":
                lines[row] = lines[row][:col] if arg in ("", "0") else ""
            i += len(m.group(0))
            continue
        if c == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif c == "\r":
            col = 0
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + c + line[col + 1 :]
            col += 1
        i += 1
    return [line.rstrip() for line in lines]


def test_one_live_display_on_a_terminal_then_the_summary(quickstart: Path) -> None:
    code, raw = in_terminal(["apply", "--auto-approve", str(bigger(quickstart))], quickstart.parent)
    assert code == 0, raw[-2000:]
    shown = screen(raw)
    # One region, redrawn in place: each row once on the screen, at its final count...
    for row in ROWS:
        assert sum(line.startswith(row) for line in shown) == 1, (row, shown[-8:])
    final = {line.split()[0] + line.split()[1]: line for line in shown if line.startswith(ROWS)}
    assert "14/14" in final["keysgenerated"] and "41/41" in final["copieswritten"]
    assert "3/3" in final["targetscomplete"]
    for line in final.values():  # rate once a row has run a second, then elapsed and time left
        *_, elapsed, _, left = line.split()
        assert left == "left" and (elapsed == "0:00:00" or "/s" in line), line
    # ...though it was drawn many times (cursor up, erase line), not line after line.
    assert raw.count(b"keys generated") > 3 and b"\x1b[1A" in raw
    region = [i for i, line in enumerate(shown) if line.startswith(ROWS)]
    assert region == list(range(region[0], region[0] + 4))
    assert shown[region[-1] + 1 :] in (["Apply complete: 55 actions done."],
                                       ["Apply complete: 55 actions done.", ""])  # fmt: skip


def test_piped_no_progress_no_escape_codes(quickstart: Path) -> None:
    done = run_cli("apply", "--auto-approve", bigger(quickstart))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr and "\r" not in done.stdout + done.stderr
    assert not any(row in done.stdout + done.stderr for row in ROWS)
    assert done.stdout.splitlines()[-1] == "Apply complete: 55 actions done."
    assert done.stderr == ""


def test_quiet_on_a_terminal_is_the_summary_line_only(quickstart: Path) -> None:
    manifest = str(bigger(quickstart))
    code, raw = in_terminal(["apply", "--auto-approve", "-q", manifest], quickstart.parent)
    assert code == 0
    assert raw.decode().replace("\r\n", "\n") == "Apply complete: 55 actions done.\n"
