"""The ordered chains of named checks that decide what the planner does.

Like cert-manager's issuance policies: each check is a small pure function returning a Reason
when it fires, or None; the first that fires decides, and its reason code travels to the plan
output and the JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from provisioner.manifest.model import Entity, Target
from provisioner.manifest.transport_kinds import kind_of
from provisioner.plan.actions import Reason, ReasonCode
from provisioner.plan.model import Foreign
from provisioner.state.records import RecordedCopy, RecordedGeneration
from provisioner.transports.base import FileFacts, sid_name
from provisioner.wording import counted

ContextT = TypeVar("ContextT")

# ---------------------------------------------------------------- generation checks


@dataclass(frozen=True)
class GenerationContext:
    entity: Entity
    current: RecordedGeneration | None
    now: dt.datetime


def no_generation(ctx: GenerationContext) -> Reason | None:
    if ctx.current is None:
        return Reason(ReasonCode.MISSING, "no bi-clé yet: create the first generation")
    return None


def expired(ctx: GenerationContext) -> Reason | None:
    g = ctx.current
    if g is not None and ctx.now >= g.not_after:
        return Reason(
            ReasonCode.EXPIRED, f"generation {g.number} expired on {g.not_after:%Y-%m-%d}"
        )
    return None


def renewal_due(ctx: GenerationContext) -> Reason | None:
    g = ctx.current
    if g is None:
        return None
    due = ctx.entity.key.renewal_date(g.not_after)
    if ctx.now >= due:
        days = (g.not_after - ctx.now).days
        return Reason(
            ReasonCode.RENEWAL_DUE,
            f"generation {g.number} expires on {g.not_after:%Y-%m-%d} "
            f"({counted(days, 'day')} left), inside the {ctx.entity.key.renew_before_days}-day "
            "renewal window",
        )
    return None


def spec_changed(ctx: GenerationContext) -> Reason | None:
    g = ctx.current
    if g is None or g.origin == "adopted":
        return None  # an adopted key is what the platform knows; it is renewed when it expires
    spec = ctx.entity.key
    changes = []
    if g.key_size != spec.size:
        changes.append(f"key size {g.key_size} -> {spec.size}")
    if g.issuer != spec.issuer:
        changes.append(f"issuer {g.issuer} -> {spec.issuer}")
    wanted_cn = spec.common_name_for(g.number, g.created_at.year)
    # A CN that only follows the designation does not force a new key: the designation is a
    # name, changed by renaming the generation; the next generation carries the new CN.
    # A common_name written as the certificate has it (the generation's " (n)" included) is
    # that certificate's name, not a change.
    literal = (spec.common_name or "").replace("{n}", str(g.number))
    literal = literal.replace("{year}", str(g.created_at.year))
    if spec.common_name is not None and g.common_name not in (wanted_cn, literal):
        changes.append(f"common name {g.common_name!r} -> {wanted_cn!r}")
    subject = (spec.subject.organization, spec.subject.organizational_unit, spec.subject.country)
    if tuple(g.subject) != subject:
        changes.append("subject O/OU/C changed")
    if changes:
        return Reason(
            ReasonCode.SPEC_CHANGED,
            "the manifest asks for a different certificate: "
            + "; ".join(changes)
            + " (forces a new generation)",
        )
    return None


GENERATION_CHECKS: tuple[Callable[[GenerationContext], Reason | None], ...] = (
    no_generation,
    expired,
    renewal_due,
    spec_changed,
)

# ---------------------------------------------------------------- copy checks


@dataclass(frozen=True)
class CopyContext:
    target: Target
    path: str
    generation: RecordedGeneration
    observed: FileFacts | None
    recorded: RecordedCopy | None
    profile: str
    password_id: str | None
    friendly_name: str
    foreign: Foreign | None = None  # what the file holds, when the state did not write it
    # The password's source changed since the last apply read it, and this command reads no
    # password (status, check): the copy may need re-encoding, as `plan` would tell.
    source_changed: bool = False


def _not_ours(ctx: CopyContext, what: str) -> Reason:
    inside = ctx.foreign.describe() if ctx.foreign is not None else "content unknown"
    return Reason(ReasonCode.CONFLICT, f"{what} ({inside}): left as it is")


def missing(ctx: CopyContext) -> Reason | None:
    if ctx.observed is None:
        return Reason(ReasonCode.MISSING, "no file there")
    return None


def not_a_file(ctx: CopyContext) -> Reason | None:
    if ctx.observed is not None and ctx.observed.symlink:
        return Reason(
            ReasonCode.CONFLICT,
            "a symlink or special file stands where the copy belongs: left as it is",
        )
    return None


def holds_known_key(f: Foreign | None, key_sha256: str) -> bool:
    """Replacing the file loses nothing: it is a copy this state wrote elsewhere, or holds
    the key `key_sha256`, or the key of another generation this state records."""
    if f is None:
        return False
    return f.written_here or (
        f.readable and (f.key_sha256 == key_sha256 or (f.known and f.escrowed))
    )


def changed_but_ours(
    f: Foreign | None, observed: FileFacts, record: RecordedCopy, key_sha256: str
) -> bool:
    """A recorded copy whose bytes changed may still be replaced or removed when no key can be
    lost by it: not a PKCS#12 any more, damaged in place (the size it was written with, and it
    no longer opens with the password it was written with), a copy this state wrote, or
    holding a key this state keeps. After a password change a file that does not open with
    the new password may be anybody's key under the old one: not taken for damaged."""
    if f is None or not f.pkcs12:
        return True
    if (
        f.tried_with == record.password_id  # tried, with the password it was written with
        and not f.readable
        and f.refused is None
        and observed.size == record.size
    ):
        return True
    return holds_known_key(f, key_sha256)


def unrecorded(ctx: CopyContext) -> Reason | None:
    if ctx.recorded is not None:
        return None
    if holds_known_key(ctx.foreign, ctx.generation.key_sha256):
        assert ctx.foreign is not None
        return Reason(
            ReasonCode.UNRECORDED,
            f"the state has no record of writing this file ({ctx.foreign.describe()}): "
            "replaced, no key is lost",
        )
    return _not_ours(ctx, "a file this state did not write is there")


def drifted(ctx: CopyContext) -> Reason | None:
    r = ctx.recorded
    if r is not None and ctx.observed is not None and ctx.observed.sha256 != r.sha256:
        # Changed since it was written: repaired only when no key can be lost by it: not a
        # PKCS#12 any more, or damaged in place (the size it was written with, and it no longer
        # opens), or holding a key this state keeps. Anything else may be someone's key.
        if not changed_but_ours(ctx.foreign, ctx.observed, r, ctx.generation.key_sha256):
            return _not_ours(ctx, "the file was replaced since it was written")
        return Reason(
            ReasonCode.DRIFTED,
            f"content differs from what was written on {r.written_at:%Y-%m-%d %H:%M}",
        )
    if r is not None and r.generation_id != ctx.generation.id:
        return Reason(ReasonCode.DRIFTED, "holds another generation's key")
    return None


def permissions(ctx: CopyContext) -> Reason | None:
    kind = kind_of(ctx.target)
    if kind.access_by_acl:
        return acl_readers(ctx)
    # Windows OpenSSH reports synthetic modes; only POSIX targets are compared.
    posix = kind.posix_modes(ctx.path)
    if posix and ctx.observed is not None and ctx.observed.mode_fixed:
        return None  # the filesystem fixes the mode (a CIFS mount): one warning per target
    if posix and ctx.observed is not None and ctx.observed.mode & 0o077:
        return Reason(
            ReasonCode.PERMISSIONS, f"mode {ctx.observed.mode:04o} lets others read the key"
        )
    return None


def acl_readers(ctx: CopyContext) -> Reason | None:
    """SMB: anyone but the file's owner (the tool's account) and the declared readers group
    that the file's ACL lets read it."""
    o = ctx.observed
    if o is None:
        return None
    group = kind_of(ctx.target).readers(ctx.target)
    others = [sid for sid in o.readers if sid not in (o.owner, group)]
    if others:
        wanted = (
            f"the tool's account and {sid_name(group)}" if group else "the tool's account alone"
        )
        readers = ", ".join(sid_name(s) for s in others)
        return Reason(ReasonCode.PERMISSIONS, f"readable by {readers}: ACL set back to {wanted}")
    if group and o.readers and group not in o.readers and group != o.owner:
        return Reason(
            ReasonCode.PERMISSIONS,
            f"{sid_name(group)} (readers) may not read it: ACL set to let it",
        )
    return None


def password_changed(ctx: CopyContext) -> Reason | None:
    r = ctx.recorded
    if r is not None and ctx.password_id is not None and r.password_id != ctx.password_id:
        return Reason(
            ReasonCode.PASSWORD_CHANGED, "the entity's password changed (same key, re-encoded)"
        )
    if r is not None and ctx.password_id is None and ctx.source_changed:
        return Reason(
            ReasonCode.PASSWORD_CHANGED,
            "the entity's password file changed since the last apply read it: the copy is "
            "re-encoded with the same key if the password changed (`plan` reads it and says)",
        )
    return None


def profile_changed(ctx: CopyContext) -> Reason | None:
    r = ctx.recorded
    if r is not None and r.profile != ctx.profile:
        return Reason(
            ReasonCode.PROFILE_CHANGED,
            f"PKCS#12 profile {r.profile} -> {ctx.profile} (same key, re-encoded)",
        )
    return None


def friendly_name_changed(ctx: CopyContext) -> Reason | None:
    r = ctx.recorded
    if r is not None and r.friendly_name != ctx.friendly_name:
        return Reason(
            ReasonCode.FRIENDLY_NAME_CHANGED,
            f"friendly name {r.friendly_name!r} -> {ctx.friendly_name!r}",
        )
    return None


def chain_changed(ctx: CopyContext) -> Reason | None:
    r = ctx.recorded
    if r is not None and r.chain_sha256 != ctx.generation.chain_sha256:
        return Reason(ReasonCode.CHAIN_CHANGED, "the issuer chain changed (same key, re-encoded)")
    return None


COPY_CHECKS: tuple[Callable[[CopyContext], Reason | None], ...] = (
    missing,
    not_a_file,
    unrecorded,
    drifted,
    permissions,
    password_changed,
    profile_changed,
    friendly_name_changed,
    chain_changed,
)


def first_reason(
    checks: tuple[Callable[[ContextT], Reason | None], ...], ctx: ContextT
) -> Reason | None:
    """The reason of the first check that fires, or None when all pass."""
    for check in checks:
        reason = check(ctx)
        if reason is not None:
            return reason
    return None
