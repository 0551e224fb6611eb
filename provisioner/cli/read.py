"""The commands that change nothing: validate, plan, status, check, rehearse. Each wrapper
parses, calls one function, renders, and picks the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provisioner import clock, exit_codes
from provisioner.cli.app import (
    OUTPUT,
    ConsultationsOpt,
    EntityLimitOpt,
    JsonOpt,
    LimitOpt,
    ManifestArg,
    ParallelOpt,
    QuietOpt,
    StateBackendOpt,
    StateDirOpt,
    VerboseOpt,
    colour,
    warnings,
)
from provisioner.cli.document import diagnostic_json as _diag_json
from provisioner.cli.document import emit, error_document
from provisioner.errors import ManifestError
from provisioner.wording import counted


def validate(
    manifest: ManifestArg,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a manifest and the files it references. Exit 0 when valid, 1 when not."""
    from provisioner.engine.inputs import state_dir_for, targets_in_state
    from provisioner.manifest.files import check_files
    from provisioner.manifest.loader import read_manifest

    try:
        model, found = read_manifest(manifest)

        referenced = check_files(model)  # metadata only: no secret is read
        referenced += targets_in_state(model, state_dir_for(manifest, None))
        if any(d.severity == "error" for d in referenced):
            raise ManifestError(referenced + found)
        found += referenced
        if model.consultations is not None:
            from provisioner.consultations import read_consultations

            read_consultations(
                model.consultations,
                {e.id for e in model.entities},
                model.consultations_format,
                found,
            )
    except ManifestError as exc:
        diagnostics = exc.diagnostics
        if as_json:
            document = error_document("validate", 1, exc)
            emit({"valid": False} | document, ascii_only=True)
        else:
            for d in diagnostics:
                typer.echo(str(d), err=True)
            errors = sum(d.severity == "error" for d in diagnostics)
            typer.echo(f"{manifest}: invalid ({counted(errors, 'error')})", err=True)
        raise typer.Exit(1) from None
    if as_json:
        emit(
            {
                "valid": True,
                "errors": [],
                "warnings": [_diag_json(d) for d in found],
                "entities": len(model.entities),
                "workstations": len(model.workstations),
                "locations": len(model.locations),
            },
            ascii_only=True,
        )
        return
    if not OUTPUT.quiet:
        warnings(found)
    typer.echo(
        f"{manifest}: valid ({counted(len(model.entities), 'entity', 'entities')}, "
        f"{counted(len(model.workstations), 'workstation')}, "
        f"{counted(len(model.locations), 'shared location')}"
        f"{', ' + counted(len(found), 'warning') if found else ''})"
    )


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
    state_backend: StateBackendOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show what apply would do, and why. Changes nothing. With -v, also what is already in
    sync; with -q, only the summary line and errors.

    Exit 0, 1 on error or when no target could be observed, 4 when some could not."""
    from provisioner.engine import load_inputs
    from provisioner.flows import plan as flow
    from provisioner.plan.render import plan_json, render_plan

    inputs = load_inputs(
        manifest, state_dir, limit, consultations=consultations, state_backend=state_backend
    )
    if not as_json and not OUTPUT.quiet:
        warnings(inputs.diagnostics)
    result, in_scope = flow.plan(inputs, parallel=parallel, out=out)
    if as_json:
        emit(plan_json(result))
    elif OUTPUT.quiet:
        from provisioner.plan.render import summary_line

        for error in result.errors:
            typer.echo(f"Error: {error}", err=True)
        for refusal in result.refusals:
            typer.echo(f"Refused: {refusal}", err=True)
        typer.echo(summary_line(result))
    else:
        typer.echo(render_plan(result, colour=colour(), verbose=OUTPUT.verbose))
        if out is not None and not result.refusals:
            typer.echo(f"\nSaved the plan to {out}. Apply exactly it with: provisioner apply {out}")
        elif out is not None:
            typer.echo(f"\nThe plan is refused: nothing was saved to {out}.", err=True)
    raise typer.Exit(exit_codes.plan_code(result, in_scope, detailed_exitcode))


def status(
    manifest: ManifestArg,
    as_json: JsonOpt = False,
    limit: LimitOpt = None,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Keys, generations, validity, and the state of every copy, per entity."""
    from provisioner import receipts
    from provisioner import status as report
    from provisioner.flows import status as flow

    seen = flow.status(
        manifest,
        state_dir,
        limit,
        parallel=parallel,
        consultations=consultations,
        state_backend=state_backend,
    )
    statuses = report.build(seen.manifest, seen.recorded, seen.plan, seen.now, seen.scope)
    if as_json:
        from provisioner.plan.render import plan_json

        document = plan_json(seen.plan)
        emit(
            {
                "now": clock.iso(seen.now),
                "entities": report.to_json(statuses),
                "folders": report.folders_json(seen.plan),
                "stores": receipts.to_json(seen.stores),
                "consultations": document["consultations"],
                "warnings": document["warnings"],
                "errors": document["errors"],  # targets not reached, once each
            }
        )
    elif OUTPUT.quiet:  # the entities not ready, then one line
        for s in statuses:
            if not s.ready:
                typer.echo(f"{s.id} ({s.name})  Not ready: {s.reason}")
        ready = sum(s.ready for s in statuses)
        typer.echo(f"{ready} of {counted(len(statuses), 'entity', 'entities')} ready.")
    else:
        typer.echo(report.render(statuses), nl=False)
        typer.echo(report.render_unreachable(seen.plan), nl=False)
        typer.echo(report.render_folders(seen.plan), nl=False)
        typer.echo(receipts.render(seen.stores), nl=False)
        typer.echo(report.render_consultations(seen.plan), nl=False)


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
    receipt_max_age: Annotated[
        int,
        typer.Option(
            "--receipt-max-age",
            min=1,
            help="Days after which a key store's receipt proves nothing: 'not observed since' "
            "(WARNING; CRITICAL within --warn-days of a bound opening).",
        ),
    ] = 7,
    timeout: Annotated[
        float,
        typer.Option(
            "-t",
            "--timeout",
            min=0,
            help="Seconds after which the probe answers UNKNOWN if it has no verdict yet "
            "(0: no limit). Keep it under the monitoring's own check timeout.",
        ),
    ] = 50,
    limit: LimitOpt = None,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Monitoring probe (Nagios/Icinga): CRITICAL when bids of a consultation not closed are at
    risk (its key missing from a workstation, an agent's key store near the opening, or the
    escrow, expired or expiring before the deadline or the opening), WARNING for what can wait
    (renewal near, drift apply repairs, a key not yet imported in an agent's store).

    Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (no state, unreadable input). Needs no secret.
    The table is in docs/RUNBOOK.md."""
    from provisioner import check as probe
    from provisioner.flows import check as flow

    verdict = flow.check(
        manifest,
        state_dir,
        limit,
        parallel=parallel,
        consultations=consultations,
        warn_days=warn_days,
        critical_days=critical_days,
        receipt_max_age_days=receipt_max_age,
        timeout=timeout,
        state_backend=state_backend,
    )
    if as_json:
        document = probe.to_json(verdict.code, verdict.line, verdict.findings)
        # (a probe that could not conclude prints its JSON ASCII-escaped, as it always has)
        emit(document, ascii_only=verdict.inconclusive)
    else:
        typer.echo(verdict.line)
        for f in [] if OUTPUT.quiet else verdict.findings:
            who = f"{f.entity}: " if f.entity else ""
            typer.echo(f"{probe.NAMES[f.severity]}: {who}[{f.code}] {f.message}")
    raise typer.Exit(verdict.code)


def rehearse(
    manifest: ManifestArg,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rehearse the opening of bids: encrypt a test bid to every current generation and every
    generation bound to an open consultation, then open it with each distributed copy and with
    the escrowed key; every other generation's escrowed key is decrypted and checked.

    Exit 0 only when every copy and every escrowed key opens; 4 when every copy read opened
    but some targets could not be reached; 1 otherwise."""
    from provisioner import receipts
    from provisioner import rehearse as rehearsal
    from provisioner.flows import rehearse as flow

    results, stores = flow.rehearse(
        manifest,
        state_dir,
        limit,
        parallel=parallel,
        consultations=consultations,
        state_backend=state_backend,
    )
    if as_json:
        emit(rehearsal.to_json(results) | {"stores": receipts.to_json(stores)})
    elif OUTPUT.quiet:  # the copies that did not open, then one line
        for r in results:
            if not r.opened:
                typer.echo(f"{r.entity} g{r.generation} {r.target} {r.path}: {r.reason}")
        opened = sum(r.opened for r in results)
        every = counted(len(results), "copy or escrowed key", "copies and escrowed keys")
        typer.echo(f"Rehearsal: {opened} of {every} opened.")
    else:
        typer.echo(receipts.render(stores) + rehearsal.render(results))
    raise typer.Exit(exit_codes.rehearse_code((r.target, r.opened, r.reason) for r in results))


def report(
    manifest: ManifestArg,
    out: Annotated[Path, typer.Option(help="HTML file to write.", metavar="FILE")],
    plan: Annotated[Path | None, typer.Option(help="A saved plan.", metavar="PLAN")] = None,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    parallel: ParallelOpt = 8,
    consultations: ConsultationsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """One self-contained HTML page: each entity's bi-clés on a timeline with its consultations,
    copies by target, warnings (check's rules), last audit events, and with --plan a saved
    plan's changes. Needs no secret; writes FILE only (absent, or a previous report)."""
    from provisioner.report import write_report

    done = write_report(manifest, out, plan_path=plan, state_dir=state_dir, parallel=parallel,
                        consultations=consultations, limit=limit,
                        state_backend=state_backend)  # fmt: skip
    if as_json:
        emit(
            {
                "out": str(out),
                "bytes": done.size,
                "entities": done.entities,
                "check": {"exit_code": done.check_code, "summary": done.check_line},
            }
        )
        return
    entities = counted(done.entities, "entity", "entities")
    typer.echo(f"Wrote the report of {entities} to {out} ({counted(done.size, 'byte')}).")
    if not OUTPUT.quiet:
        typer.echo(done.check_line)


def inventory(
    manifest: ManifestArg,
    as_json: JsonOpt = False,
    limit: LimitOpt = None,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    consultations: ConsultationsOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Workstations, groups and the copies each must hold in its agents' key stores (keep or
    remove, thumbprints, bound consultations), for a distribution engine: `--json` is the
    contract of schemas/inventory.schema.json read by the Ansible collection (ansible/).

    Reads the manifest and the state only: no target is contacted, no secret is read."""
    from provisioner.flows import inventory as inv

    document = inv.run(manifest, state_dir, consultations, limit, state_backend=state_backend)
    if as_json:
        emit(document)
    else:
        typer.echo(inv.render(document), nl=False)


def audit(
    manifest: ManifestArg,
    limit: EntityLimitOpt = None,
    action: Annotated[
        list[str] | None,
        typer.Option("--action", help="Only this action (repeatable).", show_default=False),
    ] = None,
    since: Annotated[str | None, typer.Option(help="From this date (JJ/MM/AAAA, ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this date, included.")] = None,
    last: Annotated[int | None, typer.Option(min=1, help="Only the newest N.")] = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    state_backend: StateBackendOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The state's audit log, oldest first: who made, wrote, bound or removed what, and when.

    Reads no secret and writes nothing."""
    from provisioner.flows import audit as audit_log

    done = audit_log.run(
        manifest, state_dir, state_backend, limit, action, since, until, last, as_json
    )
    if done.out:
        typer.echo(done.out)
    if done.err:
        typer.echo(done.err, err=True)
    raise typer.Exit(done.code)
