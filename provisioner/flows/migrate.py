"""`provisioner state migrate --to postgresql|sqlite`: copy a state and its escrow from one
backend to the other, exactly (every row of every table with its ids, every sealed blob byte
for byte), then read the copy back and compare it with the source. The source is only read;
both are locked for the copy (a state someone is changing is not copied: refused, naming the
holder); a target that already holds a state or an escrow is refused, never overwritten; a
copy that fails or does not verify is removed, leaving the target as it was."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provisioner.engine.inputs import state_location
from provisioner.errors import StateError, UsageError
from provisioner.manifest.loader import read_manifest
from provisioner.state.blobs import SealedBlobs
from provisioner.state.escrow import KEYRING, EscrowListing
from provisioner.state.location import StateLocation
from provisioner.state.store import (
    TABLE_COLUMNS,
    StateStore,
    discard_state,
    escrow_blobs,
    hold,
    open_store,
    state_exists,
)


@dataclass(frozen=True)
class Migrated:
    """What was copied and verified."""

    source: str
    target: str
    lineage: str | None
    serial: int
    generations: int
    copies: int
    consultations: int
    audit_records: int
    escrowed_keys: int

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "lineage": self.lineage,
            "serial": self.serial,
            "generations": self.generations,
            "copies": self.copies,
            "consultations": self.consultations,
            "audit_records": self.audit_records,
            "escrowed_keys": self.escrowed_keys,
            "verified": True,
        }


def run(manifest: Path, to: str, state_dir: Path | None, *, lock_timeout: float) -> Migrated:
    """Copy the state of `manifest` to the `to` backend: from the SQLite folder (--state-dir,
    else $PROVISIONER_STATE_DIR, else .provisioner/ beside the manifest) to the manifest's
    PostgreSQL schema (or $PROVISIONER_STATE_DSN and $PROVISIONER_STATE_SCHEMA), or back."""
    if to not in ("sqlite", "postgresql"):
        raise UsageError(f"--to must be sqlite or postgresql, not {to[:40]!r}")
    loaded, _ = read_manifest(manifest)
    source = state_location(
        loaded, state_dir, force="sqlite" if to == "postgresql" else "postgresql"
    )
    target = state_location(loaded, state_dir, force=to)
    command = f"state migrate --to {to}"
    with hold(source, command, lock_timeout), hold(target, command, lock_timeout):
        return _copy(source, target)


def _copy(source: StateLocation, target: StateLocation) -> Migrated:
    src = open_store(source, create=False, migrate=False)
    if src is None:
        raise StateError(f"{source}: there is no state to migrate")
    src_blobs = escrow_blobs(source)
    dst_blobs = escrow_blobs(target)
    try:
        listing = EscrowListing.read(src_blobs)
        if not listing.keyring:
            raise StateError(
                f"{src_blobs.where()}: the state has no escrow keyring: state and escrow are "
                "one unit, and a state is migrated whole (docs/RECOVERY.md)"
            )
        if state_exists(target) or _holds_blobs(dst_blobs):
            raise StateError(
                f"{target}: already holds a state or an escrow; `state migrate` never writes "
                "over one. Migrate into an empty schema or folder"
            )
        rows = {table: src.table_rows(table) for table in TABLE_COLUMNS}
        names = [
            e.name for e in src_blobs.listing() if e.name == KEYRING or e.name.endswith(".key")
        ]
        blobs = {name: src_blobs.read(name) for name in names}
        _refuse_oversized(blobs, src_blobs)
        made = False
        try:
            dst = open_store(target, create=True, migrate=True)
            assert dst is not None
            made = True
            try:
                for name, data in blobs.items():  # the escrow first, as an apply does
                    dst_blobs.write(name, data, "the escrowed key")
                dst.load_rows(_rehomed(rows, dst.home()))
                _verify(src, dst, rows, blobs, dst_blobs, target)
                snapshot = dst.snapshot()
            finally:
                dst.close()
        except BaseException:
            if made:
                _undo(target)
            raise
    finally:
        src.close()
        for store in (src_blobs, dst_blobs):
            close = getattr(store, "close", None)
            if close is not None:
                close()
    return Migrated(
        source=str(source),
        target=str(target),
        lineage=snapshot.lineage,
        serial=snapshot.serial,
        generations=len(snapshot.generations),
        copies=len(snapshot.copies),
        consultations=len(snapshot.consultations),
        audit_records=len(rows["audit"]),
        escrowed_keys=sum(name.endswith(".key") for name in blobs),
    )


def _holds_blobs(blobs: SealedBlobs) -> bool:
    return bool(blobs.listing())


def _refuse_oversized(blobs: dict[str, bytes], where: SealedBlobs) -> None:
    from provisioner.state.blobs import MAX_BLOB_BYTES

    for name, data in blobs.items():
        if len(data) > MAX_BLOB_BYTES:
            raise StateError(
                f"{where.where(name)}: larger than {MAX_BLOB_BYTES} bytes: not an escrow file of "
                "this tool; move it out of the escrow, then migrate"
            )


def _rehomed(rows: dict[str, list[tuple[Any, ...]]], home: str) -> dict[str, list[tuple[Any, ...]]]:
    """The rows with the copy's own home: the source's home names the place it came from (a
    state used from another home holds its removals back, as a copied tree's)."""
    meta = [(key, value) for key, value in rows["meta"] if key != "home"]
    return dict(rows, meta=sorted([*meta, ("home", home)]))


def _verify(
    src: StateStore,
    dst: StateStore,
    rows: dict[str, list[tuple[Any, ...]]],
    blobs: dict[str, bytes],
    dst_blobs: SealedBlobs,
    target: StateLocation,
) -> None:
    """The copy read back equals the source: every row (meta but the home), the snapshot the
    planner reads (serial, lineage, generations, copies, bindings, designations), every
    sealed blob byte for byte (a key the source's escrow lacks is lacking in the copy too:
    `plan` says so on either, and takes it back from a copy)."""
    problems = []
    for table in TABLE_COLUMNS:
        copied = dst.table_rows(table)
        expected = rows[table]
        if table == "meta":
            copied = [r for r in copied if r[0] != "home"]
            expected = [r for r in expected if r[0] != "home"]
        if sorted(map(_comparable, copied)) != sorted(map(_comparable, expected)):
            problems.append(f"the {table} table differs")
    before, after = src.snapshot(), dst.snapshot()
    if replace(before, home=None) != replace(after, home=None):
        problems.append("the snapshot the planner reads differs")
    for name, data in blobs.items():
        try:
            if dst_blobs.read(name) != data:
                problems.append(f"{name} differs")
        except OSError:
            problems.append(f"{name} is missing")
    if problems:
        raise StateError(
            f"{target}: the copy does not verify ({'; '.join(problems[:5])}); it was removed "
            "and the source is untouched"
        )


def _comparable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def _undo(target: StateLocation) -> None:
    """Remove the copy made (the target was empty before)."""
    if target.is_sqlite:
        import shutil

        shutil.rmtree(target.escrow_dir, ignore_errors=True)
    discard_state(target)  # (a PostgreSQL state's escrow table goes with it)
