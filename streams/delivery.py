"""``aiops tickets deliver``: ticket events from ``aiops.tickets`` to real trackers.

Exactly one ticket per incident, never a dropped event:

- a **ledger** maps incident id -> tracker ticket id and the last delivered incident version.
  Entries are set, never incremented, so writing one twice changes nothing; a redelivered or
  replayed event at or below the recorded version is skipped.
- where the API cannot deduplicate a create (ClickUp, Jira), delivery **searches** for the
  incident's ticket before creating it, and again before retrying a create whose answer was
  lost, so a crash between a create and the ledger write never makes a second ticket.
  PagerDuty deduplicates on ``dedup_key`` and webhooks get an ``Idempotency-Key``.
- 429 waits for ``Retry-After`` (seconds or an HTTP date) or ClickUp's ``X-RateLimit-Reset``;
  5xx and connection errors back off exponentially (capped, jittered from an injected RNG);
  after ``max_attempts`` the event goes to the dead-letter callback / ``aiops.deadletter`` with
  the reason. Its offset is committed only after delivery or dead-lettering.

:class:`TicketDelivery` is the synchronous core: its I/O (transport, sleep, clock, ledger,
environment) is injected, so tests drive it against local HTTP servers with no real waiting.
:func:`run_ticket_delivery` is the Kafka shell around it.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from remediators.records import TicketEvent
from remediators.sink_config import DeliverySettings, RetrySettings, sink_problems
from remediators.sinks import HttpRequest, HttpResponse, MissingSecret, Prepared, Sink, SinkError, build_sinks, prepare
from streams import kafka_security, metrics

if TYPE_CHECKING:
    from streams.config import Topology

# --- ledger ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What was delivered for one incident. ``version`` 0: the ticket exists, no event applied yet."""

    ticket_id: str
    version: int
    event: str
    sink: str

    def to_json(self) -> dict:
        return {"ticket_id": self.ticket_id, "version": self.version, "event": self.event, "sink": self.sink}

    @staticmethod
    def from_json(d: dict) -> LedgerEntry:
        return LedgerEntry(str(d["ticket_id"]), int(d["version"]), str(d["event"]), str(d.get("sink", "")))


class LedgerError(RuntimeError):
    pass


class TicketLedger(Protocol):
    def get(self, ticket_key: str) -> LedgerEntry | None: ...
    def put(self, ticket_key: str, entry: LedgerEntry) -> None: ...


class MemoryLedger:
    def __init__(self, entries: Mapping[str, LedgerEntry] | None = None):
        self.entries = dict(entries or {})

    def get(self, ticket_key: str) -> LedgerEntry | None:
        return self.entries.get(ticket_key)

    def put(self, ticket_key: str, entry: LedgerEntry) -> None:
        self.entries[ticket_key] = entry


class JsonFileLedger(MemoryLedger):
    """A JSON file, rewritten atomically (temp file, fsync, rename) on every change."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        entries = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text() or "{}")
                entries = {k: LedgerEntry.from_json(v) for k, v in raw.items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise LedgerError(f"{self.path}: not a ticket ledger ({exc}); move it aside to rebuild "
                                  "(search-before-create and dedup keys keep tickets unique)") from None
        super().__init__(entries)

    def put(self, ticket_key: str, entry: LedgerEntry) -> None:
        if self.entries.get(ticket_key) == entry:
            return
        super().put(ticket_key, entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({k: v.to_json() for k, v in sorted(self.entries.items())}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class KafkaLedger(MemoryLedger):
    """A compacted topic keyed by incident id; the value is the whole entry (set, not increment).

    Read to its end on start; every ``put`` waits for the broker's acknowledgement (acks=all),
    so an entry is durable before the ticket event's offset is committed.
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout: float = 30.0):
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        self.topic = topic
        self.timeout = timeout
        entries: dict[str, LedgerEntry] = {}
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                 client_id="aiops-ticket-ledger", **kafka_security.current().kafka_python_kwargs())
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if tps:
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                end = consumer.end_offsets(tps)
                deadline = time.monotonic() + timeout
                while any(consumer.position(tp) < end[tp] for tp in tps):
                    if time.monotonic() > deadline:
                        raise LedgerError(f"could not read the ledger topic {topic} to its end in {timeout:.0f}s")
                    for records in consumer.poll(timeout_ms=500).values():
                        for r in records:
                            if r.key is None:
                                continue
                            if r.value is None:
                                entries.pop(r.key.decode(), None)
                            else:
                                entries[r.key.decode()] = LedgerEntry.from_json(json.loads(r.value))
        finally:
            consumer.close()
        super().__init__(entries)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="aiops-ticket-ledger",
                                       retries=5, **kafka_security.current().kafka_python_kwargs())

    def put(self, ticket_key: str, entry: LedgerEntry) -> None:
        if self.entries.get(ticket_key) == entry:
            return
        value = json.dumps(entry.to_json()).encode()
        self._producer.send(self.topic, key=ticket_key.encode(), value=value).get(timeout=self.timeout)
        super().put(ticket_key, entry)

    def close(self) -> None:
        self._producer.close()


# --- transport ---------------------------------------------------------------------------------


class TransportError(Exception):
    """No HTTP answer: connection refused or reset, timeout, DNS failure."""


Transport = Callable[[Prepared], HttpResponse]


class UrllibTransport:
    """HTTP with the standard library (no new dependency). ``proxies=None`` uses the environment's."""

    def __init__(self, timeout: float = 10.0, proxies: dict[str, str] | None = None):
        self.timeout = timeout
        handlers = [] if proxies is None else [urllib.request.ProxyHandler(proxies)]
        self._opener = urllib.request.build_opener(*handlers)

    def __call__(self, req: Prepared) -> HttpResponse:
        r = urllib.request.Request(req.url, data=req.body, headers=req.headers, method=req.method)
        try:
            with self._opener.open(r, timeout=self.timeout) as resp:
                return HttpResponse(resp.status, tuple(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return HttpResponse(exc.code, tuple(exc.headers.items()), exc.read())
        except (urllib.error.URLError, OSError, socket.timeout, ValueError) as exc:
            # http.client.RemoteDisconnected is an OSError too: the answer was lost.
            raise TransportError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None


# --- the delivery core -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    ticket_key: str
    event: str
    ticket_id: str
    created: bool


@dataclass(frozen=True, slots=True)
class Skipped:
    ticket_key: str
    event: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeadLettered:
    ticket_key: str
    event: str
    reason: str


Outcome = Delivered | Skipped | DeadLettered


class _GiveUp(Exception):
    """The event cannot be delivered: dead-letter it with this reason."""


class _Ambiguous(Exception):
    """A request that must not be repeated blindly got no clear answer; start its step over."""


_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after(resp: HttpResponse, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP date) or ClickUp's ``X-RateLimit-Reset``.

    >>> retry_after(HttpResponse(429, (("Retry-After", "7"),)), 0.0)
    7.0
    >>> retry_after(HttpResponse(429, (("Retry-After", "Wed, 21 Oct 2015 07:28:10 GMT"),)), 1445412480.0)
    10.0
    >>> retry_after(HttpResponse(429, (("X-RateLimit-Reset", "1445412490"),)), 1445412480.0)
    10.0
    """
    value = resp.header("Retry-After")
    if value is not None:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - now)
    reset = resp.header("X-RateLimit-Reset")
    if reset is not None and resp.status == 429:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


class TicketDelivery:
    """Delivers ticket events one at a time. Synchronous; every effect is injected.

    Parameters
    ----------
    sinks : name -> :class:`remediators.sinks.Sink`
    ledger : the incident -> ticket ledger
    transport : sends a prepared request; raises :class:`TransportError` when no answer came
    environ : where secrets are read (``os.environ`` in production)
    retry : attempts, backoff and caps
    sleep, clock, rng : injected so tests never wait (clock = wall time, for HTTP dates)
    on_dead_letter : called with the event (or None for an undecodable one) and the reason
    """

    def __init__(self, sinks: Mapping[str, Sink], ledger: TicketLedger, transport: Transport, *,
                 environ: Mapping[str, str], retry: RetrySettings | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 on_dead_letter: Callable[[TicketEvent | None, str], None] | None = None):
        self.sinks = dict(sinks)
        self.ledger = ledger
        self.transport = transport
        self.environ = environ
        self.retry = retry or RetrySettings()
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random(0)
        self.on_dead_letter = on_dead_letter
        self._sink_name = ""  # the sink being delivered to, for aiops_ticket_delivery_failed_attempts_total

    # -- one event --

    def deliver(self, ev: TicketEvent) -> Outcome:
        """Deliver one event: never raises for a tracker's failure, it dead-letters instead."""
        if ev.sink == "topic":
            return Skipped(ev.ticket_key, ev.event, "sink 'topic': the ticket lives on the topic only")
        sink = self.sinks.get(ev.sink)
        if sink is None:
            return self._dead(ev, f"sink '{ev.sink}' is not configured (tickets.delivery.{ev.sink})")
        entry = self.ledger.get(ev.ticket_key)
        # An escalation carries the version it escalates, usually one already delivered as an
        # update; it is new once, so the ledger tells it apart by its event.
        escalation_done = ev.event == "escalate" and entry is not None and entry.event == "escalate" \
            and entry.version >= ev.incident_version
        if entry is not None and (entry.version > ev.incident_version or escalation_done or (
                entry.version == ev.incident_version and ev.event != "escalate")):
            return Skipped(ev.ticket_key, ev.event,
                           f"already delivered up to version {entry.version} ({entry.event}) as {entry.ticket_id}")
        self._sink_name = sink.name  # labels the failed attempts _send counts
        try:
            created = False
            ticket_id = entry.ticket_id if entry is not None else sink.known_id(ev)
            if entry is None and (ticket_id is None or ev.event == "create"):
                ticket_id, created = self._ensure(sink, ev)
                # Record the ticket at once: from here on a crash can only repeat idempotent steps.
                self.ledger.put(ev.ticket_key, LedgerEntry(
                    ticket_id, ev.incident_version if ev.event == "create" else 0, "create", sink.name))
            if ev.event != "create":
                self._apply(sink, ev, ticket_id)
            self.ledger.put(ev.ticket_key, LedgerEntry(ticket_id, ev.incident_version, ev.event, sink.name))
            return Delivered(ev.ticket_key, ev.event, ticket_id, created)
        except _GiveUp as exc:
            return self._dead(ev, f"{sink.name} {ev.event} of {ev.ticket_key} v{ev.incident_version}: {exc}")
        finally:
            self._sink_name = ""

    def _dead(self, ev: TicketEvent, reason: str) -> DeadLettered:
        if self.on_dead_letter is not None:
            self.on_dead_letter(ev, reason)
        return DeadLettered(ev.ticket_key, ev.event, reason)

    def _ensure(self, sink: Sink, ev: TicketEvent) -> tuple[str, bool]:
        """Find the incident's ticket or create it. Returns (ticket id, created)."""
        last: Exception | None = None
        for cycle in range(self.retry.max_attempts):
            req = sink.search(ev)
            if req is not None:
                resp = self._send(req)
                found = self._parse(lambda: sink.found(ev, resp), req)
                if found is not None:
                    return found, False
            req = sink.create(ev)
            try:
                resp = self._send(req, cycle)
            except _Ambiguous as exc:
                last = exc  # maybe created: search again before another create
                continue
            return self._parse(lambda: sink.created(ev, resp), req), True
        raise _GiveUp(f"create: no answer after {self.retry.max_attempts} attempts ({last})")

    def _apply(self, sink: Sink, ev: TicketEvent, ticket_id: str) -> None:
        last: Exception | None = None
        for cycle in range(self.retry.max_attempts):
            steps = sink.apply(ev, ticket_id)
            try:
                req = self._parse(lambda: next(steps), None)
                while True:
                    resp = self._send(req, cycle)
                    req = self._parse(lambda: steps.send(resp), req)
            except StopIteration:
                return
            except _Ambiguous as exc:
                last = exc  # start the steps over: they look before they act
                continue
        raise _GiveUp(f"no answer after {self.retry.max_attempts} attempts ({last})")

    @staticmethod
    def _parse(fn, req: HttpRequest | None):
        try:
            return fn()
        except StopIteration:
            raise
        except SinkError as exc:
            where = f"{req.describe()}: " if req is not None else ""
            raise _GiveUp(f"{where}{exc}") from None

    # -- one request --

    def _backoff(self, attempt: int) -> float:
        cap = self.retry.backoff_max.total_seconds()
        delay = min(cap, self.retry.backoff_initial.total_seconds() * 2 ** (attempt - 1))
        return delay / 2 + self.rng.uniform(0, delay / 2)  # jitter into [half, full]

    def _send(self, req: HttpRequest, earlier: int = 0) -> HttpResponse:
        """Send until a 2xx. Raises _GiveUp on a permanent answer or after max_attempts, and
        _Ambiguous (after waiting) when a non-retry-safe request got no clear answer.
        ``earlier``: failed cycles of the enclosing step, so its backoff keeps growing."""
        try:
            prepared = prepare(req, self.environ)
        except MissingSecret as exc:
            raise _GiveUp(str(exc)) from None
        n = self.retry.max_attempts
        for attempt in range(1, n + 1):
            try:
                resp = self.transport(prepared)
            except TransportError as exc:
                failure, wait, ambiguous = f"connection error: {exc}", self._backoff(earlier + attempt), True
            else:
                if 200 <= resp.status < 300:
                    return resp
                if resp.status not in _RETRYABLE:
                    metrics.TICKET_FAILED_ATTEMPTS.labels(sink=self._sink_name or "unknown").inc()
                    raise _GiveUp(f"{req.describe()}: HTTP {resp.status}: {resp.excerpt()}")
                failure = f"HTTP {resp.status}: {resp.excerpt(200)}"
                told = retry_after(resp, self.clock())
                cap = self.retry.retry_after_max.total_seconds()
                wait = self._backoff(earlier + attempt) if told is None else min(told, cap)
                # A 429 was refused before any work; a 5xx may have done the work.
                ambiguous = resp.status != 429
            metrics.TICKET_FAILED_ATTEMPTS.labels(sink=self._sink_name or "unknown").inc()
            if attempt == n:
                raise _GiveUp(f"{req.describe()}: gave up after {n} attempts: {failure}")
            self.sleep(wait)
            if ambiguous and not req.retry_safe:
                raise _Ambiguous(f"{req.describe()}: {failure}")
        raise AssertionError("unreachable")

    # -- records off the topic --

    def deliver_payload(self, payload: bytes | None) -> Outcome:
        """Decode an ``aiops.tickets`` record and deliver it; an undecodable one is dead-lettered."""
        try:
            ev = decode_ticket(payload or b"")
        except ValueError as exc:
            reason = f"invalid ticket record: {exc}"
            if self.on_dead_letter is not None:
                self.on_dead_letter(None, reason)
            metrics.observe_ticket_delivery("", dead := DeadLettered("", "", reason))
            return dead
        outcome = self.deliver(ev)
        metrics.observe_ticket_delivery(ev.sink, outcome)
        return outcome


def decode_ticket(payload: bytes) -> TicketEvent:
    """The inverse of ``streams.codec.encode_ticket``. Raises ValueError naming the bad field."""
    from detectors.records import parse_rfc3339

    try:
        d = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError("expected a JSON object")
    if d.get("schema_version") != 1:
        raise ValueError(f"schema_version: expected 1 (got {d.get('schema_version')!r})")

    def s(key: str, optional: bool = False) -> str | None:
        v = d.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise ValueError(f"{key}: expected a string (got {type(v).__name__})")
        return v

    def strs(key: str) -> tuple[str, ...]:
        v = d.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError(f"{key}: expected a list of strings")
        return tuple(v)

    event = s("event")
    if event not in ("create", "update", "escalate", "resolve"):
        raise ValueError(f"event: expected create, update, escalate or resolve (got {event!r})")
    if s("priority") not in ("P1", "P2", "P3", "P4"):
        raise ValueError(f"priority: expected P1..P4 (got {d.get('priority')!r})")
    version = d.get("incident_version")
    if type(version) is not int or version < 1:
        raise ValueError(f"incident_version: expected an integer >= 1 (got {version!r})")
    try:
        at = parse_rfc3339(s("at"))
    except ValueError:
        raise ValueError(f"at: invalid RFC 3339 time {d.get('at')!r}") from None
    return TicketEvent(
        ticket_key=s("ticket_key"), event=event, incident_id=s("incident_id"), incident_version=version,
        sink=s("sink"), team=s("team"), assignee=s("assignee", optional=True), priority=d["priority"],
        title=s("title"), description=s("description"), tags=strs("tags"), at=at, runbooks=strs("runbooks"))


# --- the Kafka shell ---------------------------------------------------------------------------


def _ensure_ledger_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create the ledger topic compacted (cleanup.policy=compact) if it does not exist."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streams.broker import ensure_topics

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="aiops-admin", request_timeout_ms=10000,
                             **kafka_security.current().kafka_python_kwargs())
    try:
        if topic not in set(admin.list_topics()):
            try:
                admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                              topic_configs={"cleanup.policy": "compact"})])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    ensure_topics(bootstrap, [topic], partitions=partitions)


def _delivery_settings(topology: Topology, settings: DeliverySettings | None) -> DeliverySettings:
    if settings is not None:
        return settings
    return getattr(topology.tickets, "delivery", None) or DeliverySettings()


def check_delivery(topology: Topology, settings: DeliverySettings | None = None,
                   environ: Mapping[str, str] | None = None) -> list[str]:
    """Problems that stop delivery before it starts: unconfigured sinks, unset secrets."""
    settings = _delivery_settings(topology, settings)
    environ = os.environ if environ is None else environ
    problems = [f"{path}: {msg}" for path, msg in sink_problems(topology.tickets, settings)]
    for name in ("clickup", "jira", "pagerduty", "webhook"):
        cfg = settings.sink(name)
        env = getattr(cfg, "token_env", None) if cfg is not None else None
        if env and not environ.get(env):
            problems.append(f"tickets.delivery.{name}: environment variable {env} is not set")
    return problems


def run_ticket_delivery(topology: Topology, bootstrap: str, *, settings: DeliverySettings | None = None,
                        ledger: TicketLedger | None = None, transport: Transport | None = None,
                        environ: Mapping[str, str] | None = None, stop: asyncio.Event | None = None,
                        max_idle: float | None = None, metrics_port: int | None = None) -> int:
    """``aiops tickets deliver``: consume ``aiops.tickets`` (group ``aiops-tickets``), deliver, commit.

    Each offset is committed only after its event was delivered, skipped as a duplicate, or
    written to ``aiops.deadletter``. Runs until interrupted, ``stop`` is set, or (for tests)
    nothing arrived for ``max_idle`` seconds. Returns the exit code (2: bad settings).
    """
    settings = _delivery_settings(topology, settings)
    environ = os.environ if environ is None else environ
    problems = check_delivery(topology, settings, environ)
    if problems:
        print("aiops tickets deliver: cannot start:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    metrics.serve(metrics_port)  # aiops_ticket_deliveries_total and friends on /metrics
    try:
        return asyncio.run(_consume(topology, bootstrap, settings, ledger, transport, environ, stop, max_idle))
    except KeyboardInterrupt:
        return 0


async def _consume(topology: Topology, bootstrap: str, settings: DeliverySettings, ledger: TicketLedger | None,
                   transport: Transport | None, environ: Mapping[str, str], stop: asyncio.Event | None,
                   max_idle: float | None) -> int:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streams import codec
    from streams.broker import ensure_topics

    topics = topology.topics
    await asyncio.to_thread(ensure_topics, bootstrap, [topics.tickets, topics.deadletter],
                            partitions=topics.partitions)
    own_ledger = ledger is None
    if ledger is None:
        await asyncio.to_thread(_ensure_ledger_topic, bootstrap, settings.ledger_topic, topics.partitions)
        ledger = await asyncio.to_thread(KafkaLedger, bootstrap, settings.ledger_topic)
    engine = TicketDelivery(build_sinks(settings), ledger,
                            transport or UrllibTransport(settings.retry.timeout.total_seconds()),
                            environ=environ, retry=settings.retry)
    r = settings.retry
    # A delivery may wait through every retry; the group must not evict us meanwhile.
    worst = r.max_attempts * max(r.backoff_max, r.retry_after_max).total_seconds() * 3 + 60
    consumer = AIOKafkaConsumer(topics.tickets, bootstrap_servers=bootstrap, group_id=settings.group_id,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_poll_interval_ms=int(max(300.0, worst) * 1000), client_id="aiops-tickets",
                                **kafka_security.current().aiokafka_kwargs())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="aiops-tickets", **kafka_security.current().aiokafka_kwargs())
    await producer.start()
    await consumer.start()
    idle_since = time.monotonic()
    try:
        while not (stop is not None and stop.is_set()):
            batches = await consumer.getmany(timeout_ms=500, max_records=20)
            if not batches:
                if max_idle is not None and time.monotonic() - idle_since > max_idle:
                    break
                continue
            idle_since = time.monotonic()
            for tp, msgs in batches.items():
                for msg in msgs:
                    # Blocking HTTP and waits run off the event loop so heartbeats continue.
                    outcome = await asyncio.to_thread(engine.deliver_payload, msg.value)
                    if isinstance(outcome, DeadLettered):
                        await producer.send_and_wait(topics.deadletter, key=msg.key, value=codec.dead_letter(
                            outcome.reason, msg.topic, msg.partition, msg.offset, msg.value or b"",
                            topology.ingest.max_excerpt_bytes))
                        metrics.DEADLETTER.labels(topic=msg.topic).inc()
                    print(f"aiops tickets: {type(outcome).__name__.lower()} {outcome.ticket_key} {outcome.event}"
                          f": {getattr(outcome, 'ticket_id', None) or getattr(outcome, 'reason', '')}",
                          file=sys.stderr)
                    await consumer.commit({TopicPartition(tp.topic, tp.partition): msg.offset + 1})
    finally:
        await consumer.stop()
        await producer.stop()
        if own_ledger and isinstance(ledger, KafkaLedger):
            ledger.close()
    return 0


__all__ = ["DeadLettered", "Delivered", "JsonFileLedger", "KafkaLedger", "LedgerEntry", "MemoryLedger", "Outcome",
           "Skipped", "TicketDelivery", "TicketLedger", "TransportError", "UrllibTransport", "check_delivery",
           "decode_ticket", "retry_after", "run_ticket_delivery"]
