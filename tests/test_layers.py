"""No import runs back up the layers of docs/ARCHITECTURE.md ("Layers").

Every `import` and `from ... import` in provisioner/ is read with ast, at module level and
inside functions alike (a lazy import is still a dependency), and each module's layer is the
one of the longest prefix in LAYERS. A module may import its own layer and those below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "provisioner"

# Highest first; the same table as docs/ARCHITECTURE.md.
LAYERS: list[tuple[str, ...]] = [
    ("provisioner.cli", "provisioner.__main__"),
    # The command flows, one module per command, and the two commands with a package of
    # their own: recover's engine and the report.
    ("provisioner.flows", "provisioner.recover", "provisioner.report"),
    (
        "provisioner.status",
        "provisioner.check",
        "provisioner.rehearse",
        "provisioner.hooks",
        "provisioner.receipts",
        "provisioner.exit_codes",
    ),
    ("provisioner.apply",),
    ("provisioner.engine",),
    ("provisioner.plan",),
    ("provisioner.state", "provisioner.transports"),
    (
        "provisioner.manifest",
        "provisioner.consultations",
        "provisioner.secrets",
        "provisioner.children",
        "provisioner.crypto",
    ),
    (
        "provisioner.errors",
        "provisioner.clock",
        "provisioner.atomic",
        "provisioner.bounded",
        "provisioner.faults",
        "provisioner.progress",
        "provisioner",
    ),
]

# Edges allowed, each with its reason (none today).
ALLOWED: set[tuple[str, str]] = set()


def layer(module: str) -> int:
    """The layer's rank (0 is the top) of the longest prefix that names `module`."""
    best: tuple[int, int] | None = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            named = module == prefix or module.startswith(prefix + ".")
            if named and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    assert best is not None, f"{module} is in no layer of LAYERS"
    return best[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The provisioner modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # `from provisioner.state import lock` imports the module provisioner.state.lock
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (ROOT.parent / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.add(candidate)
    return {name for name in found if name == "provisioner" or name.startswith("provisioner.")}


def upward_imports() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        importer = module_name(path)
        for imported in sorted(imports(path)):
            if layer(imported) < layer(importer) and (importer, imported) not in ALLOWED:
                out.append(f"{importer} imports {imported}")
    return out


def test_no_import_runs_back_up_the_layers() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a state module importing the engine is reported."""
    package = tmp_path / "provisioner"
    (package / "state").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "state" / "__init__.py").write_text("")
    (package / "state" / "bad.py").write_text("def f():\n    from provisioner.engine import x\n")
    (package / "state" / "ok.py").write_text("from provisioner.errors import StateError\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", package)
    assert upward_imports() == ["provisioner.state.bad imports provisioner.engine"]


def test_every_module_has_a_layer() -> None:
    for path in ROOT.rglob("*.py"):
        layer(module_name(path))


# What a transport means lives in its kind (manifest/transport_kinds.py) and its connection in
# the pool's table (transports/__init__.py): nowhere else compares a transport with a name.
TRANSPORT_HOMES = {"provisioner.manifest.transport_kinds", "provisioner.transports"}


def transport_comparisons(root: Path) -> list[str]:
    """`x.transport == "ssh"`, `spec["transport"] != "smb"`, `t.transport in (...)` outside
    the transport homes, as `module:line`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        if "_generated" in path.parts or module_name(path) in TRANSPORT_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                named = (isinstance(side, ast.Attribute) and side.attr == "transport") or (
                    isinstance(side, ast.Subscript)
                    and isinstance(side.slice, ast.Constant)
                    and side.slice.value == "transport"
                )
                if named:
                    out.append(f"{module_name(path)}:{node.lineno}")
    return out


def test_a_transport_is_asked_what_it_means_not_compared_with_a_name() -> None:
    assert transport_comparisons(ROOT) == []


def test_the_transport_check_sees_a_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "provisioner"
    (package / "plan").mkdir(parents=True)
    (package / "plan" / "x.py").write_text('def f(t):\n    return t.transport == "ssh"\n')
    (package / "plan" / "y.py").write_text('def g(d):\n    return d["transport"] != "smb"\n')
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", package)
    assert transport_comparisons(package) == ["provisioner.plan.x:2", "provisioner.plan.y:2"]
