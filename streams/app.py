"""The Faust worker: decode, call the core, encode, route. No business logic lives here."""
from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path

import faust
import orjson
from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors.config import parse_duration
from detectors.records import Heartbeat, rfc3339, stable_hash
from streams import codec, kafka_security
from streams import metrics as m
from streams.config import Topology
from streams.http_auth import UNCONFIGURED, Authenticator
from streams.ingest import DecodeError
from streams.ingest.external import decode_external
from streams.pipeline import CorrelateStage, DetectResult, DetectStage, correlation_keys, load_runbook_index
from streams.recovery import Recovered

log = logging.getLogger("aiops.worker")


def build_app(topology: Topology, *, bootstrap: str, web_port: int = 6066, data_dir: Path = Path(".aiops-data"),
              app_id: str = "aiops", recovered: Recovered | None = None,
              auth: Authenticator | None = None) -> faust.App:
    """A Faust app wired to ``topology``. Each agent is decode -> one core call -> encode -> send.

    ``auth`` guards the endpoints that accept data or commands; by default the tokens come from
    the environment (:mod:`streams.http_auth`), and without any every such request gets 401."""
    topics = topology.topics
    auth = auth if auth is not None else Authenticator.from_env(os.environ)
    app = faust.App(
        app_id,
        broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        store="memory://",
        datadir=str(data_dir),
        topic_partitions=topics.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=web_port,
        web_bind="0.0.0.0",
        web_in_thread=False,
        # Our agents do not wait on each other; a shorter wait on rebalance keeps restarts quick.
        stream_wait_empty=False,
        broker_rebalance_timeout=topology.worker.rebalance_timeout.total_seconds(),
        broker_session_timeout=topology.worker.session_timeout.total_seconds(),
        broker_heartbeat_interval=topology.worker.heartbeat_interval.total_seconds(),
        broker_commit_interval=topology.worker.commit_interval.total_seconds(),
        producer_linger_ms=5,
        broker_credentials=kafka_security.current().faust_credentials(),
    )
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    metrics_in = app.topic(topics.metrics, **raw)
    logs_in = app.topic(topics.logs, **raw)
    alerts = app.topic(topics.alerts, **raw)
    incidents = app.topic(topics.incidents, **raw)
    actions = app.topic(topics.actions, **raw)
    tickets = app.topic(topics.tickets, **raw)
    deadletter = app.topic(topics.deadletter, **raw)
    control = app.topic(topics.control, **raw)
    changes = app.topic(topics.changes, **raw)
    external_in = {source: app.topic(name, **raw) for source, name in topics.external().items()}

    recovered = recovered or Recovered(DetectStage(topology), CorrelateStage(topology, load_runbook_index(topology)))
    detect = recovered.detect
    correlate = recovered.correlate
    applied = recovered.already_applied
    keys = correlation_keys(topology)
    all_keys = sorted(set(keys.values()))
    max_excerpt = topology.ingest.max_excerpt_bytes

    async def dead_letter(reason: str, event) -> None:
        msg = event.message
        m.DEADLETTER.labels(topic=msg.topic).inc()
        await deadletter.send(key=msg.topic.encode(), value=codec.dead_letter(
            reason, msg.topic, msg.partition, msg.offset, event.value or b"", max_excerpt, at=msg.timestamp,
            redactor=detect.redactor))

    async def detect_and_route(event, process, rejected: str = "points") -> None:
        msg = event.message
        if applied(msg.topic, msg.partition, msg.offset):
            return  # redelivered after a restart; its effects were rebuilt at start-up
        m.MESSAGES_IN.labels(topic=event.message.topic).inc()
        try:
            res = process(event.value)
        except DecodeError as exc:
            await dead_letter(str(exc), event)
            return
        if res.rejects:
            await dead_letter(f"rejected {rejected}: " + "; ".join(res.rejects[:5]), event)
        m.POINTS_IN.inc(res.points)
        for ev in res.events:
            payload = codec.encode_alert_event(ev)
            if isinstance(ev, Heartbeat):
                # Every correlator needs event-time progress to expire its incidents.
                for key in all_keys:
                    await alerts.send(key=key.encode(), value=payload)
            else:
                m.ALERTS.labels(status=ev.status).inc()
                await alerts.send(key=keys.get(ev.service, ev.service).encode(), value=payload)

    @app.agent(metrics_in)
    async def detect_metrics(stream):
        async for event in stream.events():
            await detect_and_route(event, detect.process)

    @app.agent(logs_in)
    async def detect_logs(stream):
        async for event in stream.events():
            await detect_and_route(event, detect.process_logs)

    known = frozenset(topology.services)
    service_label = topology.ingest.prometheus_service_label

    def external_alerts(source: str):
        def process(payload: bytes) -> DetectResult:
            res = decode_external(source, payload, known_services=known, service_label=service_label,
                                  redactor=detect.redactor)
            for a in res.alerts:
                m.EXTERNAL_ALERTS.labels(source=source, status=a.status).inc()
            return DetectResult(events=list(res.alerts), rejects=list(res.rejects))
        return process

    def forward_external(source: str, topic) -> None:
        """Webhook payloads of another alerting tool, as POSTed: decoded here (the only place
        they become alerts) and routed to aiops.alerts like the detectors' alerts."""
        process = external_alerts(source)

        async def forward(stream):
            async for event in stream.events():
                await detect_and_route(event, process, rejected="alerts")

        app.agent(topic, name=f"forward_{source}_alerts")(forward)

    for source, topic in external_in.items():
        forward_external(source, topic)

    @app.agent(alerts)
    async def correlate_agent(stream):
        async for event in stream.events():
            msg = event.message
            if applied(msg.topic, msg.partition, msg.offset):
                continue
            try:
                ev = codec.decode_alert_event(event.value)
            except codec.RecordError as exc:
                await dead_letter(str(exc), event)
                continue
            res = correlate.process([ev])
            await publish(res)
            m.OPEN_INCIDENTS.set(correlate.correlator.open_incidents())
            m.observe_compression(detect.stats, correlate.correlator.stats)

    async def publish(res) -> None:
        for inc in res.incidents:
            m.INCIDENT_UPDATES.labels(status=inc.status).inc()
            await incidents.send(key=inc.id.encode(), value=codec.encode_incident(inc))
        for act in res.actions:
            m.ACTIONS.labels(decision=act.decision).inc()
            await actions.send(key=act.id.encode(), value=codec.encode_action(act))
        for tk in res.tickets:
            m.TICKETS.labels(event=tk.event).inc()
            await tickets.send(key=tk.ticket_key.encode(), value=codec.encode_ticket(tk))

    @app.agent(control)
    async def control_agent(stream):
        """Operators' approvals (``aiops approve``); who approved is recorded on the action."""
        async for event in stream.events():
            if applied(event.message.topic, event.message.partition, event.message.offset):
                continue
            try:
                msg = codec.decode_control(event.value)
            except codec.RecordError as exc:
                await dead_letter(str(exc), event)
                continue
            await publish(correlate.control(msg))

    @app.agent(changes)
    async def change_agent(stream):
        """Deploys, config changes and scalings: candidate causes for the incidents that follow."""
        async for event in stream.events():
            if applied(event.message.topic, event.message.partition, event.message.offset):
                continue
            try:
                correlate.change(codec.decode_change(event.value))
            except codec.RecordError as exc:
                await dead_letter(str(exc), event)

    @app.agent(actions)
    async def action_results(stream):
        """The executor's results come back on aiops.actions; they feed the circuit breaker and
        the concurrency cap. The dispatcher's own decisions on that topic are skipped."""
        async for event in stream.events():
            try:
                act = codec.decode_action(event.value)
            except codec.RecordError:
                continue  # not ours to judge: the executor validates what it runs
            if act.decision in ("executed", "failed", "dry_run_ok", "refused", "unknown"):
                correlate.action_result(act)

    @app.task
    async def send_what_the_last_process_did_not():
        by_topic = {t: app.topic(t, **raw) for t in {topic for topic, _, _ in recovered.missing}}
        for topic, key, value in recovered.missing:
            await by_topic[topic].send(key=key, value=value)
        recovered.missing.clear()

    # --- HTTP endpoints that accept data or commands: authenticated, 202 only once acknowledged ---

    def refuse(view: View, request, path: str):
        """``(principal, None)`` when the request carries a valid token, else ``(None, a 401 response)``."""
        principal = auth.authenticate(request.headers.get("Authorization"))
        if principal is not None:
            return principal, None
        m.HTTP_UNAUTHORIZED.labels(path=path).inc()
        log.info("401 on %s from %s", path, request.remote)  # never the header: it may hold a token
        reason = UNCONFIGURED if not auth.configured else "missing or invalid bearer token (Authorization: Bearer ...)"
        return None, view.json({"error": reason}, status=401, headers={"WWW-Authenticate": 'Bearer realm="aiops"'})

    def reject(view: View, path: str, code: int, reason: str):
        m.HTTP_REJECTED.labels(path=path, code=str(code)).inc()
        return view.json({"error": reason}, status=code)

    async def produce_acked(topic: str, key: bytes, value: bytes, principal: str) -> None:
        await app.producer.send_and_wait(topic, key, value, None, None, [("aiops-principal", principal.encode())])

    def ingest_endpoint(source: str, topic: str) -> None:
        path = f"/ingest/{source}"

        class Ingest(View):
            async def post(self, request):
                principal, refusal = refuse(self, request, path)
                if refusal is not None:
                    return refusal
                body = await request.read()
                try:  # decoded once only to refuse garbage now; the topic's agent makes the alerts
                    res = decode_external(source, body, known_services=known, service_label=service_label,
                                          redactor=detect.redactor)
                except DecodeError as exc:
                    return reject(self, path, 400, str(exc))
                try:
                    await produce_acked(topic, source.encode(), body, principal)
                except Exception as exc:  # noqa: BLE001 - the sender retries on 5xx
                    log.warning("%s: could not produce to %s: %s", path, topic, exc)
                    return reject(self, path, 503, f"not stored ({type(exc).__name__}); retry later")
                m.HTTP_ACCEPTED.labels(path=path).inc()
                return self.json({"accepted": len(res.alerts), "rejected": list(res.rejects), "topic": topic,
                                  "by": principal}, status=202)

        app.page(path, name=f"ingest_{source}")(Ingest)

    for source, topic in topics.external().items():
        ingest_endpoint(source, topic)

    @app.page("/control", name="control")
    class ControlEndpoint(View):
        """The messages of aiops.control (approve, silence, expire_silence); ``by`` is the caller."""

        async def post(self, request):
            principal, refusal = refuse(self, request, "/control")
            if refusal is not None:
                return refusal
            try:
                key, value = control_from_http(await request.read(), principal, time.time())
            except codec.RecordError as exc:
                return reject(self, "/control", 400, str(exc))
            try:
                await produce_acked(topics.control, key.encode(), value, principal)
            except Exception as exc:  # noqa: BLE001
                log.warning("/control: could not produce to %s: %s", topics.control, exc)
                return reject(self, "/control", 503, f"not stored ({type(exc).__name__}); retry later")
            m.HTTP_ACCEPTED.labels(path="/control").inc()
            return self.json({**orjson.loads(value), "topic": topics.control}, status=202)

    @app.page("/metrics")
    async def metrics_page(web, request):
        # In a header: aiohttp refuses a content_type argument carrying "; charset=utf-8".
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def health(web, request):
        return web.json({"status": "ok"})

    @app.timer(interval=2.0)
    async def consumer_lag():
        """aiops_consumer_lag per assigned partition: offsets the consumer already holds, no broker call."""
        m.observe_consumer_lag(app.consumer)

    return app


def control_from_http(body: bytes, by: str, now: float) -> tuple[str, bytes]:
    """A ``POST /control`` body as the control message to produce: ``(key, value)``.

    The body is an ``aiops.control`` message; ``by`` (the authenticated caller) replaces
    whatever it says, ``schema_version`` and ``at`` (``now``) may be left out, a silence may
    give ``duration`` instead of ``starts_at``/``ends_at`` and may leave out its ``id``. The
    result is re-encoded by the codec, so the topic only ever holds records it wrote.
    Raises :class:`~streams.codec.RecordError`.

    >>> key, value = control_from_http(b'{"type": "approve", "action_id": "act-1", "by": "mallory"}', "alice", 1.7e9)
    >>> key, orjson.loads(value)["by"]
    ('act-1', 'alice')
    """
    try:
        d = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise codec.RecordError(f"invalid JSON: {exc}") from None
    if type(d) is not dict:
        raise codec.RecordError("expected a JSON object")
    d = {**d, "by": by}
    d.setdefault("schema_version", codec.CONTROL_SCHEMA_VERSION)
    d.setdefault("at", rfc3339(now))
    if d.get("type") == "silence":
        duration = d.pop("duration", None)
        if duration is not None:
            d.setdefault("starts_at", d["at"])
            if type(d["starts_at"]) is not str:
                raise codec.RecordError("starts_at: expected an RFC 3339 string")
            try:
                start = datetime.fromisoformat(d["starts_at"].replace("Z", "+00:00"))
            except ValueError:
                start = None
            if start is None or start.tzinfo is None:
                raise codec.RecordError(f"starts_at: expected an RFC 3339 time with a UTC offset "
                                        f"(got {d['starts_at'][:40]!r})")
            try:
                d["ends_at"] = rfc3339(start.timestamp() + parse_duration(duration).total_seconds())
            except (TypeError, ValueError, OverflowError) as exc:
                raise codec.RecordError(f"duration: {exc}") from None
    derive_id = d.get("type") == "silence" and "id" not in d
    if derive_id:
        d["id"] = ""  # derived below from what the silence matches, as `aiops silence` does
    try:
        payload = orjson.dumps(d)
    except TypeError:  # orjson writes 254 levels, parses 1024
        raise codec.RecordError("document nested too deeply") from None
    msg = codec.decode_control(payload)
    if msg["type"] == "approve":
        return msg["action_id"], codec.encode_approval(msg["action_id"], by, msg["at"])
    if msg["type"] == "expire_silence":
        return msg["id"], codec.encode_expire_silence(msg["id"], by, msg["at"])
    s = msg["silence"]
    sid = "sil-" + stable_hash(by, s.service, s.metric, str(sorted(s.labels.items())), rfc3339(msg["at"]),
                               length=10) if derive_id else s.id
    if not sid:
        raise codec.RecordError("id: expected a non-empty silence id (or leave it out)")
    return sid, codec.encode_silence(sid, by, msg["at"], starts_at=s.starts_at.timestamp(),
                                      ends_at=s.ends_at.timestamp(), service=s.service, metric=s.metric,
                                      labels=dict(s.labels), comment=s.comment)


def run_worker(topology: Topology, *, bootstrap: str, web_port: int, data_dir: Path, verbose: bool = False) -> int:
    from streams.broker import ensure_topics

    t = topology.topics
    ensure_topics(bootstrap, t.all(), partitions=t.partitions)
    import asyncio

    from streams.recovery import recover

    recovered = asyncio.run(recover(topology, bootstrap))
    app = build_app(topology, bootstrap=bootstrap, web_port=web_port, data_dir=data_dir, recovered=recovered)
    worker = faust.Worker(app, loglevel="INFO" if verbose else "WARNING", quiet=not verbose)
    worker.execute_from_commandline()
    return 0
