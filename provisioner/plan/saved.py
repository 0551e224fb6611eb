"""Saved plans: `plan --out FILE` then `apply FILE`, refused when anything changed since."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner import clock
from provisioner.atomic import write_private
from provisioner.bounded import InputFileError, read_regular
from provisioner.errors import StalePlanError
from provisioner.plan.model import Plan
from provisioner.plan.render import plan_json

FORMAT = "provisioner-plan/1"
# A plan of thousands of actions is a few MB: the bound only keeps a device or a runaway
# file from being read whole.
MAX_PLAN_BYTES = 256 << 20


@dataclass(frozen=True)
class SavedPlan:
    manifest: Path
    state_dir: Path
    lineage: str | None
    serial: int
    salt: bytes
    inputs_sha256: str
    observed_sha256: str
    limit: list[str] | None
    consultations: Path | None
    plan: dict[str, Any]
    state_backend: str | None = None  # the backend it was computed on (None: the manifest's)

    @property
    def now(self) -> Any:
        return clock.parse(self.plan["now"])


def write(path: Path, saved: SavedPlan) -> None:
    document = {
        "format": FORMAT,
        "manifest": str(saved.manifest),
        "state_dir": str(saved.state_dir),
        "state_backend": saved.state_backend,
        "lineage": saved.lineage,
        "serial": saved.serial,
        "salt": saved.salt.hex(),
        "inputs_sha256": saved.inputs_sha256,
        "observed_sha256": saved.observed_sha256,
        "limit": saved.limit,
        "consultations": str(saved.consultations) if saved.consultations else None,
        "plan": saved.plan,
    }
    write_private(path, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode())


def looks_like_plan(path: Path) -> bool:
    """True when `path` is a saved plan rather than a manifest."""
    try:  # a named pipe is not waited on: it is no plan (the manifest reader says what it is)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 512)
    except OSError:
        return False
    finally:
        os.close(fd)
    return head.lstrip().startswith(b"{") and FORMAT.encode() in head


def read(path: Path) -> SavedPlan:
    try:
        d = json.loads(read_regular(path, MAX_PLAN_BYTES).decode("utf-8"))
        if d.get("format") != FORMAT:
            raise StalePlanError(f"{path}: not a plan of this provisioner ({d.get('format')!r})")
        return SavedPlan(
            manifest=Path(d["manifest"]),
            state_dir=Path(d["state_dir"]),
            lineage=d["lineage"],
            serial=int(d["serial"]),
            salt=bytes.fromhex(d["salt"]),
            inputs_sha256=d["inputs_sha256"],
            observed_sha256=d["observed_sha256"],
            limit=d["limit"],
            consultations=Path(d["consultations"]) if d.get("consultations") else None,
            plan=d["plan"],
            state_backend=d.get("state_backend"),
        )
    except (InputFileError, ValueError, KeyError, TypeError) as exc:
        raise StalePlanError(f"{path}: unreadable plan file: {exc}") from None


def same_actions(saved: SavedPlan, plan: Plan) -> bool:
    return bool(saved.plan["actions"] == plan_json(plan)["actions"])


def new_salt() -> bytes:
    return os.urandom(16)
