"""The state and its escrow as the world sees them (the stateful suite's hands and eyes): read
rows, read and damage escrow files, take a backup, restore one, lose everything. Two kinds:
a SQLite state folder, and a PostgreSQL schema (read and changed as its owner role could with
psql, a backup being `pg_dump` of the schema). Nothing here is the code under test."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Protocol

KEYRING = "keyring.json"


class StateWorld(Protocol):
    def exists(self) -> bool:
        """A state is there (something the program made: a folder, the schema's tables)."""
        ...

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        """The rows of a read-only query; none when there is no state or it is unreadable."""
        ...

    def escrow(self) -> dict[str, bytes]:
        """Every escrow file by name (keyring.json, FINGERPRINT.key)."""
        ...

    def set_escrow(self, name: str, data: bytes | None) -> None:
        """Replace an escrow file, or delete it (None)."""
        ...

    def backup(self, dest: Path) -> None:
        """Back the state and escrow up to `dest`; `backup_escrow(dest)` reads its escrow."""
        ...

    def backup_escrow(self, backup: Path) -> Path:
        """The folder holding a backup's escrow files."""
        ...

    def restore(self, backup: Path) -> None: ...

    def lose(self) -> None:
        """The admin host's disk, or the database: the state comes back empty."""
        ...

    def contents(self) -> str:
        """Everything the state holds as text, where its files are not (a database's rows),
        for the search for secrets; "" for a folder (its files are searched as files)."""
        ...

    def close(self) -> None: ...


class FolderWorld:
    """A SQLite state folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def exists(self) -> bool:
        return self.folder.is_dir()

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        path = self.folder / "state.db"
        if not path.is_file() or path.stat().st_size == 0:
            return []
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return list(conn.execute(query))
            finally:
                conn.close()
        except sqlite3.Error:
            return []

    def escrow(self) -> dict[str, bytes]:
        out = {}
        folder = self.folder / "escrow"
        for path in [folder / KEYRING, *sorted(folder.glob("*.key"))]:
            with contextlib.suppress(OSError):
                out[path.name] = path.read_bytes()
        return out

    def set_escrow(self, name: str, data: bytes | None) -> None:
        path = self.folder / "escrow" / name
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)

    def backup(self, dest: Path) -> None:
        shutil.copytree(self.folder, dest)

    def backup_escrow(self, backup: Path) -> Path:
        return backup / "escrow"

    def restore(self, backup: Path) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.copytree(backup, self.folder)

    def lose(self) -> None:
        shutil.rmtree(self.folder)
        self.folder.mkdir(mode=0o700)

    def contents(self) -> str:
        return ""

    def close(self) -> None:
        return None


class DatabaseWorld:
    """A PostgreSQL state: one schema, seen through the owner role's session."""

    def __init__(self, dsn: str, schema: str, tools: Path) -> None:
        self.dsn = dsn
        self.schema = schema
        self.tools = tools  # the folder of pg_dump and pg_restore
        self._conn: Any = None

    def _session(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
            self._conn.execute(f'SET search_path TO "{self.schema}"'.encode())
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def exists(self) -> bool:
        return bool(self.rows("SELECT 1 FROM meta LIMIT 1"))

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            found = self._session().execute(query.encode()).fetchall()
        except psycopg.Error:
            return []
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in found]

    def escrow(self) -> dict[str, bytes]:
        return {str(n): bytes(d) for n, d in self.rows("SELECT name, data FROM escrow")}

    def set_escrow(self, name: str, data: bytes | None) -> None:
        conn = self._session()
        with conn.transaction():
            # As the owner, who may lift the schema's own guard (escrowed keys are kept).
            conn.execute("ALTER TABLE escrow DISABLE TRIGGER USER")
            conn.execute("DELETE FROM escrow WHERE name = %s", (name,))
            if data is not None:
                conn.execute("INSERT INTO escrow (name, data) VALUES (%s, %s)", (name, data))
            conn.execute("ALTER TABLE escrow ENABLE TRIGGER USER")

    def backup(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dump = [str(self.tools / "pg_dump"), "--dbname", self.dsn, "-n", self.schema, "-Fc"]
        subprocess.run(
            [*dump, "-f", str(dest)],
            check=True,
            capture_output=True,
        )
        escrow = self.backup_escrow(dest)
        escrow.mkdir()
        for name, data in self.escrow().items():
            (escrow / name).write_bytes(data)

    def backup_escrow(self, backup: Path) -> Path:
        return backup.with_name(backup.name + ".escrow")

    def restore(self, backup: Path) -> None:
        self.lose()
        self.close()
        subprocess.run(
            [str(self.tools / "pg_restore"), "--dbname", self.dsn, "--no-owner", str(backup)],
            check=True,
            capture_output=True,
        )

    def lose(self) -> None:
        self._session().execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'.encode())

    def contents(self) -> str:
        tables = self.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return "\n".join(repr(self.rows(f'SELECT * FROM "{t}"')) for (t,) in tables)
