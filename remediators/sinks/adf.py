"""Markdown to Atlassian Document Format (ADF), for Jira Cloud REST v3 descriptions.

Covers what ticket descriptions use: paragraphs, ``#`` headings, bullet and numbered lists
(nested by indentation), fenced code blocks, and inline ``**strong**``, ``*em*``, ```code```
and ``[links](url)``. Anything else stays literal text, so nothing is lost.

>>> doc = markdown_to_adf("**Root cause:** `db`\\n\\n- one\\n   - nested")
>>> doc["content"][0]["content"]
[{'type': 'text', 'text': 'Root cause:', 'marks': [{'type': 'strong'}]}, {'type': 'text', 'text': ' '}, \
{'type': 'text', 'text': 'db', 'marks': [{'type': 'code'}]}]
>>> [n["type"] for n in doc["content"][1]["content"][0]["content"]]
['paragraph', 'bulletList']
"""
from __future__ import annotations

import re
from typing import Any

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_ITEM = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s*```(\w*)\s*$")
_INLINE = re.compile(
    r"\*\*(?P<strong>.+?)\*\*"
    r"|`(?P<code>[^`]+)`"
    r"|\[(?P<ltext>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|(?<![\w*])\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*(?![\w*])")

Node = dict[str, Any]


def _text(text: str, marks: list[Node]) -> Node:
    node: Node = {"type": "text", "text": text}
    if marks:
        node["marks"] = list(marks)
    return node


def inline(text: str, marks: list[Node] | None = None) -> list[Node]:
    """Inline Markdown to ADF text nodes (never an empty text node, which ADF rejects).

    >>> inline("see [runbook](https://rb.test/x) now")[1]
    {'type': 'text', 'text': 'runbook', 'marks': [{'type': 'link', 'attrs': {'href': 'https://rb.test/x'}}]}
    """
    marks = marks or []
    out: list[Node] = []
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            out.append(_text(text[pos:m.start()], marks))
        if m.group("strong") is not None:
            out += inline(m.group("strong"), marks + [{"type": "strong"}])
        elif m.group("code") is not None:
            # ADF allows the code mark only with link marks.
            out.append(_text(m.group("code"), [mk for mk in marks if mk["type"] == "link"] + [{"type": "code"}]))
        elif m.group("ltext") is not None:
            out += inline(m.group("ltext"), marks + [{"type": "link", "attrs": {"href": m.group("href")}}])
        else:
            out += inline(m.group("em"), marks + [{"type": "em"}])
        pos = m.end()
    if pos < len(text):
        out.append(_text(text[pos:], marks))
    return [n for n in out if n.get("text")]


def _paragraph(lines: list[str]) -> Node:
    content: list[Node] = []
    for i, line in enumerate(lines):
        if i:
            content.append({"type": "hardBreak"})
        content += inline(line.strip())
    return {"type": "paragraph", "content": content} if content else {"type": "paragraph"}


def markdown_to_adf(markdown: str) -> Node:
    """A whole ADF document (``{"type": "doc", "version": 1, ...}``) from Markdown."""
    doc: Node = {"type": "doc", "version": 1, "content": []}
    para: list[str] = []
    # Open lists, outermost first: (indent, list node).
    stack: list[tuple[int, Node]] = []
    lines = markdown.splitlines()
    i = 0

    def flush() -> None:
        if para:
            doc["content"].append(_paragraph(para))
            para.clear()

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            stack.clear()
            body = []
            i += 1
            while i < len(lines) and not _FENCE.match(lines[i]):
                body.append(lines[i])
                i += 1
            node: Node = {"type": "codeBlock", "content": [{"type": "text", "text": "\n".join(body)}]} if body \
                else {"type": "codeBlock"}
            if fence.group(1):
                node["attrs"] = {"language": fence.group(1)}
            doc["content"].append(node)
            i += 1
            continue
        item = _ITEM.match(line)
        if item:
            flush()
            indent = len(item.group(1).expandtabs(4))
            kind = "bulletList" if item.group(2) in "-*+" else "orderedList"
            while stack and stack[-1][0] > indent:
                stack.pop()
            if stack and stack[-1][0] == indent and stack[-1][1]["type"] != kind:
                stack.pop()
            if not stack or stack[-1][0] < indent:
                lst: Node = {"type": kind, "content": []}
                if stack:
                    stack[-1][1]["content"][-1]["content"].append(lst)
                else:
                    doc["content"].append(lst)
                stack.append((indent, lst))
            stack[-1][1]["content"].append({"type": "listItem", "content": [_paragraph([item.group(3)])]})
            i += 1
            continue
        if not line.strip():
            flush()
            stack.clear()
            i += 1
            continue
        if stack and line.startswith((" ", "\t")):
            # A continuation line of the last list item.
            last = stack[-1][1]["content"][-1]["content"][0]
            last.setdefault("content", []).extend([{"type": "hardBreak"}, *inline(line.strip())])
            i += 1
            continue
        stack.clear()
        heading = _HEADING.match(line)
        if heading:
            flush()
            doc["content"].append({"type": "heading", "attrs": {"level": len(heading.group(1))},
                                   "content": inline(heading.group(2))})
        else:
            para.append(line)
        i += 1
    flush()
    return doc
