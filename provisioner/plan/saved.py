"""Saved plans: `plan --out FILE` then `apply FILE`, refused when anything changed since."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner import clock
from provisioner.atomic import write_private
from provisioner.errors import StalePlanError
from provisioner.plan.model import Plan
from provisioner.plan.render import plan_json

FORMAT = "provisioner-plan/1"


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

    @property
    def now(self) -> Any:
        return clock.parse(self.plan["now"])


def write(path: Path, saved: SavedPlan) -> None:
    document = {
        "format": FORMAT,
        "manifest": str(saved.manifest),
        "state_dir": str(saved.state_dir),
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
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and FORMAT.encode() in head


def read(path: Path) -> SavedPlan:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
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
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StalePlanError(f"{path}: unreadable plan file: {exc}") from None


def same_actions(saved: SavedPlan, plan: Plan) -> bool:
    return bool(saved.plan["actions"] == plan_json(plan)["actions"])


def new_salt() -> bytes:
    return os.urandom(16)
