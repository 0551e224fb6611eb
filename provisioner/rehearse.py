"""Opening-day rehearsal (répétition de l'ouverture des plis).

For every current generation and every generation bound to a consultation that is not
closed, a test bid (CMS EnvelopedData, AES-256) is encrypted to its certificate; then every
copy the entity's targets should hold is read back through its transport, opened with the
entity's password, checked to hold that very key, and used to decrypt the test bid. The escrow
is rehearsed too: every generation's sealed key is decrypted and checked against its
fingerprint, and opens the test bid where there is one (target `escrow`).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from provisioner.crypto import cms, pkcs12
from provisioner.crypto.keys import public_key_fingerprint
from provisioner.errors import (
    CorruptFileError,
    CryptoError,
    KeyMismatchError,
    ProvisionerError,
    UnsupportedAlgorithmError,
    WrongPasswordError,
)
from provisioner.manifest.model import Manifest
from provisioner.manifest.scope import Scope
from provisioner.plan.model import Plan
from provisioner.plan.planner import copy_file_name
from provisioner.state.escrow import Escrow
from provisioner.state.records import CURRENT, Recorded, RecordedGeneration
from provisioner.transports import TransportPool
from provisioner.transports.base import file_path


@dataclass(frozen=True)
class CopyResult:
    entity: str
    generation: int
    designation: str
    role: str  # "current" or "bound"
    target: str
    path: str
    opened: bool
    # "opened", "missing", "unreadable", "wrong password", "wrong key", "expired", "unreachable"
    reason: str
    detail: str


def open_copy(job: tuple[bytes, str, bytes, bytes, str, bytes]) -> tuple[bool, str, str]:
    """(opened, reason, detail) for one copy; runs in a worker process at scale."""
    data, password, cert_der, envelope, key_sha256, expected = job
    try:
        bundle = pkcs12.decode(data, password)
    except WrongPasswordError as exc:
        return False, "wrong password", str(exc)
    except (CorruptFileError, UnsupportedAlgorithmError) as exc:
        return False, "unreadable", str(exc)
    except KeyMismatchError as exc:
        return False, "wrong key", str(exc)
    if public_key_fingerprint(bundle.key) != key_sha256:
        return (
            False,
            "wrong key",
            (f"the file holds another key ({public_key_fingerprint(bundle.key)[:16]}…)"),
        )
    cert = x509.load_der_x509_certificate(cert_der)
    try:
        opened = cms.open_bid(envelope, cert, bundle.key)
    except CryptoError as exc:
        return False, "wrong key", str(exc)
    if opened != expected:
        return False, "wrong key", "the test bid decrypted to something else"
    return True, "opened", "the test bid was opened"


def rehearse(
    manifest: Manifest,
    recorded: Recorded,
    plan: Plan,
    passwords: dict[str, str],
    pool: TransportPool,
    now: dt.datetime,
    limit: frozenset[str] | None,
    escrow: Escrow | None = None,
    scope: Scope | None = None,
) -> list[CopyResult]:
    bound: dict[str, list[str]] = {}
    for view in plan.consultations:
        if view.is_open and view.generation_id:
            bound.setdefault(view.generation_id, []).append(view.reference)
    jobs: list[tuple[bytes, str, bytes, bytes, str, bytes]] = []
    slots: list[tuple[CopyResult, list[str]]] = []  # template, consultations holding it
    results: list[CopyResult] = []
    # A target the plan could not observe is not tried again (one timeout per run): its
    # copies are reported unreachable, with the reason.
    unreached = {u.target: u.reason for u in plan.unreached}
    for entity in manifest.entities:
        if entity.state != "present" or (limit is not None and entity.id not in limit):
            continue
        for g in recorded.generations_of(entity.id):
            if g.status != CURRENT and g.id not in bound:
                if escrow is not None:
                    results.append(_escrowed(escrow, g, "retired", None))
                continue
            role = "current" if g.status == CURRENT else "bound"
            cert = x509.load_der_x509_certificate(g.certificate)
            content = (
                f"provisioner rehearsal {entity.id} g{g.number} "
                f"{now.isoformat()} {secrets.token_hex(8)}"
            ).encode()
            envelope = cms.encrypt_bid(cert, content)
            if escrow is not None:
                results.append(_escrowed(escrow, g, role, (cert, envelope, content)))
            for target in entity.targets:
                if scope is not None and not scope.covers(entity.id, target.name):
                    continue  # outside --limit
                path = file_path(target, copy_file_name(entity.id, g.number))
                base = CopyResult(
                    entity.id, g.number, g.designation, role, target.name, path, False, "", ""
                )
                if role == "current" and g.not_after <= now:
                    results.append(
                        _with(
                            base,
                            False,
                            "expired",
                            f"the certificate expired on {g.not_after:%Y-%m-%d}",
                        )
                    )
                    continue
                if target.name in unreached:
                    results.append(_with(base, False, "unreachable", unreached[target.name]))
                    continue
                try:
                    data = pool.get(target).read(path)
                except ProvisionerError as exc:
                    text = str(exc)
                    reason = (
                        "missing"
                        if "No such file" in text or "not found" in text.lower()
                        else "unreadable"
                    )
                    results.append(_with(base, False, reason, text))
                    continue
                jobs.append(
                    (data, passwords[entity.id], g.certificate, envelope, g.key_sha256, content)
                )
                slots.append((base, bound.get(g.id, [])))
    workers = os.cpu_count() or 1
    if len(jobs) >= 8 and workers > 1:
        # Ctrl-C is the command's to handle, not the workers' (each would print a traceback).
        with ProcessPoolExecutor(
            max_workers=workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)
        ) as executor:
            outcomes = list(executor.map(open_copy, jobs, chunksize=max(1, len(jobs) // 64)))
    else:
        outcomes = [open_copy(job) for job in jobs]
    for (base, holders), (opened, reason, detail) in zip(slots, outcomes, strict=True):
        note = detail
        if opened and base.role == "bound":
            note = "opened; kept for consultations " + ", ".join(holders)
        results.append(_with(base, opened, reason, note))
    results.sort(key=lambda r: (r.entity, r.generation, r.target))
    return results


def _escrowed(
    escrow: Escrow,
    g: RecordedGeneration,
    role: str,
    bid: tuple[x509.Certificate, bytes, bytes] | None,
) -> CopyResult:
    """The escrowed key of `g`: decrypted, checked, and opening the test bid when given."""
    base = CopyResult(
        g.entity,
        g.number,
        g.designation,
        role,
        "escrow",
        str(escrow.path_for(g.key_sha256)),
        False,
        "",
        "",
    )
    try:
        key = escrow.get(g.key_sha256)
    except ProvisionerError as exc:
        reason = "missing" if "has no key" in str(exc) else "unreadable"
        return _with(base, False, reason, str(exc))
    if bid is None:
        return _with(base, True, "opened", "the escrowed key decrypts and matches")
    cert, envelope, content = bid
    try:
        opened = cms.open_bid(envelope, cert, key)
    except CryptoError as exc:
        return _with(base, False, "wrong key", str(exc))
    if opened != content:
        return _with(base, False, "wrong key", "the test bid decrypted to something else")
    return _with(base, True, "opened", "the test bid was opened with the escrowed key")


def _with(base: CopyResult, opened: bool, reason: str, detail: str) -> CopyResult:
    return CopyResult(
        base.entity,
        base.generation,
        base.designation,
        base.role,
        base.target,
        base.path,
        opened,
        reason,
        detail,
    )


def render(results: list[CopyResult]) -> str:
    lines: list[str] = []
    heading = None
    for r in results:
        key = (r.entity, r.generation)
        if key != heading:
            heading = key
            lines.append(f'{r.entity} g{r.generation} "{r.designation}" ({r.role})')
        flag = "opened" if r.opened else "FAILED"
        lines.append(
            f"  {flag:<7} {r.target}: {r.path}"
            + ("" if r.opened and r.role == "current" else f"  [{r.reason}] {r.detail}")
        )
    opened = sum(r.opened for r in results)
    failed = len(results) - opened
    lines.append("")
    lines.append(
        f"Rehearsal: {opened} cop{'y' if opened == 1 else 'ies'} opened the test bid, "
        f"{failed} failed."
    )
    return "\n".join(lines)


def to_json(results: list[CopyResult]) -> dict[str, Any]:
    return {
        "opened": sum(r.opened for r in results),
        "failed": sum(not r.opened for r in results),
        "copies": [
            {
                "entity": r.entity,
                "generation": r.generation,
                "designation": r.designation,
                "role": r.role,
                "target": r.target,
                "path": r.path,
                "opened": r.opened,
                "reason": r.reason,
                "detail": r.detail,
            }
            for r in results
        ],
    }
