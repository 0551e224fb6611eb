"""Safe YAML loading that remembers the line and column of every key and value.

The parser is PyYAML's (libyaml's C parser when available); only scalars, sequences and
mappings of the safe schema are built. Duplicate keys are errors, alias expansion is bounded
(billion-laughs), and the input must be UTF-8 and under a size bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from provisioner.errors import Diagnostic, Location, ManifestError

MAX_BYTES = 16 * 1024 * 1024
MAX_NODES = 5_000_000
MAX_ALIAS_NODES = 100_000
MAX_DEPTH = 64
MAX_NUMBER_CHARACTERS = 100

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


# Any of those rules, in one expression: a plain scalar it does not match is a string.
_MAYBE_TYPED = re.compile(
    "|".join(
        dict.fromkeys(  # each rule is registered once per first character: once here
            f"(?{'x' if regexp.flags & re.X else ''}:{regexp.pattern})"
            for _tag, regexp, _first in _IMPLICIT
        )
    )
).match


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
    __slots__ = ("anchor", "container", "depth", "first", "is_list", "key", "path")

    def __init__(
        self, is_list: bool, path: Path, depth: int, anchor: str | None, first: int
    ) -> None:
        self.is_list = is_list
        self.container: Any = [] if is_list else {}
        self.path = path
        self.depth = depth
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.first = first  # the node count before this collection: its size is count - first


_NO_KEY = object()


class _Builder:
    """Builds plain data and positions straight from libyaml's event stream (several times
    faster than composing PyYAML nodes), with the same safety rules."""

    def __init__(self, file: str, lean: bool = False) -> None:
        self.pos = Positions(file)
        self.lean = lean  # record the positions of collections only
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
        try:
            # Python refuses to convert integers of thousands of digits (or, in hexadecimal,
            # to print them): no setting needs more than a hundred.
            if tag == "tag:yaml.org,2002:int" and len(event.value) > MAX_NUMBER_CHARACTERS:
                raise ValueError
            return _CONSTRUCT[tag](_DUMMY, node)
        except (ValueError, OverflowError):
            shown = event.value if len(event.value) <= 20 else f"{event.value[:20]}..."
            raise self.fail(
                event.start_mark,
                f"the number {shown} is too long to read ({len(event.value)} characters); "
                "quote it if it is text",
            ) from None

    def run(self, parser: Any) -> Any:
        """Consume `parser`'s events. The loop is written flat (locals, no per-event method
        call on the common paths): at region scale it handles hundreds of thousands of events."""
        stack: list[_Frame] = []
        root: Any = None
        documents = 0
        count = 0
        values = self.pos.values
        get_event = parser.get_event
        scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
        mapping_start, sequence_start = yaml.MappingStartEvent, yaml.SequenceStartEvent
        mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
        document_start = yaml.DocumentStartEvent
        by_first = _BY_FIRST
        any_first = _BY_FIRST.get(None)
        maybe_typed = _MAYBE_TYPED
        no_key = _NO_KEY
        column_max = _COLUMN
        lean = self.lean
        while (event := get_event()) is not None:
            kind = type(event)
            if kind is scalar_event:
                count += 1
                text = event.value
                tag = event.tag
                if (tag is None or tag == "!") and (
                    not event.implicit[0]  # quoted: always a string
                    or (
                        text
                        and any_first is None
                        and (text[0] not in by_first or maybe_typed(text) is None)
                    )
                ):
                    value = text  # the common case: a string
                else:
                    value = self.scalar(event)
                if event.anchor:
                    self.anchors[event.anchor] = (value, 1)
                if not stack:
                    root = value
                    continue
                frame = stack[-1]
                container = frame.container
                if lean:
                    packed = 0
                else:
                    mark = event.start_mark
                    column = min(mark.column + 1, column_max)
                    packed = ((mark.line + 1) << 20) | column
                if frame.is_list:
                    if not lean:
                        values[(*frame.path, len(container))] = packed
                    container.append(value)
                elif frame.key is not no_key:
                    if not lean:
                        values[(*frame.path, frame.key)] = packed
                    container[frame.key] = value
                    frame.key = no_key
                elif type(value) is str and value not in container:  # a new key
                    if not lean:
                        self.pos.keys[(*frame.path, value)] = packed
                    frame.key = value
                else:
                    self._key(frame, value, packed)
            elif kind is mapping_start or kind is sequence_start:
                if event.tag not in (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
                    raise self.fail(event.start_mark, f"unsupported YAML tag {event.tag}")
                if stack:
                    parent = stack[-1]
                    if parent.is_list:
                        path: Path = (*parent.path, len(parent.container))
                    elif parent.key is no_key:
                        raise self.fail(event.start_mark, "mapping keys must be plain strings")
                    else:
                        path = (*parent.path, parent.key)
                    depth = parent.depth + 1
                    if depth > MAX_DEPTH:
                        raise self.fail(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
                else:
                    path, depth = (), 0
                values.setdefault(path, _pack(event.start_mark))
                stack.append(_Frame(kind is sequence_start, path, depth, event.anchor, count))
                count += 1
            elif kind is mapping_end or kind is sequence_end:
                frame = stack.pop()
                if frame.anchor:
                    self.anchors[frame.anchor] = (frame.container, count - frame.first)
                if stack:
                    self._nested(stack[-1], frame.container)
                else:
                    root = frame.container
            elif kind is alias_event:
                if event.anchor not in self.anchors:
                    raise self.fail(event.start_mark, f"unknown alias *{event.anchor}")
                value, size = self.anchors[event.anchor]
                self.alias_count += size
                if self.alias_count > MAX_ALIAS_NODES:
                    raise self.fail(
                        event.start_mark,
                        f"aliases expand to more than {MAX_ALIAS_NODES} nodes (alias bomb?)",
                    )
                count += size
                if not stack:
                    root = value
                    continue
                self._add(stack[-1], value, event.start_mark)
            elif kind is document_start:
                documents += 1
                if documents > 1:
                    raise self.fail(event.start_mark, "only one YAML document is allowed")
            if count > MAX_NODES:
                raise _fail(self.pos.file, 1, 1, f"document has more than {MAX_NODES} nodes")
        return root

    def _key(self, frame: _Frame, value: Any, packed: int) -> None:
        """`value` is the next key of the mapping `frame`."""
        line, col = packed >> 20, packed & _COLUMN
        if self.lean and (value is _MERGE or isinstance(value, (dict, list))):
            raise _Placing
        if value is _MERGE:
            raise _fail(self.pos.file, line, col, "merge keys ('<<') are not supported")
        if isinstance(value, (dict, list)):
            raise _fail(self.pos.file, line, col, "mapping keys must be plain strings")
        key = value if isinstance(value, str) else str(value)
        if key in frame.container:
            if self.lean:
                raise _Placing  # parsed again with every position, to say where
            first = self.pos.keys.get((*frame.path, key))
            where = f" (first at line {first >> 20})" if first else ""
            raise _fail(self.pos.file, line, col, f"duplicate key '{key}'{where}")
        if not self.lean:
            self.pos.keys[(*frame.path, key)] = packed
        frame.key = key

    def _nested(self, frame: _Frame, value: Any) -> None:
        """A finished collection (its position was recorded at its start) joins `frame`."""
        if frame.is_list:
            frame.container.append(value)
        else:
            frame.container[frame.key] = value
            frame.key = _NO_KEY

    def _add(self, frame: _Frame, value: Any, mark: Any) -> None:
        """An alias's value joins `frame`: as a key (checked by `_key`) or as a value."""
        if not frame.is_list and frame.key is _NO_KEY:
            self._key(frame, value, _pack(mark))
            return
        self.pos.values[(*frame.path, len(frame.container) if frame.is_list else frame.key)] = (
            _pack(mark)
        )
        self._nested(frame, value)


_MERGE = object()
_DUMMY = yaml.SafeLoader("")


class _Placing(Exception):
    """A lean parse met an error it cannot place: parse again with every position."""


def load_yaml(data: bytes, file: str, *, lean: bool = False) -> tuple[Any, Positions]:
    """Parse one YAML document from bytes; returns plain data and the positions of its nodes:
    of every key and value, or when `lean` of mappings and lists only (a fifth of them, for
    callers that place problems later by parsing again)."""
    text = decode(data, file)
    if lean:
        try:
            return _parse(text, file, lean=True)
        except _Placing:
            pass
    return _parse(text, file, lean=False)


def _parse(text: str, file: str, *, lean: bool) -> tuple[Any, Positions]:
    builder = _Builder(file, lean)
    parser: Any = None
    try:
        parser = _Loader(text)
        return builder.run(parser), builder.pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise _fail(file, line, col, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(file, 1, 1, f"YAML error: {exc}") from None
    finally:
        if parser is not None:
            parser.dispose()
