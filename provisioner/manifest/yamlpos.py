"""Safe YAML loading that remembers the line and column of every key and value.

The parser is PyYAML's (libyaml's C parser when available); only scalars, sequences and
mappings of the safe schema are built. Duplicate keys are errors, alias expansion is bounded
(billion-laughs), and the input must be UTF-8 and under a size bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from provisioner.errors import Diagnostic, Location, ManifestError

MAX_BYTES = 16 * 1024 * 1024
MAX_NODES = 5_000_000
MAX_ALIAS_NODES = 100_000
MAX_DEPTH = 64

Path = tuple[str | int, ...]

# C-accelerated parser where PyYAML was built with libyaml.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Positions:
    """Maps a path inside the document to the (line, column) of its value and of its key."""

    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path, *, key: bool = False) -> Location:
        """Location of the node at `path` (its key when `key`), else of its nearest ancestor."""
        p = tuple(path)
        while True:
            table = self.keys if key and p in self.keys else self.values
            if p in table:
                line, col = table[p]
                return Location(self.file, line, col)
            if not p:
                return Location(self.file, 1, 1)
            p = p[:-1]


def _fail(file: str, line: int, col: int, message: str) -> ManifestError:
    return ManifestError([Diagnostic("error", Location(file, line, col), message)])


def decode(data: bytes, file: str) -> str:
    """Decode UTF-8 strictly; the error names the line and column of the first bad byte."""
    if len(data) > MAX_BYTES:
        raise ManifestError(
            [Diagnostic("error", Location(file), f"file is larger than {MAX_BYTES} bytes")]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise _fail(file, line, col, "file is not valid UTF-8 text") from None
    return text.removeprefix("\ufeff")


class _Builder:
    def __init__(self, file: str) -> None:
        self.pos = Positions(file)
        self.count = 0
        self.alias_count = 0
        self.seen: set[int] = set()
        self.in_alias = 0

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        if id(node) in self.seen:  # an alias: its expansion is budgeted apart
            self.in_alias += 1
            try:
                return self._build(node, path, depth)
            finally:
                self.in_alias -= 1
        if not self.in_alias:
            self.seen.add(id(node))
        return self._build(node, path, depth)

    def _build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.count += 1
        if self.in_alias:
            self.alias_count += 1
            if self.alias_count > MAX_ALIAS_NODES:
                raise _fail(
                    self.pos.file,
                    node.start_mark.line + 1,
                    node.start_mark.column + 1,
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes (alias bomb?)",
                )
        if self.count > MAX_NODES:
            raise _fail(
                self.pos.file,
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                f"document expands to more than {MAX_NODES} nodes (alias bomb?)",
            )
        if depth > MAX_DEPTH:
            raise _fail(
                self.pos.file,
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                f"nesting deeper than {MAX_DEPTH} levels",
            )
        self.pos.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _fail(self.pos.file, line, col, "mapping keys must be plain strings")
                key = self._scalar(key_node)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _fail(self.pos.file, line, col, "merge keys ('<<') are not supported")
                if not isinstance(key, str):
                    key = str(key_node.value)
                if key in result:
                    first = self.pos.keys.get((*path, key))
                    where = f" (first at line {first[0]})" if first else ""
                    raise _fail(self.pos.file, line, col, f"duplicate key '{key}'{where}")
                self.pos.keys[(*path, key)] = (line, col)
                result[key] = self.build(value_node, (*path, key), depth + 1)
            return result
        raise _fail(  # pragma: no cover - composer yields only the three kinds
            self.pos.file, node.start_mark.line + 1, node.start_mark.column + 1, "unknown node"
        )

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        # Only the safe, JSON-like scalar types; timestamps and binary stay strings.
        if tag in (
            "tag:yaml.org,2002:null",
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
        ):
            constructor = yaml.SafeLoader.yaml_constructors[tag]
            return constructor(_DUMMY, node)
        if tag in (
            "tag:yaml.org,2002:str",
            "tag:yaml.org,2002:timestamp",
            "tag:yaml.org,2002:merge",
            "tag:yaml.org,2002:value",
        ):
            return str(node.value)
        raise _fail(
            self.pos.file,
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            f"unsupported YAML tag {tag}",
        )


_DUMMY = yaml.SafeLoader("")


def load_yaml(data: bytes, file: str) -> tuple[Any, Positions]:
    """Parse one YAML document from bytes; returns plain data and the positions of its nodes."""
    text = decode(data, file)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise _fail(file, line, col, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(file, 1, 1, f"YAML error: {exc}") from None
    builder = _Builder(file)
    if node is None:
        return None, builder.pos
    return builder.build(node, (), 0), builder.pos
