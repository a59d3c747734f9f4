"""The worker's HTTP server, hardened: no request header value reaches a log line or a response.

aiohttp answers a request it cannot parse (a NUL or CR in a header, a header line over 8 KiB)
with a 400 whose body quotes the offending line, and logs that line with a traceback at ERROR:
an ``Authorization: Bearer ...`` header, token included. An aborted request (the client hung
up mid-body) logs a traceback too. Here every error is answered with its status line only,
and logged as one line naming the kind of error and the peer, never the request's bytes:

    WARNING streams.http: 400 for a request from 10.0.0.7: a malformed header (BadHttpMessage)

:class:`SafeAppRunner` replaces aiohttp's ``AppRunner``; :func:`harden` installs one in a Faust
app's web driver.
"""
from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import http_exceptions, web, web_protocol, web_server

log = logging.getLogger("streams.http")

# What each parse error is, in words that quote nothing of the request.
_KINDS = (
    (http_exceptions.LineTooLong, "a request line or header longer than the limit (8 KiB)"),
    (http_exceptions.BadStatusLine, "a malformed request line"),
    (http_exceptions.InvalidHeader, "a malformed header"),
    (http_exceptions.ContentLengthError, "a body shorter or longer than its Content-Length"),
    (http_exceptions.TransferEncodingError, "a malformed chunked body"),
    (http_exceptions.ContentEncodingError, "a body that does not decode"),
    (http_exceptions.BadHttpMessage, "a malformed request"),
    (ConnectionError, "the client hung up"),
)


def describe(exc: BaseException | None) -> str:
    """What went wrong, without a byte of the request.

    >>> describe(http_exceptions.LineTooLong(b"Bearer secret" * 1000, 8190))
    'a request line or header longer than the limit (8 KiB) (LineTooLong)'
    >>> describe(ValueError("Authorization: Bearer secret"))
    'ValueError'
    """
    if exc is None:
        return "no detail"
    name = type(exc).__name__
    for cls, words in _KINDS:
        if isinstance(exc, cls):
            return f"{words} ({name})"
    return name


class SafeRequestHandler(web_protocol.RequestHandler):
    """aiohttp's handler, with errors answered and logged without the request's text."""

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        peer = request.remote if request is not None else None
        level = logging.ERROR if status >= 500 and not isinstance(exc, ConnectionError) else logging.WARNING
        log.log(level, "%d for a request from %s: %s", status, peer or "?", describe(exc))
        if request is not None and request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        resp = web.Response(status=status, text=f"{status} {phrase}\n", content_type="text/plain")
        resp.force_close()
        return resp

    def log_exception(self, *args, **kw) -> None:
        """One line, no traceback: the exception's message may quote the request."""
        exc = kw.get("exc_info")
        what = args[0] if args and isinstance(args[0], str) else "error"
        if "%" in what:
            what = what.split("%", 1)[0].strip() or "error"
        log.warning("%s: %s", what, describe(exc if isinstance(exc, BaseException) else None))

    def log_debug(self, *args, **kw) -> None:
        """aiohttp's debug lines may carry exceptions that quote the request: not logged."""


class SafeServer(web_server.Server):
    __slots__ = ()

    def __call__(self) -> web_protocol.RequestHandler:
        return SafeRequestHandler(self, loop=self._loop, **self._kwargs)


class SafeAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are served by :class:`SafeRequestHandler`."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = SafeServer
        return server


def harden(app) -> None:
    """Serve a Faust app's web endpoints with :class:`SafeAppRunner` (its aiohttp driver
    builds an ``AppRunner`` of its own when the web driver is created)."""
    web_driver = app.web
    runner = getattr(web_driver, "_runner", None)
    if isinstance(runner, web.AppRunner) and not isinstance(runner, SafeAppRunner):
        web_driver._runner = SafeAppRunner(web_driver.web_app, access_log=None)


__all__ = ["SafeAppRunner", "SafeRequestHandler", "describe", "harden"]
