"""Helpers shared by the end-to-end tests of the reconcile engine."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from tests.conftest import EXAMPLES

PASSWORDS = {
    entity: (EXAMPLES / "secrets" / f"{entity}.pass").read_text().strip()
    for entity in ("commune-exemple", "syndicat-eaux")
}
ESCROW_PASSPHRASE = (EXAMPLES / "secrets" / "escrow.pass").read_text().strip()
DESIGNATIONS = {"commune-exemple": "Commune Exemple", "syndicat-eaux": "Syndicat Eaux Val"}


def p12_files(manifest: Path) -> dict[str, Path]:
    """Every PKCS#12 under the quickstart's demo-out folder, by path relative to it."""
    root = manifest.parent / "demo-out"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*.p12"))}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def state_rows(manifest: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(manifest.parent / ".provisioner" / "state.db")
    try:
        return list(conn.execute(query))
    finally:
        conn.close()


def serial(manifest: Path) -> int:
    return int(state_rows(manifest, "SELECT value FROM meta WHERE key = 'serial'")[0][0])
