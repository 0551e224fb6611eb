"""The PostgreSQL state's schema: one migration per version, each applied in one transaction
(PostgreSQL's DDL is transactional: a migration interrupted leaves the version before it) and
recorded in `schema_migrations`.

Version 1 holds what the SQLite state holds at its version 3 (state/schema.py), in the same
columns and the same text formats (dates are the same ISO strings), plus the escrow's blobs,
so that a state migrated from one backend to the other reads back identical: every text
column sorts and compares byte by byte (COLLATE "C"), as SQLite's do, whatever the database's
locale. The invariants
the SQLite triggers enforce are triggers here too, and escrowed keys cannot be deleted."""

from __future__ import annotations

# Each entry migrates from version i to i+1. Statements are separated by a line holding `;;`
# (function bodies hold semicolons).
MIGRATIONS: tuple[str, ...] = (
    r"""
    CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text COLLATE "C" NOT NULL)
    ;;
    CREATE TABLE generations (
        id text COLLATE "C" PRIMARY KEY,
        entity text COLLATE "C" NOT NULL,
        number integer NOT NULL,
        designation text COLLATE "C" NOT NULL,
        common_name text COLLATE "C" NOT NULL,
        issuer text COLLATE "C" NOT NULL,
        key_size integer NOT NULL,
        subject text COLLATE "C" NOT NULL,
        certificate bytea NOT NULL,
        chain bytea NOT NULL,
        cert_sha256 text COLLATE "C" NOT NULL,
        key_sha256 text COLLATE "C" NOT NULL,
        chain_sha256 text COLLATE "C" NOT NULL,
        not_before text COLLATE "C" NOT NULL,
        not_after text COLLATE "C" NOT NULL,
        status text COLLATE "C" NOT NULL CHECK (status IN ('current', 'retained', 'retired')),
        origin text COLLATE "C" NOT NULL,
        created_at text COLLATE "C" NOT NULL,
        retired_at text COLLATE "C",
        UNIQUE (entity, number)
    )
    ;;
    CREATE UNIQUE INDEX one_current ON generations (entity) WHERE status = 'current'
    ;;
    CREATE TABLE copies (
        target text COLLATE "C" NOT NULL,
        path text COLLATE "C" NOT NULL,
        entity text COLLATE "C" NOT NULL,
        generation text COLLATE "C" NOT NULL REFERENCES generations (id),
        sha256 text COLLATE "C" NOT NULL,
        size bigint NOT NULL,
        profile text COLLATE "C" NOT NULL,
        password_id text COLLATE "C" NOT NULL,
        friendly_name text COLLATE "C" NOT NULL,
        chain_sha256 text COLLATE "C" NOT NULL,
        written_at text COLLATE "C" NOT NULL,
        PRIMARY KEY (target, path)
    )
    ;;
    CREATE TABLE targets (name text COLLATE "C" PRIMARY KEY, spec text COLLATE "C" NOT NULL)
    ;;
    CREATE TABLE audit (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at text COLLATE "C" NOT NULL,
        actor text COLLATE "C" NOT NULL,
        action text COLLATE "C" NOT NULL,
        entity text COLLATE "C",
        detail text COLLATE "C" NOT NULL
    )
    ;;
    CREATE TABLE consultations (
        reference text COLLATE "C" PRIMARY KEY,
        entity text COLLATE "C" NOT NULL,
        key_ref text COLLATE "C" NOT NULL,
        generation text COLLATE "C" REFERENCES generations (id),
        title text COLLATE "C" NOT NULL,
        status text COLLATE "C" NOT NULL CHECK (status IN ('open', 'opening', 'closed')),
        deadline text COLLATE "C",
        opening text COLLATE "C",
        bound_at text COLLATE "C" NOT NULL,
        closed_at text COLLATE "C",
        cert_sha256 text COLLATE "C"
    )
    ;;
    CREATE TABLE designations (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        generation text COLLATE "C" NOT NULL REFERENCES generations (id),
        designation text COLLATE "C" NOT NULL,
        since text COLLATE "C" NOT NULL,
        PRIMARY KEY (generation, designation)
    )
    ;;
    CREATE TABLE escrow (
        name text COLLATE "C" PRIMARY KEY
            CHECK (name = 'keyring.json' OR (name LIKE '%.key' AND length(name) <= 255)),
        data bytea NOT NULL CHECK (octet_length(data) <= 65536)
    )
    ;;
    CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
    END
    $$
    ;;
    CREATE TRIGGER audit_is_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION refuse('the audit log is append-only')
    ;;
    CREATE TRIGGER audit_is_never_truncated BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION refuse('the audit log is append-only')
    ;;
    CREATE TRIGGER consultations_are_kept BEFORE DELETE ON consultations
        FOR EACH ROW EXECUTE FUNCTION refuse('consultations are never deleted from the state')
    ;;
    CREATE TRIGGER consultations_are_never_truncated BEFORE TRUNCATE ON consultations
        FOR EACH STATEMENT EXECUTE FUNCTION refuse('consultations are never deleted from the state')
    ;;
    CREATE TRIGGER designations_are_kept BEFORE DELETE ON designations
        FOR EACH ROW EXECUTE FUNCTION refuse('the designation history is kept')
    ;;
    CREATE TRIGGER designations_are_never_truncated BEFORE TRUNCATE ON designations
        FOR EACH STATEMENT EXECUTE FUNCTION refuse('the designation history is kept')
    ;;
    CREATE TRIGGER escrowed_keys_are_kept BEFORE DELETE ON escrow
        FOR EACH ROW WHEN (OLD.name <> 'keyring.json')
        EXECUTE FUNCTION refuse('escrowed keys are never deleted')
    ;;
    CREATE TRIGGER escrow_is_never_truncated BEFORE TRUNCATE ON escrow
        FOR EACH STATEMENT EXECUTE FUNCTION refuse('escrowed keys are never deleted')
    ;;
    CREATE FUNCTION binding_is_definitive() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.entity IS DISTINCT FROM NEW.entity OR OLD.key_ref IS DISTINCT FROM NEW.key_ref
            OR (OLD.generation IS NOT NULL AND OLD.generation IS DISTINCT FROM NEW.generation)
            OR (OLD.cert_sha256 IS NOT NULL AND OLD.cert_sha256 IS DISTINCT FROM NEW.cert_sha256)
        THEN
            RAISE EXCEPTION 'a consultation binding is definitive'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END
    $$
    ;;
    CREATE TRIGGER binding_is_definitive BEFORE UPDATE ON consultations
        FOR EACH ROW EXECUTE FUNCTION binding_is_definitive()
    ;;
    CREATE FUNCTION binding_names_its_certificate() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        IF NEW.generation IS NOT NULL AND NEW.cert_sha256 IS DISTINCT FROM
            (SELECT g.cert_sha256 FROM generations g WHERE g.id = NEW.generation)
        THEN
            RAISE EXCEPTION 'a binding names its generation by certificate'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END
    $$
    ;;
    CREATE TRIGGER binding_names_its_certificate BEFORE INSERT OR UPDATE ON consultations
        FOR EACH ROW EXECUTE FUNCTION binding_names_its_certificate()
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

# What a state holds, in the order a copy writes them (a table after those it refers to).
TABLES = (
    "meta",
    "generations",
    "copies",
    "targets",
    "audit",
    "consultations",
    "designations",
    "escrow",
)


def statements(script: str) -> list[str]:
    """A migration's statements."""
    return [s.strip() for s in script.split("\n    ;;\n") if s.strip()]
