"""Invariant 5 at the level of one write (provisioner/atomic.py): the temporary a write goes
through is private from its first byte and is a file this write created; a write killed before
its rename leaves the old file whole; what a killed writer left of a file is removed by the next
write of that file, and only of that file."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioner import atomic, faults


def test_a_write_removes_its_own_leftovers_not_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "workstation"
    folder.mkdir()
    mine = [f"{atomic.TMP_MARK}ville.g1.p12.0badc0de", f"{atomic.TMP_MARK}ville.g1.p12.12345678"]
    others = [
        f"{atomic.TMP_MARK}ville.g2.p12.0badc0de",  # another generation's
        f"{atomic.TMP_MARK}ville.g1.0badc0de",  # another file's (ville.g1)
        "ville.g1.p12.0badc0de",  # not a temporary
    ]
    for name in mine + others:
        (folder / name).write_bytes(b"partial")
    atomic.write_private(folder / "ville.g1.p12", b"whole")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*others, "ville.g1.p12"])
    assert (folder / "ville.g1.p12").read_bytes() == b"whole"


# Both writers: `write_private` (copies, state files) and `create_private` (init's files).
WRITERS = pytest.mark.parametrize("writer", [atomic.write_private, atomic.create_private])


@WRITERS
def test_the_temporary_is_private_from_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: Callable[[Path, bytes], None]
) -> None:
    # With the usual umask, a file created without a mode is readable by everyone: the bytes
    # of a PKCS#12 must never sit in such a file, not even before the final chmod.
    modes: list[int] = []
    write = os.write

    def watched(fd: int, data: bytes | memoryview) -> int:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return write(fd, data)

    old_umask = os.umask(0o022)
    monkeypatch.setattr(atomic.os, "write", watched)
    try:
        writer(tmp_path / "ville.g1.p12", b"secret bytes")
    finally:
        monkeypatch.undo()
        os.umask(old_umask)
    assert modes and set(modes) == {0o600}
    assert stat.S_IMODE((tmp_path / "ville.g1.p12").stat().st_mode) == 0o600


@WRITERS
def test_a_name_planted_where_the_temporary_goes_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: Callable[[Path, bytes], None]
) -> None:
    # Someone who could guess the temporary's name plants a symlink there, to a file of theirs.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"theirs")
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "dummy").write_bytes(b"")  # the folder is listed for leftovers before the plant
    atomic.write_private(folder / "dummy", b"")
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n=None: "guessed0")
    (folder / f"{atomic.TMP_MARK}ville.g1.p12.guessed0").symlink_to(elsewhere)
    with pytest.raises(FileExistsError):
        writer(folder / "ville.g1.p12", b"the key")
    assert elsewhere.read_bytes() == b"theirs"
    assert not (folder / "ville.g1.p12").exists()


@pytest.mark.parametrize("length", [1, 120, 229])
def test_a_file_name_up_to_229_characters_is_written(tmp_path: Path, length: int) -> None:
    # A name the user chooses (`plan --out`, `export --out`): its temporary is 26 characters
    # longer, and 255 is the longest name a Linux filesystem takes.
    path = tmp_path / ("p" * (length - 1) + "n")
    atomic.write_private(path, b"plan")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


class Killed(Exception):
    """SIGUSR1 standing for the SIGKILL of PROVISIONER_FAULT_INJECT."""


@pytest.fixture
def killed_mid_rename(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """PROVISIONER_FAULT_INJECT=mid-rename, the kill caught in this process."""

    def die(signum: int, frame: object) -> None:
        raise Killed

    previous = signal.signal(signal.SIGUSR1, die)
    monkeypatch.setattr(faults, "_POINT", "mid-rename")
    monkeypatch.setattr(faults, "_WANTED", 1)
    monkeypatch.setattr(faults, "_seen", 0)
    monkeypatch.setattr(faults, "_KILL", signal.SIGUSR1)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.usefixtures("killed_mid_rename")
def test_a_write_killed_before_its_rename_leaves_the_old_file_and_the_next_clears_up(
    tmp_path: Path,
) -> None:
    target = tmp_path / "ville.g1.p12"
    target.write_bytes(b"old copy")
    with pytest.raises(Killed):
        atomic.write_private(target, b"new copy")
    assert target.read_bytes() == b"old copy"
    [leftover] = [p for p in tmp_path.iterdir() if p != target]
    assert leftover.name.startswith(atomic.TMP_MARK + "ville.g1.p12.")
    assert leftover.read_bytes() == b"new copy", "written and synced before the rename"
    atomic._STALE.clear()  # the next run is a new process: it lists the folder afresh
    atomic.write_private(target, b"new copy")
    assert [p.name for p in tmp_path.iterdir()] == ["ville.g1.p12"]
    assert target.read_bytes() == b"new copy"
