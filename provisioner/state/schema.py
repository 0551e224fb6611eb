"""The state's SQLite schema: one migration per version (PRAGMA user_version holds the
version reached). The triggers enforce invariants even against a buggy caller: the audit log is
append-only, a binding's entity, key reference and generation never change, a binding's
certificate is its generation's, former designations are never deleted."""

from __future__ import annotations

import sqlite3

# Each entry migrates from version i to i+1; PRAGMA user_version holds the version reached.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE generations (
        id TEXT PRIMARY KEY,
        entity TEXT NOT NULL,
        number INTEGER NOT NULL,
        designation TEXT NOT NULL,
        common_name TEXT NOT NULL,
        issuer TEXT NOT NULL,
        key_size INTEGER NOT NULL,
        subject TEXT NOT NULL,
        certificate BLOB NOT NULL,
        chain BLOB NOT NULL,
        cert_sha256 TEXT NOT NULL,
        key_sha256 TEXT NOT NULL,
        chain_sha256 TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('current', 'retained', 'retired')),
        origin TEXT NOT NULL,
        created_at TEXT NOT NULL,
        retired_at TEXT,
        UNIQUE (entity, number)
    );
    CREATE UNIQUE INDEX one_current ON generations (entity) WHERE status = 'current';
    CREATE TABLE copies (
        target TEXT NOT NULL,
        path TEXT NOT NULL,
        entity TEXT NOT NULL,
        generation TEXT NOT NULL REFERENCES generations (id),
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        profile TEXT NOT NULL,
        password_id TEXT NOT NULL,
        friendly_name TEXT NOT NULL,
        chain_sha256 TEXT NOT NULL,
        written_at TEXT NOT NULL,
        PRIMARY KEY (target, path)
    );
    CREATE TABLE targets (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        entity TEXT,
        detail TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # v2: consultations and their definitive bindings to a key generation.
    """
    CREATE TABLE consultations (
        reference TEXT PRIMARY KEY,
        entity TEXT NOT NULL,
        key_ref TEXT NOT NULL,
        generation TEXT REFERENCES generations (id),
        title TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'opening', 'closed')),
        deadline TEXT,
        opening TEXT,
        bound_at TEXT NOT NULL,
        closed_at TEXT
    );
    CREATE TRIGGER binding_is_definitive BEFORE UPDATE OF entity, key_ref, generation
        ON consultations
        WHEN OLD.entity IS NOT NEW.entity OR OLD.key_ref IS NOT NEW.key_ref
            OR (OLD.generation IS NOT NULL AND OLD.generation IS NOT NEW.generation)
        BEGIN SELECT RAISE(ABORT, 'a consultation binding is definitive'); END;
    CREATE TRIGGER consultations_are_kept BEFORE DELETE ON consultations
        BEGIN SELECT RAISE(ABORT, 'consultations are never deleted from the state'); END;
    """,
    # v3: a binding names its generation by certificate (cert_sha256, checked against the
    # generation); key_ref stays as the file first wrote it. Every designation a generation has
    # had is kept, so a file naming a former one still refers to the same generation.
    """
    CREATE TABLE designations (
        generation TEXT NOT NULL REFERENCES generations (id),
        designation TEXT NOT NULL,
        since TEXT NOT NULL,
        PRIMARY KEY (generation, designation)
    );
    INSERT INTO designations (generation, designation, since)
        SELECT id, designation, created_at FROM generations;
    CREATE TRIGGER designations_are_kept BEFORE DELETE ON designations
        BEGIN SELECT RAISE(ABORT, 'the designation history is kept'); END;
    ALTER TABLE consultations ADD COLUMN cert_sha256 TEXT;
    UPDATE consultations SET cert_sha256 =
        (SELECT g.cert_sha256 FROM generations g WHERE g.id = consultations.generation);
    DROP TRIGGER binding_is_definitive;
    CREATE TRIGGER binding_is_definitive BEFORE UPDATE OF entity, key_ref, generation, cert_sha256
        ON consultations
        WHEN OLD.entity IS NOT NEW.entity OR OLD.key_ref IS NOT NEW.key_ref
            OR (OLD.generation IS NOT NULL AND OLD.generation IS NOT NEW.generation)
            OR (OLD.cert_sha256 IS NOT NULL AND OLD.cert_sha256 IS NOT NEW.cert_sha256)
        BEGIN SELECT RAISE(ABORT, 'a consultation binding is definitive'); END;
    CREATE TRIGGER binding_names_its_certificate_on_insert BEFORE INSERT ON consultations
        WHEN NEW.generation IS NOT NULL AND NEW.cert_sha256 IS NOT
            (SELECT cert_sha256 FROM generations WHERE id = NEW.generation)
        BEGIN SELECT RAISE(ABORT, 'a binding names its generation by certificate'); END;
    CREATE TRIGGER binding_names_its_certificate BEFORE UPDATE ON consultations
        WHEN NEW.generation IS NOT NULL AND NEW.cert_sha256 IS NOT
            (SELECT cert_sha256 FROM generations WHERE id = NEW.generation)
        BEGIN SELECT RAISE(ABORT, 'a binding names its generation by certificate'); END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                out.append(buffer.strip())
            buffer = ""
    return out
