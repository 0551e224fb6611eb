"""Resolve secret references ({env}, {file}, {command}) and enforce the password policy.

Secret values live only in memory. Error messages name the source, never the value.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from provisioner.errors import SecretError
from provisioner.manifest.model import PasswordPolicy, SecretRef

COMMAND_TIMEOUT = 30.0
MAX_SECRET_BYTES = 4096


def resolve(ref: SecretRef, what: str) -> str:
    """The secret's value: first line of the env var, file or command output (stripped of EOL)."""
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
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_SECRET_BYTES + 1)
        except OSError as exc:
            raise SecretError(
                f"{ref.location}: {what}: cannot read secret file {path}: {exc.strerror}"
            ) from None
        raw = _text(data, ref, what)
    else:
        assert isinstance(ref.value, tuple)
        argv = list(ref.value)
        try:
            # No shell: the argv list is run as is.
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
                cwd=ref.base_dir,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = (
                "timed out"
                if isinstance(exc, subprocess.TimeoutExpired)
                else str(getattr(exc, "strerror", None) or exc)
            )
            raise SecretError(
                f"{ref.location}: {what}: secret command {argv[0]} failed: {reason}"
            ) from None
        if done.returncode != 0:
            raise SecretError(
                f"{ref.location}: {what}: secret command {argv[0]} exited with {done.returncode}"
            )
        raw = _text(done.stdout, ref, what)
    line = raw.splitlines()[0] if raw else ""
    if not line:
        raise SecretError(f"{ref.location}: {what}: the secret from {ref.describe()} is empty")
    return line


def _text(data: bytes, ref: SecretRef, what: str) -> str:
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{ref.location}: {what}: secret from {ref.describe()} is too large")
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
