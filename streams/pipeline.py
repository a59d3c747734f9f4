"""The core stages composed, with no broker: the same objects the Faust agents call.

Two stages, split where the Kafka topology splits them:

- :class:`DetectStage` (per input partition): raw message -> samples -> points -> alerts and
  a heartbeat carrying event-time progress (and, from spans, the calls they show).
- :class:`CorrelateStage` (per correlation key): alerts and heartbeats -> incidents -> actions
  and ticket events; calls -> the learned call graph, which grouping and ranking use.

``aiops replay`` pushes every message through both in one process; the worker puts
``aiops.alerts`` between them. Alerts cross that boundary through the wire codec in both
runtimes, so both see exactly the same (ms-rounded) values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import networkx as nx
import orjson

from correlators.correlate import _LOGS_LEAD as LOGS_LEAD  # the same lead the correlator allows
from correlators.correlate import Correlator
from correlators.learned import LearnedGraph
from correlators.records import Change, Incident
from detectors.absence import AbsenceDetector
from detectors.engine import DetectionEngine
from detectors.logs import LogTemplateDetector
from detectors.normalize import Normalizer
from detectors.records import Alert, AlertEvent, Heartbeat, rfc3339
from detectors.spans import SpanSignals
from remediators.dispatch import DispatchState, approve, dispatch, expire_and_verify, record_result
from remediators.records import Action, TicketEvent
from remediators.report import render_report
from remediators.runbooks import RunbookIndex
from streams import codec, metrics
from streams.config import Topology
from streams.ingest import DecodeError, decode_logs, decode_metrics, decode_traces
from streams.ingest.limits import Limits
from streams.ingest.redact import Redactor


def correlation_keys(topology: Topology) -> dict[str, str]:
    """Services in one weakly connected part of the graph share a key, so one correlator sees
    every alert that could join one incident, and disjoint parts can scale out."""
    g = topology.graph()
    keys = {}
    for comp in nx.weakly_connected_components(g):
        key = min(comp)
        for svc in comp:
            keys[svc] = key
    return keys


@dataclass
class DetectResult:
    events: list[AlertEvent] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)
    points: int = 0
    samples: int = 0
    anomalous_points: int = 0  # scored at or above the alert threshold (before fire/resolve hysteresis)


class DetectStage:
    """Decode, normalize and score one input message at a time."""

    def __init__(self, topology: Topology, lane: str = "", clock=None):
        self.topology = topology
        self.lane = lane  # the input partition this stage reads (see Heartbeat.lane)
        # The wall clock (``time.time`` in the worker; none in replay, whose data is history):
        # nothing is dated more than ``ingest.max_ahead`` past it.
        self._clock = clock
        # Without one, the time of the next input message when the caller knows it (replay
        # does): data after a gap is ahead of event time but not of the message after it.
        self.horizon = 0.0
        self._known = frozenset(topology.services)
        self._normalizer = Normalizer()
        self._logs = LogTemplateDetector(topology.detectors)
        self._spans = SpanSignals(topology.traces.span_settings())
        self._absence = AbsenceDetector(warmup_reports=topology.detectors.warmup_points)
        self.engine = DetectionEngine(topology.detectors)
        self._keep = frozenset(topology.ingest.keep_labels)
        self._limits = Limits.from_settings(topology.ingest)
        # Built once: its caches are what keep redaction cheap on repeated labels.
        self.redactor = Redactor.from_settings(topology.ingest.redaction)
        self.watermark = 0.0  # the latest event time seen, any source
        self._marks: dict[str, float] = {}  # per source
        self.stats = {"messages": 0, "samples": 0, "points": 0, "anomalous_points": 0, "alerts": 0, "rejected_points": 0}

    def reconfigure(self, topology: Topology) -> None:
        """A live config change: the new detector settings, known services and ingest settings
        apply to the next message; baselines, fire/resolve state, log templates and event-time
        marks stay (see :meth:`DetectionEngine.reconfigure` for which model a series keeps)."""
        if topology.ingest.redaction != self.topology.ingest.redaction:
            self.redactor = Redactor.from_settings(topology.ingest.redaction)
        self.topology = topology
        self._known = frozenset(topology.services)
        self._keep = frozenset(topology.ingest.keep_labels)
        self._limits = Limits.from_settings(topology.ingest)
        self._logs.settings = topology.detectors
        # Open buckets keep their width: a bucket of spans is emitted as it was begun.
        self._spans.cfg = replace(topology.traces.span_settings(), bucket_seconds=self._spans.cfg.bucket_seconds)
        self._absence.warmup_reports = topology.detectors.warmup_points
        self.engine.reconfigure(topology.detectors)

    def processor(self, topic: str):
        """The method that takes a message of ``topic``: logs, traces, or metrics (the rest)."""
        t = self.topology.topics
        return {t.logs: self.process_logs, t.traces: self.process_traces}.get(topic, self.process)

    def process(self, payload: bytes) -> DetectResult:
        """Raises :class:`~streams.ingest.DecodeError` when the whole message is unusable."""
        res = self.process_many([payload])[0]
        if isinstance(res, DecodeError):
            raise res
        return res

    def process_many(self, payloads: Sequence[bytes]) -> list[DetectResult | DecodeError]:
        """:meth:`process` for each of ``payloads`` in order (a :class:`DecodeError` in place of
        a message that is unusable), with one engine call for all of their points.

        The results are the ones a call per message gives: decoding, the time window, counter
        state and absence depend on the messages before and never on detection, and the engine
        gives the same alerts however a partition's points are split into calls. What batching
        saves is the engine's fixed cost per call, most of the cost of a message of a few points."""
        parts: list[tuple[tuple[list, list, list], float, list[str], int, list, bool] | DecodeError] = []
        for payload in payloads:
            try:
                parts.append(self._prepare(payload))
            except DecodeError as exc:
                parts.append(exc)
        decoded = [part[0] for part in parts if not isinstance(part, DecodeError)]
        if len(decoded) == 1:  # one message, as every call of process: its columns, not a copy
            keys, times, values = decoded[0]
        else:
            keys, times, values = ([v for columns in decoded for v in columns[i]] for i in range(3))
        alerts, scored = self.engine.process_columns(keys, times, values)
        out: list[DetectResult | DecodeError] = []
        start = k = 0
        for part in parts:
            if isinstance(part, DecodeError):
                out.append(part)
                continue
            columns, latest, rejects, samples, absent, moved = part
            end = start + len(columns[0])
            mine = []
            while k < len(alerts) and scored.alert_positions[k] < end:
                mine.append(alerts[k])
                k += 1
            out.append(self._result(mine, scored.scores[start:end], latest, moved, rejects, samples,
                                    len(columns[0]), extra=absent))
            start = end
        return out

    def _prepare(self, payload: bytes) -> tuple[tuple[list, list, list], float, list[str], int, list, bool]:
        """One metrics message decoded, kept to the time window and normalized, and the absence
        alerts it settles; event time moves on as if it had been scored (scoring never moves it)."""
        decoded = decode_metrics(payload, known_services=self._known,
                                 service_label=self.topology.ingest.prometheus_service_label,
                                 keep_labels=self._keep, redactor=self.redactor, limits=self._limits)
        rows = decoded.rows
        rejects = decoded.rejects
        lo, hi = self._window()
        latest = 0.0
        by_service: dict[str, float] = {}
        if rows:
            latest = -math.inf
            kept = []
            out_of_time: list[float] = []
            for r in rows:
                key, t = (r[0], r[1]) if type(r) is tuple else (r.series, r.t)
                if not lo <= t <= hi:
                    out_of_time.append(t)
                    continue
                kept.append(r)
                if t > latest:
                    latest = t
                service = key.service
                if t > by_service.get(service, 0.0):
                    by_service[service] = t
            if out_of_time:
                rows = kept
                rejects = list(rejects) + [self._out_of_time("point", out_of_time)]
                latest = max(latest, 0.0)
        columns = self._normalizer.normalize_rows(rows)
        absent = self._absence.observe(by_service, max(self.watermark, latest))
        return columns, latest, rejects, len(rows), absent, self._advance("detector", latest)

    def _window(self) -> tuple[float, float]:
        """The event times this stage accepts now: not more than ``ingest.max_behind`` before
        its partition's event time, and not more than ``ingest.max_ahead`` past the wall clock
        (the worker) or past the later of event time and the next message's time (replay). Not
        past event time alone: after a quiet spell, or on a consumer catching up, the next point
        is rightly far ahead of the last one."""
        ingest = self.topology.ingest
        ahead = ingest.max_ahead.total_seconds()
        ref = self.watermark
        lo = ref - ingest.max_behind.total_seconds() if ref > 0 else -math.inf
        if self._clock is not None:
            hi = self._clock() + ahead
        else:
            base = max(ref, self.horizon)
            hi = base + ahead if base > 0 else math.inf
        return lo, hi

    def in_time(self, alerts) -> tuple[list, list[str]]:
        """Other tools' alerts (webhooks) within :meth:`_window`, and the reason for the rest:
        an alert dated 2099 would move the correlator's clock as a point would move ours."""
        lo, hi = self._window()
        late = [a.at for a in alerts if not lo <= a.at <= hi]
        if not late:
            return list(alerts), []
        return [a for a in alerts if lo <= a.at <= hi], [self._out_of_time("alert", late)]

    def _out_of_time(self, what: str, times: list[float]) -> str:
        """The dead-letter reason for ``times`` outside :meth:`_window` (counted as rejected)."""
        metrics.OUT_OF_TIME.inc(len(times))
        ingest = self.topology.ingest
        ref = "the wall clock" if self._clock is not None else f"event time {rfc3339(max(self.watermark, self.horizon))}"
        t = max(times, key=lambda x: abs(x - self.watermark))
        when = rfc3339(t) if 946684800.0 <= t <= 4102444800.0 else repr(t)
        return (f"{len(times)} {what}(s) out of time, e.g. at {when}: further than ingest.max_ahead "
                f"({ingest.max_ahead.total_seconds():g}s) ahead of {ref} or ingest.max_behind "
                f"({ingest.max_behind.total_seconds():g}s) behind event time; they move no clock")

    def process_logs(self, payload: bytes) -> DetectResult:
        """OTLP/JSON logs: error and record rates per service, scored like any series, and
        per-template rates whose alerts (new or rising error templates) carry the template and a
        sample line as evidence."""
        records, rejects = decode_logs(payload, known_services=self._known, redactor=self.redactor,
                                       limits=self._limits)
        lo, hi = self._window()
        if any(not lo <= r.t <= hi for r in records):
            rejects = list(rejects) + [self._out_of_time("log record", [r.t for r in records if not lo <= r.t <= hi])]
            records = [r for r in records if lo <= r.t <= hi]
        batch = self._logs.add(records)
        latest = max((r.t for r in records), default=0.0)
        points = batch.points
        columns = ([p.series for p in points], [p.t for p in points], [p.value for p in points])
        return self._score(columns, latest, rejects, len(records), extra=batch.alerts, source="logs")

    def process_traces(self, payload: bytes) -> DetectResult:
        """OTLP/JSON spans: request, error and duration series per service (and operation),
        scored like any series (:mod:`detectors.spans`), and the calls between services they
        show, on the message's heartbeat, for the learned call graph."""
        spans, rejects = decode_traces(payload, known_services=self._known, redactor=self.redactor,
                                       limits=self._limits)
        lo, hi = self._window()
        if any(not lo <= s.end <= hi for s in spans):
            rejects = list(rejects) + [self._out_of_time("span", [s.end for s in spans if not lo <= s.end <= hi])]
            spans = [s for s in spans if lo <= s.end <= hi]
        batch = self._spans.add(spans)
        latest = max((s.end for s in spans), default=0.0)
        points = batch.points
        columns = ([p.series for p in points], [p.t for p in points], [p.value for p in points])
        res = self._score(columns, latest, rejects, len(spans), source="traces")
        if batch.calls:
            # On the heartbeat, which reaches every correlation key; one that moves no time
            # (spans older than the latest seen) when the message gave none.
            events = res.events
            beat = events.pop() if events and isinstance(events[-1], Heartbeat) else Heartbeat(
                at=self._marks.get("traces", latest), source="traces", lane=self.lane)
            events.append(replace(beat, calls=tuple(batch.calls)))
        return res

    def _score(self, columns: tuple[list, list, list], latest: float, rejects: list[str], samples: int, extra=(),
               source: str = "detector") -> DetectResult:
        """``source`` names the clock the alerts and the heartbeat belong to: metrics
        ("detector"), "logs" or "traces". The correlator lets the slower of metrics and logs set
        event time, so the result does not depend on which topic the worker happens to read
        first; traces wait for the metrics' event time as other tools' alerts do.
        ``columns`` are the points as parallel lists: series, times, values."""
        alerts, scored = self.engine.process_columns(*columns)
        return self._result(alerts, scored.scores, latest, self._advance(source, latest), rejects, samples,
                            len(columns[0]), extra=extra, source=source)

    def _advance(self, source: str, latest: float) -> bool:
        """Event time of ``source`` (and of the stage) moves to ``latest`` when that is later;
        whether it moved, which the message's heartbeat says."""
        if latest <= self._marks.get(source, 0.0):
            return False
        self._marks[source] = latest
        self.watermark = max(self.watermark, latest)
        return True

    def _result(self, alerts: list[Alert], scores, latest: float, moved: bool, rejects: list[str], samples: int,
                points: int, extra=(), source: str = "detector") -> DetectResult:
        """One message's result: its alerts, and a heartbeat when it moved event time."""
        # Metrics are a side effect of the stage, never an input to it: the results stay the same.
        anomalous = metrics.observe_scores("metrics" if source == "detector" else source, scores,
                                           self.topology.detectors.threshold)
        if source != "detector":
            alerts = [replace(a, source=source) for a in alerts]
        alerts = list(alerts) + list(extra)
        events: list[AlertEvent] = list(alerts)
        if moved:
            events.append(Heartbeat(at=latest, source=source, lane=self.lane))
        self.stats["messages"] += 1
        self.stats["samples"] += samples
        self.stats["points"] += points
        self.stats["anomalous_points"] += anomalous
        self.stats["alerts"] += sum(1 for a in alerts if a.status == "firing")
        self.stats["rejected_points"] += len(rejects)
        return DetectResult(events=events, rejects=rejects, points=points, samples=samples,
                            anomalous_points=anomalous)


@dataclass
class CorrelateResult:
    incidents: list[Incident] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    tickets: list[TicketEvent] = field(default_factory=list)
    reports: list[tuple[str, str]] = field(default_factory=list)  # (incident id, Markdown) on resolve


def load_runbook_index(topology: Topology) -> RunbookIndex | None:
    """The runbooks directory named by ``remediation.executors.runbooks_dir`` (ranked by BM25
    and by meaning, :mod:`remediators.embedding`), or ``None`` when there is none. A directory with a broken runbook raises, naming the file: a ticket
    should never silently lose its runbooks."""
    from pathlib import Path

    from remediators import embedding
    from remediators.runbooks import load_runbooks

    directory = Path(topology.remediation.executors.runbooks_dir)
    if not directory.is_dir():
        return None
    # Tickets rank runbooks by BM25 fused with meaning; without the model installed, by BM25.
    return load_runbooks(directory).with_embedder(embedding.lazy_embed if embedding.available() else None)


class CorrelateStage:
    """Group alerts into incidents, rank root causes, and plan actions and tickets."""

    def __init__(self, topology: Topology, runbooks: RunbookIndex | None = None):
        self.topology = topology
        self.runbooks = runbooks
        # Calls seen in spans (on heartbeats), merged with the declared graph: see _learn.
        self.learned = LearnedGraph(topology.graph(), stale_after=topology.traces.stale_after.total_seconds())
        self.correlator = Correlator(self.graph(), topology.correlation)
        # Each open incident's records so far, in wire form: the report on resolve is built from
        # exactly what consumers saw. Dropped once the report is written.
        self._history: dict[str, dict[str, list[dict]]] = {}
        self._dispatch = DispatchState(emitted_actions=frozenset(), tickets={})
        # Event-time alignment of input partitions (lanes): see _release.
        self._lanes: dict[tuple[str, str], float] = {}
        self._held: list[AlertEvent] = []
        self._idle_after = topology.worker.partition_idle_after.total_seconds()
        # Change events are redacted on their way in, as every record that leaves ingest is.
        self.redactor = Redactor.from_settings(topology.ingest.redaction)

    def reconfigure(self, topology: Topology, runbooks: RunbookIndex | None) -> None:
        """A live config change: graph, correlation settings, policies, guards and ticket
        settings apply to the next event; open incidents, held events and the dispatcher's
        state (cooldowns, approvals, tickets sent) stay. ``runbooks`` is the index for the new
        ``remediation.executors.runbooks_dir``, loaded by the caller (loading can fail, and a
        failure must leave the stage as it was)."""
        if topology.ingest.redaction != self.topology.ingest.redaction:
            self.redactor = Redactor.from_settings(topology.ingest.redaction)
        self.topology = topology
        self.runbooks = runbooks
        self.learned.redeclare(topology.graph())
        self.learned.stale_after = topology.traces.stale_after.total_seconds()
        self.correlator.reconfigure(self.graph(), topology.correlation)
        self._idle_after = topology.worker.partition_idle_after.total_seconds()

    def graph(self):
        """The call graph grouping and ranking use: the declared one, with the calls learned
        from spans unless ``traces.learned_graph`` is off."""
        return self.learned.graph() if self.topology.traces.learned_graph else self.topology.graph()

    def _learn(self, calls: tuple[tuple[str, str, int, float], ...]) -> None:
        """Calls seen in spans. A call new to the graph (between declared services, not
        declared) changes what can be grouped and how causes rank: the correlator takes the
        merged graph at once, through the same path as a live config change."""
        if self.learned.observe(calls) and self.topology.traces.learned_graph:
            self.correlator.reconfigure(self.graph(), self.topology.correlation)

    def _release(self, events: list[AlertEvent], everything: bool = False) -> list[AlertEvent]:
        """The events the correlator may take now, in arrival order; the others wait.

        Each input partition (lane) reports its event time in its heartbeats. When several
        workers detect in parallel, one may run ahead of another; taken as they come, the
        slower one's alerts would reach the correlator after it had moved on, and open
        incidents of their own. So events wait until every active metrics lane has reached
        their time: the watermark is the slowest lane's, leaving out lanes more than
        ``worker.partition_idle_after`` behind the fastest (they stopped sending). Logs may run
        ahead of it by the correlator's logs lead, as they may run ahead of metrics in one
        process; other tools' alerts wait like metrics. With one lane per source (one worker,
        or replay) every event is released as it comes, so replay and worker agree.
        Spans' alerts and heartbeats ("traces") wait for the metrics lanes like other tools'
        alerts and set no lane of their own (with no metrics at all, nothing waits).
        """
        for ev in events:
            if isinstance(ev, Heartbeat) and ev.source != "traces":
                key = (ev.source, ev.lane)
                if ev.at > self._lanes.get(key, float("-inf")):
                    self._lanes[key] = ev.at
        self._held += events
        metrics = [t for (source, _), t in self._lanes.items() if source != "logs"]
        if everything or not metrics:
            ready, self._held = self._held, []
            return ready
        fastest = max(metrics)
        watermark = min(t for t in metrics if t >= fastest - self._idle_after)
        ready, held = [], []
        for ev in self._held:
            limit = watermark + LOGS_LEAD if ev.source == "logs" else watermark
            (ready if ev.at <= limit else held).append(ev)
        self._held = held
        return ready

    def process(self, events: list[AlertEvent], *, everything: bool = False) -> CorrelateResult:
        out = CorrelateResult()
        events = self._release(events, everything)
        if not events:
            return out
        run: list[AlertEvent] = []
        for ev in events:  # calls change the graph between the events around them, in order
            if isinstance(ev, Heartbeat) and ev.calls:
                if run:
                    out.incidents += self.correlator.ingest(run)
                    run = []
                self._learn(ev.calls)
            run.append(ev)
        if run:
            out.incidents += self.correlator.ingest(run)
        for inc in out.incidents:
            self._dispatch, actions, tickets = dispatch(self._dispatch, inc, topology=self.topology,
                                                        runbooks=self.runbooks)
            out.actions += actions
            out.tickets += tickets
        self._guards(out)
        self._report(out)
        return out

    def _report(self, out: CorrelateResult) -> None:
        """On resolve, the RCA report: attached to the resolving ticket event, and returned."""
        for inc in out.incidents:
            self._history.setdefault(inc.id, {"incidents": [], "actions": [], "tickets": []})["incidents"].append(
                codec.incident_dict(inc))
        for act in out.actions:
            if act.incident_id in self._history:
                self._history[act.incident_id]["actions"].append(orjson.loads(codec.encode_action(act)))
        for i, tk in enumerate(out.tickets):
            hist = self._history.get(tk.incident_id)
            if hist is None:
                continue
            if tk.event == "resolve":
                report = render_report(hist["incidents"], hist["actions"], hist["tickets"], self.runbooks,
                                       self.topology, drift=self.drift())
                out.tickets[i] = tk = replace(tk, description=report)
            hist["tickets"].append(orjson.loads(codec.encode_ticket(tk)))
        for inc in out.incidents:
            if inc.status == "resolved" and inc.id in self._history:
                hist = self._history.pop(inc.id)
                resolve = next((tk for tk in out.tickets if tk.incident_id == inc.id and tk.event == "resolve"), None)
                report = resolve.description if resolve is not None else render_report(
                    hist["incidents"], hist["actions"], hist["tickets"], self.runbooks, self.topology,
                    drift=self.drift())
                out.reports.append((inc.id, report))

    def drift(self):
        """Where the spans and the declared graph disagree, as of the correlator's event time."""
        return self.learned.drift(self.correlator.now)

    def control(self, msg: dict) -> CorrelateResult:
        """A decoded ``aiops.control`` message: an approval, a silence or its early end."""
        if msg["type"] == "approve":
            return self.approve(msg["action_id"], msg["by"], msg["at"])
        if msg["type"] == "silence":
            self.correlator.add_silence(msg["silence"])
        elif msg["type"] == "expire_silence":
            self.correlator.expire_silence(msg["id"], max(self.correlator.now, msg["at"]))
        return CorrelateResult()

    def change(self, change: Change) -> None:
        """A deploy, config change or scaling from ``telemetry.changes``: a candidate cause."""
        self.correlator.note_change(change)

    def approve(self, action_id: str, by: str, at: float) -> CorrelateResult:
        """An operator approved a risky step (from ``aiops.control``).

        The approval takes effect at the pipeline's event time, not at the wall-clock ``at`` it
        carries: expiry is measured on the same clock as the incident, which keeps a replay
        of old telemetry (or a lagging consumer) from expiring every approval."""
        out = CorrelateResult()
        now = max(self.correlator.now, 0.0) or at
        self._dispatch, out.actions = approve(self._dispatch, action_id, by, now, self.topology)
        return out

    def action_result(self, result: Action) -> None:
        """The executor's outcome of a step (from ``aiops.actions``): feeds the guard rails."""
        self._dispatch = record_result(self._dispatch, result, self.topology)

    def _guards(self, out: CorrelateResult) -> None:
        st = self._dispatch
        if not st.awaiting and not st.verify:
            return
        current = {iid: inc for _, iid in st.verify.values() if (inc := self.correlator.current(iid)) is not None}
        self._dispatch, actions, tickets = expire_and_verify(st, self.correlator.now, current, self.topology)
        out.actions += actions
        out.tickets += tickets

    def flush(self, at: float) -> CorrelateResult:
        """Advance event time to ``at`` (end of input) and emit what became due, releasing
        whatever still waits for a lane."""
        return self.process([Heartbeat(at=at)], everything=True)


__all__ = ["CorrelateStage", "DetectStage", "DecodeError", "correlation_keys", "Alert"]
