"""`export`: a PKCS#12 or a certificate of one generation handed out by hand."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.engine import load_inputs, open_state
from provisioner.errors import (
    NoStateError,
    ProvisionerError,
    SecretError,
    UsageError,
)
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.paths import resolve_target
from provisioner.state.records import RecordedGeneration

if TYPE_CHECKING:  # imported where used: `plan` loads neither the probe nor the receipts
    pass


def refuse_kept_files(out: Path, state_dir: Path, copies: Iterable[tuple[str, str]]) -> None:
    """Even with --force, an export never replaces the state, the escrow or a copy this
    state wrote: one typo in --out would lose what bids are opened with."""
    real = Path(os.path.realpath(out))
    if real.is_relative_to(os.path.realpath(state_dir)):
        raise ProvisionerError(
            f"{out}: is inside the state folder {state_dir}: an export never replaces the "
            "state or the escrow; choose another --out"
        )
    for target, path in copies:
        if os.path.realpath(path) == str(real):
            raise ProvisionerError(
                f"{out}: is {target}'s copy, written and recorded by this state: an export "
                "never replaces it; choose another --out"
            )


@dataclass(frozen=True)
class Exported:
    generation: RecordedGeneration
    what: str  # "PKCS#12" or "certificate (PEM)"...


def export(
    manifest: Path,
    entity: str,
    out: Path,
    *,
    fmt: str,
    generation: int | None,
    profile: str | None,
    password_env: str | None,
    password_file: Path | None,
    force: bool,
    state_dir: Path | None,
    state_backend: str | None = None,
) -> Exported:
    """Hand-export a PKCS#12 (from the escrow; the password from --password-env or
    --password-file, else the entity's) or the public certificate of one generation."""
    from provisioner.flows.adopt import export as write_export
    from provisioner.flows.adopt import pick_generation
    from provisioner.secrets import from_options, policy_problem

    if fmt not in ("p12", "pem", "der"):
        raise UsageError(f"--format must be p12, pem or der, not {fmt!r}")
    if profile is not None and profile not in ("modern", "legacy"):
        raise UsageError(f"--profile must be modern or legacy, not {profile!r}")
    if out.exists() and not force:
        raise ProvisionerError(f"{out} exists; add --force to overwrite it")
    inputs = load_inputs(
        manifest,
        state_dir,
        [entity],
        need_secrets=fmt == "p12",
        named_by="",
        targets=False,
        state_backend=state_backend,
    )
    target = inputs.manifest.entity(entity)
    assert target is not None
    password = None
    if fmt == "p12":
        password = from_options(password_env, password_file, "password") or inputs.passwords.get(
            entity
        )
        if password is None:
            raise ProvisionerError(
                f"entity {entity} is absent: give --password-env or --password-file"
            )
        problem = policy_problem(password, target.password_policy)
        if problem:
            raise SecretError(f"the export password is refused: {problem}")
    with open_state(inputs, create=False, unlock=fmt == "p12") as session:
        if session.db is None:
            raise NoStateError(session.location, "no generation to export")
        local = [
            (name, path)
            for name, path in session.recorded.copies
            if (t := resolve_target(session.desired(), session.recorded, name)) is not None
            and kind_of(t).on_controller
        ]
        refuse_kept_files(out, inputs.state_dir, local)
        g = pick_generation(session, target, generation)
        write_export(
            session,
            target,
            g,
            out,
            kind=fmt,
            password=password,
            profile=profile or target.key.profile,
        )
    return Exported(g, "PKCS#12" if fmt == "p12" else f"certificate ({fmt.upper()})")
