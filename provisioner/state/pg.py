"""The PostgreSQL state: a team's state and escrow in one schema of a database (psycopg 3).

`PgStore` is a `StateStore` and `PgChange` a `StateChange` (state/store.py); `PgBlobs` keeps
the escrow's sealed blobs in the `escrow` table, byte for byte what the SQLite state's
`escrow/` folder holds. The schema, its triggers and migrations are in `pg_schema.py`, the
advisory lock in `pg_lock.py`.

Connections run in autocommit; a transaction is an explicit BEGIN ... COMMIT. Every session
sets `synchronous_commit = on` (a key is sealed only once its commit is flushed, whatever the
server's default) and TCP keepalives, so that a server gone silent fails the step within
about a minute instead of hanging. While this process holds the project's lock, its state
writes go through the lock's own connection: a lost connection loses the lock and the open
transaction together, so nothing is ever written without the lock."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from provisioner import clock, faults
from provisioner.errors import StateError
from provisioner.state.blobs import MAX_BLOB_BYTES, BlobEntry
from provisioner.state.change import Change
from provisioner.state.location import StateLocation
from provisioner.state.pg_schema import MIGRATIONS, SCHEMA_VERSION, TABLES, statements
from provisioner.state.records import (
    AuditRow,
    Recorded,
)
from provisioner.state.snapshot import QUERIES, build_snapshot

# Client-side settings added to a DSN that does not give its own.
CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "20",
    "keepalives_interval": "5",
    "keepalives_count": "4",
    "tcp_user_timeout": "60000",  # ms: a write the server never acknowledges fails
}
BINARY = ("certificate", "chain")  # bytea: base64 in the JSON of a snapshot


def snapshot_query(name: str) -> str:
    """One of the snapshot's queries (state/snapshot.py) as a single JSON document: psycopg's
    pure-Python row loading cost 1 s of a 1,000 x 10 no-op plan's snapshot (23,000 rows),
    the server's json_agg and the C json parser 0.1 s."""
    table, columns, order = QUERIES[name]
    if table == "designations":
        order = "since, seq"  # (SQLite's rowid: the insertion order)
    values = ", ".join(f"encode({c}, 'base64')" if c in BINARY else c for c in columns)
    ordered = f" ORDER BY {order}" if order else ""
    return (
        f"SELECT coalesce(json_agg(json_build_array({values}){ordered}), '[]')::text FROM {table}"
    )


# `state migrate` gives the audit records their ids: the identity column follows them.
AUDIT_IDS_FOLLOW = (
    "SELECT setval(pg_get_serial_sequence('audit', 'id'), max(id)) FROM audit HAVING count(*) > 0"
)

# The connection holding each project's lock in this process (pg_lock.hold): the store of a
# locked project writes through it. Keyed by (dsn, schema); used by the main thread only.
HELD: dict[tuple[str, str], psycopg.Connection[Any]] = {}


def scrub(text: str, location: StateLocation) -> str:
    """`text` without the DSN's password (libpq's messages do not print it; this makes sure)."""
    try:
        password = conninfo_to_dict(location.dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        text = text.replace(str(password), "(sensitive)")
    return text.replace(location.dsn, "(the DSN)") if location.dsn else text


def failure(location: StateLocation, exc: BaseException, doing: str) -> StateError:
    """The StateError for a failed database step, naming the state and what to do."""
    message = scrub(" ".join(str(exc).split()), location)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StateError(
            f"{location}: {doing}: permission denied ({message}); the role needs the grants "
            "of docs/RECOVERY.md (PostgreSQL): read for plan, status and check, write for "
            "apply, recover, adopt and rekey"
        )
    if isinstance(exc, psycopg.errors.DiskFull):
        return StateError(
            f"{location}: {doing}: the database server's disk is full ({message}); nothing of "
            "this step was recorded. Free space on the server, then run the command again"
        )
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StateError(
            f"{location}: {doing}: the connection to the database was lost or refused "
            f"({message}); nothing of this step was recorded (a transaction is recorded whole "
            "or not at all). Run the command again once the server answers: it converges"
        )
    return StateError(f"{location}: {doing}: {message}")


def connect(location: StateLocation, purpose: str) -> psycopg.Connection[Any]:
    """A new autocommit session on the project's schema; StateError when it cannot be had."""
    try:
        given = conninfo_to_dict(location.dsn)
    except psycopg.Error:
        raise StateError(
            f"{location.dsn_source or 'the state DSN'}: not a PostgreSQL connection string "
            "(postgresql://USER@HOST:PORT/DATABASE or host=... dbname=... user=...)"
        ) from None
    extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
    extra.setdefault("application_name", f"provisioner {purpose}"[:63])
    try:
        conn = psycopg.connect(make_conninfo(location.dsn, **extra), autocommit=True)
    except psycopg.Error as exc:
        raise failure(location, exc, "cannot connect to the state database") from None
    try:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(location.schema)))
        conn.execute("SET synchronous_commit TO on")
        # A vanished client's session (its lock) falls away after about a minute.
        conn.execute("SET tcp_keepalives_idle TO 20")
        conn.execute("SET tcp_keepalives_interval TO 5")
        conn.execute("SET tcp_keepalives_count TO 4")
    except psycopg.Error as exc:
        conn.close()
        raise failure(location, exc, "cannot open the state database") from None
    return conn


def schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def create_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """The project's schema, created when missing (its existence is looked at first: a role
    without CREATE on the database may still use a schema its administrator made)."""
    if not schema_exists(conn, schema):
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))


def table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table)
    ).fetchone()
    return row is not None and row[0] is not None


def version_of(conn: psycopg.Connection[Any], schema: str) -> int:
    """The schema version reached (0: no state there)."""
    if not table_exists(conn, schema, "schema_migrations"):
        return 0
    found = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def home_of(conn: psycopg.Connection[Any], schema: str) -> str:
    """The state's home: this cluster (its system identifier), database and schema. A dump
    restored elsewhere has another home, as a copied state folder has."""
    try:
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        cluster = str(row[0]) if row else "unknown"
    except psycopg.errors.InsufficientPrivilege:
        cluster = "unknown"
    database = conn.execute("SELECT current_database()").fetchone()
    name = database[0] if database else ""
    return f"postgresql://{cluster}/{name}/{schema}"


class PgChange(Change):
    """Mutations inside one transaction: the statements of `state/change.py`, with psycopg's
    placeholder."""

    placeholder = "%s"


class PgStore:
    """An open PostgreSQL state (a `StateStore`)."""

    def __init__(
        self, conn: psycopg.Connection[Any], location: StateLocation, *, owned: bool
    ) -> None:
        self.conn = conn
        self.location = location
        self.where = str(location)
        self._owned = owned  # False: the lock's connection, closed by the lock

    @classmethod
    def open(cls, location: StateLocation, *, create: bool, migrate: bool) -> PgStore | None:
        """The state in the location's schema; None when there is none and `create` is false.
        An older schema is migrated when `migrate`, else refused naming `apply`."""
        held = HELD.get((location.dsn, location.schema))
        conn = held if held is not None and not held.closed else connect(location, "state")
        store = cls(conn, location, owned=conn is not held)
        try:
            version = version_of(conn, location.schema)
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{location}: the state was written by a newer provisioner (schema version "
                    f"{version}; this one knows up to {SCHEMA_VERSION}); upgrade provisioner"
                )
            if version == 0 and not create:
                store.close()
                return None
            if version < SCHEMA_VERSION:
                if not migrate:
                    raise StateError(
                        f"{location}: the state uses schema version {version}; run "
                        f"`provisioner apply` once to migrate it to version {SCHEMA_VERSION}"
                    )
                store._migrate(version)
        except psycopg.Error as exc:
            store.close()
            raise failure(location, exc, "cannot open the state") from None
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self, version: int) -> None:
        with self._transaction("migration failed"):
            create_schema(self.conn, self.location.schema)
            for step in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[step]):
                    self.conn.execute(statement.encode())
                if step == 0:
                    self.conn.execute(
                        "CREATE TABLE schema_migrations"
                        " (version integer PRIMARY KEY, applied_at text NOT NULL)"
                    )
                self.conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s)",
                    (step + 1, clock.iso(clock.now())),
                )
            if version == 0:
                self.conn.execute(
                    "INSERT INTO meta VALUES ('lineage', %s), ('serial', '0')",
                    (str(uuid.uuid4()),),
                )

    @classmethod
    def discard(cls, location: StateLocation) -> None:
        """Drop the state's tables and functions (a state created by a run that recorded
        nothing); the schema and the lock's table stay."""
        held = HELD.get((location.dsn, location.schema))
        conn = held if held is not None and not held.closed else connect(location, "state")
        store = cls(conn, location, owned=conn is not held)
        try:
            with store._transaction("cannot remove the state this run created"):
                for table in ("schema_migrations", *reversed(TABLES)):
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
                for function in (
                    "refuse",
                    "binding_is_definitive",
                    "binding_names_its_certificate",
                ):
                    conn.execute(
                        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(function))
                    )
        finally:
            store.close()

    def close(self) -> None:
        if self.conn.closed:
            return
        if self._owned:
            self.conn.close()
        else:
            with contextlib.suppress(psycopg.Error):
                self.conn.rollback()  # a transaction left open by a raise, on the lock's session

    def home(self) -> str:
        """The state's home (state/store.py): this cluster, database and schema."""
        try:
            return home_of(self.conn, self.location.schema)
        except psycopg.Error as exc:
            raise failure(self.location, exc, "cannot read the state") from None

    def snapshot(self) -> Recorded:
        """Everything the planner needs, read in one repeatable-read transaction."""
        try:
            self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return build_snapshot(self._snapshot_rows)
            finally:
                self.conn.execute("COMMIT")
        except psycopg.Error as exc:
            self._rollback()
            raise failure(self.location, exc, "cannot read the state") from None

    def _snapshot_rows(self, name: str) -> list[list[Any]]:
        row = self.conn.execute(snapshot_query(name)).fetchone()
        found: list[list[Any]] = json.loads(row[0]) if row else []
        binary = [i for i, c in enumerate(QUERIES[name][1]) if c in BINARY]
        for values in found:
            for i in binary:
                values[i] = base64.b64decode(values[i])
        return found

    @contextlib.contextmanager
    def change(self) -> Iterator[PgChange]:
        """A write transaction; the serial is bumped when it commits."""
        with self._transaction("cannot record the change"):
            yield PgChange(self.conn)
            self.conn.execute(
                "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'serial'"
            )
            faults.reached("mid-commit")

    def _rollback(self) -> None:
        if not self.conn.closed and self.conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        committing = False
        try:
            self.conn.execute("BEGIN")
            yield
            committing = True
            self.conn.execute("COMMIT")
            faults.reached("committed")
        except psycopg.Error as exc:
            self._rollback()
            if committing and isinstance(exc, psycopg.OperationalError):
                raise StateError(
                    f"{self.location}: {doing}: the connection was lost while committing "
                    f"({scrub(' '.join(str(exc).split()), self.location)}): the change was "
                    "recorded whole or not at all. Run the command again once the server "
                    "answers: its plan shows which, and it converges"
                ) from None
            raise failure(self.location, exc, doing) from None
        except BaseException:
            self._rollback()
            raise

    def note(self, action: str, entity: str | None, **detail: Any) -> None:
        """Append an audit record that changes nothing else (the serial stays)."""
        with self._transaction("cannot record the change"):
            PgChange(self.conn).audit(action, entity, **detail)

    def serial(self) -> int:
        """The serial as committed now (a snapshot may be older)."""
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'serial'").fetchone()
        except psycopg.Error as exc:
            self._rollback()
            raise failure(self.location, exc, "cannot read the state") from None
        return int(row[0]) if row else 0

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value that is not part of what plans depend on (the serial stays)."""
        with self._transaction("cannot record the change"):
            PgChange(self.conn).set_meta(key, value)

    def audit_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        try:
            rows = self.conn.execute(
                "SELECT at, actor, action, entity, detail FROM audit ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        except psycopg.Error as exc:
            self._rollback()
            raise failure(self.location, exc, "cannot read the audit log") from None
        return [
            {"at": r[0], "actor": r[1], "action": r[2], "entity": r[3], "detail": json.loads(r[4])}
            for r in rows
        ]

    def table_rows(self, table: str) -> list[tuple[Any, ...]]:
        from provisioner.state.store import ROW_ORDER, TABLE_COLUMNS

        order = ROW_ORDER[table] + (", seq" if table == "designations" else "")
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in TABLE_COLUMNS[table]),
            sql.Identifier(table),
            sql.SQL(order),
        )
        try:
            return [tuple(row) for row in self.conn.execute(query).fetchall()]
        except psycopg.Error as exc:
            self._rollback()
            raise failure(self.location, exc, "cannot read the state") from None

    def load_rows(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        from provisioner.state.store import TABLE_COLUMNS

        with self._transaction("cannot record the copy"):
            self.conn.execute("DELETE FROM meta")
            for table, columns in TABLE_COLUMNS.items():
                query = sql.SQL("INSERT INTO {} ({}) {} VALUES ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                    sql.SQL("OVERRIDING SYSTEM VALUE" if table == "audit" else ""),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                )
                with self.conn.cursor() as cursor:
                    cursor.executemany(query, rows.get(table, []))
            self.conn.execute(AUDIT_IDS_FOLLOW)

    def audit_records(self) -> list[AuditRow]:
        return self._audit(
            "SELECT id, at, actor, action, entity, detail FROM audit ORDER BY id", ()
        )

    def audit_recent(self, per_entity: int, general: int) -> list[AuditRow]:
        return self._audit(
            "SELECT id, at, actor, action, entity, detail FROM ("
            " SELECT id, at, actor, action, entity, detail,"
            "  ROW_NUMBER() OVER (PARTITION BY entity ORDER BY id DESC) AS n FROM audit"
            ") AS recent WHERE n <= CASE WHEN entity IS NULL THEN %s ELSE %s END",
            (general, per_entity),
        )

    def _audit(self, query: str, args: tuple[int, ...]) -> list[AuditRow]:
        try:
            rows = self.conn.execute(query, args).fetchall()
        except psycopg.Error as exc:
            self._rollback()
            raise failure(self.location, exc, "cannot read the audit log") from None
        return [AuditRow(*row) for row in rows]


class PgBlobs:
    """The escrow's sealed blobs in the schema's `escrow` table (a `SealedBlobs`). Each write
    commits on its own session before returning: a key is sealed in the database before the
    state records it or any copy is written. Reads are bounded by the table's own check
    (64 KiB a blob) and by the query. A listing fetches every blob at once and later reads
    are served from it (a plan checks every key's tag: one query, not one per key); this
    process's writes keep it current, and each new listing reads the table again."""

    def __init__(self, location: StateLocation) -> None:
        self.location = location
        self._conn: psycopg.Connection[Any] | None = None
        self._table: bool | None = None  # the escrow table exists (a state was made)
        self._listed: dict[str, bytes] = {}
        # The keyring is read in the unlocking thread while the state is opened in the main
        # one: one session for both (psycopg serialises its use), made once.
        self._opening = threading.Lock()

    def _session(self) -> psycopg.Connection[Any]:
        with self._opening:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.location, "escrow")
                self._table = None
            return self._conn

    def _ready(self) -> bool:
        conn = self._session()
        if not self._table:
            self._table = table_exists(conn, self.location.schema, "escrow")
        return self._table

    def close(self) -> None:
        with self._opening:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def where(self, name: str | None = None) -> str:
        return f"{self.location} escrow" + (f" {name}" if name else "")

    def exists(self, name: str) -> bool:
        try:
            if not self._ready():
                return False
            row = self._session().execute("SELECT 1 FROM escrow WHERE name = %s", (name,))
            return row.fetchone() is not None
        except psycopg.Error as exc:
            raise failure(self.location, exc, "cannot read the escrow") from None

    def read(self, name: str) -> bytes:
        listed = self._listed.get(name)
        if listed is not None:
            return listed[: MAX_BLOB_BYTES + 1]
        try:
            found = None
            if self._ready():
                found = (
                    self._session()
                    .execute(
                        "SELECT substring(data FROM 1 FOR %s) FROM escrow WHERE name = %s",
                        (MAX_BLOB_BYTES + 1, name),
                    )
                    .fetchone()
                )
        except psycopg.Error as exc:
            message = scrub(" ".join(str(exc).split()), self.location)
            raise OSError(f"cannot read it from the database: {message}") from None
        if found is None:
            raise FileNotFoundError(name)
        return bytes(found[0])

    def write(self, name: str, data: bytes, what: str) -> None:
        try:
            self._session().execute(
                "INSERT INTO escrow (name, data) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                (name, data),
            )
            self._listed.pop(name, None)
        except psycopg.Error as exc:
            message = scrub(" ".join(str(exc).split()), self.location)
            raise StateError(
                f"{self.where(name)}: cannot write {what}: {message}; nothing was stored: fix "
                "the cause (the server, the connection, the grants), then run the command again"
            ) from None

    def listing(self) -> list[BlobEntry]:
        try:
            if not self._ready():
                return []
            rows = self._session().execute("SELECT name, data FROM escrow").fetchall()
        except psycopg.Error as exc:
            raise failure(self.location, exc, "cannot list the escrow") from None
        self._listed = {name: bytes(data) for name, data in rows}
        return [BlobEntry(name, len(data), True, True) for name, data in self._listed.items()]

    def delete(self, name: str) -> None:
        try:
            self._listed.pop(name, None)
            if self._ready():
                self._session().execute("DELETE FROM escrow WHERE name = %s", (name,))
        except psycopg.Error as exc:
            raise failure(self.location, exc, f"cannot remove {name} from the escrow") from None
