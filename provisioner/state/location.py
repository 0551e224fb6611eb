"""Where a state and its escrow are kept: a SQLite folder (the embedded default) or a schema of
a PostgreSQL database (a team: several administrators and the scheduled job).

A location is a value: it names the place, it opens nothing. Its text (`str()`) is what
messages show; it never holds the DSN's password."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import get_args

from provisioner.manifest.model import Backend

BACKENDS: tuple[Backend, ...] = get_args(Backend)
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # as the manifest's schema allows
ESCROW_FOLDER = "escrow"


@dataclass(frozen=True)
class StateLocation:
    """A state's place. `folder` is the SQLite state folder (for PostgreSQL: the folder
    beside the manifest that a SQLite state would use, where nothing is written); `dsn` and
    `schema` name the PostgreSQL database and this project's schema in it."""

    backend: Backend
    folder: Path
    dsn: str = field(default="", repr=False)  # a secret: never shown
    schema: str = ""
    dsn_source: str = ""  # where the DSN came from ("file secrets/pg.dsn"), for messages

    @property
    def escrow_dir(self) -> Path:
        """The SQLite escrow folder (PostgreSQL keeps the escrow in its schema)."""
        return self.folder / ESCROW_FOLDER

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    def __str__(self) -> str:
        return self._text

    @cached_property
    def _text(self) -> str:  # (libpq parses the DSN once, not at every message)
        if self.backend == "sqlite":
            return str(self.folder)
        return f"postgresql {describe_dsn(self.dsn)} schema {self.schema}"


def describe_dsn(dsn: str) -> str:
    """`user@host:port/database` of a connection string (URI or key=value), never its
    password; `(unreadable DSN)` when libpq cannot parse it."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN: named, never printed (it may hold the password)
        return "(unreadable DSN)"
    host = str(parts.get("host") or parts.get("hostaddr") or "local socket")
    port = parts.get("port")
    user = parts.get("user")
    where = f"{host}:{port}" if port else host
    database = parts.get("dbname") or user or "(default database)"
    return f"{user}@{where}/{database}" if user else f"{where}/{database}"
