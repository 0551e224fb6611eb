"""Helpers shared by the end-to-end tests of the reconcile engine."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as ec_keys
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

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


def postgresql_of(manifest: Path) -> tuple[str, str] | None:
    """(DSN, schema) when the manifest keeps its state in PostgreSQL (tests/conftest.py's
    `use_postgresql`: the DSN in a secret file), else None."""
    doc = yaml.safe_load(manifest.read_text())
    state = doc.get("state") or {}
    if state.get("backend") != "postgresql":
        return None
    source = state["dsn"]
    if "env" in source:
        return os.environ[source["env"]], state["schema"]
    return (manifest.parent / source["file"]).read_text().strip(), state["schema"]


@contextlib.contextmanager
def _pg(manifest: Path) -> Any:
    import psycopg

    found = postgresql_of(manifest)
    assert found is not None
    dsn, schema = found
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"'.encode())
        yield conn


def state_rows(manifest: Path, query: str) -> list[tuple[Any, ...]]:
    """The rows of a query of the manifest's state, SQLite or PostgreSQL (the tables and
    columns are the same)."""
    if postgresql_of(manifest) is not None:
        with _pg(manifest) as conn:
            return [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in conn.execute(query.encode()).fetchall()
            ]
    conn = sqlite3.connect(manifest.parent / ".provisioner" / "state.db")
    try:
        return list(conn.execute(query))
    finally:
        conn.close()


def escrow_of(manifest: Path) -> Any:
    """Where the manifest's escrow is, as `Escrow.unlock` takes it: the folder, or the
    PostgreSQL schema's blobs."""
    found = postgresql_of(manifest)
    if found is None:
        return manifest.parent / ".provisioner" / "escrow"
    from provisioner.state.location import StateLocation
    from provisioner.state.pg import PgBlobs

    return PgBlobs(StateLocation("postgresql", manifest.parent, found[0], found[1]))


def escrowed_keys(manifest: Path) -> list[str]:
    """The fingerprints the escrow holds a sealed key for, sorted."""
    if postgresql_of(manifest) is None:
        folder = manifest.parent / ".provisioner" / "escrow"
        return sorted(p.stem for p in folder.glob("*.key"))
    rows = state_rows(manifest, "SELECT name FROM escrow WHERE name LIKE '%.key'")
    return sorted(str(name)[: -len(".key")] for (name,) in rows)


def escrow_blob(manifest: Path, name: str) -> bytes | None:
    """The bytes of one escrow file (keyring.json, FINGERPRINT.key), None when it is gone."""
    if postgresql_of(manifest) is None:
        path = manifest.parent / ".provisioner" / "escrow" / name
        return path.read_bytes() if path.exists() else None
    rows = state_rows(manifest, f"SELECT data FROM escrow WHERE name = '{name}'")
    return bytes(rows[0][0]) if rows else None


def set_escrow_blob(manifest: Path, name: str, data: bytes | None) -> None:
    """What the world does to an escrow file: replace it, or delete it (None). On
    PostgreSQL, as the schema's owner with its triggers off, as an administrator could."""
    if postgresql_of(manifest) is None:
        path = manifest.parent / ".provisioner" / "escrow" / name
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    with _pg(manifest) as conn, conn.transaction():
        conn.execute("ALTER TABLE escrow DISABLE TRIGGER USER")
        conn.execute("DELETE FROM escrow WHERE name = %s", (name,))
        if data is not None:
            conn.execute("INSERT INTO escrow (name, data) VALUES (%s, %s)", (name, data))
        conn.execute("ALTER TABLE escrow ENABLE TRIGGER USER")


def out_of_reach(folder: Path, away: Path) -> None:
    """A target folder made unreachable: moved to `away` and a symlink left in its place, a
    folder this tool refuses to write through (the target cannot be observed)."""
    folder.rename(away)
    folder.symlink_to(away)


def lose_state(manifest: Path) -> None:
    """The state and its escrow lost (the admin host's disk; the database dropped)."""
    found = postgresql_of(manifest)
    if found is None:
        shutil.rmtree(manifest.parent / ".provisioner")
        return
    with _pg(manifest) as conn:
        conn.execute(f'DROP SCHEMA "{found[1]}" CASCADE'.encode())


def backup_state(manifest: Path, dest: Path) -> None:
    """The nightly backup: the state folder copied, or `pg_dump` of the schema."""
    found = postgresql_of(manifest)
    if found is None:
        shutil.copytree(manifest.parent / ".provisioner", dest)
        return
    from tests.pgserver import bindir

    folder = bindir()
    assert folder is not None
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(folder / "pg_dump"), "--dbname", found[0], "-n", found[1], "-Fc", "-f", str(dest)],
        check=True,
        capture_output=True,
    )


def restore_state(manifest: Path, backup: Path) -> None:
    """Put a backup back in place of the state (the schema dropped, then `pg_restore`)."""
    found = postgresql_of(manifest)
    if found is None:
        shutil.rmtree(manifest.parent / ".provisioner", ignore_errors=True)
        shutil.copytree(backup, manifest.parent / ".provisioner")
        return
    from tests.pgserver import bindir

    folder = bindir()
    assert folder is not None
    with _pg(manifest) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{found[1]}" CASCADE'.encode())
    subprocess.run(
        [str(folder / "pg_restore"), "--dbname", found[0], "--no-owner", str(backup)],
        check=True,
        capture_output=True,
    )


def serial(manifest: Path) -> int:
    return int(state_rows(manifest, "SELECT value FROM meta WHERE key = 'serial'")[0][0])


def dated_certificate(
    key: CertificateIssuerPrivateKeyTypes,
    name: str,
    at: dt.datetime,
    days: int = 400,
    key_usage: tuple[str, ...] = (),
    issued_by: str | None = None,
) -> x509.Certificate:
    """A certificate valid from `at` for `days`, dated by the test's own clock (never the wall
    clock: a suite run on any date, or under faketime, makes the same one); `key_usage` names
    the x509.KeyUsage flags set (none: no keyUsage extension). Self-signed, or signed by a
    throwaway authority called `issued_by` (another organisation's CA, say)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer: CertificateIssuerPrivateKeyTypes = key
    issuer = subject
    if issued_by is not None:
        signer = rsa.generate_private_key(65537, 2048)
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issued_by)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(minutes=5))
        .not_valid_after(at + dt.timedelta(days=days))
    )
    if key_usage:
        flags = {flag: flag in key_usage for flag in KEY_USAGE_FLAGS}
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=False)
    return builder.sign(signer, hashes.SHA256())


KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def openssl_p12(
    folder: Path,
    password: str,
    at: dt.datetime,
    name: str = "Ancienne cle",
    days: int = 400,
    legacy: bool = True,
    ec: bool = False,
    key_usage: tuple[str, ...] = (),
    issued_by: str | None = None,
) -> Path:
    """A bi-clé exported by OpenSSL (`openssl pkcs12 -export`), as from a Windows workstation
    (.pfx). Its certificate is valid from `at`, the clock the test pins, for `days`;
    self-signed, or issued by the authority `issued_by` names."""
    key: CertificateIssuerPrivateKeyTypes = (
        ec_keys.generate_private_key(ec_keys.SECP256R1())
        if ec
        else rsa.generate_private_key(65537, 2048)
    )
    cert_obj = dated_certificate(key, name, at, days, key_usage, issued_by)
    key_path, cert, out = folder / "k.pem", folder / "c.pem", folder / "old.pfx"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(cert_obj.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-export",
            *(["-legacy"] if legacy else []),
            "-inkey",
            key_path,
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
    key_path.unlink()
    return out


def record_workers(monkeypatch: pytest.MonkeyPatch, *modules: str) -> list[int | None]:
    """The `max_workers` of every thread pool the named modules start from now on."""
    import importlib
    from concurrent import futures

    workers: list[int | None] = []

    class Pool(futures.ThreadPoolExecutor):
        def __init__(self, max_workers: int | None = None) -> None:
            workers.append(max_workers)
            super().__init__(max_workers)

    for name in modules:
        monkeypatch.setattr(importlib.import_module(name), "ThreadPoolExecutor", Pool)
    return workers
