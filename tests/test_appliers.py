"""Each applier of apply/ on its own, without the CLI: a real state, escrow and local target
folders (the quickstart), one step given the actions it applies, and what it leaves behind
read from the files, the state and the escrow."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from provisioner import clock
from provisioner.apply import consultations, copies, folders, generations
from provisioner.apply.context import RunContext
from provisioner.apply.executor import STEPS
from provisioner.crypto import certificates, pkcs12
from provisioner.crypto.keys import certificate_fingerprint, generate_key, public_key_fingerprint
from provisioner.engine import Session, load_inputs, make_plan, observe, open_state
from provisioner.plan.actions import (
    ACTION_KINDS,
    BindConsultation,
    ClearLeftover,
    Conflict,
    CreateGeneration,
    ReasonCode,
    RemoveCopy,
    SecureFolder,
    WriteCopy,
)
from provisioner.plan.model import Plan
from provisioner.transports.base import Leftover
from tests.engine_helpers import PASSWORDS, state_rows


@pytest.fixture
def session(quickstart: Path) -> Iterator[Session]:
    with open_state(load_inputs(quickstart, None), create=True) as session:
        yield session


def context(session: Session, plan: Plan) -> RunContext:
    assert session.db is not None and session.escrow is not None
    return RunContext(
        desired=session.desired(),
        recorded=session.recorded,
        db=session.db,
        escrow=session.escrow,
        passwords=session.passwords,
        plan=plan,
        now=clock.now(),
        pool=session.pool,
    )


def first_plan(session: Session) -> Plan:
    return make_plan(session, observe(session), clock.now())


def test_every_action_kind_has_one_applier_except_conflicts() -> None:
    covered = [kind for step in STEPS for kind in step.kinds]
    assert len(covered) == len(set(covered))
    assert set(covered) | {Conflict} == set(ACTION_KINDS)


def test_create_records_the_plans_designation_and_names_not_recomputed(
    session: Session, quickstart: Path
) -> None:
    plan = first_plan(session)
    create = next(
        a for a in plan.actions if isinstance(a, CreateGeneration) and a.entity == "commune-exemple"
    )
    # What the reviewer read is what is made: a designation and CN no template would give.
    reviewed = replace(create, designation="Nom revu", common_name="CN revu")
    ctx = context(session, replace(plan, actions=(reviewed,)))
    generations.create(ctx, [reviewed])
    ctx.workers.close()
    assert [o.ok for o in ctx.result.outcomes] == [True]
    (g,) = ctx.result.created
    assert (g.designation, g.common_name, g.number) == ("Nom revu", "CN revu", 1)
    assert state_rows(quickstart, "SELECT designation, common_name FROM generations") == [
        ("Nom revu", "CN revu")
    ]
    assert session.escrow is not None
    assert public_key_fingerprint(session.escrow.get(g.key_sha256)) == g.key_sha256
    assert not list((quickstart.parent / "demo-out").rglob("*.p12"))  # no copy was planned


def test_writes_then_removal_kept_where_a_write_failed(session: Session, quickstart: Path) -> None:
    plan = first_plan(session)
    ctx = context(session, plan)
    creates = [a for a in plan.actions if isinstance(a, CreateGeneration)]
    writes = [a for a in plan.actions if isinstance(a, WriteCopy)]
    generations.create(ctx, creates)
    copies.write(ctx, writes)
    ctx.workers.close()
    ctx.copies.close()
    assert all(o.ok for o in ctx.result.outcomes)
    copy = next(w for w in writes if w.entity == "commune-exemple" and w.role == "workstation")
    data = Path(copy.path).read_bytes()
    bundle = pkcs12.decode(data, PASSWORDS["commune-exemple"])
    assert bundle.friendly_name == "Commune Exemple"
    assert stat.S_IMODE(os.stat(copy.path).st_mode) == 0o600
    # A removal on a target where a write of that entity failed is kept, file and record.
    ctx.failed_targets.add((copy.entity, copy.target))
    removal = RemoveCopy(
        entity=copy.entity,
        generation=copy.generation,
        reason=ReasonCode.DECOMMISSIONED,
        message="test",
        target=copy.target,
        path=copy.path,
        observed_sha256=hashlib.sha256(data).hexdigest(),
    )
    copies.remove(ctx, [removal])
    assert ctx.result.outcomes[-1].ok is False
    assert "replacement copy did not land" in (ctx.result.outcomes[-1].error or "")
    assert Path(copy.path).read_bytes() == data
    # A file that is no longer what the plan observed (another target's copy written to the
    # same place by this run, or anyone's since) is kept, file and record.
    ctx.failed_targets.clear()
    copies.remove(ctx, [replace(removal, observed_sha256=hashlib.sha256(b"before").hexdigest())])
    assert ctx.result.outcomes[-1].ok is False
    assert ctx.result.outcomes[-1].error == (
        f"{copy.target}: kept {copy.path}: it changed since the plan observed it (another "
        "target's copy written there, or someone's file): not this state's to remove"
    )
    assert Path(copy.path).read_bytes() == data
    # Elsewhere it goes, file and record.
    ctx.failed_targets.clear()
    copies.remove(ctx, [removal])
    assert ctx.result.outcomes[-1].ok is True
    assert not Path(copy.path).exists()
    assert (copy.target, copy.path) not in {
        (t, p) for t, p in state_rows(quickstart, "SELECT target, path FROM copies")
    }


def test_bind_records_the_plans_dates_as_given(session: Session, quickstart: Path) -> None:
    deadline = dt.datetime(2031, 3, 14, 12, 0, tzinfo=clock.PARIS)
    action = BindConsultation(
        entity="commune-exemple",
        generation=0,
        reason=ReasonCode.NEW_BINDING,
        message="test",
        reference="2031-007",
        title="Voirie",
        key_ref="designation:Clé non gérée",
        status="open",
        deadline=deadline,
        opening=None,
    )
    ctx = context(session, Plan(clock.now(), (action,), (), (), ()))
    consultations.bind(ctx, [action])
    assert state_rows(
        quickstart, "SELECT reference, key_ref, deadline, generation FROM consultations"
    ) == [("2031-007", "designation:Clé non gérée", "2031-03-14T12:00:00+01:00", None)]


def test_folders_secured_and_leftover_put_back(session: Session, tmp_path: Path) -> None:
    folder = tmp_path / "demo-out" / "workstations" / "ws-accueil"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    aside = folder / "commune-exemple.g1.p12.old-0123abcd"
    aside.write_bytes(b"previous copy")
    secure = SecureFolder(
        entity="",
        generation=0,
        reason=ReasonCode.FOLDER_PERMISSIONS,
        message="test",
        target="ws-accueil",
        path=str(folder),
    )
    clear = ClearLeftover(
        entity="",
        generation=0,
        reason=ReasonCode.LEFTOVER,
        message="test",
        target="ws-accueil",
        path=str(aside),
        folder=str(folder),
        leftover=Leftover(aside.name, "commune-exemple.g1.p12", True, False),
    )
    ctx = context(session, Plan(clock.now(), (secure, clear), (), (), ()))
    folders.secure_and_clear(ctx, [secure, clear])
    assert [o.ok for o in ctx.result.outcomes] == [True, True]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not aside.exists()
    assert (folder / "commune-exemple.g1.p12").read_bytes() == b"previous copy"


def test_generation_from_certificate_takes_names_dates_and_fingerprints_from_it() -> None:
    key = generate_key(2048)
    now = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    cert = certificates.build_certificate(
        key, certificates.CertificateSpec("Ville CN", 365, "Org", None, "FR"), now
    )
    g = generations.generation_from_certificate(
        cert,
        (),
        entity="ville",
        number=3,
        designation="Ville",
        issuer="self-signed",
        key_sha256=public_key_fingerprint(key),
        status="retained",
        origin="adopted",
        created_at=now,
    )
    assert (g.common_name, g.subject, g.key_size) == ("Ville CN", ("Org", None, "FR"), 2048)
    assert g.cert_sha256 == certificate_fingerprint(cert)
    assert (g.not_before, g.not_after) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    assert g.chain == b"" and g.chain_sha256 == certificates.chain_digest(())
