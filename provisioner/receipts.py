"""Receipts of key stores: what a distribution engine (the Ansible role of ansible/provisioner,
or a script run by GPO/Intune) leaves beside the copies once it has imported a generation into
the agents' stores, and what `status`, `check` and `rehearse` make of them.

A receipt is `<entity>.g<N>.receipt.json` in the workstation's folder, beside the copy
`<entity>.g<N>.p12` (format in docs/CONCEPTS.md, schemas/receipt.schema.json). It holds the
certificate's thumbprints, and per store the user, the store, what the last role run observed
there (the key installed, its import failed, the store unreadable) and when; never a secret.
The tool only reads receipts: a receipt is a claim of the host, checked against the certificate
the state records, and worth no more than its age: one not observed for `max_age` is "not
observed since".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provisioner import clock
from provisioner.consultations import Consultation
from provisioner.errors import ProvisionerError
from provisioner.manifest.model import Manifest, Target
from provisioner.manifest.scope import Scope
from provisioner.state.records import Recorded, RecordedGeneration
from provisioner.transports import TransportPool
from provisioner.transports.base import file_path

if TYPE_CHECKING:
    from provisioner.engine import Session
    from provisioner.plan.model import Plan, Unreached

RECEIPT_FORMATS = (1, 2)  # 1: written by the role before 2026-12 (an import, never a look)
MAX_RECEIPT_BYTES = 64 * 1024
MAX_AGE = dt.timedelta(days=7)  # a receipt older than this is "not observed since"

# What a store holds of a generation, per agent user.
INSTALLED = "installed"  # the receipt names this certificate, with its private key
NOT_IMPORTED = "not-imported"  # the copy is on the workstation, no receipt for this user
MISSING = "missing"  # neither the copy nor a receipt
OTHER_KEY = "other-key"  # the receipt names another certificate
NO_PRIVATE_KEY = "no-private-key"  # imported, but the store holds the certificate alone
UNREADABLE = "unreadable"  # the receipt is not a receipt
UNREACHABLE = "unreachable"
IMPORT_FAILED = "import-failed"  # the last role run found it absent and could not import it
STORE_UNREADABLE = "store-unreadable"  # the last role run could not read the store
NOT_OBSERVED = "not-observed"  # installed as last observed, but that is older than max_age

# What a role run observed in a store (format 2), and the state each outcome reads as.
OUTCOMES = {"installed": INSTALLED, "import-failed": IMPORT_FAILED, "unreadable": STORE_UNREADABLE}


def windows_thumbprint(certificate_der: bytes) -> str:
    """The certificate's thumbprint as Windows shows it: SHA-1 of the DER, upper-case hex."""
    return hashlib.sha1(certificate_der, usedforsecurity=False).hexdigest().upper()


def receipt_name(entity: str, number: int) -> str:
    return f"{entity}.g{number}.receipt.json"


def receipt_path(target: Target, entity: str, number: int) -> str:
    """Where the receipt of generation `number` of `entity` lives on `target`."""
    return file_path(target, receipt_name(entity, number))


@dataclass(frozen=True)
class Bound:
    """A consultation not closed bound to a generation, and when its key is needed."""

    reference: str
    due: dt.datetime | None  # the opening of bids, else the deadline


def open_bindings(
    recorded: Recorded, consultations: tuple[Consultation, ...] | None
) -> dict[str, list[Bound]]:
    """Generation id -> the consultations not closed bound to it. The state and the
    consultations file both count: a consultation either one calls open keeps its key."""
    out: dict[str, dict[str, Bound]] = {}
    for c in recorded.consultations.values():
        if c.status != "closed" and c.generation_id is not None:
            out.setdefault(c.generation_id, {})[c.reference] = Bound(
                c.reference, c.opening or c.deadline
            )
    by_cert = {g.cert_sha256: g for g in recorded.generations}
    by_name = {(g.entity, name): g for g in recorded.generations for name in recorded.names_of(g)}
    for f in consultations or ():
        if not f.is_open:
            continue
        g = (
            by_cert.get(f.certificate_sha256)
            if f.certificate_sha256
            else by_name.get((f.entity, f.designation or ""))
        )
        if g is not None and g.entity == f.entity:
            out.setdefault(g.id, {}).setdefault(
                f.reference, Bound(f.reference, f.opening or f.deadline)
            )
    return {gid: sorted(refs.values(), key=lambda b: b.reference) for gid, refs in out.items()}


@dataclass(frozen=True)
class StoreEntry:
    user: str
    store: str
    installed_at: dt.datetime | None
    private_key: bool
    outcome: str = "installed"  # installed, import-failed, unreadable
    observed_at: dt.datetime | None = None  # when the role last looked (format 1: installed_at)
    detail: str = ""
    opened_at: dt.datetime | None = None  # when a test bid opened with the key in the store


@dataclass(frozen=True)
class Receipt:
    entity: str
    generation: int
    thumbprint_sha1: str
    cert_sha256: str
    stores: tuple[StoreEntry, ...]


class ReceiptError(ProvisionerError):
    pass


def parse(data: bytes, where: str) -> Receipt:
    """A receipt from its bytes; ReceiptError naming `where` when it is not one."""
    try:
        raw = json.loads(data.decode("utf-8"))
        version = raw.get("format_version")
        if version not in RECEIPT_FORMATS:
            raise ValueError(f"format_version {version!r} is not 1 or 2")
        stores = tuple(_entry(s, version) for s in raw["stores"])
        return Receipt(
            str(raw["entity"]),
            int(raw["generation"]),
            str(raw["thumbprint_sha1"]).upper().replace(":", ""),
            str(raw["cert_sha256"]).lower().replace(":", ""),
            stores,
        )
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ReceiptError(f"{where}: not a receipt: {exc}") from None


def _entry(s: dict[str, Any], version: int) -> StoreEntry:
    if version == 1:
        installed = clock.parse(str(s["installed_at"]))
        return StoreEntry(
            str(s["user"]),
            str(s["store"]),
            installed,
            s["private_key"] is True,
            observed_at=installed,
        )
    outcome = str(s["outcome"])
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not {', '.join(OUTCOMES)}")
    since, opened = s.get("installed_at"), s.get("opened_at")
    return StoreEntry(
        str(s["user"]),
        str(s["store"]),
        clock.parse(str(since)) if since else None,
        s["private_key"] is True,
        outcome,
        clock.parse(str(s["observed_at"])),
        str(s.get("detail", ""))[:500],
        clock.parse(str(opened)) if opened else None,
    )


@dataclass(frozen=True)
class StoreState:
    """Whether one agent's store holds one generation, as its workstation's receipt says."""

    entity: str
    generation: int
    designation: str
    target: str
    user: str
    state: str
    detail: str
    bound: tuple[Bound, ...]
    since: dt.datetime | None = None
    observed_at: dt.datetime | None = None

    @property
    def installed(self) -> bool:
        return self.state == INSTALLED


def _judge(
    target: Target,
    g: RecordedGeneration,
    bound: tuple[Bound, ...],
    pool: TransportPool,
    now: dt.datetime,
    max_age: dt.timedelta,
) -> list[StoreState]:
    from provisioner.plan.planner import copy_file_name

    users = target.install.store_users()

    def one(
        user: str,
        state: str,
        detail: str,
        since: dt.datetime | None = None,
        observed: dt.datetime | None = None,
    ) -> StoreState:
        return StoreState(
            g.entity, g.number, g.designation, target.name, user, state, detail, bound, since,
            observed,
        )  # fmt: skip

    def each(state: str, detail: str) -> list[StoreState]:
        return [one(user, state, detail) for user in users]

    where = receipt_path(target, g.entity, g.number)
    try:
        transport = pool.get(target)
        facts = transport.observe(where)
        receipt = None
        if facts is not None:
            if facts.size > MAX_RECEIPT_BYTES:
                return each(UNREADABLE, f"{where}: receipt larger than 64 KiB")
            receipt = parse(transport.read(where), where)
        copy_present = transport.observe(file_path(target, copy_file_name(g.entity, g.number)))
    except ReceiptError as exc:
        return each(UNREADABLE, str(exc))
    except ProvisionerError as exc:
        return each(UNREACHABLE, str(exc))
    file_state = "file present, not imported" if copy_present else "file absent, not imported"
    if receipt is None:
        return each(NOT_IMPORTED if copy_present else MISSING, file_state)
    if (
        receipt.cert_sha256 != g.cert_sha256
        or receipt.thumbprint_sha1 != windows_thumbprint(g.certificate)
        or (receipt.entity, receipt.generation) != (g.entity, g.number)
    ):
        return each(
            OTHER_KEY,
            f"{where} names certificate SHA-1 {receipt.thumbprint_sha1}, not this generation's",
        )
    out: list[StoreState] = []
    entries = {e.user: e for e in receipt.stores}
    for user in users:
        entry = entries.get(user)
        observed = entry.observed_at if entry is not None else None
        looked = f", observed {_age(observed, now)}" if observed is not None else ""
        if entry is None:
            state, detail, since = (NOT_IMPORTED if copy_present else MISSING), file_state, None
        elif OUTCOMES[entry.outcome] != INSTALLED:
            state, since = OUTCOMES[entry.outcome], None
            what = "import failed" if state == IMPORT_FAILED else "store unreadable"
            detail = f"{entry.store}: {what}{looked}: {entry.detail or 'no reason given'}"
        elif not entry.private_key:
            state, detail, since = (
                NO_PRIVATE_KEY,
                f"{entry.store}: certificate without its private key{looked}",
                entry.installed_at,
            )
        else:
            who = "the machine store" if user == "LocalMachine" else f"the store of user {user}"
            since = entry.installed_at
            when = f" since {since:%Y-%m-%d %H:%M}" if since is not None else ""
            proof = (
                f"; a test bid opened from it {entry.opened_at:%Y-%m-%d %H:%M}"
                if entry.opened_at is not None
                else ""
            )
            detail = f"in {who}{when} ({entry.store}){looked}{proof}"
            state = INSTALLED
            if observed is None or now - observed > max_age:
                state = NOT_OBSERVED
                detail = (
                    f"{entry.store}: not observed since {observed:%Y-%m-%d %H:%M}"
                    if observed is not None
                    else "never observed"
                ) + f" (in {who} then; receipts older than {max_age.days} days prove nothing)"
        out.append(one(user, state, detail, since, observed))
    return out


def _age(when: dt.datetime, now: dt.datetime) -> str:
    """`2027-01-02 03:04 (3 days ago)`: when a role run last looked at a store."""
    days = (now - when).days
    ago = "today" if days <= 0 else ("1 day ago" if days == 1 else f"{days} days ago")
    return f"{when:%Y-%m-%d %H:%M} ({ago})"


def survey_of(
    session: Session,
    plan: Plan,
    parallel: int,
    limit: frozenset[str] | None = None,
    max_age: dt.timedelta = MAX_AGE,
) -> list[StoreState]:
    """`survey` for an open session and the plan it made: the targets that plan could not
    observe are not contacted again."""
    return survey(
        session.manifest,
        session.recorded,
        session.inputs.consultations,
        session.pool,
        parallel,
        limit,
        plan.unreached,
        plan.now,
        max_age,
        session.inputs.scope,
    )


def survey(
    manifest: Manifest,
    recorded: Recorded,
    consultations: tuple[Consultation, ...] | None,
    pool: TransportPool,
    parallel: int = 8,
    limit: frozenset[str] | None = None,
    unreached: tuple[Unreached, ...] = (),
    now: dt.datetime | None = None,
    max_age: dt.timedelta = MAX_AGE,
    scope: Scope | None = None,
) -> list[StoreState]:
    """For each workstation whose manifest says the key must be in a store (within `scope`,
    when --limit named targets), each agent user,
    and each live generation (current, or bound to a consultation not closed) of the entities
    it holds: what its receipt says. Targets the plan could not observe (`unreached`)
    are not contacted again: a host down costs its connect timeout once per run, not once per
    receipt."""
    at = now if now is not None else clock.now()
    bindings = open_bindings(recorded, consultations)
    down = {u.target: str(u) for u in unreached}
    jobs: list[tuple[Target, RecordedGeneration, tuple[Bound, ...]]] = []
    for entity in manifest.entities:
        if entity.state != "present" or (limit is not None and entity.id not in limit):
            continue
        live = [
            g
            for g in recorded.generations_of(entity.id)
            if g.status == "current" or g.id in bindings
        ]
        for target in entity.workstations:
            if scope is not None and not scope.covers(entity.id, target.name):
                continue
            if target.install.in_store:
                jobs.extend((target, g, tuple(bindings.get(g.id, ()))) for g in live)
    if not jobs:
        return []

    def judge(job: tuple[Target, RecordedGeneration, tuple[Bound, ...]]) -> list[StoreState]:
        target, g, bound = job
        if target.name in down:
            return [
                StoreState(
                    g.entity,
                    g.number,
                    g.designation,
                    target.name,
                    user,
                    UNREACHABLE,
                    down[target.name],
                    bound,
                )
                for user in target.install.store_users()
            ]
        return _judge(target, g, bound, pool, at, max_age)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as workers:
        results = list(workers.map(judge, jobs))
    return [s for found in results for s in found]


def render(states: list[StoreState]) -> str:
    """`Key stores:` and one line per agent store, for status and rehearse."""
    if not states:
        return ""
    lines = ["Key stores:"]
    for s in states:
        mark = "ok" if s.installed else s.state
        lines.append(f"  {mark:<14} {s.entity} g{s.generation} {s.target} [{s.user}]: {s.detail}")
    lines.append("")
    return "\n".join(lines) + "\n"


def to_json(states: list[StoreState]) -> list[dict[str, Any]]:
    return [
        {
            "entity": s.entity,
            "generation": s.generation,
            "designation": s.designation,
            "target": s.target,
            "user": s.user,
            "state": s.state,
            "detail": s.detail,
            "since": clock.iso(s.since) if s.since else None,
            "observed_at": clock.iso(s.observed_at) if s.observed_at else None,
            "consultations": [b.reference for b in s.bound],
        }
        for s in states
    ]
