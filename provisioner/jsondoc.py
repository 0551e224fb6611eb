"""The JSON documents the program gives (every command's `--json`, the saved plan's body, the
inventory, the audit log): one format version and one way to write them.

`format_version` changes only with a new major version; each document's schema is
schemas/<command>.schema.json."""

from __future__ import annotations

import json
from typing import Any

FORMAT_VERSION = 1


def dumps(document: dict[str, Any], *, ascii_only: bool = False) -> str:
    """`document` as the program prints it: `format_version` first, indented, UTF-8 unless
    `ascii_only` (a monitoring system that reads ASCII only)."""
    return json.dumps(
        {"format_version": FORMAT_VERSION} | document, indent=2, ensure_ascii=ascii_only
    )
