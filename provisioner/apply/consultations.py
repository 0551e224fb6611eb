"""The consultations: new bindings and news of known ones, recorded in one transaction. A new
binding names the generation the plan found (one that existed before this run), or none: a
key this very run creates is never the key a consultation already in the file was made with.
A binding is definitive: the state's triggers refuse any change of its key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from provisioner.plan.actions import BindConsultation, UpdateConsultation
from provisioner.state.records import RecordedConsultation

if TYPE_CHECKING:
    from provisioner.apply.context import RunContext


def bind(ctx: RunContext, actions: Sequence[BindConsultation | UpdateConsultation]) -> None:
    if not actions:
        return
    with ctx.db.change() as change:
        for action in actions:
            g = ctx.generations.get((action.entity, action.generation))
            rec = ctx.recorded.consultations.get(action.reference)
            if rec is not None and rec.generation_id is not None:
                g = ctx.recorded.generation(rec.generation_id)  # bound by identity
            closed_at = None
            if action.status == "closed":
                closed_at = rec.closed_at if rec and rec.closed_at else ctx.now
            change.put_consultation(
                RecordedConsultation(
                    reference=action.reference,
                    entity=action.entity,
                    key_ref=rec.key_ref if rec else action.key_ref,
                    generation_id=g.id if g else (rec.generation_id if rec else None),
                    cert_sha256=g.cert_sha256 if g else (rec.cert_sha256 if rec else None),
                    title=action.title,
                    status=action.status,
                    deadline=action.deadline,
                    opening=action.opening,
                    bound_at=rec.bound_at if rec else ctx.now,
                    closed_at=closed_at,
                )
            )
            change.audit(
                "consultation-bound"
                if isinstance(action, BindConsultation)
                else "consultation-updated",
                action.entity,
                reference=action.reference,
                key=action.key_ref,
                generation=action.generation,
                status=action.status,
            )
    for action in actions:
        ctx.result.done(action)
