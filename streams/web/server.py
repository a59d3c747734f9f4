"""The board's Faust shell: follow the topics into a :class:`~streams.web.board.Board`, serve
the pages (:mod:`streams.web.pages`) and the server-sent events that keep them live.

Routes, on the worker's web port:

- ``GET /``: the board; ``GET /incidents/ID``: an incident's page; ``GET /incidents/ID/rca.svg``:
  its root-cause picture (:func:`remediators.picture.draw_incident`);
- ``GET /events``: server-sent events, ``event: incident`` with the JSON-encoded id of each
  incident a record changed (``"*silences*"`` when the silences did);
- ``GET /static/board.js``, ``/static/board.css``; ``POST /login`` (see below).

Acting goes through ``POST /control`` itself (``static/board.js`` posts there with the token the
operator typed), so an approval from the page is the same message, checked the same way and
recorded with the same ``by``, as one from ``curl``. Reading needs a token only with
``web.read_access: token``: then ``Authorization: Bearer`` or the HttpOnly, SameSite=Strict
cookie that ``POST /login`` sets after checking the token. The cookie only ever grants reading:
``/control`` reads the header alone, so a page on another site cannot act with it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import orjson
from aiohttp import web as aioweb
from faust.web import View

from streams import codec
from streams.http_auth import Authenticator
from streams.web import pages
from streams.web.board import Board

log = logging.getLogger("aiops.web")

STATIC = {name: (Path(__file__).parent / "static" / name).read_bytes() for name in ("board.js", "board.css")}
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
COOKIE = "aiops_token"
# Our own script and style only: a value that escaped escaping still could not run.
HTML_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# An SVG opened on its own is a document that could run script: forbid any, styles inline only.
SVG_HEADERS = {**HTML_HEADERS, "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
               "Content-Type": "image/svg+xml"}
PING_SECONDS = 15.0  # a comment line this often keeps proxies from closing an idle stream
FORGET_EVERY = 500  # records between two passes that drop incidents resolved long ago
SVG_CACHE = 64  # incident pictures kept, by (id, version)
LEDGER_POLL_SECONDS = 30.0  # how often to look for a ticket ledger topic that does not exist yet


class _Listener:
    """One open ``/events`` stream: the ids to announce, coalesced until it is written."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.wake = asyncio.Event()


class BoardService:
    """The board of one worker and what serves it."""

    def __init__(self, *, bootstrap: str, topics, topology: Callable, auth: Authenticator):
        self.bootstrap = bootstrap
        self.kinds = {topics.incidents: "incidents", topics.actions: "actions", topics.tickets: "tickets",
                      topics.control: "control"}
        self.topology = topology  # the running topology: live config changes apply to the board too
        self.auth = auth
        self.board = Board()
        self.loaded = asyncio.Event()
        self.listeners: set[_Listener] = set()
        self._applied = 0
        self._svgs: dict[tuple[str, int], bytes] = {}
        self._draw_lock = asyncio.Lock()  # matplotlib draws one figure at a time
        self._runbooks: tuple[str, object] | None = None

    @property
    def resolved_for(self) -> float:
        return self.topology().web.show_resolved_for.total_seconds()

    async def take(self, topic: str, value: bytes, partition: int, offset: int) -> None:
        """A record of one of the four topics, as :func:`streams.recovery.follow` gives it (the
        board needs no position: it shows the latest of each record, whatever the order)."""
        kind = self.kinds.get(topic)
        if kind is None or value is None:
            return
        try:
            if kind == "control":
                codec.decode_control(value)  # only what the worker itself would apply
            record = orjson.loads(value)
        except (codec.RecordError, orjson.JSONDecodeError):
            return  # the topic's own agent dead-letters it
        changed = self.board.apply(kind, record)
        self._applied += 1
        if self._applied % FORGET_EVERY == 0:
            self.board.forget(resolved_for=self.resolved_for)
        if changed:
            self.announce(changed)

    async def follow_ledger(self) -> None:
        """The ledger topic whole (its key is the ticket key, which ``follow`` does not give),
        waiting for it to exist: ticket delivery creates it, maybe after the worker started."""
        from aiokafka import TopicPartition

        from streams.recovery import group_less_consumer

        topic = self.topology().tickets.delivery.ledger_topic  # a restart-only choice, like the topics
        consumer = group_less_consumer(self.bootstrap)
        await consumer.start()
        try:
            while True:
                # topics() fetches the cluster's metadata; a consumer has no force_metadata_update.
                parts = consumer.partitions_for_topic(topic) if topic in await consumer.topics() else None
                if parts:
                    break
                await asyncio.sleep(LEDGER_POLL_SECONDS)
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                    for msg in msgs:
                        try:
                            key, entry = msg.key.decode(), orjson.loads(msg.value)
                        except (AttributeError, UnicodeDecodeError, orjson.JSONDecodeError):
                            continue
                        changed = self.board.apply_ledger(key, entry)
                        if changed:
                            self.announce(changed)
        finally:
            await consumer.stop()

    def ticket_links(self, incident_id: str) -> dict[str, str]:
        from remediators.sink_config import ticket_url

        got = self.board.delivered.get(incident_id)
        if got is None:
            return {}
        url = ticket_url(self.topology().tickets.delivery, *got)
        return {incident_id: url} if url else {}

    def announce(self, ids) -> None:
        for listener in self.listeners:
            listener.ids.update(ids)
            listener.wake.set()

    # --- who may read ---

    def reader(self, request) -> str | None:
        """The principal reading, ``"anonymous"`` when reading needs no token, else ``None``."""
        if self.topology().web.read_access == "open":
            return "anonymous"
        who = self.auth.authenticate(request.headers.get("Authorization"))
        if who is None and request.cookies.get(COOKIE):
            who = self.auth.authenticate("Bearer " + request.cookies[COOKIE])
        return who

    def runbook_hits(self, record: dict) -> list:
        from remediators.runbooks import RELEVANT
        from streams.pipeline import load_runbook_index

        directory = self.topology().remediation.executors.runbooks_dir
        if self._runbooks is None or self._runbooks[0] != directory:
            try:
                self._runbooks = (directory, load_runbook_index(self.topology()))
            except Exception as exc:  # noqa: BLE001 - a broken runbook must not take the page down
                log.warning("runbooks in %s: %s", directory, exc)
                self._runbooks = (directory, None)
        index = self._runbooks[1]
        return index.for_incident(record, 5, cutoff=RELEVANT) if index is not None else []

    async def svg(self, incident_id: str) -> bytes | None:
        st = self.board.incidents.get(incident_id)
        rec = st.latest if st is not None else None
        if rec is None:
            return None
        key = (incident_id, rec["version"])
        if key not in self._svgs:
            from remediators.picture import draw_incident

            graph = self.topology().graph()
            async with self._draw_lock:
                data = await asyncio.to_thread(draw_incident, rec, graph)
            while len(self._svgs) >= SVG_CACHE:
                self._svgs.pop(next(iter(self._svgs)))
            self._svgs[key] = data
        return self._svgs[key]


def install(app, *, bootstrap: str, topics, topology: Callable, auth: Authenticator) -> BoardService:
    """Add the board's task and routes to the Faust ``app``; ``topology()`` is the running topology."""
    from streams.recovery import follow

    svc = BoardService(bootstrap=bootstrap, topics=topics, topology=topology, auth=auth)

    @app.task
    async def read_board_topics():
        """Every record of the four topics, outside the group: every worker shows every incident."""
        await follow(bootstrap, tuple(svc.kinds), svc.loaded, svc.take)

    @app.task
    async def read_ticket_ledger():
        """The ticket ledger, for links to the tickets; it exists once `aiops tickets deliver` ran."""
        await svc.follow_ledger()

    def html(view: View, body: str, status: int = 200, headers: dict | None = None):
        return view.html(body, status=status, headers={**HTML_HEADERS, **(headers or {})})

    def unauthorized(view: View, request):
        page_path = request.path == "/" or (request.path.startswith("/incidents/") and not request.path.endswith(".svg"))
        if page_path:  # a person in a browser: the sign-in form
            return html(view, pages.login_page(), status=401)
        return view.json({"error": "reading this board needs a bearer token (web.read_access: token)"},
                         status=401, headers={"WWW-Authenticate": 'Bearer realm="aiops"'})

    @app.page("/", name="board")
    class BoardPage(View):
        async def get(self, request):
            if svc.reader(request) is None:
                return unauthorized(self, request)
            return html(self, pages.board_page(svc.board, resolved_for=svc.resolved_for))

    @app.page("/incidents/{incident_id}", name="incident")
    class IncidentPage(View):
        async def get(self, request, incident_id: str):
            if svc.reader(request) is None:
                return unauthorized(self, request)
            st = svc.board.incidents.get(incident_id)
            rec = st.latest if st is not None else None
            # In a thread: the first ranking by meaning loads the model (a second or two), and the
            # worker's agents share this event loop.
            hits = await asyncio.to_thread(svc.runbook_hits, rec) if rec is not None else []
            body = pages.incident_page(svc.board, incident_id, links=svc.ticket_links(incident_id), runbooks=hits)
            if body is None:
                return html(self, pages.unknown_page(incident_id), status=404)
            return html(self, body)

    @app.page("/incidents/{incident_id}/rca.svg", name="incident_svg")
    class IncidentPicture(View):
        async def get(self, request, incident_id: str):
            if svc.reader(request) is None:
                return unauthorized(self, request)
            data = await svc.svg(incident_id)
            if data is None:
                return self.json({"error": "unknown incident"}, status=404)
            return self.bytes(data, headers=SVG_HEADERS)

    @app.page("/static/{name}", name="board_static")
    class Static(View):
        async def get(self, request, name: str):
            data = STATIC.get(name)  # a fixed set of files: no path ever reaches the file system
            if data is None:
                return self.json({"error": "not found"}, status=404)
            return self.bytes(data, headers={"Content-Type": STATIC_TYPES[Path(name).suffix],
                                             "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @app.page("/events", name="board_events")
    class Events(View):
        async def get(self, request):
            if svc.reader(request) is None:
                return unauthorized(self, request)
            resp = aioweb.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                                  "X-Accel-Buffering": "no"})
            await resp.prepare(request)
            listener = _Listener()
            svc.listeners.add(listener)
            try:
                await resp.write(b"retry: 2000\n\n")
                while True:
                    try:
                        await asyncio.wait_for(listener.wake.wait(), PING_SECONDS)
                    except TimeoutError:
                        await resp.write(b": ping\n\n")
                        continue
                    listener.wake.clear()
                    ids, listener.ids = sorted(listener.ids), set()
                    # JSON-encoded: an id holding a newline cannot end the event early.
                    await resp.write(b"".join(b"event: incident\ndata: " + orjson.dumps(i) + b"\n\n" for i in ids))
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            finally:
                svc.listeners.discard(listener)
            return resp

    @app.page("/login", name="board_login")
    class Login(View):
        async def post(self, request):
            form = await request.post()
            token = str(form.get("token", "")).strip()
            if not token or svc.auth.authenticate("Bearer " + token) is None:
                return html(self, pages.login_page("That token is not valid."), status=401)
            resp = aioweb.Response(status=303, headers={"Location": "/"})
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path="/")
            return resp

    return svc


__all__ = ["BoardService", "install"]
