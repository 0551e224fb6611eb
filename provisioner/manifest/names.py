"""What a name may hold: the characters refused in every name (ids, designations, target
names), and the file names Windows refuses."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable

_WINDOWS_ABS = re.compile(r"^[A-Za-z]:/")
# Characters a name may not hold: control (NUL included), format (bidi overrides, zero-width),
# surrogates, line and paragraph separators. A spoofed name reaches the certificate's CN and
# the friendly name the agent sees.
_FORBIDDEN_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "a format character: bidi or zero-width",
    "Cs": "a surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
# File names Windows refuses whatever their extension (`con.g1.p12` included).
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
    + [
        "com\u00b9",
        "com\u00b2",
        "com\u00b3",
        "lpt\u00b9",
        "lpt\u00b2",
        "lpt\u00b3",
        "conin$",
        "conout$",
    ]
)


def name_problem(text: str) -> str | None:
    """Why `text` may not be a name, designation or subject field, or None."""
    if text.isprintable():  # every refused category is unprintable: one C loop for most names
        return None
    for ch in text:
        category = unicodedata.category(ch)
        if category in _FORBIDDEN_CATEGORIES:
            label = unicodedata.name(ch, "") if category != "Cs" else ""
            return (
                f"contains control characters: U+{ord(ch):04X}{f' {label}' if label else ''} "
                f"({_FORBIDDEN_CATEGORIES[category]}); names may hold no control, format or "
                "line-separator character"
            )
    return None


def _shown(text: str) -> str:
    """`text` for a message: unprintable characters escaped, never sent to the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot start a file name on Windows and POSIX targets, or None."""
    stem = name.split(".", 1)[0].rstrip(" ").casefold()
    if stem in WINDOWS_RESERVED:
        return (
            f"'{name}' is a reserved device name on Windows (con, prn, aux, nul, com1-com9, "
            "lpt1-lpt9, with any extension): its files could not be written there"
        )
    if name.endswith((".", " ")):
        return f"'{name}' ends with a dot or a space, which Windows drops from file names"
    if len(name.encode("utf-8")) > 100:
        return f"'{name[:20]}...' is longer than 100 bytes"
    return None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'ws-marches'?)`, or the few names there are; computed on errors only."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if 0 < len(names) <= 8:
        return f" (known: {', '.join(names)})"
    return ""
