"""Resolve secret references ({env}, {file}, {command}) and enforce the password policy.

Secret values live only in memory. Error messages name the source, never the value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from provisioner import children
from provisioner.errors import SecretError
from provisioner.manifest.model import PasswordPolicy, SecretRef

COMMAND_TIMEOUT = 30.0
MAX_SECRET_BYTES = 4096


def resolve(ref: SecretRef, what: str, withheld: Iterable[str] = ()) -> str:
    """The secret's value: the first line of the env var, file or command output (only a
    final "\n" or "\r\n" ends it: a password may hold any other character). A command gets
    a minimal environment, without any variable whose value is one of `withheld` (secrets
    already resolved: the escrow passphrase...)."""
    if ref.kind == "env":
        assert isinstance(ref.value, str)
        value = os.environ.get(ref.value)
        if value is None:
            raise SecretError(
                f"{ref.location}: {what}: environment variable {ref.value} is not set"
            )
        raw = value
    elif ref.kind == "file":
        assert isinstance(ref.value, str)
        path = Path(ref.value)
        path = path if path.is_absolute() else ref.base_dir / path
        raw = _text(_read_file(path, ref, what), ref, what)
    else:
        assert isinstance(ref.value, tuple)
        argv = list(ref.value)
        try:
            # No shell: the argv list is run as is, with a minimal environment.
            done = children.run_bounded(
                argv,
                env=children.environment(ref.child_env, withheld),
                cwd=ref.base_dir,
                timeout=COMMAND_TIMEOUT,
                limit=MAX_SECRET_BYTES,
            )
        except children.Timeout:
            raise SecretError(
                f"{ref.location}: {what}: secret command {argv[0]} failed: did not exit within "
                f"{COMMAND_TIMEOUT:g} s (killed)"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SecretError(
                f"{ref.location}: {what}: secret command {argv[0]} failed: {reason}"
            ) from None
        if done.too_large:
            raise SecretError(
                f"{ref.location}: {what}: secret from {ref.describe()} is too large (more than "
                f"{MAX_SECRET_BYTES} bytes; it was stopped)"
            )
        if done.returncode != 0:
            raise SecretError(
                f"{ref.location}: {what}: secret command {argv[0]} exited with {done.returncode}"
            )
        raw = _text(done.stdout, ref, what)
    line = raw.split("\n", 1)[0].removesuffix("\r")
    if not line:
        raise SecretError(f"{ref.location}: {what}: the secret from {ref.describe()} is empty")
    return line


def _read_file(path: Path, ref: SecretRef, what: str) -> bytes:
    """At most MAX_SECRET_BYTES + 1 bytes of a regular file. A FIFO, device or folder is
    refused without blocking: the open does not wait for a writer (O_NONBLOCK) and the type
    is checked on the opened file (fstat), so it cannot be swapped in between."""
    where = f"{ref.location}: {what}: secret file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    try:
        facts = os.fstat(fd)
        if not stat.S_ISREG(facts.st_mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(facts.st_mode)
                else "a named pipe"
                if stat.S_ISFIFO(facts.st_mode)
                else "a device"
                if stat.S_ISCHR(facts.st_mode) or stat.S_ISBLK(facts.st_mode)
                else "not a regular file"
            )
            raise SecretError(f"{where}: is {kind}; give a regular file")
        if facts.st_size > MAX_SECRET_BYTES:
            raise SecretError(
                f"{where}: is too large ({facts.st_size} bytes; at most {MAX_SECRET_BYTES})"
            )
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SECRET_BYTES:
            chunk = os.read(fd, MAX_SECRET_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise SecretError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _text(data: bytes, ref: SecretRef, what: str) -> str:
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(
            f"{ref.location}: {what}: secret from {ref.describe()} is too large (more than "
            f"{MAX_SECRET_BYTES} bytes)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(
            f"{ref.location}: {what}: secret from {ref.describe()} is not UTF-8 text"
        ) from None


def policy_problem(password: str, policy: PasswordPolicy) -> str | None:
    """Why `password` breaks `policy`, or None. Never echoes the password."""
    if not password:
        return "a password is mandatory"
    if len(password) < policy.min_length:
        return f"password is shorter than {policy.min_length} characters"
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < policy.min_classes:
        return (
            f"password uses {classes} character class(es); at least {policy.min_classes} of "
            "lower case, upper case, digits and symbols are required"
        )
    if len(set(password)) < max(4, len(password) // 4):
        return "password is too repetitive"
    return None
