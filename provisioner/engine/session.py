"""The open state of one command: the state database, the unlocked escrow, the snapshot they
record and the targets' transports, opened by `open_state` and closed on every path.

State and escrow are one unit (invariant 9): `open_state` refuses a pair that is not, naming
`provisioner recover`, and creates neither over the other's remains."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from provisioner.engine.inputs import Inputs
from provisioner.errors import UnitError, WrongPassphraseError
from provisioner.manifest.model import Manifest
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.model import Desired
from provisioner.state.blobs import SealedBlobs
from provisioner.state.escrow import KEYRING, Escrow, EscrowListing
from provisioner.state.location import StateLocation
from provisioner.state.records import Recorded
from provisioner.state.store import (
    StateStore,
    discard_state,
    escrow_blobs,
    holds_state,
    open_store,
    state_exists,
)
from provisioner.transports import TransportPool
from provisioner.transports.base import target_from_spec
from provisioner.wording import counted


@dataclass(frozen=True)
class Created:
    """What opening the state made this run (the state, a keyring, the escrow folder), and
    how it is removed when the run does nothing."""

    what: str
    remove: Callable[[], None]


class Session:
    """What a command works with once the state is open. The inputs are frozen; `recorded`
    and `escrow_listing` change only through `refresh` (a new snapshot), and `desired` is
    computed once per snapshot (the password ids are computed once per command)."""

    def __init__(
        self,
        inputs: Inputs,
        db: StateStore | None,
        escrow: Escrow | None,
        recorded: Recorded,
        listing: EscrowListing,
        *,
        created: tuple[Created, ...],
        moved_from: str | None,
        blobs: SealedBlobs | None = None,
    ) -> None:
        self.inputs = inputs
        self.db = db
        self.escrow = escrow
        self.escrow_blobs = blobs if blobs is not None else escrow_blobs(inputs.location)
        self.recorded = recorded
        self.escrow_listing = listing
        self.created = created  # what opening the state created this run (a state, a keyring)
        self.moved_from = moved_from  # the state's home, when it is used from elsewhere
        self.pool = TransportPool()
        self._password_ids: dict[str, str | None] = {
            entity: (escrow.password_id(entity, pw) if escrow else None)
            for entity, pw in inputs.passwords.items()
        }
        self._desired = self._make_desired()

    # The inputs a command reads most, named as before.
    @property
    def manifest(self) -> Manifest:
        return self.inputs.manifest

    @property
    def passwords(self) -> dict[str, str]:
        return self.inputs.passwords

    @property
    def state_dir(self) -> Path:
        return self.inputs.state_dir

    @property
    def escrow_dir(self) -> Path:
        return self.inputs.escrow_dir

    @property
    def location(self) -> StateLocation:
        return self.inputs.location

    @property
    def limit(self) -> frozenset[str] | None:
        return self.inputs.limit

    @property
    def consultations_path(self) -> Path | None:
        return self.inputs.consultations_path

    def desired(self) -> Desired:
        return self._desired

    def _make_desired(self) -> Desired:
        from provisioner.engine.chains import chain_updates

        inputs = self.inputs
        return Desired(
            inputs.manifest,
            self._password_ids,
            limit=inputs.limit,
            scope=inputs.scope,
            consultations=inputs.consultations,
            notice_days=inputs.notice_days,
            chain_updates=chain_updates(inputs.manifest, self.recorded)
            if inputs.manifest.issuers and self.db is not None
            else {},
            moved_from=self.moved_from,
            password_sources_changed=frozenset(
                entity
                for entity, stamp in inputs.password_sources.items()
                if entity not in inputs.passwords  # read: its password id says it all
                and self.recorded.password_sources.get(entity, stamp) != stamp
            ),
        )

    def refresh(self) -> None:
        """Read the state again (an apply committed meanwhile, or this command recorded):
        a new snapshot, a new listing of the escrow taken after it, `desired` against them."""
        assert self.db is not None
        self.recorded = self.db.snapshot()
        self.escrow_listing = EscrowListing.read(self.escrow_blobs)
        self._desired = self._make_desired()

    def discard_created(self) -> None:
        """Remove what opening the state created and nothing else (a refused or declined run
        leaves no state and no keyring behind)."""
        if self.db is not None:
            self.db.close()
            self.db = None
        _remove(self.created)
        self.created = ()

    def close(self) -> None:
        self.pool.close()
        if self.db is not None:
            self.db.close()
            self.db = None
        _close(self.escrow_blobs)


def _close(blobs: SealedBlobs) -> None:
    close = getattr(blobs, "close", None)  # a database's blobs hold a connection
    if close is not None:
        close()


def _remove(created: tuple[Created, ...] | list[Created]) -> None:
    for item in reversed(created):  # the keyring before the state it belongs to
        item.remove()


@contextlib.contextmanager
def open_state(
    inputs: Inputs, *, create: bool, unlock: bool = True, recovering: bool = False
) -> Iterator[Session]:
    """Open the state database and unlock the escrow (creating them when `create`), refuse a
    state and escrow that are not one unit, and close both whatever happens.

    `recovering` lets `recover` through to rebuild: no unit check, and an escrow is created
    when there is none (Escrow.create refuses a folder of sealed keys no keyring opens). The
    escrow's scrypt (about 0.1 s, outside the GIL) runs in a thread while this one reads the
    state snapshot."""
    session = _open(inputs, create=create, unlock=unlock, recovering=recovering)
    try:
        yield session
    finally:
        session.close()


def _open(inputs: Inputs, *, create: bool, unlock: bool, recovering: bool) -> Session:
    location = inputs.location
    blobs = escrow_blobs(location)
    # A SQLite file counts even empty (it is "no state", and not ours to remove).
    had_db = state_exists(location) if location.is_sqlite else None
    had_escrow = inputs.escrow_dir.exists() if location.is_sqlite else True
    created: list[Created] = []
    db: StateStore | None = None
    try:
        with ThreadPoolExecutor(max_workers=1) as background:
            unlocking = (
                background.submit(Escrow.unlock, blobs, inputs.escrow_passphrase)
                if unlock and Escrow.exists(blobs)
                else None
            )
            db = open_store(location, create=False, migrate=create)
            recorded = db.snapshot() if db is not None else Recorded(None, 0)
            if had_db is None:
                had_db = db is not None
            # Listed once, after the snapshot: the escrow is written first, so every key the
            # snapshot records is in the listing.
            listing = EscrowListing.read(blobs)
            # Sealed keys without a state: a lost state, never a new start (nothing created).
            if db is None and create and (recovering or not listing.sealed):
                db = open_store(location, create=True, migrate=True)
                assert db is not None
                recorded = db.snapshot()
                if not had_db:
                    created.append(Created(f"the state {location}", _discarding(location)))
            try:
                escrow = unlocking.result() if unlocking is not None else None
            except WrongPassphraseError as exc:
                raise WrongPassphraseError(f"{exc}: {_next_step(inputs)}") from None
        if not recovering:
            check_unit(inputs, db, escrow, recorded, listing, blobs)
        moved_from = None
        if db is not None:
            moved_from = _settle_home(inputs, db, recorded, create=create)
            if create and escrow is not None and escrow.needs_upgrade:
                # Once, under the lock: old key files get the entity sealed in, the state's.
                escrow.upgrade({g.key_sha256: g.entity for g in recorded.generations})
        if unlock and create and escrow is None and (db is not None or recovering):
            escrow = Escrow.create(blobs, inputs.escrow_passphrase, recorded.lineage)
            if had_escrow:
                created.append(Created(blobs.where(KEYRING), _deleting(blobs, KEYRING)))
            else:
                created.append(Created(blobs.where(), _removing_folder(inputs.escrow_dir)))
            listing = EscrowListing.read(blobs)  # the new keyring is there
        elif escrow is not None and escrow.lineage is None and create and recorded.lineage:
            escrow.set_lineage(recorded.lineage)
    except BaseException:
        if db is not None:
            db.close()
        # A failed open leaves nothing it created behind: a first apply that could not write
        # its keyring (a dangling link where keyring.json goes) left an empty state.db.
        _remove(created)
        _close(blobs)
        raise
    return Session(
        inputs,
        db,
        escrow,
        recorded,
        listing,
        created=tuple(created),
        moved_from=moved_from,
        blobs=blobs,
    )


def _next_step(inputs: Inputs) -> str:
    """What to do about a wrong escrow passphrase: the row of docs/RECOVERY.md that applies."""
    return (
        f"{inputs.manifest.escrow_passphrase.describe()}, which escrow.passphrase names, does "
        "not open it. If the passphrase was rotated (`provisioner rekey`), point "
        "escrow.passphrase at the new one. If it is lost for good, follow docs/RECOVERY.md, "
        '"What each loss costs", row "the escrow passphrase": point escrow.passphrase at a new '
        f"secret, {_set_aside(inputs)} and run `provisioner recover "
        f"{inputs.manifest.path}` (keys no copy holds are lost)"
    )


def _set_aside(inputs: Inputs) -> str:
    """How the old escrow is set aside: its folder moved, or (a PostgreSQL state keeps the
    escrow in its schema's `escrow` table) the schema dumped and that table emptied."""
    location = inputs.location
    if location.is_sqlite:
        return f"move {inputs.escrow_dir} aside"
    return (
        f"keep a pg_dump of schema {location.schema} and empty its escrow table "
        '(docs/TEAM.md, "A lost escrow passphrase")'
    )


def _discarding(location: StateLocation) -> Callable[[], None]:
    return lambda: discard_state(location)


def _deleting(blobs: SealedBlobs, name: str) -> Callable[[], None]:
    return lambda: blobs.delete(name)


def _removing_folder(folder: Path) -> Callable[[], None]:
    import shutil

    return lambda: shutil.rmtree(folder, ignore_errors=True)


def _settle_home(inputs: Inputs, db: StateStore, recorded: Recorded, *, create: bool) -> str | None:
    """The state's home is the folder it was made in. Found elsewhere (a copied or moved
    tree), removals are held back (the home returned) until `recover --moved` says it moved.
    A state from before homes were recorded is taken for copied when a declared local
    target's recorded folder is the same path under another root."""
    here = db.home()
    home = recorded.home
    if home is None:
        home = _legacy_home(inputs.manifest, recorded, here)
        if create:
            # Recorded once, what it was found to be: a tree copied before homes were recorded
            # stays a copy once its own folders are recorded (by recover, or an apply there).
            db.set_meta("home", home or here)
    if home is not None and home != here:
        return home
    previous = recorded.previous_home
    if previous is not None and previous != here and holds_state(previous):
        # Re-homed by `recover --moved`, but a state is back in the old home (a copy still in
        # use, a restore there): removals that would reach the old paths stay held back.
        return previous
    return None


def _legacy_home(manifest: Manifest, recorded: Recorded, here: str) -> str | None:
    """The home of a state from before homes were recorded, copied with its tree: the state
    folder at `here`'s place under the original root (that root when the state folder is not
    under the manifest's folder), or None when its local targets are where it recorded them."""
    root = str(manifest.path.resolve().parent)
    for name, spec in sorted(recorded.targets.items()):
        declared = manifest.workstations.get(name) or manifest.locations.get(name)
        if declared is None or not kind_of(declared).on_controller:
            continue
        was = target_from_spec(spec).path
        now = declared.path
        if was == now or not now.startswith(root + os.sep):
            continue
        tail = now[len(root) :]
        if was.endswith(tail):
            original = was[: -len(tail)]
            inside = here.startswith(root + os.sep)
            return original + here[len(root) :] if inside else original
    return None


def check_unit(
    inputs: Inputs,
    db: StateStore | None,
    escrow: Escrow | None,
    recorded: Recorded,
    listing: EscrowListing,
    blobs: SealedBlobs | None = None,
) -> None:
    """Refuse a state and an escrow that are not one unit (invariant 9)."""
    place = blobs if blobs is not None else escrow_blobs(inputs.location)
    folder = place.where()
    recover = f"run `provisioner recover {inputs.manifest.path}` (docs/RECOVERY.md)"
    sealed = listing.sealed
    if not listing.keyring:
        if sealed:
            raise UnitError(
                f"{folder}: keyring.json is missing but {len(sealed)} sealed key file(s) are "
                "there: a new keyring would never open them. Restore keyring.json from the "
                "backup of this state folder; if it is lost for good, move the escrow folder "
                f"aside and {recover} to rebuild it from the copies"
            )
        if recorded.generations:
            raise UnitError(
                f"{folder}: the escrow is missing while the state records "
                f"{counted(len(recorded.generations), 'generation')}; restore it from the backup "
                f"of this state folder, or {recover} to rebuild it from the copies"
            )
        return
    lineage = escrow.lineage if escrow is not None else Escrow.read_lineage(place)
    if db is None or not recorded.lineage:
        if sealed:
            raise UnitError(
                f"{inputs.location}: there is no state, but the escrow holds {len(sealed)} "
                "key(s): the state was lost or moved. Nothing is created over it: point "
                f"--state-dir at the right folder, or {recover} to rebuild the state from "
                "the escrow and the copies"
            )
        return
    if lineage is not None and lineage != recorded.lineage:
        raise UnitError(
            f"{folder}: the escrow belongs to another state (lineage {lineage}; the state "
            f"is {recorded.lineage}): state and escrow must come from the same backup. "
            f"Restore them together, or {recover} to rebuild the state around this escrow"
        )
    known = {g.key_sha256 for g in recorded.generations}
    unknown = sorted(listing.keys - known)
    committed = db.serial() if unknown else 0
    serials = {fp: Escrow.sealed_serial(place, fp) or 0 for fp in unknown}
    # The serial as committed now: a key an apply sealed while this snapshot was read is not
    # newer than the state (plan takes no lock).
    newer = [fp for fp in unknown if serials[fp] > committed]
    if newer:
        # A key sealed by the first apply after a backup carries the backup's serial (it is
        # sealed before its transaction commits, as a crash's leftover is): once the state is
        # known to be older, those count too.
        count = sum(serial >= committed for serial in serials.values())
        raise UnitError(
            f"{folder}: the escrow holds {count} key(s) sealed since this state's last "
            f"change (serial {recorded.serial}) that the state does not know: the state "
            f"is older than its escrow (restored from a backup?). {recover} to take the "
            "newer generations back"
        )
