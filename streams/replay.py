"""``aiops replay``: a telemetry file in, incident records out, no broker.

It runs the worker's stages in one process on event time, so its output is what the worker
would publish, and the same input always gives byte-identical output.
"""
from __future__ import annotations

import heapq
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import IO

import orjson

from streams import codec
from streams.config import Topology
from streams.ingest import T_MAX, T_MIN, DecodeError, otlp_proto
from streams.ingest.external import SOURCES, ExternalAlerts, decode_external
from streams.ingest.redact import Redactor
from streams.pipeline import CorrelateResult, CorrelateStage, DetectResult, DetectStage, load_runbook_index


INPUT_FORMATS = ("json", "otlp_proto")


@dataclass
class ReplaySummary:
    lines: int = 0
    dead_lettered: int = 0
    points: int = 0
    anomalous_points: int = 0
    anomalous_series_alerts: int = 0
    external_alerts: int = 0  # firing alerts from --external payloads
    incidents: int = 0
    updates: int = 0
    actions: int = 0
    tickets: int = 0
    seconds: float = 0.0

    def render(self) -> str:
        alerts = self.anomalous_series_alerts + self.external_alerts
        ratio = alerts / self.incidents if self.incidents else 0.0
        return (
            f"replayed {self.lines} messages ({self.points} points) in {self.seconds:.1f}s: "
            f"{self.anomalous_points} anomalous points -> {self.anomalous_series_alerts} alerts"
            + (f" (+{self.external_alerts} from other tools)" if self.external_alerts else "") + " -> "
            f"{self.incidents} incidents ({ratio:.1f} alerts per incident), {self.updates} incident records, "
            f"{self.actions} actions, {self.tickets} ticket events, {self.dead_lettered} dead-lettered"
        )


class _Sinks:
    def __init__(self, incidents: IO[bytes], actions: IO[bytes] | None, tickets: IO[bytes] | None,
                 deadletter: IO[bytes] | None):
        self.incidents, self.actions, self.tickets, self.deadletter = incidents, actions, tickets, deadletter

    def write(self, res: CorrelateResult, summary: ReplaySummary) -> None:
        for inc in res.incidents:
            self.incidents.write(codec.encode_incident(inc) + b"\n")
            summary.updates += 1
            if inc.version == 1:
                summary.incidents += 1
        for act in res.actions:
            summary.actions += 1
            if self.actions:
                self.actions.write(codec.encode_action(act) + b"\n")
        for tk in res.tickets:
            summary.tickets += 1
            if self.tickets:
                self.tickets.write(codec.encode_ticket(tk) + b"\n")


def replay(
    topology: Topology,
    input_path: Path,
    output: Path,
    *,
    actions: Path | None = None,
    tickets: Path | None = None,
    deadletter: Path | None = None,
    drain: bool = False,
    progress: IO[str] | None = sys.stderr,
    source_topic: str = "telemetry.metrics",
    logs: Path | None = None,
    changes: Path | None = None,
    external: Path | None = None,
    traces: Path | None = None,
    input_format: str = "json",
) -> ReplaySummary:
    """Run the pipeline over ``input_path`` (one message per line) and write the records.

    ``input_format`` is how the telemetry files (``input_path``, ``logs``, ``traces``) hold their
    messages: ``"json"``, one JSON message per line; or ``"otlp_proto"``, OTLP protobuf export
    requests in length-prefixed frames (a 4-byte big-endian length, then the message's bytes, as
    they were on the topic), so protobuf input replays byte for byte.

    With ``logs`` (OTLP/JSON logs, one export request per line), metrics and logs are merged by
    event time (a metrics message first on a tie) and logs go to ``process_logs``, as the
    worker's logs agent does with ``telemetry.logs``. With ``traces`` (OTLP/JSON spans, one
    export request per line) the same: merged by event time (the latest span end of a request),
    after metrics and logs on a tie, through ``process_traces`` as the traces agent does.

    With ``external`` (webhook payloads of other alerting tools, one JSON line each:
    ``{"source": "alertmanager", "payload": {...}}``, the payload as an object or as the raw body
    in a string), each payload is decoded as the worker's agent for that source's topic decodes
    it, and merged with the telemetry by the latest time among its alerts.
    """
    detect = DetectStage(topology)
    correlate = CorrelateStage(topology, load_runbook_index(topology))
    summary = ReplaySummary()
    if changes is not None:
        # Changes only matter by their own time stamps, so all of them are known up front.
        for n, raw in enumerate(changes.read_bytes().splitlines()):
            if raw.strip():
                try:
                    correlate.change(codec.decode_change(raw, correlate.redactor))
                except codec.RecordError as exc:
                    raise ValueError(f"{changes}:{n + 1}: {exc}") from None
    started = time.monotonic()
    last_report = started
    total_bytes = max(1, input_path.stat().st_size + (logs.stat().st_size if logs else 0)
                      + (external.stat().st_size if external else 0) + (traces.stat().st_size if traces else 0))
    decode_line = _external_decoder(topology)

    def decode_external_line(line: bytes) -> DetectResult:
        """Another tool's alerts, shaped like the detectors' result, as the worker's forwarding
        agents shape them."""
        res = decode_line(line)
        alerts, late = detect.in_time(res.alerts)
        return DetectResult(events=alerts, rejects=list(res.rejects) + late)

    def dead_letter(reason: str, topic: str, offset: int, line: bytes) -> bytes:
        """As the worker writes them: the topology's redaction rules and excerpt size."""
        return codec.dead_letter(reason, topic, 0, offset, line, topology.ingest.max_excerpt_bytes,
                                 redactor=detect.redactor)

    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format: expected one of {', '.join(INPUT_FORMATS)} (got {input_format!r})")
    framed = input_format == "otlp_proto"
    read_bytes = 0
    logs_topic = topology.topics.logs
    with ExitStack() as stack:
        open_out = lambda p: stack.enter_context(open(p, "wb")) if p else None  # noqa: E731
        sinks = _Sinks(open_out(output), open_out(actions), open_out(tickets), open_out(deadletter))
        src = stack.enter_context(open(input_path, "rb"))
        ahead = topology.ingest.max_ahead.total_seconds()
        # Timed even alone: the stage's event-time bound looks one message ahead (a gap is not a bad clock).
        cap = topology.ingest.max_message_bytes  # a message over it is dead-lettered unread: not read for its time
        streams = [_timed(src, 0, source_topic, True, ahead, framed and ("metrics", input_path), cap)]
        if logs is not None:
            streams.append(_timed(stack.enter_context(open(logs, "rb")), 1, logs_topic, True, ahead,
                                  framed and ("logs", logs), cap))
        if external is not None:
            streams.append(_timed_external(stack.enter_context(open(external, "rb")), decode_line,
                                           topology.topics.external(), ahead))
        if traces is not None:
            streams.append(_timed(stack.enter_context(open(traces, "rb")), 3, topology.topics.traces, True, ahead,
                                  framed and ("traces", traces), cap))
        for (_, kind, offset, topic, raw), horizon in with_next_time(heapq.merge(*streams)):
            detect.horizon = horizon
            read_bytes += len(raw)
            # A frame is the message as it was on the topic: stripping could eat a protobuf's bytes.
            line = raw if framed and kind != 2 else raw.strip()
            if not line:
                continue
            summary.lines += 1
            process = (detect.process, detect.process_logs, decode_external_line, detect.process_traces)[kind]
            try:
                res = process(line)
            except DecodeError as exc:
                summary.dead_lettered += 1
                if sinks.deadletter:
                    sinks.deadletter.write(dead_letter(str(exc), topic, offset, line) + b"\n")
                continue
            if res.rejects and sinks.deadletter:
                reason = "; ".join(res.rejects[:5])
                what = ("points", "records", "alerts", "spans")[kind]
                sinks.deadletter.write(dead_letter(f"rejected {what}: {reason}", topic, offset, line) + b"\n")
            summary.points += res.points
            summary.anomalous_points += res.anomalous_points
            # Through the wire codec, exactly as the worker's alerts topic carries them.
            events = [codec.decode_alert_event(codec.encode_alert_event(ev)) for ev in res.events]
            firing = sum(1 for ev in res.events if getattr(ev, "status", "") == "firing")
            if kind == 2:
                summary.external_alerts += firing
            else:
                summary.anomalous_series_alerts += firing
            sinks.write(correlate.process(events), summary)
            now = time.monotonic()
            if progress is not None and now - last_report >= 1.0:
                last_report = now
                pct = 100.0 * read_bytes / total_bytes
                progress.write(f"\r  {pct:5.1f}%  {summary.lines} messages, {summary.points} points, "
                               f"{summary.incidents} incidents")
                progress.flush()
        if drain:
            horizon = max(
                topology.correlation.group_wait, topology.correlation.resolve_after, topology.correlation.group_interval
            ).total_seconds()
            sinks.write(correlate.flush(correlate.correlator.now + horizon + 1.0), summary)
    summary.seconds = time.monotonic() - started
    if progress is not None:
        progress.write("\r" + " " * 70 + "\r")
        progress.write(summary.render() + "\n")
    return summary


def message_time(line: bytes) -> float | None:
    """The event time of one input message, for merging files by time: the latest time in an
    OTLP/JSON request (when the collector would have exported it; a span's end), or the first
    time of a native batch or Prometheus sample. ``None`` when there is none to read.

    >>> message_time(b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"2000000000000000000"},{"timeUnixNano":"3000000000000000000"}]}]}]}')
    3000000000.0
    >>> message_time(b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"1000000000000000000","endTimeUnixNano":"2500000000000000000"}]}]}]}')
    2500000000.0
    >>> message_time(b'garbage') is None
    True
    """
    times = message_times(line)
    return max(times) if times else None


def message_times(line: bytes) -> list[float]:
    """The times in one input message that the pipeline could accept (in 2000..2100): every
    record's of an OTLP/JSON request (a span's end), or the first of a native batch or
    Prometheus sample. Empty when there is none to read."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return []
    return _object_times(obj)


def _object_times(obj: object) -> list[float]:
    """:func:`message_times` of a parsed message."""
    if type(obj) is not dict:
        return []
    found: list[float] = []
    keys = ("endTimeUnixNano",) if "resourceSpans" in obj else ("timeUnixNano", "observedTimeUnixNano")

    def walk(x: object, depth: int) -> None:
        if depth > 16:
            return
        if type(x) is dict:
            for k, v in x.items():
                if k in keys and type(v) in (str, int):
                    try:
                        ns = int(v)
                    except ValueError:
                        continue
                    if T_MIN <= ns / 1e9 <= T_MAX:
                        found.append(ns / 1e9)
                elif type(v) in (dict, list):
                    walk(v, depth + 1)
        elif type(x) is list:
            for v in x:
                walk(v, depth + 1)

    if "resourceMetrics" in obj or "resourceLogs" in obj or "resourceSpans" in obj:
        walk(obj, 0)
        return found
    ok = lambda t: T_MIN <= t <= T_MAX  # noqa: E731
    pts = obj.get("points")
    if type(pts) is list and pts and type(pts[0]) is list and len(pts[0]) > 1 and type(pts[0][1]) in (int, float):
        return [float(pts[0][1])] if ok(pts[0][1]) else []
    for key in ("timestamp", "t", "time"):
        if type(obj.get(key)) in (int, float):
            return [float(obj[key])] if ok(obj[key]) else []
    return []


def with_next_time(items: Iterator[tuple]) -> Iterator[tuple[tuple, float]]:
    """Each merged message with the merge time of the one after it (0 for the last)."""
    cur = next(items, None)
    while cur is not None:
        nxt = next(items, None)
        yield cur, (nxt[0] if nxt is not None else 0.0)
        cur = nxt


def merge_keys(items: Iterable[tuple[list[float], tuple]], max_ahead: float) -> Iterator[tuple[float, tuple]]:
    """``(key, rest)`` for each ``(times, rest)`` of one file's messages, streamed with one
    message of lookahead. The key is the message's latest time that the pipeline will not
    dead-letter as out of time: no further than ``max_ahead`` past the file's time so far,
    unless the next message is near it (a gap in the data, not a bad clock). A message without
    one keeps the key before it, so each file stays in its own order, and one bad clock
    reorders nothing."""
    last = float("-inf")
    it = iter(items)
    cur = next(it, None)
    while cur is not None:
        nxt = next(it, None)
        good = [t for t in cur[0] if last == float("-inf") or t <= last + max_ahead
                or (nxt is not None and any(abs(u - t) <= max_ahead for u in nxt[0]))]
        if good and max(good) > last:
            last = max(good)
        yield last, cur[1]
        cur = nxt


def _timed_external(src: IO[bytes], decode, topics: dict[str, str], max_ahead: float = 300.0):
    """``(time, 2, offset, topic, line)`` per ``--external`` line: the time is the latest ``at``
    of its alerts, by the rule of :func:`merge_keys` (an undecodable line keeps the time of the line
    before it)."""
    def items():
        for offset, line in enumerate(src):
            topic, at = "external", []
            if line.strip():
                try:
                    source = orjson.loads(line).get("source")
                except (orjson.JSONDecodeError, AttributeError):
                    source = None
                topic = topics.get(source, topic) if isinstance(source, str) else topic
                try:
                    at = [a.at for a in decode(line).alerts]
                except DecodeError:
                    pass
            yield at, (offset, topic, line)

    for key, (offset, topic, line) in merge_keys(items(), max_ahead):
        yield (key, 2, offset, topic, line)


def _timed(src: IO[bytes], order: int, topic: str, timed: bool, max_ahead: float = 300.0,
           framed: tuple[str, Path] | bool = False, max_bytes: int | None = None):
    """``(time, order, offset, topic, line)`` per line, or per frame when ``framed`` is
    ``(signal, path)``, the time by the rule of :func:`merge_keys`. A message longer than
    ``max_bytes`` is not parsed for its time (the pipeline refuses it unparsed, too)."""
    if framed:
        signal, path = framed
        messages = otlp_proto.read_frames(src, str(path))
        times_of = lambda m: _frame_times(m, signal)  # noqa: E731
    else:
        messages = enumerate(src)
        times_of = lambda m: message_times(m) if m.strip() else []  # noqa: E731
    items = ((times_of(line) if timed and (max_bytes is None or len(line) <= max_bytes) else [], (offset, line))
             for offset, line in messages)
    for key, (offset, line) in merge_keys(items, max_ahead):
        yield (key, order, offset, topic, line)


def _external_decoder(topology: Topology):
    """One ``--external`` line to its alerts, decoded exactly as the worker's agent decodes the
    payload on its source's topic. Raises :class:`DecodeError`."""
    known = frozenset(topology.services)
    label = topology.ingest.prometheus_service_label
    redactor = Redactor.from_settings(topology.ingest.redaction)

    def decode(line: bytes) -> ExternalAlerts:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON: {exc}") from None
        if type(obj) is not dict or obj.get("source") not in SOURCES or "payload" not in obj:
            raise DecodeError(f"expected {{\"source\": one of {', '.join(SOURCES)}, \"payload\": the webhook body}}")
        payload = obj["payload"]
        try:
            body = payload.encode("utf-8", "surrogatepass") if type(payload) is str else orjson.dumps(payload)
        except TypeError:
            raise DecodeError("payload: nested too deeply") from None
        return decode_external(obj["source"], body, known_services=known, service_label=label, redactor=redactor)

    return decode


def _frame_times(message: bytes, signal: str) -> list[float]:
    """:func:`message_times` of a frame: protobuf or, as a topic may hold either, JSON (none
    for one that does not parse)."""
    if not otlp_proto.is_protobuf(message):
        return message_times(message)
    try:
        return _object_times(otlp_proto.load(message, signal))
    except DecodeError:
        return []
