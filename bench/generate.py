"""Synthetic manifests: N entities x W workstations each (local transport), shared locations.

Each entity has its own W workstations (folders) grouped under a group named after it, and
every entity keeps a copy on one of 10 shared locations. Passwords come from one file each
(DEMO ONLY values), the escrow passphrase from an environment variable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.manifests import Manifest

LOCATIONS = 10


def generate(
    folder: Path,
    entities: int,
    workstations: int,
    key_size: int = 2048,
    state: dict[str, Any] | None = None,
) -> Path:
    """The region's manifest in `folder` (its state where `state` says, else SQLite)."""
    folder.mkdir(parents=True, exist_ok=True)
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "shared.pass").write_text("Bench-Only-Password-1!\n")
    m = Manifest(
        escrow={"passphrase": {"env": "BENCH_ESCROW"}},
        defaults={"key": {"size": key_size}, "validity_days": 730, "renew_before_days": 60},
        top={"state": state} if state else {},
    )
    for i in range(LOCATIONS):
        m.location(f"nas{i}", path=f"out/nas{i}")
    for e in range(entities):
        for w in range(workstations):
            m.workstation(f"e{e}-ws{w}", path=f"out/e{e}/ws{w}")
    for e in range(entities):
        m.group(f"g{e}", [f"e{e}-ws{w}" for w in range(workstations)])
    for e in range(entities):
        m.entity(
            f"e{e}",
            name=f"Entity {e}",
            designation=f"Entity {e} {{year}}",
            password={"file": "secrets/shared.pass"},
            shared_locations=[f"nas{e % LOCATIONS}"],
            workstations=[f"g{e}"],
        )
    return m.write(folder / "manifest.yaml")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("entities", type=int)
    parser.add_argument("workstations", type=int)
    args = parser.parse_args()
    print(generate(args.folder, args.entities, args.workstations))
