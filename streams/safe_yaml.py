"""Read YAML that a person wrote by hand, or that someone hostile wrote for us: topology.yaml.

``yaml.safe_load`` constructs no Python objects, but it is still unsafe for this file:

- it expands aliases, so ten lines of nested aliases (billion laughs) become 10**9 strings, and an
  alias inside its own anchor (``a: &a [*a]``) is a list that contains itself, which every later
  walk over the document recurses into until the stack overflows;
- it composes and constructs recursively, so a list nested a few thousand deep overflows the
  Python stack;
- a key written twice silently takes the last value;
- ``!!binary`` and the other non-JSON tags give values (bytes, sets) no field here expects,
  which lets a binary password slip past checks that look for strings;
- a scalar the resolver calls a number or a time can still fail to construct (``2024-13-45``, an
  integer of 5,000 digits) with a bare ValueError.

This module turns the parser's event stream into plain Python values itself, with an explicit
stack instead of recursion, and refuses each of those with its path and line. It goes on after a
refused node (reading it as null), so one run reports every such problem; only a syntax error,
after which the parser cannot resynchronise, stops it. The work is linear in the size of the text,
and the text itself is capped at :data:`MAX_BYTES`.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import yaml
from yaml.events import (AliasEvent, DocumentEndEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent,
                         ScalarEvent, SequenceEndEvent, SequenceStartEvent, StreamEndEvent, StreamStartEvent)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

# A topology of thousands of services is well under this; a bigger file is a mistake or an attack.
MAX_BYTES = 1024 * 1024
# The deepest real topology.yaml paths are about 8 levels (tickets.delivery.clickup.priorities.P1);
# 32 leaves room and keeps every later walk over the document far from the recursion limit.
MAX_DEPTH = 32

_T = "tag:yaml.org,2002:"
# The JSON-like tags, plus timestamps (silences use them). Anything else (!!binary, !!set,
# !!omap, !!python/..., the merge key `<<`, the value key `=`) is refused.
SCALAR_TAGS = frozenset(_T + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
SEQ_TAG, MAP_TAG = _T + "seq", _T + "map"
_REFUSED_KEY = object()  # a mapping key that was refused: its value is read, then dropped

# The C parser (libyaml) is about ten times faster than PyYAML's pure-Python one; either gives the
# same events.
_Loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class YamlDoc(NamedTuple):
    """What :func:`load_yaml` read: the document (None for an empty file), every problem as
    ``(path, message)``, and the paths of the nodes it refused and read as null (a validator
    should not report them a second time as, say, "expected a list")."""

    data: Any
    problems: list[tuple[str, str]]
    refused: list[tuple]


class YamlSyntaxError(ValueError):
    """The text is not YAML at all (or not UTF-8, or too big); ``problem`` is ``(path, message)``."""

    def __init__(self, problem: tuple[str, str]):
        self.problem = problem
        super().__init__(problem[1])


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@:/-]{0,127}$")


def format_path(loc: tuple) -> str:
    """``("services", "web", "depends_on", 0)`` as ``services.web.depends_on[0]``. A key that is
    not plain (empty, long, holding a newline or markup) is quoted, so a report line cannot be
    forged or broken by the file it reports on.

    >>> format_path(("services", "a\\nb", "[key]"))
    "services['a\\\\nb']"
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":  # pydantic's marker for a dict key's own error
            continue
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            out += ("." if out else "") + part
        else:
            r = repr(part)
            out += f"[{r if len(r) <= 40 else r[:39] + '…'}]"
    return out


def decode_utf8(data: bytes) -> str:
    """The text of a file that must be UTF-8 (a BOM is allowed). Raises :class:`YamlSyntaxError`
    naming the line and column of the first byte that is not.

    >>> decode_utf8(b"a: 1\\nb: \\xff")
    Traceback (most recent call last):
    ...
    streams.safe_yaml.YamlSyntaxError: line 2, column 4: not valid UTF-8 (byte 0xff); save the file as UTF-8
    """
    if len(data) > MAX_BYTES:
        raise YamlSyntaxError(("", f"the file is larger than {MAX_BYTES} bytes (1 MiB), the limit"))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlSyntaxError(("", f"line {line}, column {column}: not valid UTF-8 "
                                   f"(byte 0x{data[exc.start]:02x}); save the file as UTF-8")) from None


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


def _short(tag: str) -> str:
    return "!!" + tag[len(_T):] if tag.startswith(_T) else tag


def load_yaml(text: str | bytes) -> YamlDoc:
    """Parse one YAML document into dicts, lists and scalars, refusing what is listed above.

    Raises :class:`YamlSyntaxError` when the text is not UTF-8, too big or not YAML.

    >>> load_yaml("a: &x [1]\\nb: *x\\na: 2\\n").problems
    [('b', 'line 2, column 4: aliases are not allowed (*x); write the value out'), ('a', "line 3, column 1: duplicate key 'a' (first at line 1)")]
    """
    if isinstance(text, bytes):
        text = decode_utf8(text)
    elif len(text) > MAX_BYTES:  # characters, not bytes, but the cap is about work, not exactness
        raise YamlSyntaxError(("", f"the text is longer than {MAX_BYTES} characters (1 MiB), the limit"))
    if _Loader is not getattr(yaml, "CSafeLoader", None) and _flow_depth(text) > MAX_DEPTH:
        # PyYAML's pure-Python scanner is quadratic in flow nesting ([[[[...), 30 s for 5,000
        # levels, before any event reaches the depth check below; libyaml stops at 1,000 itself.
        raise YamlSyntaxError(("", f"nested more than {MAX_DEPTH} levels deep"))
    loader = _Loader(text)
    try:
        return _read(loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        elif isinstance(getattr(exc, "position", None), int):  # a ReaderError: a character YAML forbids
            pos = exc.position
            where = f"line {text.count(chr(10), 0, pos) + 1}, column {pos - (text.rfind(chr(10), 0, pos) + 1) + 1}: "
        else:
            where = ""
        what = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise YamlSyntaxError(("", f"{where}invalid YAML: {what}")) from None
    finally:
        loader.dispose()


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ and { outside quotes and comments: an upper bound on flow depth,
    close enough to refuse a file only when it truly nests far too deep.

    >>> _flow_depth("a: [1, {b: '[['}]  # [[[")
    2
    """
    depth = deepest = 0
    quote = None
    comment = False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return deepest


class _Container:
    """A mapping or sequence being read: its value, its path and depth, and for a mapping the key
    waiting for its value and the line each key was first seen on."""

    __slots__ = ("value", "path", "depth", "key", "key_set", "seen")

    def __init__(self, value, path: tuple, depth: int):
        self.value, self.path, self.depth = value, path, depth
        self.key, self.key_set, self.seen = None, False, {}


def _path_of(parent: _Container | None) -> tuple:
    """The path of the node about to be read under ``parent`` (computed only when needed: most
    nodes are scalars that need none)."""
    if parent is None:
        return ()
    if isinstance(parent.value, list):
        return parent.path + (len(parent.value),)
    if parent.key_set:
        key = parent.key
        return parent.path + (key if isinstance(key, str) else "?" if key is _REFUSED_KEY else str(key),)
    return parent.path  # a mapping's key


def _read(loader) -> YamlDoc:
    problems: list[tuple[str, str]] = []
    refused: list[tuple] = []
    loader.get_event()  # StreamStart
    if loader.check_event(StreamEndEvent):
        return YamlDoc(None, problems, refused)
    loader.get_event()  # DocumentStart
    stack: list[_Container] = []
    root: list[Any] = []

    def refuse(path: tuple, mark, message: str) -> None:
        problems.append((format_path(path), f"{_where(mark)}: {message}"))
        refused.append(path)

    def skip_subtree() -> None:
        # The start event was taken; drop events up to its matching end, without recursing.
        level = 1
        while level:
            ev = loader.get_event()
            if isinstance(ev, (SequenceStartEvent, MappingStartEvent)):
                level += 1
            elif isinstance(ev, (SequenceEndEvent, MappingEndEvent)):
                level -= 1

    while True:
        ev = loader.get_event()
        if isinstance(ev, (SequenceEndEvent, MappingEndEvent)):
            done = stack.pop()
            value = done.value
            # A completed container is itself a value of its parent: fall through to place it.
            ev_value, ev_mark, is_value = value, ev.start_mark, True
        elif isinstance(ev, (DocumentEndEvent, StreamEndEvent)):
            break
        else:
            parent = stack[-1] if stack else None
            depth = (parent.depth + 1) if parent else 0
            is_key = parent is not None and isinstance(parent.value, dict) and not parent.key_set
            is_value = False
            if isinstance(ev, AliasEvent):
                refuse(_path_of(parent), ev.start_mark, f"aliases are not allowed (*{ev.anchor}); write the value out")
                ev_value, ev_mark, is_value = None, ev.start_mark, True
            elif isinstance(ev, (SequenceStartEvent, MappingStartEvent)):
                kind = SequenceNode if isinstance(ev, SequenceStartEvent) else MappingNode
                tag = ev.tag if ev.tag not in (None, "!") else loader.resolve(kind, None, ev.implicit)
                want = SEQ_TAG if kind is SequenceNode else MAP_TAG
                if is_key:
                    refuse(_path_of(parent), ev.start_mark, "a key must be a plain value, not a list or mapping")
                    skip_subtree()
                    ev_value, ev_mark, is_value = _REFUSED_KEY, ev.start_mark, True
                elif depth > MAX_DEPTH:
                    refuse(_path_of(parent), ev.start_mark, f"nested more than {MAX_DEPTH} levels deep")
                    skip_subtree()
                    ev_value, ev_mark, is_value = None, ev.start_mark, True
                elif tag != want:
                    refuse(_path_of(parent), ev.start_mark, f"tag {_short(tag)} is not allowed")
                    skip_subtree()
                    ev_value, ev_mark, is_value = None, ev.start_mark, True
                else:
                    stack.append(_Container([] if kind is SequenceNode else {}, _path_of(parent), depth))
                    continue
            elif isinstance(ev, ScalarEvent):
                tag = ev.tag if ev.tag not in (None, "!") else loader.resolve(ScalarNode, ev.value, ev.implicit)
                ev_mark, is_value = ev.start_mark, True
                if tag not in SCALAR_TAGS:
                    what = "merge keys (<<) are not allowed" if tag == _T + "merge" else f"tag {_short(tag)} is not allowed"
                    refuse(_path_of(parent), ev.start_mark, what)
                    ev_value = _REFUSED_KEY if is_key else None
                else:
                    node = ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
                    try:
                        ev_value = loader.yaml_constructors[tag](loader, node)
                    except (ValueError, OverflowError, yaml.YAMLError) as exc:
                        refuse(_path_of(parent), ev.start_mark, f"cannot read {_short(tag)} {ev.value[:40]!r}: "
                                                    f"{str(exc).splitlines()[0][:120]}")
                        ev_value = _REFUSED_KEY if is_key else None
            else:  # DocumentStart of a second document
                if isinstance(ev, DocumentStartEvent):
                    problems.append(("", f"{_where(ev.start_mark)}: expected one YAML document, found a second"))
                    break
                continue
        if not is_value:
            continue
        # Place the value in its parent (or make it the document).
        if not stack:
            root.append(ev_value)
            continue
        parent = stack[-1]
        if isinstance(parent.value, list):
            parent.value.append(ev_value)
        elif not parent.key_set:
            key = ev_value
            if key is not _REFUSED_KEY and not isinstance(key, (str, int, float, bool, type(None))):
                key = str(key)  # a timestamp as a key: keep paths printable
            if key is not _REFUSED_KEY:
                first = parent.seen.get(key)
                if first is not None:
                    problems.append((format_path(parent.path + (str(key),)),
                                     f"{_where(ev_mark)}: duplicate key {str(key)!r} (first at line {first})"))
                else:
                    parent.seen[key] = ev_mark.line + 1
            parent.key, parent.key_set = key, True
        else:
            if parent.key is not _REFUSED_KEY:
                parent.value[parent.key] = ev_value
            parent.key, parent.key_set = None, False
    return YamlDoc(root[0] if root else None, problems, refused)
