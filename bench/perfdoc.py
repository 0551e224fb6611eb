"""docs/PERFORMANCE.md, one section at a time: what the benchmarks that also run alone
(`make bench-floor`, `bench-postgresql`, `bench-fleet`) write into it."""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"


def replace_section(heading: str, new: str, before: str | None = None) -> None:
    """Put `new` (a section's text, starting with `heading`) where the section under `heading`
    stands, up to the next `## ` heading; where there is none yet, before the section headed
    `before` when there is one, else at the end."""
    text = PATH.read_text()
    if heading in text:
        head, tail = text.split(heading, 1)
        rest = tail.split("\n## ", 1)
        text = head + new + ("\n## " + rest[1] if len(rest) > 1 else "")
    elif before is not None and before in text:
        head, _, tail = text.partition(before)
        text = head.rstrip("\n") + "\n\n" + new + "\n" + before + tail
    else:
        text = text.rstrip("\n") + "\n\n" + new
    PATH.write_text(text)
