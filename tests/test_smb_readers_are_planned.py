"""An SMB copy is checked by who its ACL lets read it, not by a mode: anyone but the tool's
account (the file's owner) and the declared readers group is a reason to set the ACL back,
and so is a declared group that may not read it. A table of observed ACLs through the pure
planner, read as `plan` prints the line (no server needed: tests/test_smb.py runs a real one,
outside the mutation run)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from provisioner.manifest.model import Manifest, SecretRef, SmbSpec, Target
from provisioner.plan.model import Desired, Observed
from provisioner.plan.planner import plan
from provisioner.plan.render import render_plan
from provisioner.state.records import Recorded
from provisioner.transports.base import FileFacts
from tests.test_planner import LOC, NOW, WS1, copy, entity, generation

OWNER = "S-1-5-21-1-2-3-1001"  # the tool's account
GROUP = "S-1-5-21-1-2-3-513"  # Domain Users, declared as the readers
SHARE = Target(
    "partage",
    "location",
    "/cles",
    LOC,
    SmbSpec(host="nas", user="svc", share="cles", password=None, readers=GROUP),
)
LINE = "~ rewrite g1 on partage: /cles/ville.g1.p12  [permissions] "


def planned_line(target: Target, facts: FileFacts | None) -> str | None:
    """The plan's line for the SMB copy of generation 1 observed with `facts`, or None."""
    manifest = Manifest(
        Path("/m.yaml"),
        Path("/"),
        SecretRef("env", "E", Path("/"), LOC),
        {},
        {"ws1": WS1},
        {},
        {target.name: target},
        (entity(shared_locations=(target,)),),
        None,
    )
    on_share, on_ws = copy(target), copy(WS1)
    result = plan(
        Desired(manifest, {"ville": "pw1"}),
        Recorded("lineage", 3, (generation(),), {(c.target, c.path): c for c in (on_share, on_ws)}),
        Observed(
            {
                (on_share.target, on_share.path): facts,
                (on_ws.target, on_ws.path): FileFacts(on_ws.size, on_ws.sha256, 0o600),
            }
        ),
        NOW,
    )
    lines = [line.strip() for line in render_plan(result).splitlines()]
    found = [line for line in lines if line.startswith(("+", "~", "-", "!"))]
    assert len(found) <= 1, found
    return found[0] if found else None


def acl(*readers: str, owner: str = OWNER) -> FileFacts:
    record = copy(SHARE)
    return FileFacts(record.size, record.sha256, 0o777, owner=owner, readers=readers)


NO_GROUP = replace(SHARE, spec=replace(SHARE.spec_of(SmbSpec), readers=None))


@pytest.mark.parametrize(
    ("target", "facts", "expected"),
    [
        pytest.param(SHARE, acl(OWNER, GROUP), None, id="owner and the readers group: as set"),
        pytest.param(
            SHARE,
            acl(OWNER, "S-1-1-0", GROUP),
            "readable by S-1-1-0 (Everyone): ACL set back to the tool's account and "
            "S-1-5-21-1-2-3-513 (Domain Users)",
            id="Everyone may read it",
        ),
        pytest.param(
            NO_GROUP,
            acl(OWNER, "S-1-5-11", "S-1-22-2-1000"),
            "readable by S-1-5-11 (Authenticated Users), S-1-22-2-1000 (Unix group 1000): ACL "
            "set back to the tool's account alone",
            id="no readers declared: two others may read it",
        ),
        pytest.param(
            SHARE,
            acl(OWNER),
            "S-1-5-21-1-2-3-513 (Domain Users) (readers) may not read it: ACL set to let it",
            id="the declared group was added after the copy was written",
        ),
        pytest.param(
            SHARE, acl(GROUP, owner=GROUP), None, id="the readers group owns it: nothing to add"
        ),
        pytest.param(NO_GROUP, acl(OWNER), None, id="no readers declared: the owner alone"),
        pytest.param(
            SHARE,
            FileFacts(copy(SHARE).size, copy(SHARE).sha256, 0o777),
            None,
            id="no security descriptor from the server: nothing to compare",
        ),
    ],
)
def test_an_smb_copy_is_rewritten_when_its_acl_lets_others_read_it(
    target: Target, facts: FileFacts, expected: str | None
) -> None:
    line = planned_line(target, facts)
    if expected is None:
        assert line is None
    else:
        assert line == LINE + expected


def test_a_missing_smb_copy_is_written_again_not_judged_by_its_acl() -> None:
    assert planned_line(SHARE, None) == (
        "+ write g1 on partage: /cles/ville.g1.p12  [missing] no file there"
    )
