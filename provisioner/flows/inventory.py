"""`provisioner inventory`: the workstations, their groups and the copies each must hold, as
a stable JSON document (schemas/inventory.schema.json) that distribution engines read (the
Ansible collection of ansible/provisioner turns it into hosts, groups and host variables).

Built from the manifest and the state only: no target is contacted and no secret is read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner import clock
from provisioner.consultations import Consultation
from provisioner.errors import NoStateError
from provisioner.jsondoc import FORMAT_VERSION
from provisioner.manifest.model import STORE_NSS, STORE_WINDOWS, Entity, Manifest, Target
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.paths import copy_file_name
from provisioner.receipts import Bound, open_bindings, receipt_path, windows_thumbprint
from provisioner.state.records import CURRENT, RETAINED, Recorded, RecordedGeneration
from provisioner.transports.base import file_path

KEEP = "keep"
REMOVE = "remove"


@dataclass(frozen=True)
class HostCopy:
    entity: Entity | None
    entity_id: str
    generation: RecordedGeneration
    state: str  # KEEP | REMOVE
    reason: str  # "current" | "retained" | "bound" | "retired" | "absent" | "unassigned"
    consultations: tuple[str, ...]


def _copies_for(
    host: Target,
    manifest: Manifest,
    recorded: Recorded,
    bound: dict[str, list[Bound]],
    listed: set[str],
    held: set[str],
) -> list[HostCopy]:
    """The generations `host` must hold or let go: those of the entities listing it
    (`listed`) and of those whose copies the state records there (`held`)."""
    out: list[HostCopy] = []
    for entity_id in sorted(listed | held):
        entity = manifest.entity(entity_id)
        for g in recorded.generations_of(entity_id):
            refs = tuple(b.reference for b in bound.get(g.id, ()))
            if refs:
                # Never taken from a store while bids made to it may still be opened.
                state, reason = KEEP, "bound"
            elif entity is None or entity_id not in listed:
                state, reason = REMOVE, "unassigned"
            elif entity.state != "present":
                state, reason = REMOVE, "absent"
            elif g.status in (CURRENT, RETAINED):
                state, reason = KEEP, g.status
            else:
                state, reason = REMOVE, "retired"
            out.append(HostCopy(entity, entity_id, g, state, reason, refs))
    return out


def _controller_path(host: Target, entity: Entity | None, g: RecordedGeneration) -> str | None:
    """A PKCS#12 of `g` readable on the controller: the workstation's own folder when it is
    local (a mounted share), else a local shared location of the entity."""
    name = copy_file_name(g.entity, g.number)
    if kind_of(host).on_controller:
        return file_path(host, name)
    for location in entity.shared_locations if entity else ():
        if kind_of(location).on_controller:
            return file_path(location, name)
    return None


def build(
    manifest: Manifest,
    recorded: Recorded,
    consultations: tuple[Consultation, ...] | None,
    state_dir: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The inventory document (format_version 1, schemas/inventory.schema.json)."""
    bound = open_bindings(recorded, consultations)
    # Indexed once: a region has thousands of workstations and entities.
    listing: dict[str, set[str]] = {}
    for e in manifest.entities:
        for w in e.workstations:
            listing.setdefault(w.name, set()).add(e.id)
    holding: dict[str, set[str]] = {}
    for rc in recorded.copies.values():
        holding.setdefault(rc.target, set()).add(rc.entity)
    hosts: dict[str, Any] = {}
    for name, host in sorted(manifest.workstations.items()):
        install = host.install
        windows = install.store == STORE_WINDOWS
        copies = []
        connection = kind_of(host).ansible_connection(host)  # None: the copies are local
        listed, held = listing.get(name, set()), holding.get(name, set())
        for c in _copies_for(host, manifest, recorded, bound, listed, held):
            g = c.generation
            file_name = copy_file_name(g.entity, g.number)
            recorded_copy = recorded.copies.get((host.name, file_path(host, file_name)))
            copies.append(
                {
                    "entity": c.entity_id,
                    "entity_name": c.entity.name if c.entity else c.entity_id,
                    "generation": g.number,
                    "designation": g.designation,
                    "friendly_name": recorded_copy.friendly_name
                    if recorded_copy
                    else g.designation,
                    "thumbprint_sha1": windows_thumbprint(g.certificate),
                    "cert_sha256": g.cert_sha256,
                    "not_after": clock.iso(g.not_after),
                    "state": c.state,
                    "reason": c.reason,
                    "consultations": list(c.consultations),
                    "host_path": None if connection is None else file_path(host, file_name),
                    "controller_path": _controller_path(host, c.entity, g),
                    "written": recorded_copy is not None,
                    "receipt_path": receipt_path(host, g.entity, g.number),
                }
            )
        hosts[name] = {
            "transport": host.transport,
            "path": host.path,
            "connection": connection or {},
            "install": {
                "store": install.store,
                "users": list(install.users),
                "windows_location": install.windows_location if windows else None,
                "exportable": install.exportable if windows else None,
                "nss_database": install.nss_database if install.store == STORE_NSS else None,
            },
            "copies": copies,
        }
    return {
        "format_version": FORMAT_VERSION,
        "generated_at": clock.iso(now),
        "manifest": str(manifest.path),
        "state_dir": state_dir,
        "lineage": recorded.lineage,
        "serial": recorded.serial,
        "groups": {g: list(members) for g, members in sorted(manifest.groups.items())},
        "hosts": hosts,
    }


def render(document: dict[str, Any]) -> str:
    """One line per host and copy, for people; the JSON is the contract."""
    lines = []
    for name, host in document["hosts"].items():
        install = host["install"]
        users = ", ".join(install["users"])
        lines.append(f"{name}  store: {install['store']}" + (f" ({users})" if users else ""))
        for c in host["copies"]:
            bound = f"  bound: {', '.join(c['consultations'])}" if c["consultations"] else ""
            lines.append(
                f'  {c["state"]:<6} {c["entity"]} g{c["generation"]} "{c["designation"]}" '
                f"SHA-1 {c['thumbprint_sha1']} [{c['reason']}]{bound}"
            )
        if not host["copies"]:
            lines.append("  no copy to hold yet")
    return "\n".join(lines) + "\n"


def run(
    manifest_path: Path,
    state_dir: Path | None,
    consultations: Path | None,
    limit: list[str] | None = None,
    *,
    state_backend: str | None = None,
) -> dict[str, Any]:
    """Load the manifest and the state (read-only, no secret) and build the document; with
    `limit`, only the hosts and copies it names (an entity: its copies on every host; a
    workstation or group: those hosts, whole)."""
    from provisioner.engine import load_inputs, open_state

    inputs = load_inputs(
        manifest_path,
        state_dir,
        limit,
        need_secrets=False,
        consultations=consultations,
        state_backend=state_backend,
    )
    with open_state(inputs, create=False, unlock=False) as session:
        if session.db is None:
            # An empty inventory would tell a distribution engine that no store must hold
            # anything: a wrong --state-dir must fail, not pass for "nothing to do".
            raise NoStateError(session.location, "no inventory to give")
        document = build(
            session.manifest,
            session.recorded,
            inputs.consultations,
            str(session.location),
            clock.now(),
        )
    scope = inputs.scope
    if scope is not None:
        # A host --limit names keeps every copy it must hold or drop; elsewhere, only the
        # copies of the entities it names; hosts left with none go when it names targets.
        named = scope.targets or frozenset()
        hosts = document["hosts"]
        for name in list(hosts):
            if name not in named:
                hosts[name]["copies"] = [
                    c for c in hosts[name]["copies"] if c["entity"] in scope.whole
                ]
                if scope.targets is not None and not hosts[name]["copies"]:
                    del hosts[name]
        if scope.targets is not None:
            document["groups"] = {
                group: [m for m in members if m in hosts]
                for group, members in document["groups"].items()
            }
    return document
