"""Synthetic manifests: N entities x W workstations each (local transport), shared locations.

Each entity has its own W workstations (folders) grouped under a group named after it, and
every entity keeps a copy on one of 10 shared locations. Passwords come from one file each
(DEMO ONLY values), the escrow passphrase from an environment variable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LOCATIONS = 10


def generate(folder: Path, entities: int, workstations: int, key_size: int = 2048) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "shared.pass").write_text("Bench-Only-Password-1!\n")
    lines = [
        "version: 1",
        f"defaults: {{key: {{size: {key_size}}}, validity_days: 730, renew_before_days: 60}}",
        "escrow: {passphrase: {env: BENCH_ESCROW}}",
        "inventory:",
        "  locations:",
    ]
    lines += [
        f"    - {{name: nas{i}, transport: local, path: out/nas{i}}}" for i in range(LOCATIONS)
    ]
    lines.append("  workstations:")
    for e in range(entities):
        for w in range(workstations):
            lines.append(f"    - {{name: e{e}-ws{w}, transport: local, path: out/e{e}/ws{w}}}")
    lines.append("  groups:")
    for e in range(entities):
        members = ", ".join(f"e{e}-ws{w}" for w in range(workstations))
        lines.append(f"    g{e}: [{members}]")
    lines.append("entities:")
    for e in range(entities):
        lines += [
            f"  - id: e{e}",
            f"    name: Entity {e}",
            f'    key: {{designation: "Entity {e} {{year}}"}}',
            "    password: {file: secrets/shared.pass}",
            f"    shared_locations: [nas{e % LOCATIONS}]",
            f"    workstations: [g{e}]",
        ]
    path = folder / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("entities", type=int)
    parser.add_argument("workstations", type=int)
    args = parser.parse_args()
    print(generate(args.folder, args.entities, args.workstations))
