"""The Faust worker: decode, call the core, encode, route. No business logic lives here."""
from __future__ import annotations

import asyncio
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
from streams.checkpoint import Checkpoints, Corrupt, LocalStore, Meta
from streams.config import Topology
from streams.http_auth import UNCONFIGURED, Authenticator
from streams.http_safety import harden
from streams.ingest import DecodeError
from streams.ingest.external import decode_external
from streams.ingest.redact import Redactor
from streams.live_config import Applied, LiveConfig, Refused
from streams.pipeline import CorrelateStage, DetectResult, DetectStage, correlation_keys, load_runbook_index
from streams.web.server import install as install_board
from streams.recovery import (Broadcast, OutputIndex, Rebuilt, Shard, apply_broadcast, encode_result, follow,
                              leave_for_dead_member, read_partitions, rebuild_correlate, rebuild_detect,
                              remember_member)


log = logging.getLogger("aiops.worker")

# Metric messages scored in one engine call at most, and the payload bytes that close a call
# sooner (DetectStage.process_many); how long a message waits for others to share its call.
TAKE = 1000
RUN_BYTES = 4 << 20
TAKE_WITHIN = 0.05


def build_app(topology: Topology, *, bootstrap: str, web_port: int = 6066, data_dir: Path = Path(".aiops-data"),
              app_id: str | None = None, instance_id: str | None = None,
              auth: Authenticator | None = None, config_sha: str = "", web_bind: str | None = None) -> faust.App:
    """A Faust app wired to ``topology``. Each agent is decode -> one core call -> encode -> send.

    ``auth`` guards the endpoints that accept data or commands; by default the tokens come from
    the environment (:mod:`streams.http_auth`), and without any every such request gets 401.

    State is one shard per assigned input partition (:mod:`streams.recovery`), so any number of
    workers can share the group. ``instance_id`` turns on static membership: a worker that
    restarts under the same id within the session timeout gets its partitions back without a
    rebalance of the whole group.

    ``topology`` is the file the worker started with (``config_sha`` its SHA-256). Once the
    config topic holds a config that applies live, that one runs instead (:mod:`streams.live_config`):
    every closure below reads the running topology from ``live``, never from ``topology``,
    except for the topic names and the consumer settings, which only a restart changes."""
    topics = topology.topics
    auth = auth if auth is not None else Authenticator.from_env(os.environ)
    app = faust.App(
        app_id or topology.worker.group_id,
        broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        store="memory://",
        datadir=str(data_dir),
        topic_partitions=topics.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=web_port,
        # The interface the HTTP endpoints listen on: --web-bind, else worker.web_bind (127.0.0.1).
        web_bind=web_bind or topology.worker.web_bind,
        web_in_thread=False,
        # Our agents do not wait on each other; a shorter wait on rebalance keeps restarts quick.
        stream_wait_empty=False,
        broker_rebalance_timeout=topology.worker.rebalance_timeout.total_seconds(),
        broker_session_timeout=topology.worker.session_timeout.total_seconds(),
        broker_heartbeat_interval=topology.worker.heartbeat_interval.total_seconds(),
        broker_commit_interval=topology.worker.commit_interval.total_seconds(),
        producer_linger_ms=5,
        # A telemetry message batches ~1,000 points (~250 KB of OTLP/JSON); the default 1 MB
        # per partition and fetch caps a worker at a few messages per broker round trip.
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_credentials=kafka_security.current().faust_credentials(),
        consumer_group_instance_id=instance_id,
    )
    # No request header value reaches a log line or a response body (streams/http_safety.py).
    harden(app)
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    metrics_in = app.topic(topics.metrics, **raw)
    logs_in = app.topic(topics.logs, **raw)
    traces_in = app.topic(topics.traces, **raw)
    alerts = app.topic(topics.alerts, **raw)
    incidents = app.topic(topics.incidents, **raw)
    actions = app.topic(topics.actions, **raw)
    tickets = app.topic(topics.tickets, **raw)
    deadletter = app.topic(topics.deadletter, **raw)
    control = app.topic(topics.control, **raw)
    changes = app.topic(topics.changes, **raw)
    external_in = {source: app.topic(name, **raw) for source, name in topics.external().items()}

    config_topic = app.topic(topics.config, **raw)
    live = LiveConfig(topology, sha256=config_sha)
    live_loaded = asyncio.Event()  # shards are built only once the config topic's history is read
    m.observe_config(live.sha256, live.source)

    class Derived:
        """What the agents derive from the running topology, recomputed when it changes."""

        def __init__(self, topo: Topology, redactor: Redactor | None = None):
            self.redactor = redactor or Redactor.from_settings(topo.ingest.redaction)
            self.keys = correlation_keys(topo)
            self.all_keys = sorted(set(self.keys.values()))
            self.known = frozenset(topo.services)
            self.service_label = topo.ingest.prometheus_service_label
            self.max_excerpt = topo.ingest.max_excerpt_bytes
            self.max_ahead = topo.ingest.max_ahead.total_seconds()

    cur = Derived(topology)
    detect_shards: dict[tuple[str, int], Shard] = {}
    correlate_shards: dict[int, Shard] = {}
    broadcast = Broadcast()
    outputs = OutputIndex(bootstrap, [topics.alerts, topics.incidents, topics.actions, topics.tickets])

    async def read_checkpoints(topic: str, partition: int) -> list[tuple[bytes, bytes]]:
        return [(key, value) for _, _, key, value in await read_partitions(bootstrap, topic, [partition])]

    async def send_checkpoint(topic: str, key: bytes, value: bytes, partition: int) -> None:
        await app.producer.send(topic, key, value, partition, None, None)

    def checkpoint_written(kind: str, seconds: float, size: int) -> None:
        m.CHECKPOINTS_WRITTEN.labels(stage=kind).inc()
        m.CHECKPOINT_WRITE_SECONDS.labels(stage=kind).inc(seconds)

    checkpoints = Checkpoints(LocalStore(Path(data_dir) / "checkpoints"), topics.checkpoints, topics.partitions,
                              topology.worker.checkpoint_interval.total_seconds(), send=send_checkpoint,
                              flush=lambda: app.producer.flush(), read=read_checkpoints, on_written=checkpoint_written)
    checkpoints.store.clean()  # pending files of a worker killed while writing: never complete

    def maybe_checkpoint(kind: str, shard: Shard, topic: str, partition: int) -> None:
        """Snapshot ``shard`` if it is due. Called right after a message's outputs were handed
        to the producer, with no await before the fork, so the snapshot is the state after it."""
        if shard.publishing or not checkpoints.due(shard):
            return
        positions = broadcast.positions(shard.broadcast_seen) if kind == "correlate" else {}
        checkpoints.begin(shard, Meta(kind, topic, partition, shard.next_offset, positions))

    @app.timer(interval=0.2)
    async def store_checkpoints():
        """Snapshots whose child process is done: flushed, stored locally and on Kafka."""
        await checkpoints.finish()

    async def dead_letter(reason: str, event) -> None:
        msg = event.message
        m.DEADLETTER.labels(topic=msg.topic).inc()
        await deadletter.send(key=msg.topic.encode(), value=codec.dead_letter(
            reason, msg.topic, msg.partition, msg.offset, event.value or b"", cur.max_excerpt, at=msg.timestamp,
            redactor=cur.redactor))

    def observe_shard_counts() -> None:
        m.STATE_SHARDS.labels(stage="detect").set(len(detect_shards))
        m.STATE_SHARDS.labels(stage="correlate").set(len(correlate_shards))

    async def send_missing(rebuilt: Rebuilt, topic: str, partition: int) -> None:
        """The outputs a rebuild computed that are not on their topics: the previous owner died
        between computing and producing them."""
        for store, err in rebuilt.skipped:
            m.CHECKPOINTS_SKIPPED.labels(reason="corrupt" if isinstance(err, Corrupt) else "version", store=store).inc()
        m.CHECKPOINT_RESTORES.labels(topic=topic, source=rebuilt.restored or "none").inc()
        # WARNING: the worker logs warnings by default, and where a restart's state came from must show.
        log.warning("%s[%d]: state %s, then %d messages replayed in %.2fs; %d outputs were missing", topic, partition,
                    f"restored from the {rebuilt.restored} snapshot" if rebuilt.restored else
                    "rebuilt from the first offset", rebuilt.messages, rebuilt.seconds, len(rebuilt.missing))
        m.STATE_REBUILDS.labels(topic=topic).inc()
        m.STATE_REBUILD_SECONDS.labels(topic=topic).inc(rebuilt.seconds)
        observe_shard_counts()
        for out_topic, key, value in rebuilt.missing:
            await app.producer.send_and_wait(out_topic, key, value, None, None, None)

    async def shard_for(shards: dict, key, msg, rebuild) -> Shard | None:
        """The up-to-date shard for ``msg``'s partition, or None when ``msg`` was applied already."""
        shard = shards.get(key)
        if shard is not None and msg.offset < shard.next_offset:
            return None  # redelivered after a crash; its effects are in the shard
        if shard is None or msg.offset > shard.next_offset:
            # First message from this partition, or others applied the offsets in between.
            await live_loaded.wait()  # built with the config the topic says, not the file's
            shards.pop(key, None)
            rebuilt = await rebuild(msg.offset)
            shard = rebuilt.shard
            shards[key] = shard
            if isinstance(key, int):  # a correlate shard: what the broadcast reader saw meanwhile
                for topic, value in broadcast.messages[rebuilt.broadcast_seen:]:
                    res = apply_broadcast(live.topology, shard.stage, topic, value)
                    if res is not None:
                        rebuilt.missing += encode_result(live.topology, res)
                shard.broadcast_seen = len(broadcast.messages)
            shard.snapshot_at = time.monotonic()  # the first snapshot after an interval, not at once
            await send_missing(rebuilt, msg.topic, msg.partition)
        return shard

    def detect_shard(msg):
        key = (msg.topic, msg.partition)
        return shard_for(detect_shards, key, msg, lambda until: rebuild_detect(
            live.topology, bootstrap, msg.topic, msg.partition, until, checkpoints if checkpoints.enabled else None))

    async def detect_and_route(event, process=None, rejected: str = "points") -> None:
        """``process`` is a stateless decoder (webhook payloads); without one, the message's
        detect shard scores it."""
        msg = event.message
        shard = None
        if process is None:
            shard = await detect_shard(msg)
            if shard is None:
                return
            process = shard.stage.processor(msg.topic)
            shard.next_offset = msg.offset + 1
        m.MESSAGES_IN.labels(topic=event.message.topic).inc()
        try:
            res = process(event.value)
        except DecodeError as exc:
            await dead_letter(str(exc), event)
            return
        await route(event, res, rejected)
        if shard is not None:
            maybe_checkpoint("detect", shard, msg.topic, msg.partition)

    async def route(event, res: DetectResult | DecodeError, rejected: str = "points") -> None:
        """One message's result: the unusable and the rejected to the dead-letter topic, alerts
        to their correlation key, heartbeats to every key."""
        if isinstance(res, DecodeError):
            await dead_letter(str(res), event)
            return
        if res.rejects:
            await dead_letter(f"rejected {rejected}: " + "; ".join(res.rejects[:5]), event)
        m.POINTS_IN.inc(res.points)
        for ev in res.events:
            payload = codec.encode_alert_event(ev)
            if isinstance(ev, Heartbeat):
                # Every correlator needs event-time progress to expire its incidents (and the
                # calls seen in spans, for its learned call graph).
                for key in cur.all_keys:
                    await alerts.send(key=key.encode(), value=payload)
            else:
                m.ALERTS.labels(status=ev.status).inc()
                await alerts.send(key=cur.keys.get(ev.service, ev.service).encode(), value=payload)

    # Metric messages taken from the stream and not scored yet, and that stream: they are acked
    # once scored and routed, as a message taken alone is, so a worker killed before scoring them
    # leaves their offsets uncommitted and the next owner reads them again.
    waiting: list = []
    waiting_since = 0.0  # when the oldest of them was taken
    scoring = asyncio.Lock()
    metrics_stream = None

    async def score_waiting() -> None:
        """Score the waiting messages, in order, one engine call per run of a partition's
        consecutive messages (:meth:`DetectStage.process_many`, which gives each message what
        a call of its own gives): a message of a few points then costs its decoding, not the
        engine's fixed cost per call."""
        async with scoring:
            if waiting:
                events = waiting[:]
                waiting.clear()
                await detect_metrics_run(events)
                for event in events:
                    await metrics_stream.ack(event)

    async def detect_metrics_run(events: list) -> None:
        shard, run, size = None, [], 0

        async def score() -> None:
            results = shard.stage.process_many([e.value for e in run])
            for event, res in zip(run, results):
                m.MESSAGES_IN.labels(topic=event.message.topic).inc()
                await route(event, res)
            msg = run[-1].message
            maybe_checkpoint("detect", shard, msg.topic, msg.partition)

        for event in events:
            msg = event.message
            continues = (shard is not None and msg.offset == shard.next_offset and size < RUN_BYTES
                         and len(run) < TAKE and detect_shards.get((msg.topic, msg.partition)) is shard)
            if not continues:
                if run:
                    await score()
                run, size = [], 0
                # The offset check (and any rebuild) is per message, as in detect_and_route.
                shard = await detect_shard(msg)
                if shard is None:
                    continue
            run.append(event)
            size += len(event.value or b"")
            shard.next_offset = msg.offset + 1
        if run:
            await score()

    @app.agent(metrics_in)
    async def detect_metrics(stream):
        # Messages are scored together, TAKE at a time, or what came within TAKE_WITHIN of the
        # first: a backlog shares engine calls, and a lone message waits at most about twice
        # TAKE_WITHIN (the timer below scores it when no other message comes). Scoring whenever
        # the stream's buffer runs dry is not enough: Faust refills it a message or two at a
        # time while the agent keeps up, so calls stayed at one to three messages.
        nonlocal metrics_stream, waiting_since
        metrics_stream = stream = stream.noack()
        async for event in stream.events():
            if not waiting:
                waiting_since = time.monotonic()
            waiting.append(event)
            if len(waiting) >= TAKE or (stream.channel.empty() and time.monotonic() - waiting_since >= TAKE_WITHIN):
                await score_waiting()

    @app.timer(interval=TAKE_WITHIN)
    async def score_left_waiting():
        """Messages that waited TAKE_WITHIN with no other message after them."""
        if waiting and time.monotonic() - waiting_since >= TAKE_WITHIN:
            await score_waiting()

    @app.agent(logs_in)
    async def detect_logs(stream):
        async for event in stream.events():
            await detect_and_route(event)

    @app.agent(traces_in)
    async def detect_traces(stream):
        async for event in stream.events():
            await detect_and_route(event, rejected="spans")

    def external_alerts(source: str):
        def process(payload: bytes) -> DetectResult:
            res = decode_external(source, payload, known_services=cur.known, service_label=cur.service_label,
                                  redactor=cur.redactor)
            # Not past the wall clock by more than ingest.max_ahead: one alert dated 2099 would
            # move the correlator's clock (the detectors bound their own input the same way).
            limit = time.time() + cur.max_ahead
            alerts = [a for a in res.alerts if a.at <= limit]
            rejects = list(res.rejects)
            if len(alerts) < len(res.alerts):
                m.OUT_OF_TIME.inc(len(res.alerts) - len(alerts))
                rejects.append(f"{len(res.alerts) - len(alerts)} alert(s) out of time: further than ingest.max_ahead "
                               f"({cur.max_ahead:g}s) ahead of the wall clock")
            for a in alerts:
                m.EXTERNAL_ALERTS.labels(source=source, status=a.status).inc()
            return DetectResult(events=alerts, rejects=rejects)
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
            shard = await shard_for(correlate_shards, msg.partition, msg, lambda until: rebuild_correlate(
                live.topology, bootstrap, msg.partition, until, broadcast, outputs,
                checkpoints if checkpoints.enabled else None))
            if shard is None:
                continue
            shard.next_offset = msg.offset + 1
            try:
                ev = codec.decode_alert_event(event.value)
            except codec.RecordError as exc:
                await dead_letter(str(exc), event)
                continue
            await publish(shard.stage.process([ev]))
            observe_shards()
            maybe_checkpoint("correlate", shard, msg.topic, msg.partition)

    def observe_shards() -> None:
        m.OPEN_INCIDENTS.set(sum(s.stage.correlator.open_incidents() for s in correlate_shards.values()))
        detect_stats: dict = {}
        for s in detect_shards.values():
            for k, v in s.stage.stats.items():
                detect_stats[k] = detect_stats.get(k, 0) + v
        correlate_stats: dict = {}
        for s in correlate_shards.values():
            for k, v in s.stage.correlator.stats.items():
                correlate_stats[k] = correlate_stats.get(k, 0) + v
        m.observe_compression(detect_stats, correlate_stats)

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

    # Approvals, silences, changes, the executor's results and configs must reach every worker,
    # wherever the group put the partitions: every worker reads those topics whole (no group,
    # `follow`) and applies them. An agent in the group only dead-letters, once per message,
    # what does not decode; the readers skip it on their own.
    def dead_letter_undecodable(topic, decode, name: str) -> None:
        async def check(stream):
            async for event in stream.events():
                try:
                    decode(event.value)
                except codec.RecordError as exc:
                    await dead_letter(str(exc), event)

        app.agent(topic, name=name)(check)

    dead_letter_undecodable(control, codec.decode_control, "control_agent")
    dead_letter_undecodable(changes, codec.decode_change, "change_agent")

    @app.task
    async def read_broadcast():
        """Approvals (who approved is recorded on the action), silences, deploys and the
        executor's results (which feed the circuit breaker and the concurrency cap): history
        first, for the shards built from it, then live, into every shard this worker holds."""
        async def take(topic: str, value: bytes, partition: int, offset: int) -> None:
            broadcast.messages.append((topic, value))
            broadcast.where.append((topic, partition, offset))
            if not broadcast.loaded.is_set():
                return
            for shard in list(correlate_shards.values()):
                res = apply_broadcast(live.topology, shard.stage, topic, value)
                shard.broadcast_seen = len(broadcast.messages)
                if res is not None:
                    # No snapshot while the outputs of what the stage just applied are not all
                    # handed to the producer: a restart from it would never send them.
                    shard.publishing += 1
                    try:
                        await publish(res)
                    finally:
                        shard.publishing -= 1

        await follow(bootstrap, (topics.changes, topics.control, topics.actions), broadcast.loaded, take)

    def take_config(value: bytes) -> None:
        """One record of the config topic: applied to this worker whole, or refused whole.

        Applying swaps the settings of every shard this worker holds in place, with no await in
        between, so no message is processed under half of a config; learned state stays.
        Shards built later are built from ``live.topology``."""
        try:
            record = codec.decode_config(value)
        except codec.RecordError as exc:
            m.CONFIG_REJECTED.labels(reason="undecodable").inc()
            log.error("%s: a record that does not decode was refused (%s); the running config stays "
                      "(sha256 %s, from the %s)", topics.config, exc, live.sha256[:12], live.source)
            return
        runbooks: dict = {}

        def prepare(new: Topology, source: str) -> None:
            # A runbooks directory that changed is loaded now: a broken one refuses the config.
            if new.remediation.executors.runbooks_dir != live.topology.remediation.executors.runbooks_dir:
                try:
                    runbooks["index"] = load_runbook_index(new)
                except Exception as exc:  # noqa: BLE001 - any failure refuses the config, naming it
                    from streams.config import ConfigError

                    raise ConfigError(source, [("remediation.executors.runbooks_dir", str(exc))]) from None

        previous = live.topology
        outcome = live.offer(record, topics.config, prepare)
        if isinstance(outcome, Refused):
            m.CONFIG_REJECTED.labels(reason=outcome.reason).inc()
            log.error("config refused; the running config stays (sha256 %s, from the %s):\n%s", live.sha256[:12],
                      live.source, outcome.error)
            return
        if not isinstance(outcome, Applied):
            return
        new = outcome.topology
        for shard in detect_shards.values():
            assert isinstance(shard.stage, DetectStage)
            shard.stage.reconfigure(new)
        for shard in correlate_shards.values():
            assert isinstance(shard.stage, CorrelateStage)
            shard.stage.reconfigure(new, runbooks.get("index", shard.stage.runbooks))
        redactor = cur.redactor if new.ingest.redaction == previous.ingest.redaction else None
        cur.__init__(new, redactor)
        m.CONFIG_APPLIED.inc()
        m.observe_config(live.sha256, live.source)
        # WARNING, not INFO: the worker logs warnings by default, and a config change must show.
        log.warning("config applied: sha256 %s pushed by %s (%d detect and %d correlate shards reconfigured)",
                    live.sha256[:12], record.by, len(detect_shards), len(correlate_shards))

    @app.task
    async def read_config():
        """The config topic, whole, with no group (every worker must see every config): the
        history first, applied in order before any shard is built, then each new record."""
        async def take(topic: str, value: bytes, partition: int, offset: int) -> None:
            take_config(value)

        await follow(bootstrap, (topics.config,), live_loaded, take)

    dead_letter_undecodable(config_topic, codec.decode_config, "config_agent")

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
                    res = decode_external(source, body, known_services=cur.known, service_label=cur.service_label,
                                          redactor=cur.redactor)
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

    # The incident board (GET /, /incidents/ID): its state is every record of the incident,
    # action, ticket and control topics; acting from it goes through POST /control above.
    install_board(app, bootstrap=bootstrap, topics=topics, topology=lambda: live.topology, auth=auth)

    @app.page("/metrics")
    async def metrics_page(web, request):
        # In a header: aiohttp refuses a content_type argument carrying "; charset=utf-8".
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def health(web, request):
        return web.json({"status": "ok"})

    @app.on_partitions_assigned.connect
    async def drop_state_of_partitions_gone(sender, assigned, **kwargs) -> None:
        """Shards of partitions another worker now holds would only go stale; a partition that
        stays keeps its shard (an eager rebalance revokes and re-assigns it)."""
        held = {(tp.topic, tp.partition) for tp in assigned}
        for key in [k for k in detect_shards if k not in held]:
            del detect_shards[key]
        # Messages of a partition gone are the new owner's to score: this worker never committed
        # their offsets. Acked here only so that a stop does not wait for them.
        gone = [e for e in waiting if (e.message.topic, e.message.partition) not in held]
        waiting[:] = [e for e in waiting if (e.message.topic, e.message.partition) in held]
        for event in gone:
            await metrics_stream.ack(event)
        for p in [p for p in correlate_shards if (topics.alerts, p) not in held]:
            del correlate_shards[p]
        observe_shard_counts()
        # Who this worker is in the group, for the worker restarted on this data directory
        # (recovery.leave_for_dead_member). Faust does not expose the member id; aiokafka's
        # coordinator holds it. A worker with static membership rejoins under its instance id.
        if instance_id is None:
            try:
                member_id = app.consumer._thread._ensure_consumer()._coordinator.member_id
            except AttributeError:  # another Faust transport: the restart waits for the session timeout
                member_id = None
            if member_id:
                remember_member(Path(data_dir), app.conf.id, member_id)

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
        d["id"] = "sil-derived"  # a valid placeholder; derived below from what the silence matches, as `aiops silence` does
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


def run_worker(topology: Topology, *, bootstrap: str, web_port: int, data_dir: Path, verbose: bool = False,
               instance_id: str | None = None, config_sha: str = "", web_bind: str | None = None) -> int:
    from streams.broker import ensure_topics

    # The first ticket ranks runbooks by meaning, which loads the embedding model and embeds every
    # runbook (0.7 s measured with the shipped ten, more with more runbooks). On the event loop,
    # during the first incident, that held back every partition's fetches and the group's
    # heartbeats; so it starts now, beside the group join, in a thread (the model has its own
    # locks). The vectors stay in the model's cache by text, where each shard's index finds them.
    # A broken runbooks directory refuses to start, as it refuses a config.
    try:
        warm = load_runbook_index(topology)
    except Exception as exc:  # noqa: BLE001 - any failure refuses to start, naming it
        from streams.config import ConfigError

        raise ConfigError("topology", [("remediation.executors.runbooks_dir", str(exc))]) from None
    if warm is not None and warm.embedder is not None:
        import threading

        threading.Thread(target=warm.warm, name="aiops-runbook-vectors", daemon=True).start()
    t = topology.topics
    # The config topic: one partition (one key, read in order) and compacted, so it keeps the
    # latest config for good. Created so only when this call creates it.
    ensure_topics(bootstrap, t.all(), partitions=t.partitions,
                  special={t.config: (1, {"cleanup.policy": "compact"}),
                           # Compacted: each key (input partition, slot, chunk) keeps its latest snapshot.
                           t.checkpoints: (t.partitions, {"cleanup.policy": "compact"})})
    if instance_id is None:
        leave_for_dead_member(bootstrap, data_dir, topology.worker.group_id)
    app = build_app(topology, bootstrap=bootstrap, web_port=web_port, data_dir=data_dir, instance_id=instance_id,
                    config_sha=config_sha, web_bind=web_bind)
    # Decoding a batch allocates hundreds of thousands of short-lived objects, and the cyclic
    # collector's default young-generation threshold (700) made it about a quarter of decode
    # time. The stages build no reference cycles per message, so collect young objects less
    # often, and leave the long-lived start-up objects (modules, config, graph) out of it.
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    worker = faust.Worker(app, loglevel="INFO" if verbose else "WARNING", quiet=not verbose)
    worker.execute_from_commandline()
    return 0
