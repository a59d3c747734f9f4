"""The Faust worker: decode, call the core, encode, route. No business logic lives here."""
from __future__ import annotations

import logging
from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detectors.records import Heartbeat
from streams import codec
from streams import metrics as m
from streams.config import Topology
from streams.ingest import DecodeError
from streams.pipeline import CorrelateStage, DetectStage, correlation_keys, load_runbook_index
from streams.recovery import Recovered

log = logging.getLogger("aiops.worker")


def build_app(topology: Topology, *, bootstrap: str, web_port: int = 6066, data_dir: Path = Path(".aiops-data"),
              app_id: str = "aiops", recovered: Recovered | None = None) -> faust.App:
    """A Faust app wired to ``topology``. Each agent is decode -> one core call -> encode -> send."""
    topics = topology.topics
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
            reason, msg.topic, msg.partition, msg.offset, event.value or b"", max_excerpt, at=msg.timestamp))

    async def detect_and_route(event, process) -> None:
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
            await dead_letter("rejected points: " + "; ".join(res.rejects[:5]), event)
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
