"""What `recover` found, and the recovery plan as a reviewer reads it."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner.crypto import pkcs12
from provisioner.manifest.model import Target
from provisioner.state.records import RecordedCopy, RecordedGeneration
from provisioner.wording import counted


@dataclass(frozen=True)
class FoundCopy:
    """A PKCS#12 found on a target that opens with its entity's password."""

    entity: str
    number: int  # from the file name
    target: Target
    path: str
    sha256: str
    size: int
    bundle: pkcs12.Bundle
    cert_sha256: str
    key_sha256: str
    previous: bool = False  # opened with the previous password only (re-encoded by apply)


@dataclass
class Recovery:
    """What `recover` will record, and what it could not account for."""

    generations: list[RecordedGeneration] = field(default_factory=list)  # new to the state
    statuses: list[tuple[RecordedGeneration, str]] = field(default_factory=list)
    copies: list[RecordedCopy] = field(default_factory=list)
    # Records of retired generations' workstation copies that are gone: an apply the state
    # forgot had removed them.
    dropped: list[RecordedCopy] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=dict)
    escrow_keys: dict[str, tuple[str, rsa.RSAPrivateKey]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    clashes: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # generations no surviving copy holds
    orphans: list[str] = field(default_factory=list)  # escrowed keys with no certificate
    unreachable: list[str] = field(default_factory=list)
    # Shared locations not observed: they hold every generation, so nothing is recorded
    # until they are (a key "lost" there may only be out of sight).
    blocking: list[str] = field(default_factory=list)
    # Why nothing is recorded when it is not a shared location (a tree copied, not moved).
    refusal: str | None = None
    lineage: str | None = None  # the escrow's lineage the state takes back
    # The serial the state moves to, past the newest key the escrow sealed: keys kept in the
    # escrow that no generation uses (an interrupted apply) must not look newer than the state.
    serial: int | None = None
    home: str | None = None

    @property
    def changes(self) -> bool:
        return bool(
            self.generations
            or self.statuses
            or self.copies
            or self.dropped
            or self.escrow_keys
            or self.lineage
            or self.serial is not None
            or self.home
        )


def _out_of_reach(recovery: Recovery) -> list[str]:
    """The copies recover could not read and the targets it could not observe, each said."""
    return [
        *(f"not read: {line}" for line in recovery.unreadable),  # (the reason is in the line)
        *(f"not observed: {line}" for line in dict.fromkeys(recovery.unreachable)),
    ]


def render(recovery: Recovery) -> str:
    """The recovery plan, as a reviewer reads it."""
    if recovery.refusal is not None:
        return f"provisioner recover records nothing:\n  ! {recovery.refusal}"
    if recovery.blocking:
        # Dedicated to the reason nothing is recorded: shared locations out of sight.
        unseen = [f"  ! not observed: {b}" for b in sorted(set(recovery.blocking))]
        # What else the next run would meet, so that one trip brings everything back.
        also = [f"  ! {line}" for line in _out_of_reach(recovery)]
        return "\n".join(
            [
                "provisioner recover records nothing while a shared location is not observed "
                "(they hold every generation: a key not seen there may only be out of sight):",
                *unseen,
                *(["", "Also out of reach (recover reads them too):", *also] if also else []),
                "",
                "Bring it back (mount the share, start the host) and run recover again.",
            ]
        )
    lines: list[str] = []
    if recovery.lineage:
        lines.append(f"  ~ the state takes back the escrow's lineage {recovery.lineage}")
    if recovery.home:
        lines.append(f"  ~ the state's home becomes {recovery.home}")
    if recovery.serial is not None:
        lines.append(
            f"  ~ the state's serial moves past {recovery.serial}, the escrow's newest key "
            "(so that keys it keeps are not taken for a newer state)"
        )
    for g in sorted(recovery.generations, key=lambda g: (g.entity, g.number)):
        lines.append(
            f'  + {g.entity}: generation {g.number} "{g.designation}" ({g.status}), certificate '
            f"sha256:{g.cert_sha256[:16]}, valid until {g.not_after:%Y-%m-%d}"
        )
    for g, status in recovery.statuses:
        lines.append(
            f'  ~ {g.entity}: generation {g.number} "{g.designation}": {g.status} -> {status} '
            "(a newer generation was found on the targets)"
        )
    for key_sha256, (entity, _) in sorted(recovery.escrow_keys.items()):
        lines.append(f"  + {entity}: key sha256:{key_sha256[:16]} back into the escrow")
    for c in sorted(recovery.copies, key=lambda c: (c.entity, c.target, c.path)):
        lines.append(f"  + {c.entity}: copy on {c.target}: {c.path}")
    for c in sorted(recovery.dropped, key=lambda c: (c.entity, c.target, c.path)):
        lines.append(
            f"  - {c.entity}: record of {c.target}: {c.path} (a retired generation's copy, "
            "already removed from the workstation)"
        )
    problems = [
        *(f"lost: {line}" for line in recovery.lost),
        *(f"left as it is: {line}" for line in recovery.clashes),
        *_out_of_reach(recovery),
        *(
            f"the escrow holds key sha256:{k[:16]} that no recorded or recovered generation uses "
            "(an interrupted apply, a generation whose certificate is lost, or a copy left as "
            "it is above): kept in the escrow"
            for k in recovery.orphans
        ),
    ]
    if problems:
        lines.append("")
        lines.append("Not recovered:")
        lines += [f"  ! {p}" for p in problems]
    head = (
        "provisioner recover will record the following:"
        if recovery.changes
        else "Nothing to recover: the state already records every copy found."
    )
    summary = (
        f"Recover: {counted(len(recovery.generations), 'generation')}, "
        f"{counted(len(recovery.copies), 'copy', 'copies')}, "
        f"{counted(len(recovery.escrow_keys), 'key')} back into the escrow; "
        f"{len(recovery.lost)} lost."
    )
    return "\n".join([head, *lines, "", summary])
