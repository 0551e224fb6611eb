"""Helpers shared by the end-to-end tests of the reconcile engine."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from pathlib import Path

from provisioner.crypto import pkcs12
from provisioner.crypto.keys import public_key_fingerprint
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


def key_fingerprints(manifest: Path) -> dict[str, str]:
    """The public-key fingerprint inside every copy, opened with its entity's password."""
    out = {}
    for rel, path in p12_files(manifest).items():
        entity = rel.rsplit("/", 1)[1].split(".")[0]
        out[rel] = public_key_fingerprint(pkcs12.decode(path.read_bytes(), PASSWORDS[entity]).key)
    return out


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


def openssl_p12(
    folder: Path,
    password: str,
    name: str = "Ancienne cle",
    days: int = 400,
    legacy: bool = True,
    newkey: str = "rsa:2048",
    extensions: tuple[str, ...] = (),
) -> Path:
    """A bi-clé made by OpenSSL, as exported from a Windows workstation (.pfx); `extensions`
    are `-addext` values (e.g. `keyUsage=digitalSignature`)."""
    key, cert, out = folder / "k.pem", folder / "c.pem", folder / "old.pfx"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            *(arg for ext in extensions for arg in ("-addext", ext)),
            "-newkey",
            newkey,
            "-nodes",
            "-days",
            str(days),
            "-subj",
            f"/CN={name}",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-export",
            *(["-legacy"] if legacy else []),
            "-inkey",
            key,
            "-in",
            cert,
            "-name",
            name,
            "-out",
            out,
            "-passout",
            f"pass:{password}",
        ],
        check=True,
        capture_output=True,
    )
    key.unlink()
    return out
