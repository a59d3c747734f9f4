"""HTML that is escaped unless it says otherwise.

Everything the pages show comes from telemetry or from operators: a service name, a label, a log
template or a runbook title may hold ``<script>``. So the only way a value reaches a page is
:func:`render` (a template from ``templates/``) or :func:`tag`, and both escape every value that
is not already :class:`Markup`. Markup is only ever made here, from escaped parts or from our own
template files, so forgetting to escape a value cannot inject markup: it shows the text.

>>> render_string("<td>$name</td>", name="<script>alert(1)</script>")
Markup('<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>')
>>> tag("b", "1 < 2") + " & <i>"
Markup('<b>1 &lt; 2</b> &amp; &lt;i&gt;')
>>> tag("a", "x & y", href="/incidents/inc-1?a=1&b=2")
Markup('<a href="/incidents/inc-1?a=1&amp;b=2">x &amp; y</a>')
"""
from __future__ import annotations

import html
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent / "templates"


class Markup(str):
    """A string that is already HTML: :func:`escape` passes it through unchanged."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Markup({str.__repr__(self)})"

    # Concatenation escapes the other side, so ``markup + text`` stays safe (and stays Markup,
    # so it is not escaped a second time later).
    def __add__(self, other: object) -> Markup:
        if not isinstance(other, str):
            return NotImplemented
        return Markup(str.__add__(self, escape(other)))

    def __radd__(self, other: object) -> Markup:
        if not isinstance(other, str):
            return NotImplemented
        return Markup(str.__add__(escape(other), self))


def escape(value: object) -> Markup:
    """``value`` as HTML text: Markup as is, ``None`` as nothing, anything else escaped (quotes too,
    so the result is safe inside an attribute value)."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[object], sep: object = "") -> Markup:
    """Escaped ``parts`` joined by an escaped ``sep``."""
    return Markup(escape(sep).join(escape(p) for p in parts))


def tag(name: str, content: object = "", **attrs: object) -> Markup:
    """``<name attrs>content</name>``; an attribute whose value is ``None`` or ``False`` is left out,
    ``True`` writes it bare. A trailing underscore is dropped from an attribute's name (``class_``)
    and other underscores become dashes (``data_id``)."""
    out = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        out.append(key if value is True else f'{key}="{escape(value)}"')
    return Markup(f"<{' '.join(out)}>{escape(content)}</{name}>")


def render_string(template: str, **values: object) -> Markup:
    """``template`` (``string.Template`` syntax) with every value escaped. A missing value raises."""
    return Markup(Template(template).substitute({k: escape(v) for k, v in values.items()}))


@cache
def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render(name: str, **values: object) -> Markup:
    """The template file ``templates/<name>`` with every value escaped."""
    return render_string(_template(name), **values)


__all__ = ["Markup", "escape", "join", "render", "render_string", "tag"]
