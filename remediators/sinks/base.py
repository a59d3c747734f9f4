"""HTTP exchanges as data: what a ticket sink asks to send and what came back. Pure: no I/O.

A request never holds a secret. It names the environment variable and where the value goes
(a header, Basic auth, a JSON body key); :func:`prepare` fills it in from a mapping the caller
passes, so the core never reads the environment and a logged request leaks nothing.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from remediators.records import TicketEvent


class SinkError(Exception):
    """A tracker's answer is not what its API documents; retrying will not help."""


class MissingSecret(SinkError):
    """The environment variable a request needs is not set."""


@dataclass(frozen=True, slots=True)
class Secret:
    """Where the caller puts a secret read from environment variable ``env``.

    ``place``: ``header`` sets header ``name`` to ``template`` with ``{}`` replaced by the value;
    ``basic`` sets header ``name`` to HTTP Basic of ``user:value``; ``body`` sets JSON key ``name``.
    """

    env: str
    place: Literal["header", "basic", "body"]
    name: str = "Authorization"
    template: str = "{}"
    user: str = ""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request. ``retry_safe``: may be sent again as is when no clear answer came back
    (connection lost, 5xx); False for creates that the API cannot deduplicate."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    json: Any = None
    secret: Secret | None = None
    retry_safe: bool = True

    def describe(self) -> str:
        """``METHOD path`` for messages (no query string: it may hold incident ids, never secrets, but is long).

        >>> HttpRequest("GET", "https://x.test/api/v2/list/1/task?tags[]=a").describe()
        'GET /api/v2/list/1/task'
        """
        return f"{self.method} {urlsplit(self.url).path}"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise SinkError(f"HTTP {self.status}: the body is not JSON: {self.excerpt()!r}") from None

    def excerpt(self, n: int = 300) -> str:
        text = self.body[:n].decode("utf-8", errors="replace")
        return text + ("…" if len(self.body) > n else "")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready for the wire: secret filled in, body encoded."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def prepare(req: HttpRequest, environ: Mapping[str, str]) -> Prepared:
    """Fill in the secret from ``environ`` and encode the JSON body.

    >>> req = HttpRequest("POST", "https://x.test/t", (("Content-Type", "application/json"),), {"a": 1},
    ...                   Secret("TOKEN", "basic", user="me@x.test"))
    >>> p = prepare(req, {"TOKEN": "s3cret"})
    >>> p.headers["Authorization"], p.body
    ('Basic bWVAeC50ZXN0OnMzY3JldA==', b'{"a": 1}')
    """
    headers = dict(req.headers)
    body = req.json
    s = req.secret
    if s is not None:
        value = environ.get(s.env)
        if not value:
            raise MissingSecret(f"environment variable {s.env} is not set ({req.describe()} needs it)")
        if s.place == "header":
            headers[s.name] = s.template.replace("{}", value)
        elif s.place == "basic":
            headers[s.name] = "Basic " + base64.b64encode(f"{s.user}:{value}".encode()).decode()
        else:
            body = {**(body or {}), s.name: value}
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
    return Prepared(req.method, req.url, headers, data)


# A sink's follow-up for an update or resolve: yields requests, receives each 2xx response.
Steps = Generator[HttpRequest, HttpResponse, None]


class Sink(Protocol):
    """One tracker API as pure functions of a ticket event.

    The delivery engine calls, in order: ``known_id`` (a ticket id derivable from the event,
    for APIs that deduplicate by key), else ``search`` (None when the API has no search) and
    ``found``, else ``create`` and ``created``; then ``apply`` for an update or a resolve.
    """

    name: str

    def known_id(self, ev: TicketEvent) -> str | None: ...
    def search(self, ev: TicketEvent) -> HttpRequest | None: ...
    def found(self, ev: TicketEvent, resp: HttpResponse) -> str | None: ...
    def create(self, ev: TicketEvent) -> HttpRequest: ...
    def created(self, ev: TicketEvent, resp: HttpResponse) -> str: ...
    def apply(self, ev: TicketEvent, ticket_id: str) -> Steps: ...


JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))
