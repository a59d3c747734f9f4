"""Rebuild the worker's state after a crash or restart, losing nothing and repeating nothing.

The stages are deterministic functions of their input topics, so their state is recovered by
running them again over what the topics already hold, from the beginning to the end offsets
seen at start-up:

- the detect stage over ``telemetry.metrics`` and ``telemetry.logs``;
- the webhook payloads of other alerting tools (``alerts.alertmanager``, ``alerts.datadog``,
  ``alerts.newrelic``): stateless, but their alerts are compared with ``aiops.alerts`` like the
  detectors', so a payload whose alerts the dead process never produced is not lost;
- the correlate stage over ``aiops.alerts`` (and the approvals on ``aiops.control``).

Outputs of the rebuild are compared with what the output topics already hold. Anything the
previous process computed but did not get out before it died (a crash between processing and
producing) is sent now; everything else is dropped, so consumers see no duplicate. The agents
then skip input below the rebuilt offsets, which Faust may redeliver because the crashed
process had not committed them.

The cost is one pass over the retained topics at start-up, which is fine for the retention an
AIOps pipeline keeps on its alert topic; for months of raw telemetry, shorten the telemetry
topics' retention (the detectors' state converges within their warm-up anyway).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from detectors.records import Alert
from streams import codec, kafka_security
from streams.config import Topology
from streams.ingest import DecodeError
from streams.ingest.external import decode_external
from streams.pipeline import CorrelateStage, DetectStage, correlation_keys, load_runbook_index

log = logging.getLogger("aiops.recovery")


@dataclass
class Recovered:
    detect: DetectStage
    correlate: CorrelateStage
    # (topic, partition) -> the first offset the agents have not yet applied
    applied: dict[tuple[str, int], int] = field(default_factory=dict)
    # outputs computed by the rebuild that are not yet on their topics: (topic, key, value)
    missing: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    seconds: float = 0.0
    messages: int = 0

    def already_applied(self, topic: str, partition: int, offset: int) -> bool:
        return offset < self.applied.get((topic, partition), 0)


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets: what a previous worker had finished applying.

    kafka-python's admin client, because aiokafka's OffsetFetch request version is one the
    embedded broker (tansu) does not answer.
    """
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="aiops-recovery",
                             **kafka_security.current().kafka_python_kwargs())
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def _read_all(bootstrap: str, topic: str, until: dict[tuple[str, int], int] | None = None
                    ) -> list[tuple[int, int, bytes | None, bytes]]:
    """The messages of ``topic`` up to its end offsets at call time, or up to ``until`` where
    given (a partition missing from ``until`` is not read): (partition, offset, key, value)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", **kafka_security.current().aiokafka_kwargs())
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        if until is not None:
            ends = {tp: min(end, until.get((topic, tp.partition), 0)) for tp, end in ends.items()}
        out: list[tuple[int, int, bytes | None, bytes]] = []
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, msgs in batch.items():
                for msg in msgs:
                    if msg.offset < ends[tp]:
                        out.append((tp.partition, msg.offset, msg.key, msg.value))
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
        # Per-partition order is what matters; partitions interleave as they would live.
        out.sort(key=lambda r: (r[1], r[0]))
        return out
    finally:
        await consumer.stop()


async def recover(topology: Topology, bootstrap: str, group: str = "aiops") -> Recovered:
    """Rebuild the stages over what the previous worker of ``group`` had committed.

    Input beyond the committed offsets is left to the agents, which process it as new (and
    so dead-letter it, alert on it, ...); the outputs of the committed part that never reached
    their topics are returned in :attr:`Recovered.missing`.
    """
    started = time.monotonic()
    t = topology.topics
    committed = await asyncio.get_running_loop().run_in_executor(None, committed_offsets, bootstrap, group)
    external = t.external()
    inputs = [t.metrics, t.logs, t.control, t.changes, *external.values()]
    outputs_ = [t.alerts, t.incidents, t.actions, t.tickets]  # read whole: compared with the rebuild's outputs
    read = [_read_all(bootstrap, n, committed) for n in inputs] + [_read_all(bootstrap, n) for n in outputs_]
    contents = dict(zip(inputs + outputs_, await asyncio.gather(*read)))
    alerts_applied = [r for r in contents[t.alerts] if r[1] < committed.get((t.alerts, r[0]), 0)]
    if not any(contents[n] for n in inputs) and not alerts_applied:
        return Recovered(DetectStage(topology), CorrelateStage(topology, load_runbook_index(topology)), seconds=time.monotonic() - started)
    rec = Recovered(DetectStage(topology), CorrelateStage(topology, load_runbook_index(topology)))
    rec.messages = sum(len(v) for v in contents.values())

    # Detect: rebuild the detectors; re-send the alerts the crashed process never produced.
    on_topic = Counter(v for _, _, _, v in contents[t.alerts])
    produced: list[bytes] = []
    for topic, process in ((t.metrics, rec.detect.process), (t.logs, rec.detect.process_logs)):
        for partition, offset, _, value in contents[topic]:
            rec.applied[(topic, partition)] = offset + 1
            try:
                res = process(value)
            except DecodeError:
                continue  # dead-lettered by the process that read it first
            produced += [codec.encode_alert_event(ev) for ev in res.events if isinstance(ev, Alert)]
    known = frozenset(topology.services)
    for source, topic in external.items():
        for partition, offset, _, value in contents[topic]:
            rec.applied[(topic, partition)] = offset + 1
            try:
                res = decode_external(source, value, known_services=known,
                                      service_label=topology.ingest.prometheus_service_label,
                                      redactor=rec.detect.redactor)
            except DecodeError:
                continue  # dead-lettered by the process that read it first
            produced += [codec.encode_alert_event(a) for a in res.alerts]
    keys = correlation_keys(topology)
    for payload in produced:
        if on_topic[payload] > 0:
            on_topic[payload] -= 1
            continue
        alert = codec.decode_alert_event(payload)
        rec.missing.append((t.alerts, keys.get(alert.service, alert.service).encode(), payload))

    # Correlate: rebuild incidents, dispatch state and approvals; re-send what never got out.
    for partition, offset, _, value in contents[t.changes]:
        rec.applied[(t.changes, partition)] = offset + 1
        try:
            rec.correlate.change(codec.decode_change(value))
        except codec.RecordError:
            continue
    outputs: list[tuple[str, bytes, bytes]] = []
    for partition, offset, _, value in alerts_applied:
        rec.applied[(t.alerts, partition)] = offset + 1
        try:
            ev = codec.decode_alert_event(value)
        except codec.RecordError:
            continue
        outputs += _encode(topology, rec.correlate.process([ev]))
    for partition, offset, _, value in contents[t.control]:
        rec.applied[(t.control, partition)] = offset + 1
        try:
            msg = codec.decode_control(value)
        except codec.RecordError:
            continue
        outputs += _encode(topology, rec.correlate.control(msg))
    for _, _, _, value in contents[t.actions]:
        try:
            act = codec.decode_action(value)
        except codec.RecordError:
            continue
        if act.decision in ("executed", "failed", "dry_run_ok", "refused", "unknown"):
            rec.correlate.action_result(act)
    seen = Counter((topic, v) for topic in (t.incidents, t.actions, t.tickets) for _, _, _, v in contents[topic])
    for topic, key, value in outputs:
        if seen[(topic, value)] > 0:
            seen[(topic, value)] -= 1
        else:
            rec.missing.append((topic, key, value))
    rec.seconds = time.monotonic() - started
    log.warning("recovered state from %d messages in %.1fs; %d outputs were missing and will be sent",
                rec.messages, rec.seconds, len(rec.missing))
    return rec


def _encode(topology: Topology, res) -> list[tuple[str, bytes, bytes]]:
    t = topology.topics
    return ([(t.incidents, i.id.encode(), codec.encode_incident(i)) for i in res.incidents]
            + [(t.actions, a.id.encode(), codec.encode_action(a)) for a in res.actions]
            + [(t.tickets, k.ticket_key.encode(), codec.encode_ticket(k)) for k in res.tickets])


__all__ = ["Recovered", "recover"]
