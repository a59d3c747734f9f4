"""The worker's HTTP server: no request header value in a log line or a response body, one log
line per aborted request, and the address it binds set by --web-bind or worker.web_bind (issue 18).

The worker's own aiohttp application (built by ``build_app``, its views registered) is served
by the runner ``build_app`` installs, on a loopback port; no Kafka is needed, since no request
here gets past authentication.
"""
from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from streams.app import build_app
from streams.config import ConfigError, parse_topology
from streams.http_safety import SafeAppRunner

TOPO = parse_topology({"services": {"api": {}}})
SECRET = "SECRETtoken0123456789abcdef"


async def _serve(app):
    runner = app.web._runner
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def _exchange(port: int, raw: bytes, abort_after: float | None = None) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(raw)
    await w.drain()
    if abort_after is not None:
        await asyncio.sleep(abort_after)
        w.transport.abort()
        await asyncio.sleep(0.3)
        return b""
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return data


HOSTILE = [
    pytest.param(b"Authorization: Bearer " + SECRET.encode() + b"\x00tail", id="NUL"),
    pytest.param(b"Authorization: Bearer " + SECRET.encode() + b"\rtail", id="CR"),
    pytest.param(b"Authorization: Bearer " + SECRET.encode() + b"A" * 9000, id="over 8 KiB"),
    pytest.param(b"X-Api-Key: " + SECRET.encode() + b"\x7f\x01", id="control chars in another header"),
    pytest.param(b"Authorization: Bearer " + SECRET.encode() + b"\r\n Folded: " + SECRET.encode(), id="folded"),
]


@pytest.mark.parametrize("header", HOSTILE)
def test_a_malformed_header_is_neither_logged_nor_echoed(header, caplog):
    caplog.set_level(logging.DEBUG)
    app = build_app(TOPO, bootstrap="127.0.0.1:1", app_id="http-hardening")
    assert isinstance(app.web._runner, SafeAppRunner)

    async def run():
        runner, port = await _serve(app)
        try:
            return await _exchange(port, b"POST /control HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
        finally:
            await runner.cleanup()

    response = asyncio.run(run())
    assert response.startswith(b"HTTP/1.") and (b" 400 " in response[:20] or b" 401 " in response[:20]), response[:80]
    assert SECRET.encode() not in response
    logged = "\n".join(r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in caplog.records)
    assert SECRET not in logged
    assert not any(r.exc_info for r in caplog.records), "no traceback"
    mine = [r for r in caplog.records if r.name == "streams.http"]
    assert len(mine) <= 1


def test_an_aborted_request_logs_one_line_and_no_traceback(caplog):
    caplog.set_level(logging.DEBUG)

    async def read_all(request):
        await request.read()
        return web.Response(text="ok")

    async def run():
        app = web.Application()
        app.router.add_post("/ingest", read_all)
        runner = SafeAppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            await _exchange(port, b"POST /ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SECRET.encode()
                            + b"\r\nContent-Length: 100000\r\n\r\n{\"partial\":", abort_after=0.2)
        finally:
            await runner.cleanup()

    asyncio.run(run())
    lines = [r for r in caplog.records if r.name.startswith(("aiohttp", "streams.http")) and r.levelno >= logging.INFO
             and r.name != "aiohttp.access"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "hung up" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert SECRET not in "\n".join(r.getMessage() for r in caplog.records)


def test_the_bind_address_defaults_to_loopback_and_is_configurable():
    assert TOPO.worker.web_bind == "127.0.0.1"
    assert build_app(TOPO, bootstrap="127.0.0.1:1", app_id="bind-a").conf.web_bind == "127.0.0.1"
    topo = parse_topology({"services": {"api": {}}, "worker": {"web_bind": "0.0.0.0"}})
    assert build_app(topo, bootstrap="127.0.0.1:1", app_id="bind-b").conf.web_bind == "0.0.0.0"
    assert build_app(topo, bootstrap="127.0.0.1:1", app_id="bind-c", web_bind="::1").conf.web_bind == "::1"
    with pytest.raises(ConfigError, match="worker.web_bind"):
        parse_topology({"services": {"api": {}}, "worker": {"web_bind": "0.0.0.0\n"}})


def test_the_worker_cli_takes_web_bind(monkeypatch):
    from streams import cli

    seen = {}
    monkeypatch.setattr("streams.app.run_worker", lambda topo, **kw: seen.update(kw) or 0)
    monkeypatch.delenv("AIOPS_WEB_BIND", raising=False)
    assert cli.main(["worker", "--topology", "topology.yaml", "--web-bind", "10.1.2.3"]) == 0
    assert seen["web_bind"] == "10.1.2.3"
    assert cli.main(["worker", "--topology", "topology.yaml"]) == 0
    assert seen["web_bind"] is None  # the topology's worker.web_bind
