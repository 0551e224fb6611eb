"""Command line: a thin typer layer that parses, calls, renders and chooses the exit code."""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from provisioner import __version__, clock, exit_codes
from provisioner.errors import Diagnostic, ManifestError, ProvisionerError
from provisioner.manifest.loader import read_manifest

app = typer.Typer(
    name="provisioner",
    help=(
        "Declarative provisioning of procurement encryption key pairs (bi-clés de chiffrement): "
        "generate, renew, escrow and distribute password-protected PKCS#12 files to shared "
        "locations and agent workstations, and keep every key still bound to an open "
        "consultation."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ManifestArg = Annotated[
    Path, typer.Argument(help="Manifest file (YAML).", show_default=False, metavar="MANIFEST")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State folder (default: $PROVISIONER_STATE_DIR, else "
        ".provisioner/ beside the manifest).",
        show_default=False,
    ),
]
LimitOpt = Annotated[
    list[str] | None,
    typer.Option("--limit", help="Only this entity (repeat for several).", show_default=False),
]
ParallelOpt = Annotated[
    int, typer.Option("--parallel", min=1, max=256, help="Targets handled at once.")
]
LockTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--lock-timeout",
        min=0,
        help="Seconds to wait for another apply to finish (0: fail at once).",
    ),
]
ConsultationsOpt = Annotated[
    Path | None,
    typer.Option(
        "--consultations",
        help="Consultations file (YAML or CSV) instead of the one the manifest names.",
        metavar="FILE",
        show_default=False,
    ),
]
PasswordEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--password-env",
        metavar="NAME",
        show_default=False,
        help="Environment variable holding the PKCS#12 password, instead of the entity's password.",
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        metavar="PATH",
        show_default=False,
        help="File whose first line is the PKCS#12 password, instead of the entity's password.",
    ),
]
EntityArg = Annotated[str, typer.Argument(help="Entity id.", metavar="ENTITY", show_default=False)]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provisioner {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Declarative provisioning of bi-clés de chiffrement."""


def _diag_json(d: Diagnostic) -> dict[str, Any]:
    return {
        "severity": d.severity,
        "file": d.location.file,
        "line": d.location.line,
        "column": d.location.column,
        "message": d.message,
    }


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def validate(manifest: ManifestArg, as_json: JsonOpt = False) -> None:
    """Check a manifest and the files it references. Exit 0 when valid, 1 when not."""
    try:
        model, warnings = read_manifest(manifest)
        if model.consultations is not None:
            from provisioner.consultations import read_consultations

            read_consultations(model.consultations, {e.id for e in model.entities})
    except ManifestError as exc:
        diagnostics = exc.diagnostics
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "valid": False,
                        "errors": [_diag_json(d) for d in diagnostics if d.severity == "error"],
                        "warnings": [_diag_json(d) for d in diagnostics if d.severity == "warning"],
                    },
                    indent=2,
                )
            )
        else:
            for d in diagnostics:
                typer.echo(str(d), err=True)
            count = sum(d.severity == "error" for d in diagnostics)
            typer.echo(f"{manifest}: invalid ({count} error{'s' if count != 1 else ''})", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "valid": True,
                    "errors": [],
                    "warnings": [_diag_json(d) for d in warnings],
                    "entities": len(model.entities),
                    "workstations": len(model.workstations),
                    "locations": len(model.locations),
                },
                indent=2,
            )
        )
        return
    for d in warnings:
        typer.echo(str(d), err=True)
    typer.echo(
        f"{manifest}: valid ({len(model.entities)} entities, {len(model.workstations)} "
        f"workstations, {len(model.locations)} shared locations"
        f"{f', {len(warnings)} warnings' if warnings else ''})"
    )


def _warnings(session: Any) -> None:
    for d in session.diagnostics:
        typer.echo(str(d), err=True)


def _colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@app.command()
def plan(
    manifest: ManifestArg,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Save the plan to FILE for `provisioner apply FILE`.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode",
            help="Exit 0 when nothing is to do, 2 when there are changes, 1 on error, 4 when "
            "some targets could not be observed (the others were).",
        ),
    ] = False,
    limit: LimitOpt = None,
    state_dir: StateDirOpt = None,
    parallel: ParallelOpt = 8,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also list what is already in sync.")
    ] = False,
    consultations: ConsultationsOpt = None,
) -> None:
    """Show what apply would do, and why. Changes nothing.

    Exit 0, 1 on error or when no target could be observed, 4 when some could not."""
    from provisioner.engine import load_session, observe_and_plan, observed_digest
    from provisioner.plan.render import plan_json, render_plan

    session = load_session(manifest, state_dir, limit, consultations=consultations)
    try:
        if not as_json:
            _warnings(session)
        session.open_state(create=False)
        observed, result = observe_and_plan(session, parallel, clock.now())
        in_scope = exit_codes.targets_in_scope(session)
        if out is not None and not result.refusals:
            from provisioner.apply.run import save_plan

            save_plan(session, result, observed_digest(observed), out)
    finally:
        session.close()
    if as_json:
        typer.echo(json.dumps(plan_json(result), indent=2, ensure_ascii=False))
    else:
        typer.echo(render_plan(result, colour=_colour(), verbose=verbose))
        if out is not None and not result.refusals:
            typer.echo(f"\nSaved the plan to {out}. Apply exactly it with: provisioner apply {out}")
        elif out is not None:
            typer.echo(f"\nThe plan is refused: nothing was saved to {out}.", err=True)
    raise typer.Exit(exit_codes.plan_code(result, in_scope, detailed_exitcode))


def _render_result(run: Any, in_scope: frozenset[str], as_json: bool, quiet: bool = False) -> int:
    from provisioner.plan.render import action_json, plan_json

    result = run.result
    failures = result.failures if result else []
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "plan": plan_json(run.plan),
                    "applied": result is not None,
                    "succeeded": result.succeeded if result else 0,
                    "failed": [dict(action_json(o.action), error=o.error) for o in failures],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return exit_codes.apply_code(run.plan, len(failures), in_scope)
    if quiet:
        for error in run.plan.errors:
            typer.echo(f"Error: {error}", err=True)
        if result is None:
            from provisioner.plan.render import summary_line, unobserved

            if run.plan.refusals:
                typer.echo(summary_line(run.plan))
            elif run.plan.errors:
                typer.echo(f"No changes on the targets observed; {unobserved(run.plan)}.")
            else:
                typer.echo("No changes.")
    if result is not None:
        for outcome in failures:
            a = outcome.action
            where = f" on {a.target}" if a.target else ""
            if not a.entity:  # a target folder's action: the error names target and path
                typer.echo(f"  ! {a.kind}: {outcome.error}", err=True)
                continue
            typer.echo(
                f"  ! {a.entity}: {a.kind} g{a.generation}{where}: {outcome.error}", err=True
            )
        from provisioner.plan.render import unobserved

        missed = (
            f"; {unobserved(run.plan)}, nothing was checked or done there"
            if run.plan.errors
            else ""
        )
        if failures:
            typer.echo(
                f"Apply finished with errors: {result.succeeded} done, "
                f"{len(failures)} failed{missed}; run apply again once the cause is fixed."
            )
        elif run.plan.errors:
            # A summary never claims what was not observed.
            typer.echo(f"Apply incomplete: {result.succeeded} actions done{missed}.")
        elif not run.plan.conflicts:
            typer.echo(f"Apply complete: {result.succeeded} actions done.")
    if run.plan.conflicts:
        entities = ", ".join(run.plan.conflicted_entities())
        typer.echo(
            f"Left alone: {entities}: files this state did not write stand where their copies "
            "go (see Conflicts above); run `provisioner recover MANIFEST` if the state was lost "
            "or restored, else move those files away.",
            err=True,
        )
    return exit_codes.apply_code(run.plan, len(failures), in_scope)


@app.command()
def apply(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="Manifest file, or a plan saved with `plan --out`.",
            metavar="MANIFEST|PLAN",
            show_default=False,
        ),
    ],
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Do not ask for confirmation (scheduled jobs).")
    ] = False,
    lock_timeout: LockTimeoutOpt = 0.0,
    limit: LimitOpt = None,
    state_dir: StateDirOpt = None,
    parallel: ParallelOpt = 8,
    as_json: JsonOpt = False,
    consultations: ConsultationsOpt = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print only the summary line and errors (scheduled jobs)."
        ),
    ] = False,
) -> None:
    """Make it so: create or renew keys, escrow them, write and remove copies.

    Given a manifest, shows the plan and asks for confirmation unless --auto-approve. Given a
    saved plan, does exactly what it says without asking, or refuses it as stale. Hooks
    declared in the manifest are run afterwards.

    Exit 0 when every target converged; 4 (partial) when some targets could not be reached
    and every other one converged (the next run tries them again); 1 on error, a failed
    action, a guard or conflict, or when no target could be reached."""
    from provisioner.apply.run import apply_manifest, apply_saved
    from provisioner.engine import load_session
    from provisioner.plan import saved as saved_plans
    from provisioner.plan.render import render_plan
    from provisioner.progress import Progress

    show = not as_json and not quiet
    progress = Progress(enabled=None if show else False)
    if saved_plans.looks_like_plan(manifest):
        if limit or state_dir or consultations:
            fail(
                "--limit, --state-dir and --consultations come from the saved plan; do not "
                "give them again"
            )
        session, run = apply_saved(
            manifest, lock_timeout=lock_timeout, parallel=parallel, progress=progress
        )
        try:
            if show:
                typer.echo(render_plan(run.plan, colour=_colour()))
            _notify(session, run)
            in_scope = exit_codes.targets_in_scope(session)
        finally:
            session.close()
        raise typer.Exit(_render_result(run, in_scope, as_json, quiet))

    session = load_session(manifest, state_dir, limit, consultations=consultations)

    def confirm(p: Any) -> bool:
        if show or not auto_approve:
            typer.echo(render_plan(p, colour=_colour()))
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            fail(
                "apply needs confirmation: run it in a terminal, add --auto-approve, or apply "
                "a plan saved with `plan --out`"
            )
        answer = typer.prompt(
            "\nDo you want to perform these actions? Only 'yes' will be accepted to approve",
            default="",
            show_default=False,
        )
        if answer.strip() != "yes":
            typer.echo("Apply cancelled.")
            return False
        return True

    try:
        if show:
            _warnings(session)
        run = apply_manifest(
            session,
            confirm=confirm,
            lock_timeout=lock_timeout,
            parallel=parallel,
            progress=progress,
        )
        if run.lock_note and not as_json:
            typer.echo(f"Note: {run.lock_note}", err=True)
        if (
            run.result is None
            and (not run.plan.actionable or run.plan.refusals or run.plan.conflicts)
            and show
        ):
            typer.echo(render_plan(run.plan, colour=_colour()))
        elif run.plan.refusals and quiet:
            for refusal in run.plan.refusals:
                typer.echo(f"Refused: {refusal}", err=True)
        _notify(session, run)
        in_scope = exit_codes.targets_in_scope(session)
    finally:
        session.close()
    raise typer.Exit(_render_result(run, in_scope, as_json, quiet))


def _notify(session: Any, run: Any) -> None:
    """Run the manifest's hooks; their failures are reported, never fatal."""
    from provisioner import hooks
    from provisioner.apply.executor import ApplyResult

    if not session.manifest.hooks:
        return
    fired = hooks.events(run.plan, run.result or ApplyResult())
    secrets = (session.escrow_passphrase, *session.passwords.values())
    for problem in hooks.fire(session.manifest, fired, secrets):
        typer.echo(f"Warning: {problem}", err=True)


@app.command()
def status(
    manifest: ManifestArg,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
) -> None:
    """Keys, generations, validity, and the state of every copy, per entity."""
    from provisioner import status as status_mod
    from provisioner.engine import load_session, observe_and_plan

    session = load_session(manifest, state_dir, need_secrets=False, consultations=consultations)
    try:
        session.open_state(create=False, unlock=False)
        now = clock.now()
        _, result = observe_and_plan(session, parallel, now)
        statuses = status_mod.build(session.manifest, session.recorded, result, now)
    finally:
        session.close()
    if as_json:
        from provisioner.plan.render import plan_json

        document = plan_json(result)
        typer.echo(
            json.dumps(
                {
                    "now": clock.iso(now),
                    "entities": status_mod.to_json(statuses),
                    "folders": status_mod.folders_json(result),
                    "consultations": document["consultations"],
                    "warnings": document["warnings"],
                    "errors": document["errors"],  # targets not reached, once each
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        typer.echo(status_mod.render(statuses), nl=False)
        typer.echo(status_mod.render_unreachable(result), nl=False)
        typer.echo(status_mod.render_folders(result), nl=False)
        typer.echo(status_mod.render_consultations(result), nl=False)


@app.command()
def check(
    manifest: ManifestArg,
    as_json: JsonOpt = False,
    warn_days: Annotated[
        int,
        typer.Option(
            "--warn-days", min=0, help="WARNING when a current key expires within this many days."
        ),
    ] = 30,
    critical_days: Annotated[
        int,
        typer.Option(
            "--critical-days",
            min=0,
            help="CRITICAL when a current key expires within this many days.",
        ),
    ] = 7,
    state_dir: StateDirOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
) -> None:
    """Monitoring probe (Nagios/Icinga): CRITICAL when bids of a consultation not closed are at
    risk (its key missing from a workstation or the escrow, expired or expiring before the
    deadline or the opening), WARNING for what can wait (renewal near, drift apply repairs).

    Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (no state, unreadable input). Needs no secret.
    The table is in docs/RUNBOOK.md."""
    from provisioner import check as probe
    from provisioner.engine import load_session, observe_and_plan

    try:
        session = load_session(manifest, state_dir, need_secrets=False, consultations=consultations)
        try:
            session.open_state(create=False, unlock=False)
            if session.db is None:
                raise ProvisionerError(
                    f"{session.state_dir}: no state there, so nothing can be judged: apply first, "
                    "or recover a lost state (docs/RECOVERY.md)"
                )
            now = clock.now()
            _, result = observe_and_plan(session, parallel, now)
            escrow_dir = session.escrow_dir
            escrowed = {p.stem for p in escrow_dir.glob("*.key")} if escrow_dir.is_dir() else set()
            findings = probe.evaluate(
                session.manifest,
                session.recorded,
                result,
                now,
                escrowed,
                probe.Thresholds(warn_days, critical_days),
            )
            code, line = probe.summary(findings, session.manifest, session.recorded, now)
        finally:
            session.close()
    except Exception as exc:  # a probe that cannot conclude says UNKNOWN, whatever the cause
        if not isinstance(exc, ProvisionerError) and os.environ.get("PROVISIONER_DEBUG"):
            raise
        from provisioner.errors import UnitError

        if isinstance(exc, UnitError):
            # Not a probe that cannot judge: the escrow or the state every key rests on is
            # broken or lost, which puts every bound key at risk.
            line = f"PROVISIONER CRITICAL - {str(exc).splitlines()[0]}"
            if as_json:
                typer.echo(json.dumps(probe.to_json(probe.CRITICAL, line, []), indent=2))
            else:
                typer.echo(line)
            raise typer.Exit(probe.CRITICAL) from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, ProvisionerError):
            first = f"internal error: {type(exc).__name__}: {first}"
        line = f"PROVISIONER UNKNOWN - {first}"
        if as_json:
            typer.echo(json.dumps(probe.to_json(probe.UNKNOWN, line, []), indent=2))
        else:
            typer.echo(line)
        raise typer.Exit(probe.UNKNOWN) from None
    if as_json:
        typer.echo(json.dumps(probe.to_json(code, line, findings), indent=2, ensure_ascii=False))
    else:
        typer.echo(line)
        for f in findings:
            who = f"{f.entity}: " if f.entity else ""
            typer.echo(f"{probe.NAMES[f.severity]}: {who}[{f.code}] {f.message}")
    raise typer.Exit(code)


@app.command()
def rehearse(
    manifest: ManifestArg,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
) -> None:
    """Rehearse the opening of bids: encrypt a test bid to every current generation and every
    generation bound to an open consultation, then open it with each distributed copy and with
    the escrowed key; every other generation's escrowed key is decrypted and checked.

    Exit 0 only when every copy and every escrowed key opens; 4 when every copy read opened
    but some targets could not be reached; 1 otherwise."""
    from provisioner import rehearse as rehearsal
    from provisioner.engine import load_session, observe_and_plan

    session = load_session(manifest, state_dir, limit, consultations=consultations)
    try:
        session.open_state(create=False)
        if session.db is None:
            fail(f"no state in {session.state_dir}: nothing has been applied yet")
        now = clock.now()
        _, result = observe_and_plan(session, parallel, now)
        results = rehearsal.rehearse(
            session.manifest,
            session.recorded,
            result,
            session.passwords,
            session.pool,
            now,
            session.limit,
            session.escrow,
        )
    finally:
        session.close()
    if as_json:
        typer.echo(json.dumps(rehearsal.to_json(results), indent=2, ensure_ascii=False))
    else:
        typer.echo(rehearsal.render(results))
    raise typer.Exit(exit_codes.rehearse_code((r.target, r.opened, r.reason) for r in results))


@app.command()
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
    lock_timeout: LockTimeoutOpt = 0.0,
) -> None:
    """Rotate the escrow passphrase: unlock with the manifest's current passphrase, rewrap the
    escrow's data key under the new one. Then point the manifest's escrow.passphrase at the
    new secret. The escrowed keys themselves are not rewritten."""
    from provisioner.engine import load_session
    from provisioner.manifest.model import PasswordPolicy
    from provisioner.secrets import policy_problem
    from provisioner.state import lock

    new = _secret_option(new_passphrase_env, new_passphrase_file, "new-passphrase")
    if new is None:
        fail("give --new-passphrase-env or --new-passphrase-file")
    problem = policy_problem(new, PasswordPolicy(min_length=16, min_classes=2))
    if problem:
        fail(
            f"the new escrow passphrase is refused: {problem} (escrow passphrases need 16 "
            "characters)"
        )
    session = load_session(manifest, state_dir, need_secrets=False)
    from provisioner.secrets import resolve

    current = resolve(session.manifest.escrow_passphrase, "escrow passphrase")
    if new == current:
        fail("the new passphrase is the current one")
    if not (session.state_dir / "escrow").is_dir():
        fail(f"no escrow in {session.state_dir}: nothing to rekey")
    with lock.hold(session.state_dir, "rekey", lock_timeout):
        session.escrow_passphrase = current
        try:
            session.open_state(create=False)
            if session.escrow is None or session.db is None:
                fail(f"no escrow in {session.escrow_dir}")
            session.escrow.rekey(new)
            session.db.note("escrow-rekeyed", None, keys=len(session.escrow.fingerprints()))
        finally:
            session.close()
    typer.echo(
        f"The escrow in {session.escrow_dir} now opens with the new passphrase. Update "
        "escrow.passphrase in the manifest (or the secret it names) before the next run."
    )


@app.command()
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
) -> None:
    """Record the host keys of SSH targets in the known_hosts files the manifest names.

    Unknown keys are shown with their fingerprint and recorded after confirmation; a key that
    differs from the recorded one is never replaced here (remove the old line by hand once the
    change is explained)."""
    from provisioner.transports import ssh

    model, _ = read_manifest(manifest)
    everything = {**model.workstations, **model.locations}
    chosen = (
        [everything[name] for name in targets]
        if targets
        else [t for t in everything.values() if t.transport == "ssh"]
    )
    unknown = [name for name in targets or [] if name not in everything]
    if unknown:
        fail(f"unknown target(s): {', '.join(unknown)}")
    problems = 0
    seen: set[tuple[str, int, str]] = set()
    for target in chosen:
        if target.transport != "ssh":
            fail(f"{target.name} is not an SSH target")
        assert target.host is not None and target.known_hosts is not None
        ident = (target.host, target.port, str(target.known_hosts))
        if ident in seen:
            continue
        seen.add(ident)
        where = ssh.known_hosts_name(target.host, target.port)
        try:
            key = ssh.scan_host_key(target.host, target.port, target.connect_timeout)
        except ProvisionerError as exc:
            typer.echo(f"{target.name}: {exc}", err=True)
            problems += 1
            continue
        offered = ssh.fingerprint(key)
        recorded = ssh.known_key(target.known_hosts, target.host, target.port)
        if any(
            k.get_name() == key.get_name() and k.get_base64() == key.get_base64() for k in recorded
        ):
            typer.echo(f"{target.name}: {where} already trusted ({offered})")
            continue
        if recorded:
            typer.echo(
                f"{target.name}: {where} offers {offered} but {target.known_hosts} "
                f"records {', '.join(ssh.fingerprint(k) for k in recorded)}: NOT "
                "replaced. Verify the change, remove the old line, run trust again.",
                err=True,
            )
            problems += 1
            continue
        if fingerprint is not None:
            if not ssh.same_fingerprint(key, fingerprint):
                typer.echo(
                    f"{target.name}: {where} offers {offered}, not {fingerprint}: refused"
                    + (
                        ""
                        if ssh.looks_like_fingerprint(fingerprint)
                        else " (give the SHA-256 form `ssh-keygen -lf` prints, SHA256:<43 "
                        "base64 characters>)"
                    ),
                    err=True,
                )
                problems += 1
                continue
        elif not yes:
            if not sys.stdin.isatty():
                typer.echo(
                    f"{target.name}: {where} offers {offered}; give --fingerprint or "
                    "--yes to record it",
                    err=True,
                )
                problems += 1
                continue
            if not typer.confirm(f"{target.name}: {where} offers {offered}. Trust it?"):
                problems += 1
                continue
        ssh.record_host_key(target.known_hosts, target.host, target.port, key)
        typer.echo(f"{target.name}: recorded {where} {offered} in {target.known_hosts}")
    raise typer.Exit(1 if problems else 0)


def _secret_option(env: str | None, file: Path | None, what: str) -> str | None:
    from provisioner.errors import Location
    from provisioner.manifest.model import SecretRef
    from provisioner.secrets import resolve

    if env and file:
        fail(f"give either --{what}-env or --{what}-file, not both")
    if env:
        return resolve(SecretRef("env", env, Path.cwd(), Location(f"--{what}-env")), what)
    if file:
        return resolve(SecretRef("file", str(file), Path.cwd(), Location(f"--{what}-file")), what)
    return None


@app.command()
def recover(
    manifest: ManifestArg,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")
    ] = False,
    limit: LimitOpt = None,
    state_dir: StateDirOpt = None,
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
) -> None:
    """Rebuild a lost, empty or older state, and a lost escrow, from the copies on the shared
    locations and workstations: each copy that opens with its entity's password is recorded
    (newer generations are taken back, never re-created) and its key returns to the escrow.
    Consultations (from the manifest's file or --consultations) are bound again. Shows what
    it will record and asks first; changes no file on any target, and writes nothing when
    declined."""
    from provisioner import recover as recovery
    from provisioner.atomic import make_private_dirs
    from provisioner.engine import load_session
    from provisioner.state import lock
    from provisioner.state.escrow import Escrow

    session = load_session(manifest, state_dir, limit, consultations=consultations)
    make_private_dirs(session.state_dir)
    recorded = False
    try:
        with lock.hold(session.state_dir, "recover", lock_timeout):
            session.open_state(create=True, recovering=True)
            if session.escrow is None:
                # Escrow.create refuses a folder of sealed keys that no keyring opens.
                had_escrow = session.escrow_dir.exists()
                session.escrow = Escrow.create(
                    session.escrow_dir, session.escrow_passphrase, session.recorded.lineage
                )
                session.created.append(
                    session.escrow_dir if not had_escrow else session.escrow_dir / "keyring.json"
                )
            now = clock.now()
            found = recovery.scan(session, now, moved=moved)
            typer.echo(recovery.render(found))
            if not found.changes:
                raise typer.Exit(0)
            if not auto_approve:
                if not sys.stdin.isatty():
                    fail("recover needs confirmation: run it in a terminal or add --auto-approve")
                answer = typer.prompt(
                    "\nRecord this? Only 'yes' will be accepted to approve",
                    default="",
                    show_default=False,
                )
                if answer.strip() != "yes":
                    typer.echo("Recover cancelled.")
                    raise typer.Exit(1)
            recovery.record(session, found, now)
            recorded = True
            bound = recovery.bind(session, parallel, now)
            typer.echo(
                "Recovered"
                + (f"; {bound} consultation binding(s) recorded again" if bound else "")
                + ". Run `provisioner plan` to see what is left to repair."
            )
    finally:
        if not recorded:
            session.discard_created()  # declined, refused or nothing found: nothing written
        session.close()


@app.command()
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
            help="Its désignation on the platform (default: the manifest's for a current "
            "generation, the file's friendly name for --retained).",
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
    lock_timeout: LockTimeoutOpt = 0.0,
) -> None:
    """Bring an existing bi-clé (a PKCS#12 exported from Windows or the platform) under
    management: checks its password and that key and certificate match, escrows the key."""
    from provisioner.adopt import adopt as do_adopt
    from provisioner.atomic import make_private_dirs
    from provisioner.engine import load_session
    from provisioner.state import lock

    session = load_session(manifest, state_dir, [entity])
    target = session.manifest.entity(entity)
    assert target is not None
    password = _secret_option(password_env, password_file, "password") or session.passwords.get(
        entity
    )
    if password is None:
        fail(f"no password for {pkcs12_file}: give --password-env or --password-file")
    try:
        data = pkcs12_file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {pkcs12_file}: {exc.strerror}")
    from provisioner.adopt import check_adoptable
    from provisioner.crypto import pkcs12 as p12

    now = clock.now()
    try:  # refuse a bad or unusable file before anything is written
        bundle = p12.decode(data, password)
        check_adoptable(target, bundle.certificate, now, retained=retained)
    except ProvisionerError as exc:
        fail(f"{pkcs12_file}: cannot adopt: {exc}")
    make_private_dirs(session.state_dir)
    with lock.hold(session.state_dir, "adopt", lock_timeout):
        try:
            session.open_state(create=True)
            adopted = do_adopt(
                session,
                target,
                data,
                password,
                designation=designation,
                retained=retained,
                now=now,
            )
        finally:
            session.close()
    if adopted.notice:
        typer.echo(adopted.notice)
    g = adopted.generation
    typer.echo(
        f"Adopted {pkcs12_file} as generation {g.number} ({g.status}) of {entity}: "
        f'"{g.designation}", valid until {g.not_after:%Y-%m-%d}, '
        f"certificate SHA-256 {g.cert_sha256}.\nRun `provisioner plan` to see its "
        "distribution."
    )


@app.command()
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
            help="PKCS#12 profile: modern or legacy (default: the entity's).",
            show_default=False,
        ),
    ] = None,
    password_env: PasswordEnvOpt = None,
    password_file: PasswordFileOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite PATH.")] = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Hand-export an entity's PKCS#12 (any profile, new password allowed) or its public
    certificate, for a one-off workstation or the platform upload."""
    from provisioner.adopt import export as do_export
    from provisioner.adopt import pick_generation
    from provisioner.engine import load_session
    from provisioner.secrets import policy_problem

    if fmt not in ("p12", "pem", "der"):
        fail(f"--format must be p12, pem or der, not {fmt!r}")
    if profile is not None and profile not in ("modern", "legacy"):
        fail(f"--profile must be modern or legacy, not {profile!r}")
    if out.exists() and not force:
        fail(f"{out} exists; add --force to overwrite it")
    session = load_session(manifest, state_dir, [entity], need_secrets=fmt == "p12")
    target = session.manifest.entity(entity)
    assert target is not None
    password = None
    if fmt == "p12":
        password = _secret_option(password_env, password_file, "password") or session.passwords.get(
            entity
        )
        if password is None:
            fail(f"entity {entity} is absent: give --password-env or --password-file")
        problem = policy_problem(password, target.password_policy)
        if problem:
            fail(f"the export password is refused: {problem}")
    try:
        session.open_state(create=False, unlock=fmt == "p12")
        if session.db is None:
            fail(f"no state in {session.state_dir}: run apply first")
        g = pick_generation(session, target, generation)
        do_export(
            session,
            target,
            g,
            out,
            kind=fmt,
            password=password,
            profile=profile or target.key.profile,
        )
    finally:
        session.close()
    what = "PKCS#12" if fmt == "p12" else f"certificate ({fmt.upper()})"
    typer.echo(f'Wrote the {what} of {entity} generation {g.number} "{g.designation}" to {out}.')


def main() -> None:
    """Console entry point: runs the app and turns known errors into messages, not tracebacks."""
    os.umask(0o077)  # whatever this process creates is private
    signal.signal(signal.SIGINT, _interrupt)
    # Region-scale runs allocate hundreds of thousands of long-lived objects and few cycles:
    # collect the young generation less often.
    gc.set_threshold(50_000, 50, 100)
    from provisioner.transports.logs import keep_off_terminal

    keep_off_terminal()  # a library's own logging never reaches the operator's terminal
    try:
        # Standalone mode handles usage errors (exit 2), --help and typer.Exit itself.
        app(prog_name="provisioner")
    except SystemExit as exc:
        _leave(exc.code)
    except ProvisionerError as exc:
        typer.echo(f"Error: {exc}", err=True)
        _leave(exc.exit_code)
    except Interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the message
        typer.echo(
            "\nInterrupted (Ctrl-C). What was recorded before is kept, an unfinished step was "
            "rolled back, and no file is half-written (writes are atomic). Run "
            "`provisioner plan` to see what remains, or the command again.",
            err=True,
        )
        _leave(130)
    except Exception as exc:  # a genuine bug: say so in one line unless debugging
        if os.environ.get("PROVISIONER_DEBUG"):
            raise
        typer.echo(
            f"Internal error: {type(exc).__name__}: {exc} (set PROVISIONER_DEBUG=1 for details)",
            err=True,
        )
        _leave(1)
    _leave(0)


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt, which click would turn into a bare "Aborted!"; a
    BaseException, so that no `except Exception` on the way swallows it."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def _leave(code: object) -> NoReturn:
    """Exit with `code` without tearing the heap down object by object.

    At region scale the interpreter's own teardown frees about a million objects (0.1 s at
    1,000 entities) that the kernel reclaims at once anyway. Everything that matters has
    happened by then: the state database and lock are closed by the commands, exit handlers
    (process pools, threads) run here, and the output streams are flushed."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message")
        sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status)
