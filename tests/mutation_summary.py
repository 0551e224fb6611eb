"""The figures of a `make mutation` run, per module: mutants, killed, equivalent, survived.

mutmut keeps each mutated file's verdicts in `mutants/<path>.meta` (JSON: the exit code of the
tests run against each mutant, and how long they took). A mutant is killed when its tests
failed (exit 1 or 3), timed out (the mutant made something hang: a user notices) or were caught
by the type checker; it survived when they passed (0). A survivor named in
docs/mutation-equivalents.md (a backticked mutant name, then its reason) counts as equivalent;
every other survivor is a missing test. The score is killed / (checked - equivalent); a module
none of whose mutants was checked reads "not run" and counts as under the goal. "test time"
adds up the seconds the tests took against each mutant (the run's wall time on 2 workers is
about half of it).

Run from the project's root after `mutmut run`: `python tests/mutation_summary.py`
(`--survivors` lists the survivors that are not documented equivalents, one per line;
`--diff [GLOB]` prints each such survivor's change as a diff of its function, read from
mutants/ without starting mutmut: what a new test must notice).
Exits 1 when a module scores under the goal (90 %), so that a run can gate on it.

A documented equivalent counts as one only while its *pin* holds: tests/data/mutation-
equivalents.pins gives, for each, a digest of its function before and after the mutation, so
that an edit of the function (which renumbers its mutants) sends it back to be read again
instead of letting the page vouch for another change. `--pin` writes the pins of every
documented equivalent from mutants/ (after reading them). tests/conftest.py gives a pinned
equivalent only the test most likely to kill it (one run, not the whole budget)."""

from __future__ import annotations

import ast
import difflib
import fnmatch
import hashlib
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


PINS = Path(__file__).resolve().parent / "data" / "mutation-equivalents.pins"


def read_pins(path: Path = PINS) -> dict[str, str]:
    """name -> pin, as `--pin` wrote them."""
    if not path.is_file():
        return {}
    pairs = (line.split() for line in path.read_text(encoding="utf-8").splitlines())
    return {name: pin for name, pin in pairs}


def pins_now(root: Path, names: list[str]) -> dict[str, str]:
    """The pin of each named mutant as mutants/ holds it now ("" when not found)."""
    out: dict[str, str] = {}
    cache: dict[Path, dict[str, str]] = {}
    for name in names:
        original, mutated = mutant_sources(root, name, cache)
        out[name] = pin_of(original, mutated) if mutated else ""
    return out


def holding_pins(root: Path, documented: set[str]) -> set[str]:
    """The documented equivalents whose pin holds in `root` (mutants/) now."""
    pinned = read_pins()
    now = pins_now(root, sorted(documented & set(pinned)))
    return {n for n in documented if pinned.get(n) and pinned[n] == now.get(n)}


def pin_of(original: str, mutated: str) -> str:
    return hashlib.sha256(f"{original}\0{mutated}".encode()).hexdigest()[:16]


def mutant_sources(root: Path, name: str, cache: dict[Path, dict[str, str]]) -> tuple[str, str]:
    """A mutant's function before and after the mutation, from mutants/ ("" if not found)."""
    module, _, function = name.rpartition(".")
    if "ǁ" in name:  # a method: provisioner.mod.xǁClassǁmethod__mutmut_N
        module = name[: name.index(".xǁ")]
        function = name[len(module) + 1 :]
    path = root / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = root / (module.replace(".", "/") + "/__init__.py")
    if path not in cache:
        found: dict[str, str] = {}
        if path.is_file():
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines(keepends=True)
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[node.name] = "".join(lines[node.lineno - 1 : node.end_lineno])
        cache[path] = found
    found = cache[path]
    original = found.get(function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
    return original, found.get(function, "")


def equivalents(doc: Path) -> set[str]:
    """The mutant names docs/mutation-equivalents.md lists as equivalent (each with its
    reason there)."""
    if not doc.is_file():
        return set()
    return set(EQUIVALENT_NAME.findall(doc.read_text(encoding="utf-8")))


def module_of(meta: Path, root: Path) -> str:
    rel = meta.relative_to(root).as_posix().removesuffix(".meta")
    return rel.removesuffix(".py").replace("/", ".")


def main(argv: list[str]) -> int:
    root = Path("mutants")
    if not root.is_dir():
        print("no mutants/ folder: run `make mutation` first", file=sys.stderr)
        return 1
    documented = equivalents(Path("docs/mutation-equivalents.md"))
    if "--pin" in argv:
        now = pins_now(root, sorted(documented))
        PINS.write_text("".join(f"{n} {p}\n" for n, p in sorted(now.items()) if p))
        print(f"{sum(1 for p in now.values() if p)} equivalents pinned in {PINS}")
        return 0
    equivalent = holding_pins(root, documented)
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
    stale = [n for n in survivors if n in documented]
    if stale:
        print(
            f"{len(stale)} survivors are documented equivalents whose function changed since "
            "they were pinned (or never pinned): read them again, then --pin",
            file=sys.stderr,
        )
    if "--survivors" in argv:
        print("\n".join(survivors))
        return 0
    if "--diff" in argv:
        at = argv.index("--diff")
        pattern = argv[at + 1] if len(argv) > at + 1 else "*"
        print_diffs(root, [s for s in survivors if fnmatch.fnmatch(s, pattern)])
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


def print_diffs(root: Path, names: list[str]) -> None:
    """Each mutant's function against the original, as a unified diff, from mutants/."""
    functions: dict[Path, dict[str, str]] = {}
    for name in names:
        original, mutated = mutant_sources(root, name, functions)
        print(f"## {name}")
        diff = difflib.unified_diff(original.splitlines(), mutated.splitlines(), lineterm="", n=1)
        print("\n".join(list(diff)[2:]) or "(function not found)")
        print()


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
