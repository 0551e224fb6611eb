"""The first line of `check`, the one a monitoring screen shows: each code of the most severe
findings with the entities it concerns (three at most, then how many more), a code that
concerns no entity alone, and the line cut at 160 characters of text with how many codes
were left out. Every finding is on the lines that follow (tests/test_check.py); this is the
table of what that first line says, through the function that writes it."""

from __future__ import annotations

import pytest

from provisioner.check import LINE_TEXT_MAX, Finding, _named
from provisioner.codes import FindingCode, Severity

W, C = Severity.WARNING, Severity.CRITICAL


def pending(*entities: str) -> list[Finding]:
    return [Finding(W, e, FindingCode.PENDING, "1 change pending") for e in entities]


@pytest.mark.parametrize(
    ("findings", "line"),
    [
        (pending("a"), "pending (a)"),
        (pending("a", "b", "c"), "pending (a, b, c)"),
        (pending("a", "b", "c", "d"), "pending (a, b, c and 1 more)"),
        (pending("a", "b", "c", "d", "e", "f"), "pending (a, b, c and 3 more)"),
        (pending("a", "a", "b"), "pending (a, b)"),  # an entity named once per code
        (
            [Finding(W, None, FindingCode.UNREACHABLE, "ws-1: timed out"), *pending("a")],
            "unreachable; pending (a)",
        ),
        (  # only the severity asked for
            [Finding(C, "x", FindingCode.EXPIRED, "expired"), *pending("a")],
            "pending (a)",
        ),
    ],
)
def test_the_first_line_names_each_code_with_its_entities(
    findings: list[Finding], line: str
) -> None:
    assert _named(findings, W) == line


def test_the_first_line_is_cut_at_its_length_saying_how_many_codes_are_left_out() -> None:
    codes = list(FindingCode)[:12]
    long_name = "e" * 40
    findings = [Finding(W, long_name, code, "x") for code in codes]
    line = _named(findings, W)
    kept = line.split("; and ")[0]
    left = int(line.rsplit("; and ", 1)[1].removesuffix(" more"))
    shown = kept.count(f"({long_name})")
    assert shown + left == len(codes), line
    assert len(kept) <= LINE_TEXT_MAX < len(f"{kept}; {codes[shown]} ({long_name})"), line


def test_a_line_of_exactly_the_length_is_kept_whole() -> None:
    # "pending (…)" then "; expired (…)": the entity names fill the line to 160 characters.
    first = "p" * 100
    rest = LINE_TEXT_MAX - len(f"pending ({first}); expired ()")
    second = "q" * rest
    findings = [
        Finding(W, first, FindingCode.PENDING, "x"),
        Finding(W, second, FindingCode.EXPIRED, "x"),
    ]
    line = _named(findings, W)
    assert line == f"pending ({first}); expired ({second})"
    assert len(line) == LINE_TEXT_MAX
    longer = [findings[0], Finding(W, second + "q", FindingCode.EXPIRED, "x")]
    assert _named(longer, W) == f"pending ({first}); and 1 more"
