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

# libyaml's C parser where PyYAML was built with it. The base loader resolves no implicit tags
# (every plain scalar arrives as a string); `_plain` types them below with YAML 1.1's rules,
# which is several times faster than PyYAML's Python resolver.
_Base: Any = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
_DEFAULT_TAGS = {
    yaml.ScalarNode: "tag:yaml.org,2002:str",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
    yaml.MappingNode: "tag:yaml.org,2002:map",
}


class _Loader(_Base):  # type: ignore[misc]
    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        return _DEFAULT_TAGS[kind]


_IMPLICIT = [
    (tag, regexp, first)
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    for tag, regexp in resolvers
    if tag
    in (
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:merge",
        "tag:yaml.org,2002:timestamp",
        "tag:yaml.org,2002:value",
    )
]
_BY_FIRST: dict[str | None, list[tuple[str, Any]]] = {}
for _tag, _regexp, _first in _IMPLICIT:
    _BY_FIRST.setdefault(_first, []).append((_tag, _regexp))


def _plain_tag(value: str) -> str:
    """The tag YAML 1.1 gives a plain (unquoted) scalar, as PyYAML's SafeLoader would."""
    for tag, regexp in _BY_FIRST.get(value[:1] if value else "", _BY_FIRST.get(None, [])):
        if regexp.match(value):
            return str(tag)
    return "tag:yaml.org,2002:str"


@dataclass
class Positions:
    """Maps a path inside the document to the line and column of its value and of its key,
    packed in one int (line << 20 | column): region manifests have hundreds of thousands."""

    file: str
    values: dict[Path, int] = field(default_factory=dict)
    keys: dict[Path, int] = field(default_factory=dict)

    def at(self, path: Path, *, key: bool = False) -> Location:
        """Location of the node at `path` (its key when `key`), else of its nearest ancestor."""
        p = tuple(path)
        while True:
            table = self.keys if key and p in self.keys else self.values
            if p in table:
                packed = table[p]
                return Location(self.file, packed >> 20, packed & _COLUMN)
            if not p:
                return Location(self.file, 1, 1)
            p = p[:-1]


_COLUMN = (1 << 20) - 1


def _pack(mark: Any) -> int:
    return int(((mark.line + 1) << 20) | min(mark.column + 1, _COLUMN))


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


_SAFE_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:merge",
    "tag:yaml.org,2002:value",
}
_CONSTRUCT = yaml.SafeLoader.yaml_constructors


class _Frame:
    __slots__ = ("anchor", "container", "depth", "key", "path", "size")

    def __init__(self, container: Any, path: Path, depth: int, anchor: str | None) -> None:
        self.container = container
        self.path = path
        self.depth = depth
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.size = 1


_NO_KEY = object()


class _Builder:
    """Builds plain data and positions straight from libyaml's event stream (several times
    faster than composing PyYAML nodes), with the same safety rules."""

    def __init__(self, file: str) -> None:
        self.pos = Positions(file)
        self.count = 0
        self.alias_count = 0
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, subtree size)

    def fail(self, mark: Any, message: str) -> ManifestError:
        return _fail(self.pos.file, mark.line + 1, mark.column + 1, message)

    def scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0]:  # quoted: always a string
                return event.value
            tag = _plain_tag(event.value)
        elif tag not in _SAFE_TAGS:
            raise self.fail(event.start_mark, f"unsupported YAML tag {tag}")
        if tag in (
            "tag:yaml.org,2002:str",
            "tag:yaml.org,2002:timestamp",
            "tag:yaml.org,2002:value",
        ):
            return event.value
        if tag == "tag:yaml.org,2002:merge":
            return _MERGE
        node = yaml.ScalarNode(tag, event.value)
        return _CONSTRUCT[tag](_DUMMY, node)

    def run(self, events: Any) -> Any:
        stack: list[_Frame] = []
        root: Any = None
        documents = 0
        for event in events:
            kind = type(event)
            if kind is yaml.ScalarEvent or kind is yaml.AliasEvent:
                if kind is yaml.AliasEvent:
                    if event.anchor not in self.anchors:
                        raise self.fail(event.start_mark, f"unknown alias *{event.anchor}")
                    value, size = self.anchors[event.anchor]
                    self.alias_count += size
                    if self.alias_count > MAX_ALIAS_NODES:
                        raise self.fail(
                            event.start_mark,
                            f"aliases expand to more than {MAX_ALIAS_NODES} nodes (alias bomb?)",
                        )
                else:
                    value = self.scalar(event)
                    size = 1
                    if event.anchor:
                        self.anchors[event.anchor] = (value, 1)
                self.count += size
                if not stack:
                    root = value
                    continue
                self._add(stack[-1], value, event.start_mark, size)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if event.tag not in (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
                    raise self.fail(event.start_mark, f"unsupported YAML tag {event.tag}")
                parent = stack[-1] if stack else None
                if (
                    parent is not None
                    and isinstance(parent.container, dict)
                    and parent.key is _NO_KEY
                ):
                    raise self.fail(event.start_mark, "mapping keys must be plain strings")
                path = () if parent is None else self._child_path(parent)
                depth = 0 if parent is None else parent.depth + 1
                if depth > MAX_DEPTH:
                    raise self.fail(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
                self.pos.values.setdefault(path, _pack(event.start_mark))
                container: Any = {} if kind is yaml.MappingStartEvent else []
                stack.append(_Frame(container, path, depth, event.anchor))
                self.count += 1
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = stack.pop()
                if frame.anchor:
                    self.anchors[frame.anchor] = (frame.container, frame.size)
                if stack:
                    self._add(stack[-1], frame.container, None, frame.size, nested=True)
                else:
                    root = frame.container
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise self.fail(event.start_mark, "only one YAML document is allowed")
            if self.count > MAX_NODES:
                raise _fail(self.pos.file, 1, 1, f"document has more than {MAX_NODES} nodes")
        return root

    def _child_path(self, parent: _Frame) -> Path:
        if isinstance(parent.container, list):
            return (*parent.path, len(parent.container))
        return (*parent.path, parent.key)

    def _add(self, frame: _Frame, value: Any, mark: Any, size: int, nested: bool = False) -> None:
        frame.size += size
        container = frame.container
        if isinstance(container, list):
            if not nested:
                self.pos.values.setdefault((*frame.path, len(container)), _pack(mark))
            container.append(value)
            return
        if frame.key is _NO_KEY:  # this scalar is a key
            if nested:
                raise AssertionError("unreachable: checked at the container's start")
            line, col = mark.line + 1, mark.column + 1
            if value is _MERGE:
                raise _fail(self.pos.file, line, col, "merge keys ('<<') are not supported")
            if isinstance(value, (dict, list)):
                raise _fail(self.pos.file, line, col, "mapping keys must be plain strings")
            key = value if isinstance(value, str) else str(value)
            if key in container:
                first = self.pos.keys.get((*frame.path, key))
                where = f" (first at line {first >> 20})" if first else ""
                raise _fail(self.pos.file, line, col, f"duplicate key '{key}'{where}")
            self.pos.keys[(*frame.path, key)] = (line << 20) | min(col, _COLUMN)
            frame.key = key
            return
        if not nested:
            self.pos.values.setdefault((*frame.path, frame.key), _pack(mark))
        container[frame.key] = value
        frame.key = _NO_KEY


_MERGE = object()
_DUMMY = yaml.SafeLoader("")


def load_yaml(data: bytes, file: str) -> tuple[Any, Positions]:
    """Parse one YAML document from bytes; returns plain data and the positions of its nodes."""
    text = decode(data, file)
    builder = _Builder(file)
    try:
        return builder.run(yaml.parse(text, Loader=_Loader)), builder.pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise _fail(file, line, col, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(file, 1, 1, f"YAML error: {exc}") from None
