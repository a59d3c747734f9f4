"""A real headless Chromium for the board's tests, driven over the DevTools protocol.

Debian's ``chromium`` package (``.ci/run`` installs it); no Playwright and no downloaded browser:
the protocol is a websocket of JSON commands, and aiohttp (the worker's web server) already
speaks websockets. :func:`chromium_or_skip` skips a test, saying why, where there is none.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import orjson

from streams.broker import stop_process

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    explicit = os.environ.get("AIOPS_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def chromium_or_skip() -> str:
    import pytest

    path = find_chromium()
    if path is None:
        pytest.skip("no headless Chromium: install Debian's `chromium` (apt-get install chromium; .ci/run does "
                    "as root) or set AIOPS_CHROMIUM to a Chromium binary")
    return path


def _flags(profile: str) -> list[str]:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    return ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
            f"--user-data-dir={profile}"]


class Browser:
    """One Chromium process with one tab. Use as a context manager; every call is synchronous."""

    def __init__(self, binary: str):
        self.binary = binary
        self._profile = tempfile.TemporaryDirectory()
        self._loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Browser:
        self.proc = subprocess.Popen([self.binary, *_flags(self._profile.name), "--remote-debugging-port=0",
                                      "--window-size=1400,900", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                self.close()
                raise RuntimeError(f"chromium did not start: {err}")
            time.sleep(0.05)
        self._port = int(port_file.read_text().split()[0])
        self._loop.run_until_complete(self._connect())
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_ws", None) is not None:
            self._loop.run_until_complete(self._ws.close())
            self._loop.run_until_complete(self._session.close())
            self._ws = None
        stop_process(self.proc)
        self._profile.cleanup()

    async def _connect(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{self._port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def _call(self, method: str, **params) -> dict:
        import aiohttp

        mid = next(self._ids)
        await self._ws.send_str(orjson.dumps({"id": mid, "method": method, "params": params}).decode())
        while True:
            frame = await self._ws.receive()
            if frame.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"{method}: DevTools connection ended ({frame.type.name} {frame.data!r})")
            msg = orjson.loads(frame.data)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        res = self._loop.run_until_complete(self._call("Runtime.evaluate", expression=expression,
                                                       awaitPromise=True, returnByValue=True))
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails'].get('text')} "
                               f"{res['exceptionDetails'].get('exception', {}).get('description', '')}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        """Poll a JavaScript expression until it is truthy; its value. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout:.0f}s: {expression}")
            time.sleep(0.1)

    def screenshot(self, out: Path, width: int = 1400) -> None:
        """A PNG of the whole page, ``width`` CSS pixels wide, into ``out``."""
        import base64

        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self._loop.run_until_complete(self._call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                                                 deviceScaleFactor=1, mobile=False))
        res = self._loop.run_until_complete(self._call("Page.captureScreenshot", format="png"))
        out.write_bytes(base64.b64decode(res["data"]))

    def goto(self, url: str) -> None:
        """Open ``url`` and wait until the document and its deferred script have run."""
        self._loop.run_until_complete(self._call("Page.navigate", url=url))
        self.wait_for(f"location.href === {orjson.dumps(url).decode()} && document.readyState === 'complete'")
