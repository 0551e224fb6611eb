"""Notification hooks: argv lists from the manifest, run without a shell after apply, each
given one JSON event on standard input and a minimal environment. Events carry identifiers,
designations, fingerprints, dates and consultations; never a password or key material. A
hook's failure is reported and never fails the apply."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable
from typing import Any

from provisioner import children, clock
from provisioner.apply.executor import ApplyResult
from provisioner.manifest.model import Manifest
from provisioner.plan.actions import CreateGeneration, WriteCopy
from provisioner.plan.model import Plan

HOOK_TIMEOUT = 60.0
EVENTS = ("renewed", "distributed", "failed", "warning")


def events(plan: Plan, result: ApplyResult) -> list[tuple[str, dict[str, Any]]]:
    """The events of one apply, in the order they are fired."""
    now = clock.iso(clock.now())
    out: list[tuple[str, dict[str, Any]]] = []
    keeping: dict[str, list[str]] = {}
    for view in plan.consultations:
        if view.is_open:
            keeping.setdefault(view.entity, []).append(view.reference)
    reasons = {
        (a.entity, a.generation): a.reason for a in plan.actions if isinstance(a, CreateGeneration)
    }
    for g in result.created:
        out.append(
            (
                "renewed",
                {
                    "event": "renewed",
                    "time": now,
                    "entity": g.entity,
                    "generation": g.number,
                    "designation": g.designation,
                    "common_name": g.common_name,
                    "certificate_sha256": g.cert_sha256,
                    "public_key_sha256": g.key_sha256,
                    "not_after": clock.iso(g.not_after),
                    "reason": reasons.get((g.entity, g.number), ""),
                    "consultations": sorted(keeping.get(g.entity, [])),
                },
            )
        )
    written: dict[str, list[dict[str, Any]]] = {}
    for o in result.outcomes:
        if o.ok and isinstance(o.action, WriteCopy):
            written.setdefault(o.action.entity, []).append(
                {
                    "target": o.action.target,
                    "path": o.action.path,
                    "generation": o.action.generation,
                    "reason": o.action.reason,
                }
            )
    for entity, copies in sorted(written.items()):
        out.append(
            (
                "distributed",
                {"event": "distributed", "time": now, "entity": entity, "copies": copies},
            )
        )
    for o in result.failures:
        out.append(
            (
                "failed",
                {
                    "event": "failed",
                    "time": now,
                    "entity": o.action.entity,
                    "action": o.action.kind,
                    "generation": o.action.generation,
                    "target": o.action.target,
                    "path": o.action.path,
                    "error": o.error,
                },
            )
        )
    for w in plan.warnings:
        out.append(
            (
                "warning",
                {
                    "event": "warning",
                    "time": now,
                    "entity": w.entity,
                    "code": w.code,
                    "message": w.message,
                },
            )
        )
    return out


def fire(
    manifest: Manifest,
    fired: list[tuple[str, dict[str, Any]]],
    secrets: Iterable[str] = (),
) -> list[str]:
    """Run the manifest's hooks for each event; returns one line per hook that failed.

    A hook gets a minimal environment (`children.environment`): no variable a secret
    reference names, none holding one of `secrets` (the values this run resolved). It is
    waited for, not its output: one that leaves a process behind is done when it exits."""
    problems: list[str] = []
    env = children.environment(manifest.child_env, secrets)
    for name, payload in fired:
        for argv in manifest.hooks.get(name, ()):
            program = argv[0]
            if os.sep in program and not os.path.isabs(program):
                program = str(manifest.base_dir / program)
            # The event and the hook's error output go through unnamed temporary files: a
            # hook that ignores its input never blocks a pipe, and one that leaves a
            # background process holding its output is not waited for.
            with tempfile.TemporaryFile() as event, tempfile.TemporaryFile() as errors:
                event.write(json.dumps(payload).encode())
                event.seek(0)
                try:
                    process = subprocess.Popen(
                        [program, *argv[1:]],
                        stdin=event,
                        stdout=subprocess.DEVNULL,
                        stderr=errors,
                        cwd=manifest.base_dir,
                        env=env,
                    )
                except OSError as exc:
                    problems.append(f"hook {argv[0]} on {name}: cannot run: {exc.strerror or exc}")
                    continue
                try:
                    returncode = process.wait(HOOK_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    problems.append(
                        f"hook {argv[0]} on {name}: timed out after {HOOK_TIMEOUT:g} s (killed)"
                    )
                    continue
                if returncode != 0:
                    size = errors.seek(0, os.SEEK_END)
                    errors.seek(max(0, size - 4096))
                    text = errors.read().decode("utf-8", "replace").strip()
                    tail = text.splitlines()[-1:] or [""]
                    problems.append(
                        f"hook {argv[0]} on {name}: exited with {returncode}"
                        + (f": {tail[0][:200]}" if tail[0] else "")
                    )
    return problems
