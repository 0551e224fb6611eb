"""Resolve secret references ({env}, {file}, {command}) and enforce the password policy.

Secret values live only in memory. Error messages name the source, never the value.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from provisioner import children
from provisioner.bounded import InputFileError, read_regular
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


def source_stamp(ref: SecretRef) -> str | None:
    """What tells, without reading a secret, that its source may have changed: for a file,
    a digest of its path, size and modification time (never its content; not its inode, so a
    folder restored from a backup with its times kept reads unchanged); None for an
    environment variable or a command, which nothing outside the run can see change."""
    if ref.kind != "file":
        return None
    assert isinstance(ref.value, str)
    path = Path(ref.value)
    path = path if path.is_absolute() else ref.base_dir / path
    try:
        facts = path.stat()
    except OSError:
        return None
    seen = f"{path}\0{facts.st_size}\0{facts.st_mtime_ns}"
    return "file:" + hashlib.sha256(seen.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _read_file(path: Path, ref: SecretRef, what: str) -> bytes:
    try:
        return read_regular(path, MAX_SECRET_BYTES)
    except InputFileError as exc:
        raise SecretError(f"{ref.location}: {what}: secret file {path}: {exc}") from None


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


def from_options(env: str | None, file: Path | None, what: str) -> str | None:
    """A secret given on the command line as `--WHAT-env NAME` or `--WHAT-file PATH` (never
    its value); None when neither is given."""
    from provisioner.errors import Location, UsageError

    if env and file:
        raise UsageError(f"give either --{what}-env or --{what}-file, not both")
    if env:
        return resolve(SecretRef("env", env, Path.cwd(), Location(f"--{what}-env")), what)
    if file:
        return resolve(SecretRef("file", str(file), Path.cwd(), Location(f"--{what}-file")), what)
    return None
