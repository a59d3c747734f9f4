"""Telemetry through the production core, exactly as ``aiops replay`` (``streams/replay.py``) runs it.

Each message is serialized to the bytes the worker would read, decoded and scored by
:class:`~streams.pipeline.DetectStage`, its alerts round-tripped through the wire codec, and
grouped by :class:`~streams.pipeline.CorrelateStage`; at the end event time is drained as
``replay(..., drain=True)`` does. Incidents come back as the decoded JSON records the worker
publishes on ``aiops.incidents`` (every version). Kept in memory rather than in files so the
evaluation writes no gigabytes of telemetry; ``tests/eval`` checks it gives byte-identical
incident records to ``streams.replay.replay`` on the same messages.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from detectors.records import Heartbeat
from streams import codec
from streams.config import Topology
from streams.ingest import DecodeError
from streams.pipeline import CorrelateStage, DetectStage
from streams.replay import merge_keys, message_times, with_next_time


@dataclass
class CoreRun:
    incidents: list[dict]  # every incident record, in emission order
    messages: int = 0
    dead_lettered: int = 0
    alerts: int = 0  # firing alert events


def run_core(topology: Topology, messages: Iterable[dict | bytes | tuple[str, dict | bytes]], *,
             alerts: list | None = None) -> CoreRun:
    """Push OTLP/JSON messages (dicts or their bytes) through DetectStage -> codec -> CorrelateStage.

    A message is metrics, or a ``(kind, message)`` pair whose kind is ``"metrics"``, ``"logs"``
    or ``"traces"``: each kind goes where the worker's agent for its topic sends it. Mixed kinds
    must come in the order ``aiops replay`` merges them (by event time).
    ``alerts``, when given, receives every alert event as the correlator saw it (after the codec)."""
    detect, correlate = DetectStage(topology), CorrelateStage(topology)
    processes = {"metrics": detect.process, "logs": detect.process_logs, "traces": detect.process_traces}
    out = CoreRun(incidents=[])

    def take(res) -> None:
        for inc in res.incidents:
            out.incidents.append(orjson.loads(codec.encode_incident(inc)))

    def lines():
        for msg in messages:
            kind = "metrics"
            if isinstance(msg, tuple):
                kind, msg = msg
            line = msg if isinstance(msg, bytes) else orjson.dumps(msg)
            yield message_times(line), (kind, line)

    # The event-time bound looks one message ahead, as in replay (a gap is not a bad clock).
    keyed = merge_keys(lines(), topology.ingest.max_ahead.total_seconds())
    for (_, (kind, line)), detect.horizon in with_next_time(keyed):
        out.messages += 1
        try:
            res = processes[kind](line)
        except DecodeError:
            out.dead_lettered += 1
            continue
        events = [codec.decode_alert_event(codec.encode_alert_event(ev)) for ev in res.events]
        if alerts is not None:
            alerts += [ev for ev in events if not isinstance(ev, Heartbeat)]
        out.alerts += sum(1 for ev in res.events if getattr(ev, "status", "") == "firing")
        take(correlate.process(events))
    c = topology.correlation
    horizon = max(c.group_wait, c.resolve_after, c.group_interval).total_seconds()
    take(correlate.flush(correlate.correlator.now + horizon + 1.0))
    return out
