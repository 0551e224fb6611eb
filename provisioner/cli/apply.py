"""`provisioner apply`: the wrapper, the rendering of what was done, and the hooks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provisioner import exit_codes
from provisioner.cli.app import (
    OUTPUT,
    ConsultationsOpt,
    JsonOpt,
    LimitOpt,
    LockTimeoutOpt,
    ParallelOpt,
    QuietOpt,
    StateBackendOpt,
    StateDirOpt,
    VerboseOpt,
    ask_yes,
    colour,
    fail,
    warnings,
)
from provisioner.cli.document import emit
from provisioner.wording import counted

if TYPE_CHECKING:
    from provisioner.engine import Inputs
    from provisioner.flows.apply import ApplyRun
    from provisioner.plan.model import Plan


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
    state_backend: StateBackendOpt = None,
    parallel: ParallelOpt = 8,
    as_json: JsonOpt = False,
    consultations: ConsultationsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Make it so: create or renew keys, escrow them, write and remove copies.

    Given a manifest, shows the plan and asks for confirmation unless --auto-approve. Given a
    saved plan, does exactly what it says without asking, or refuses it as stale. Hooks
    declared in the manifest are run afterwards.

    Exit 0 when every target converged; 4 (partial) when some targets could not be reached
    and every other one converged (the next run tries them again); 1 on error, a failed
    action, a guard or conflict, or when no target could be reached."""
    from provisioner.engine import load_inputs
    from provisioner.flows.apply import apply_manifest, apply_saved
    from provisioner.plan import saved as saved_plans
    from provisioner.plan.render import render_plan
    from provisioner.progress import Progress

    quiet = OUTPUT.quiet
    show = not as_json and not quiet
    progress = Progress(enabled=None if show else False)
    if saved_plans.looks_like_plan(manifest):
        if limit or state_dir or consultations or state_backend:
            fail(
                "--limit, --state-dir, --state-backend and --consultations come from the saved "
                "plan; do not give them again"
            )
        try:
            inputs, run = apply_saved(
                manifest, lock_timeout=lock_timeout, parallel=parallel, progress=progress
            )
        finally:
            progress.close()
        if run.lock_note and not as_json:
            typer.echo(f"Note: {run.lock_note}", err=True)
        if show:
            typer.echo(render_plan(run.plan, colour=colour(), verbose=OUTPUT.verbose))
        notify(inputs, run)
        raise typer.Exit(render_result(run, as_json, quiet))

    inputs = load_inputs(
        manifest, state_dir, limit, consultations=consultations, state_backend=state_backend
    )
    cancelled: list[bool] = []

    def confirm(p: Plan) -> bool:
        if as_json and not auto_approve:  # stdout is the document: no plan, no prompt
            fail("apply --json needs --auto-approve, or a plan saved with `plan --out`")
        if show or not auto_approve:
            typer.echo(render_plan(p, colour=colour(), verbose=OUTPUT.verbose))
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            fail(
                "apply needs confirmation: run it in a terminal, add --auto-approve, or apply "
                "a plan saved with `plan --out`"
            )
        if not ask_yes(
            "\nDo you want to perform these actions? Only 'yes' will be accepted to approve"
        ):
            typer.echo("Apply cancelled.", err=True)
            cancelled.append(True)
            return False
        return True

    if show:
        warnings(inputs.diagnostics)
    try:
        run = apply_manifest(
            inputs,
            confirm=confirm,
            lock_timeout=lock_timeout,
            parallel=parallel,
            progress=progress,
            asks=not auto_approve,
        )
    finally:
        progress.close()  # the live display ends before anything else is printed
    if run.lock_note and not as_json:
        typer.echo(f"Note: {run.lock_note}", err=True)
    if (
        run.result is None
        and (not run.plan.actionable or run.plan.refusals or run.plan.conflicts)
        and show
    ):
        typer.echo(render_plan(run.plan, colour=colour(), verbose=OUTPUT.verbose))
    elif run.plan.refusals and quiet:
        for refusal in run.plan.refusals:
            typer.echo(f"Refused: {refusal}", err=True)
    notify(inputs, run)
    if cancelled:  # like Terraform: nothing was applied, so not a success
        raise typer.Exit(1)
    raise typer.Exit(render_result(run, as_json, quiet))


def notify(inputs: Inputs, run: ApplyRun) -> None:
    """Run the manifest's hooks; their failures are reported, never fatal."""
    from provisioner import hooks
    from provisioner.apply.executor import ApplyResult

    if not inputs.manifest.hooks:
        return
    fired = hooks.events(run.plan, run.result or ApplyResult())
    for problem in hooks.fire(inputs.manifest, fired, inputs.secrets()):
        typer.echo(f"Warning: {problem}", err=True)


def render_result(run: ApplyRun, as_json: bool, quiet: bool = False) -> int:
    """Print what apply did (or the JSON of it) and return the exit code."""
    from provisioner.plan.render import action_json, plan_json

    result = run.result
    failures = result.failures if result else []
    code = exit_codes.apply_code(run.plan, len(failures), run.in_scope)
    if as_json:
        emit(
            {
                "exit_code": code,  # the process's, from the same function
                "plan": plan_json(run.plan),
                "applied": result is not None,
                "succeeded": result.succeeded if result else 0,
                "failed": [dict(action_json(o.action), error=o.error) for o in failures],
            }
        )
        return code
    if quiet:
        for error in run.plan.errors:
            typer.echo(f"Error: {error}", err=True)
        if result is None:
            from provisioner.plan.render import summary_line, unobserved

            if run.plan.refusals or run.plan.conflicts:
                typer.echo(summary_line(run.plan))  # never "No changes." for what is held
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
            typer.echo(f"Apply incomplete: {counted(result.succeeded, 'action')} done{missed}.")
        elif not run.plan.conflicts:
            typer.echo(f"Apply complete: {counted(result.succeeded, 'action')} done.")
    if run.plan.conflicts:
        entities = ", ".join(run.plan.conflicted_entities())
        typer.echo(
            f"Left alone: {entities}: files this state did not write stand where their copies "
            "go (see Conflicts above: only what can lose nothing was done); run `provisioner "
            "recover MANIFEST` if the state was lost or restored, else move those files away.",
            err=True,
        )
    return code
