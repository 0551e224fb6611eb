"""The figures of a `make mutation` run, per module: mutants, killed, equivalent, survived.

mutmut keeps each mutated file's verdicts in `mutants/<path>.meta` (JSON: the exit code of the
tests run against each mutant, and how long they took). A mutant is killed when its tests
failed (exit 1 or 3), timed out (the mutant made something hang: a user notices) or were caught
by the type checker; it survived when they passed (0). A survivor named in docs/TESTING.md's
list of equivalent mutants (a backticked mutant name, then its reason) counts as equivalent;
every other survivor is a missing test. The score is killed / (checked - equivalent); a module
none of whose mutants was checked reads "not run" and counts as under the goal. "test time"
adds up the seconds the tests took against each mutant (the run's wall time on 2 workers is
about half of it).

Run from the project's root after `mutmut run`: `python tests/mutation_summary.py`
(`--survivors` lists the survivors that are not documented equivalents, one per line).
Exits 1 when a module scores under the goal (90 %), so that a run can gate on it."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

GOAL = 0.90
KILLED = {1, 3, 37, 36, 24, -24, 152, 255}  # test failures, type-check catches, timeouts
SURVIVED = {0}
NO_TESTS = {5, 33}
EQUIVALENT_NAME = re.compile(r"`(provisioner\.[\w.]+__mutmut_\d+)`")


def equivalents(doc: Path) -> set[str]:
    """The mutant names docs/TESTING.md lists as equivalent (each with its reason there)."""
    if not doc.is_file():
        return set()
    text = doc.read_text(encoding="utf-8")
    start = text.find("### Equivalent mutants")
    return set(EQUIVALENT_NAME.findall(text[start:])) if start >= 0 else set()


def module_of(meta: Path, root: Path) -> str:
    rel = meta.relative_to(root).as_posix().removesuffix(".meta")
    return rel.removesuffix(".py").replace("/", ".")


def main(argv: list[str]) -> int:
    root = Path("mutants")
    if not root.is_dir():
        print("no mutants/ folder: run `make mutation` first", file=sys.stderr)
        return 1
    equivalent = equivalents(Path("docs/TESTING.md"))
    rows: list[tuple[str, Counter[str], float]] = []
    survivors: list[str] = []
    for meta in sorted(root.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes: dict[str, int | None] = data["exit_code_by_key"]
        if not codes:
            continue
        count: Counter[str] = Counter()
        for name, code in codes.items():
            if code in KILLED:
                count["killed"] += 1
            elif code in SURVIVED and name in equivalent:
                count["equivalent"] += 1
            elif code in SURVIVED:
                count["survived"] += 1
                survivors.append(name)
            elif code in NO_TESTS:
                count["no tests"] += 1
                survivors.append(name)
            elif code is None:
                count["not checked"] += 1
            else:
                count["other"] += 1  # a crash of the test process (-9, -11): shown, not hidden
        seconds = sum(float(v) for v in data.get("durations_by_key", {}).values())
        rows.append((module_of(meta, root), count, seconds))
    if "--survivors" in argv:
        print("\n".join(survivors))
        return 0
    header = (
        "module",
        "mutants",
        "checked",
        "killed",
        "equivalent",
        "survived",
        "no tests",
        "score",
        "test time",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    below = False
    total: Counter[str] = Counter()
    for module, count, seconds in rows:
        total.update(count)
        n = sum(count.values())
        print("| " + " | ".join(_row(module, n, count, seconds)) + " |")
        score = _score(n, count)
        below |= score is None or score < GOAL
    n = sum(total.values())
    seconds = sum(r[2] for r in rows)
    print("| " + " | ".join(_row("**all**", n, total, seconds)) + " |")
    return 1 if below else 0


def _score(n: int, count: Counter[str]) -> float | None:
    """killed / (checked - equivalent); None while no mutant of the module was checked."""
    judged = n - count["equivalent"] - count["not checked"]
    return count["killed"] / judged if judged else None


def _row(module: str, n: int, count: Counter[str], seconds: float) -> list[str]:
    score = _score(n, count)
    return [
        module,
        str(n),
        str(n - count["not checked"]),
        str(count["killed"]),
        str(count["equivalent"]),
        str(count["survived"]),
        str(count["no tests"]),
        "not run" if score is None else f"{score:.0%}",
        f"{seconds / 60:.1f} min",
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
