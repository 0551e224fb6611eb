"""The commands that write: rekey, trust, recover, adopt, export (apply is in apply.py).
Each wrapper parses, calls one function, renders, and picks the exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provisioner.cli.app import (
    OUTPUT,
    ConsultationsOpt,
    EntityArg,
    EntityLimitOpt,
    JsonOpt,
    LockTimeoutOpt,
    ManifestArg,
    ParallelOpt,
    PasswordEnvOpt,
    PasswordFileOpt,
    QuietOpt,
    StateBackendOpt,
    StateDirOpt,
    VerboseOpt,
    ask_yes,
    fail,
)
from provisioner.cli.document import emit

if TYPE_CHECKING:
    from provisioner.state.records import RecordedGeneration


def _generation(g: RecordedGeneration) -> dict[str, Any]:
    return {
        "number": g.number,
        "status": g.status,
        "designation": g.designation,
        "not_after": g.not_after.isoformat(),
        "cert_sha256": g.cert_sha256,
    }


def rekey(
    manifest: ManifestArg,
    new_passphrase_env: Annotated[
        str | None,
        typer.Option(
            "--new-passphrase-env",
            metavar="NAME",
            show_default=False,
            help="Environment variable holding the new escrow passphrase.",
        ),
    ] = None,
    new_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--new-passphrase-file",
            metavar="PATH",
            show_default=False,
            help="File whose first line is the new escrow passphrase.",
        ),
    ] = None,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rotate the escrow passphrase: unlock with the manifest's current passphrase, rewrap the
    escrow's data key under the new one. Then point the manifest's escrow.passphrase at the
    new secret. The escrowed keys themselves are not rewritten."""
    from provisioner.flows import rekey as flow
    from provisioner.secrets import from_options

    new = from_options(new_passphrase_env, new_passphrase_file, "new-passphrase")
    if new is None:
        fail("give --new-passphrase-env or --new-passphrase-file")
    escrow_dir = flow.rekey(
        manifest, state_dir, new, lock_timeout=lock_timeout, state_backend=state_backend
    )
    if as_json:
        emit({"escrow_dir": escrow_dir, "rekeyed": True})
        return
    typer.echo(
        f"The escrow in {escrow_dir} now opens with the new passphrase. Update "
        "escrow.passphrase in the manifest (or the secret it names) before the next run."
    )


def trust(
    manifest: ManifestArg,
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="SSH targets to trust (default: every SSH target).",
            metavar="[TARGET]...",
            show_default=False,
        ),
    ] = None,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="Record only if the host key has this SHA-256 "
            "fingerprint (SHA256:...), as the machine's administrator gave it.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Record unknown keys without asking (only on a network you trust)."
        ),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Record the host keys of SSH targets in the known_hosts files the manifest names.

    Unknown keys are shown with their fingerprint and recorded after confirmation; a key that
    differs from the recorded one is never replaced here (remove the old line by hand once the
    change is explained)."""
    from provisioner.manifest.loader import read_manifest
    from provisioner.transports.trust import chosen_targets
    from provisioner.transports.trust import trust as record_keys

    model, _ = read_manifest(manifest)
    said: list[dict[str, Any]] = []

    def say(line: str, error: bool) -> None:
        said.append({"message": line, "error": error})
        if not as_json and (error or not OUTPUT.quiet):
            typer.echo(line, err=error)

    problems = record_keys(
        chosen_targets(model, targets),
        fingerprint=fingerprint,
        yes=yes,
        say=say,
        # under --json, stdout is the document: an unknown key needs --yes or --fingerprint
        confirm=typer.confirm if sys.stdin.isatty() and not as_json else None,
    )
    if as_json:
        emit({"exit_code": 1 if problems else 0, "problems": problems, "messages": said})
    raise typer.Exit(1 if problems else 0)


def recover(
    manifest: ManifestArg,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")
    ] = False,
    limit: EntityLimitOpt = None,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    consultations: ConsultationsOpt = None,
    parallel: ParallelOpt = 8,
    moved: Annotated[
        bool,
        typer.Option(
            "--moved",
            help="The tree (manifest and state) was moved, not copied: make this state folder "
            "its home, so that removals are no longer held back.",
        ),
    ] = False,
    previous_password_env: Annotated[
        str | None,
        typer.Option(
            "--previous-password-env",
            metavar="NAME",
            help="An entity's password before its last change, from this environment "
            "variable: copies that open only with it are taken back too, and the next apply "
            "re-encodes them under the current password (after a lost or restored state "
            "followed by a password change).",
        ),
    ] = None,
    previous_password_file: Annotated[
        Path | None,
        typer.Option(
            "--previous-password-file",
            metavar="PATH",
            help="As --previous-password-env, from the first line of this file.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rebuild a lost, empty or older state, and a lost escrow, from the copies on the shared
    locations and workstations: each copy that opens with its entity's password is recorded
    (newer generations are taken back, never re-created) and its key returns to the escrow.
    Consultations (from the manifest's file or --consultations) are bound again. Shows what
    it will record and asks first; changes no file on any target, and writes nothing when
    declined."""
    from provisioner.flows import recover as command
    from provisioner.secrets import from_options

    shown: list[str] = []
    asked: list[bool] = []

    def show(text: str) -> None:
        shown.append(text)
        if not as_json and not OUTPUT.quiet:
            typer.echo(text)

    def confirm() -> bool:
        asked.append(True)
        if auto_approve:
            return True
        if not sys.stdin.isatty() or as_json:
            fail(
                "recover needs confirmation: run it in a terminal or add --auto-approve"
                + (" (--json prints no prompt)" if as_json else "")
            )
        if OUTPUT.quiet:  # the question needs what it is about
            typer.echo(shown[-1])
        if not ask_yes("\nRecord this? Only 'yes' will be accepted to approve"):
            typer.echo("Recover cancelled.", err=True)
            return False
        return True

    code = command.run(
        manifest,
        state_dir,
        limit,
        consultations=consultations,
        moved=moved,
        previous_password=from_options(
            previous_password_env, previous_password_file, "previous-password"
        ),
        lock_timeout=lock_timeout,
        parallel=parallel,
        show=show,
        confirm=confirm,
        state_backend=state_backend,
    )
    if as_json:
        emit(
            {
                "exit_code": code,
                "recorded": code == 0 and bool(asked),
                "cancelled": code != 0,
                "report": shown,
            }
        )
    elif OUTPUT.quiet and shown:
        typer.echo(shown[-1].strip().splitlines()[-1])
    raise typer.Exit(code)


def adopt(
    manifest: ManifestArg,
    entity: EntityArg,
    pkcs12_file: Annotated[
        Path,
        typer.Argument(help="PKCS#12 (.p12/.pfx) to adopt.", metavar="FILE", show_default=False),
    ],
    password_env: PasswordEnvOpt = None,
    password_file: PasswordFileOpt = None,
    designation: Annotated[
        str | None,
        typer.Option(
            "--designation",
            help="Its désignation on the platform (default: the name the platform knows it "
            "by: the file's friendly name, else its certificate's CN; renewals take the "
            "manifest's).",
            show_default=False,
        ),
    ] = None,
    retained: Annotated[
        bool,
        typer.Option(
            "--retained",
            help="Adopt an older key kept for its consultations, beside the current generation.",
        ),
    ] = False,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Bring an existing bi-clé (a PKCS#12 exported from Windows or the platform) under
    management: checks its password and that key and certificate match, escrows the key."""
    from provisioner.flows.adopt import run

    adopted = run(
        manifest,
        entity,
        pkcs12_file,
        password_env=password_env,
        password_file=password_file,
        designation=designation,
        retained=retained,
        state_dir=state_dir,
        state_backend=state_backend,
        lock_timeout=lock_timeout,
    )
    g = adopted.generation
    if as_json:
        emit(
            {
                "entity": entity,
                "file": str(pkcs12_file),
                "generation": _generation(g),
                "designation_from": adopted.source,
                "notice": adopted.notice,
            }
        )
        return
    if not OUTPUT.quiet:
        typer.echo(adopted.notice)
    typer.echo(
        f"Adopted {pkcs12_file} as generation {g.number} ({g.status}) of {entity}: "
        f'"{g.designation}", valid until {g.not_after:%Y-%m-%d}, '
        f"certificate SHA-256 {g.cert_sha256}.\nRun `provisioner plan` to see its "
        "distribution."
    )


def export(
    manifest: ManifestArg,
    entity: EntityArg,
    out: Annotated[
        Path, typer.Option("--out", help="File to write.", metavar="PATH", show_default=False)
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="[p12|pem|der]",
            help="p12: PKCS#12 with the private key (from the escrow); pem or der "
            "(.cer): the public certificate to upload to the platform under its désignation.",
        ),
    ] = "p12",
    generation: Annotated[
        int | None,
        typer.Option(
            "--generation", help="Generation number (default: the current one).", show_default=False
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            metavar="[modern|legacy]",
            help="PKCS#12 profile: modern (AES-256, PBKDF2) or legacy (3DES, for Windows "
            "Server 2016 and older); default: the entity's.",
            show_default=False,
        ),
    ] = None,
    password_env: PasswordEnvOpt = None,
    password_file: PasswordFileOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Overwrite PATH (never the state folder, the escrow or a copy this state wrote).",
        ),
    ] = False,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Hand-export an entity's PKCS#12 (any profile, new password allowed) or its public
    certificate, for a one-off workstation or the platform upload."""
    from provisioner.flows import export as flow

    done = flow.export(
        manifest,
        entity,
        out,
        fmt=fmt,
        generation=generation,
        profile=profile,
        password_env=password_env,
        password_file=password_file,
        force=force,
        state_dir=state_dir,
        state_backend=state_backend,
    )
    g = done.generation
    if as_json:
        emit({"entity": entity, "out": str(out), "what": done.what, "generation": _generation(g)})
        return
    typer.echo(
        f'Wrote the {done.what} of {entity} generation {g.number} "{g.designation}" to {out}.'
    )


def init(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder to write the starter in (made when missing; default: here).",
            metavar="[FOLDER]",
            show_default=False,
        ),
    ] = Path("."),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a starter: a commented manifest (one entity, a shared location, a workstation),
    an empty consultations file showing its format, and secret files holding random DEMO
    values (mode 0600). Writes nothing over an existing file."""
    from provisioner.flows import init as starter

    started = starter.init(folder)
    if as_json:
        emit(
            {
                "folder": str(folder),
                "files": [{"path": str(folder / f.path), "what": f.what} for f in started.files],
                "examples": str(started.examples),
            }
        )
        return
    typer.echo(starter.render(started, quiet=OUTPUT.quiet))


def state_migrate(
    manifest: ManifestArg,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="BACKEND",
            help="postgresql: copy the SQLite state folder into the manifest's PostgreSQL "
            "schema; sqlite: copy the PostgreSQL state into the SQLite state folder.",
            show_default=False,
        ),
    ],
    state_dir: StateDirOpt = None,
    lock_timeout: LockTimeoutOpt = 0.0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Copy the state and its escrow to the other backend, then read the copy back and verify
    it (serial, lineage, every row, every escrowed key byte for byte). The source is only read
    and both are locked meanwhile; a target that already holds a state is refused, and a copy
    that fails is removed. The PostgreSQL side is the manifest's `state` (or
    $PROVISIONER_STATE_DSN and $PROVISIONER_STATE_SCHEMA), the SQLite side --state-dir."""
    from provisioner.flows import migrate

    done = migrate.run(manifest, to, state_dir, lock_timeout=lock_timeout)
    if as_json:
        emit(done.as_json())
        return
    typer.echo(
        f"Migrated the state from {done.source} to {done.target}: serial {done.serial}, "
        f"lineage {done.lineage}, {done.generations} generations, {done.copies} copies, "
        f"{done.consultations} consultations, {done.audit_records} audit records, "
        f"{done.escrowed_keys} escrowed keys; read back and verified."
    )
    if not OUTPUT.quiet:
        declared = (
            "the manifest's `state: {backend: postgresql, ...}`"
            if to == "postgresql"
            else "no `state` in the manifest, or `state: {backend: sqlite}`"
        )
        typer.echo(
            "The source is left as it is. Point every administrator and the scheduled job at "
            f"the new state ({declared}, or --state-backend {to}), then move the old state "
            "away and keep it as a backup (docs/TEAM.md)."
        )
