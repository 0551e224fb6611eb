"""The local transport on its own, what the engine relies on it to refuse: a symlink where a
copy is read or a folder is secured (never followed: the key or the mode would go where
nobody declared), a file larger than any copy (never read whole), and each failure named with
its target, what it was doing and the path, as `apply` and `recover` print it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisioner.errors import Location, TransportError
from provisioner.manifest.model import Target
from provisioner.transports.base import MAX_READ_BYTES
from provisioner.transports.local import LocalTransport


def transport(folder: Path) -> LocalTransport:
    folder.mkdir(exist_ok=True)
    return LocalTransport(Target("ws-x", "workstation", str(folder), Location("m.yaml", 1, 1)))


def test_a_file_of_the_largest_size_a_copy_may_have_is_read_whole(tmp_path: Path) -> None:
    ws = transport(tmp_path / "ws")
    data = bytes(range(256)) * (MAX_READ_BYTES // 256)
    assert len(data) == MAX_READ_BYTES
    (tmp_path / "ws" / "big.p12").write_bytes(data)
    assert ws.read(str(tmp_path / "ws" / "big.p12")) == data


def test_a_file_one_byte_larger_is_refused_unread(tmp_path: Path) -> None:
    ws = transport(tmp_path / "ws")
    path = tmp_path / "ws" / "big.p12"
    path.write_bytes(b"x" * (MAX_READ_BYTES + 1))
    with pytest.raises(TransportError) as info:
        ws.read(str(path))
    assert str(info.value) == (
        f"ws-x: {path} is larger than {MAX_READ_BYTES} bytes: not a file this tool wrote"
    )


def test_a_symlink_where_a_copy_is_read_is_not_followed(tmp_path: Path) -> None:
    """Swapped in after the file was observed: reading through it would open someone's file
    (a key elsewhere on this machine) as if it were the copy."""
    ws = transport(tmp_path / "ws")
    elsewhere = tmp_path / "secret.p12"
    elsewhere.write_bytes(b"not for this tool")
    link = tmp_path / "ws" / "ville.g1.p12"
    link.symlink_to(elsewhere)
    with pytest.raises(TransportError) as info:
        ws.read(str(link))
    assert str(info.value) == f"ws-x: cannot read {link}: Too many levels of symbolic links"


def test_a_folder_where_a_copy_is_read_is_not_a_regular_file(tmp_path: Path) -> None:
    ws = transport(tmp_path / "ws")
    folder = tmp_path / "ws" / "ville.g1.p12"
    folder.mkdir()
    with pytest.raises(TransportError) as info:
        ws.read(str(folder))
    assert str(info.value) == f"ws-x: {folder} is not a regular file"


def test_a_symlinked_folder_is_never_secured_through_the_link(tmp_path: Path) -> None:
    ws = transport(tmp_path / "ws")
    other = tmp_path / "other"
    other.mkdir()
    os.chmod(other, 0o755)
    link = tmp_path / "ws" / "sub"
    link.symlink_to(other)
    with pytest.raises(TransportError) as info:
        ws.secure_folder(str(link))
    assert str(info.value) == f"ws-x: cannot set mode 0700 on {link}: Not a directory"
    assert stat.S_IMODE(other.stat().st_mode) == 0o755


def test_a_file_is_never_secured_as_a_folder(tmp_path: Path) -> None:
    ws = transport(tmp_path / "ws")
    path = tmp_path / "ws" / "notes.txt"
    path.write_text("an agent's notes")
    os.chmod(path, 0o644)
    with pytest.raises(TransportError) as info:
        ws.secure_folder(str(path))
    assert str(info.value) == f"ws-x: cannot set mode 0700 on {path}: Not a directory"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_and_remove_failures_name_the_target_the_step_and_the_path(tmp_path: Path) -> None:
    ws = transport(tmp_path / "ws")
    blocker = tmp_path / "ws" / "sub"
    blocker.write_text("a file where a folder is expected")
    inside = blocker / "ville.g1.p12"
    with pytest.raises(TransportError) as info:
        ws.write(str(inside), b"data")
    assert str(info.value) == f"ws-x: cannot write {inside}: Not a directory"
    folder = tmp_path / "ws" / "ville.g2.p12"
    folder.mkdir()
    with pytest.raises(TransportError) as info:
        ws.write(str(folder), b"data")
    assert str(info.value).startswith("ws-x: ") and str(folder) in str(info.value)
    with pytest.raises(TransportError) as info:
        ws.remove(str(folder))
    assert str(info.value) == f"ws-x: cannot remove {folder}: Is a directory"
    assert folder.is_dir()
    ws.remove(str(tmp_path / "ws" / "gone.p12"))  # already gone: nothing to say


def test_a_named_pipe_where_a_copy_is_read_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    """Opened without blocking (a pipe with no writer would hang the run for ever), then
    refused as no regular file."""
    ws = transport(tmp_path / "ws")
    pipe = tmp_path / "ws" / "ville.g1.p12"
    os.mkfifo(pipe)
    with pytest.raises(TransportError) as info:
        ws.read(str(pipe))
    assert str(info.value) == f"ws-x: {pipe} is not a regular file"
