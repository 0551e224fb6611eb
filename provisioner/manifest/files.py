"""The files a manifest points at, checked by `validate` without reading a secret.

Secret files, CA certificates and keys, SSH key files, known_hosts files, secret commands and
hooks: each must exist, be a regular file (a program: executable), and open for reading by
this user. Only metadata is read (stat, and an open that is closed at once): a secret's value
never enters this process here, so it cannot appear in a message.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from provisioner.errors import Diagnostic, Location
from provisioner.manifest import model as m
from provisioner.manifest.transport_kinds import kind_of


def _problem(path: Path) -> str | None:
    """Why `path` cannot be read as an input file, or None when it can."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return f"{path} is a folder; give a file"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    try:  # opening reads nothing; it is the one check that honours ACLs and mounts
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return f"{path}: cannot be read by this user ({exc.strerror or exc})"
    os.close(fd)
    return None


def _program(argv0: str, base_dir: Path) -> str | None:
    """Why the program `argv0` cannot be run, or None. A bare name is looked up on PATH; a
    relative path is relative to the manifest, as hooks and secret commands run."""
    if "/" not in argv0:
        return None if shutil.which(argv0) else f"program {argv0!r} not found on PATH"
    path = Path(argv0) if Path(argv0).is_absolute() else base_dir / argv0
    problem = _problem(path)
    if problem is None and not os.access(path, os.X_OK):
        return f"{path} is not executable"
    return problem


def _secret(ref: m.SecretRef | None, what: str) -> Iterator[Diagnostic]:
    if ref is None:
        return
    problem = None
    if ref.kind == "file":
        assert isinstance(ref.value, str)
        path = Path(ref.value)
        problem = _problem(path if path.is_absolute() else ref.base_dir / path)
    elif ref.kind == "command":
        assert isinstance(ref.value, tuple)
        problem = _program(ref.value[0], ref.base_dir)
    if problem:
        yield Diagnostic("error", ref.location, f"{what}: {problem}")


def check_files(manifest: m.Manifest) -> list[Diagnostic]:
    """Every referenced file that is missing or unreadable, as a diagnostic at its place.

    A missing known_hosts file is a warning: `provisioner trust` creates it."""
    found = list(_secret(manifest.escrow_passphrase, "escrow passphrase"))
    found += _secret(manifest.state.dsn, "state dsn")
    for issuer in manifest.issuers.values():
        for path, field in ((issuer.certificate, "certificate"), (issuer.private_key, "key")):
            problem = _problem(path)
            if problem:
                found.append(
                    Diagnostic("error", issuer.location, f"issuer {issuer.name} {field}: {problem}")
                )
        found += _secret(issuer.password, f"issuer {issuer.name} password")
    # One SSH key or known_hosts file serves many targets: reported once, at the first.
    users: dict[tuple[str, Path], list[m.Target]] = {}
    for target in (*manifest.locations.values(), *manifest.workstations.values()):
        secrets, files = kind_of(target).credentials(target)
        for field, ref in secrets:
            found += _secret(ref, f"{target.role} {target.name} {field}")
        for field, given in files:
            users.setdefault((field, given), []).append(target)
    for (field, path), targets in users.items():
        problem = _problem(path)
        if problem is None:
            continue
        first = targets[0]
        what = f"{first.role} {first.name}" + (
            f" (and {len(targets) - 1} other target{'s' if len(targets) > 2 else ''})"
            if len(targets) > 1
            else ""
        )
        if field == "known_hosts" and not path.exists():
            found.append(
                Diagnostic(
                    "warning",
                    first.location,
                    f"{what} known_hosts: {problem} (record the host keys with "
                    "`provisioner trust MANIFEST`)",
                )
            )
        else:
            found.append(Diagnostic("error", first.location, f"{what} {field}: {problem}"))
    for entity in manifest.entities:
        if entity.state == "present":
            found += _secret(entity.password, f"entity {entity.id} password")
    for event, commands in manifest.hooks.items():
        for argv in commands:
            problem = _program(argv[0], manifest.base_dir)
            if problem:
                found.append(
                    Diagnostic("error", Location(str(manifest.path)), f"hooks.{event}: {problem}")
                )
    return found
