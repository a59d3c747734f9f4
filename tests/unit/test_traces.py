"""Spans: the decoder, the series and calls they give, the learned call graph and its drift, and
how the stages use them. Table-driven, no I/O."""
from __future__ import annotations

import orjson
import pytest

from correlators.learned import LearnedGraph
from detectors.records import Alert, Heartbeat, Span
from detectors.spans import (ERRORS_METRIC, OTHER_OPERATION, P50_METRIC, P95_METRIC, REQUESTS_METRIC, SpanSettings,
                             SpanSignals, operation_of)
from remediators.report import _drift_line
from streams import codec
from streams.config import ConfigError, parse_topology, parse_topology_text
from streams.ingest import DecodeError, decode_traces
from streams.ingest.redact import Redactor
from streams.pipeline import CorrelateStage, DetectStage
from tests.traces_fixture import make_traces

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
NS = 1_000_000_000


def otlp(service: str | None, *spans: dict, extra_resource: list | None = None) -> bytes:
    attrs = ([{"key": "service.name", "value": {"stringValue": service}}] if service else []) + (extra_resource or [])
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": attrs},
                                            "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}]})


def span(sid: str = "a1", *, parent: str | None = None, start: float = T0, dur: float = 0.25, **kw) -> dict:
    ns = int(start) * NS + round((start - int(start)) * NS)  # exact: floats of 1.7e9 s have microseconds only
    d = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": sid, "name": "GET /users",
         "startTimeUnixNano": str(ns), "endTimeUnixNano": str(ns + round(dur * NS))}
    if parent:
        d["parentSpanId"] = parent
    d.update(kw)
    return d


# --- the decoder ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, kind, error", [
    ({}, 0, False),  # Nezha: no kind, no status
    ({"kind": 2, "status": {"code": 2}}, 2, True),
    ({"kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_ERROR"}}, 3, True),  # enum names: the checked path
    ({"kind": 5, "status": {"code": 1}}, 5, False),
    ({"kind": None, "status": None}, 0, False),
    ({"startTimeUnixNano": int(T0) * NS, "endTimeUnixNano": int(T0) * NS + NS // 4}, 0, False),  # numbers
])
def test_decoder_reads_kind_status_and_times_however_they_are_written(fields, kind, error):
    spans, rejects = decode_traces(otlp("api", span(**fields)), known_services=None)
    assert rejects == []
    (s,) = spans
    assert (s.service, s.span_id, s.parent_id, s.name, s.kind, s.error) == ("api", "a1", "", "GET /users", kind, error)
    assert (s.start, s.duration) == (T0, 0.25)


def test_fast_and_checked_paths_give_the_same_span():
    fast, _ = decode_traces(otlp("api", span(parent="p1", kind=2, status={"code": 2})), known_services=None)
    checked, _ = decode_traces(otlp("api", span(parent="p1", kind="SPAN_KIND_SERVER",
                                                 status={"code": "STATUS_CODE_ERROR"})), known_services=None)
    assert fast == checked and fast[0].parent_id == "p1"


@pytest.mark.parametrize("bad, reason", [
    ({"spanId": ""}, "span without a usable spanId (at most 64 characters)"),
    ({"spanId": "f" * 65}, "span without a usable spanId (at most 64 characters)"),
    ({"parentSpanId": "f" * 65}, "span id longer than 64 characters"),
    ({"kind": 9}, "unknown span kind 9"),
    ({"kind": "SERVER"}, "unknown span kind 'SERVER'"),
    ({"status": {"code": "BROKEN"}}, "unknown status code 'BROKEN'"),
    ({"startTimeUnixNano": "1700000000"}, "span start time '1700000000' outside 2000..2100"),
    ({"endTimeUnixNano": "soon"}, "span without a usable end time ('soon')"),
    ({"endTimeUnixNano": None}, "span without a usable end time (None)"),
    ({"startTimeUnixNano": str(int((T0 + 1) * NS))}, "span ends before it starts"),
])
def test_a_bad_span_is_dropped_with_its_reason_and_the_rest_goes_on(bad, reason):
    spans, rejects = decode_traces(otlp("api", span("good"), span("bad", **bad)), known_services=None)
    assert [s.span_id for s in spans] == ["good"]
    assert rejects == [reason]
    with pytest.raises(DecodeError) as exc:  # a message of nothing but bad spans is dead-lettered
        decode_traces(otlp("api", span("bad", **bad)), known_services=None)
    assert str(exc.value) == reason


@pytest.mark.parametrize("payload, message", [
    (b"not json", "invalid JSON"),
    (b'{"resourceMetrics": []}',
     "unrecognized traces message: expected OTLP/JSON (resourceSpans); got keys: 'resourceMetrics'"),
    (b'[]', "unrecognized traces message: expected OTLP/JSON (resourceSpans); got list"),
    (b'{"resourceSpans": {}}', "resourceSpans: expected a list (got object)"),
    (b'{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]}, '
     b'"scopeSpans": [{"spans": "x"}]}]}', "resourceSpans[0].scopeSpans[0].spans: expected a list (got str)"),
    (otlp("api", span(kind=True)),
     "resourceSpans[0].scopeSpans[0].spans[0].kind: expected an integer or a SpanKind name (got bool)"),
    (otlp("api", span(spanId=7)), "resourceSpans[0].scopeSpans[0].spans[0].spanId: expected a hex string (got int)"),
    (otlp("api", span(status="ok")), "resourceSpans[0].scopeSpans[0].spans[0].status: expected an object (got str)"),
    (otlp("api", span(name=["x"])), "resourceSpans[0].scopeSpans[0].spans[0].name: expected a string (got list)"),
    (otlp(None, span()), "resource without attribute 'service.name'"),
    (otlp("payment", span()), "unknown service 'payment' (did you mean 'payments'?)"),
])
def test_an_unusable_message_raises_decode_error_naming_the_path(payload, message):
    with pytest.raises(DecodeError) as exc:
        decode_traces(payload, known_services=frozenset({"api", "payments"}))
    assert str(exc.value).startswith(message)


def test_span_names_are_redacted_like_log_lines():
    spans, _ = decode_traces(otlp("api", span(name="notify jane.doe@example.com")), known_services=None)
    assert spans[0].name == "notify <email>"
    spans, _ = decode_traces(otlp("api", span(name="charge 4111 1111 1111 1111")), known_services=None,
                             redactor=Redactor([]))
    assert spans[0].name == "charge 4111 1111 1111 1111"  # redaction off


# --- series and calls ------------------------------------------------------------------------------

def sp(service: str, sid: str, parent: str = "", t: float = 10.0, dur: float = 0.1, kind: int = 0,
       error: bool = False, name: str = "GET /x") -> Span:
    return Span(service, "t", sid, parent, name, kind, error, T0 + t, T0 + t + dur, dur)


def points_of(batch) -> dict[tuple[str, str, tuple], float]:
    return {(p.series.service, p.series.metric, p.series.labels): p.value for p in batch.points}


def test_requests_are_server_spans_or_calls_from_another_service_when_kind_is_unknown():
    s = SpanSignals(SpanSettings(lateness_seconds=0, max_operations=0))
    s.add([sp("web", "w1", t=1), sp("web", "w2", parent="w1", t=1.1),  # root; an internal child
           sp("db", "d1", parent="w2", t=1.2),  # called by web
           sp("db", "d2", parent="gone", t=1.3),  # parent never seen: an entry as far as we know
           sp("api", "a1", t=2, kind=2, error=True), sp("api", "a2", parent="a1", t=2.1, kind=3)])  # server; client
    out = s.add([sp("web", "w3", t=70)])
    got = points_of(out)
    assert got[("web", REQUESTS_METRIC, ())] * 60 == 1
    assert got[("db", REQUESTS_METRIC, ())] * 60 == 2
    assert got[("api", REQUESTS_METRIC, ())] * 60 == 1 and got[("api", ERRORS_METRIC, ())] * 60 == 1
    assert got[("db", P50_METRIC, ())] == pytest.approx(0.1)


def test_calls_resolve_in_either_order_within_and_across_batches():
    s = SpanSignals()
    first = s.add([sp("db", "d1", parent="c1", t=1.0), sp("cart", "c1", parent="w1", t=0.9)])
    assert first.calls == [("cart", "db", 1, T0 + 1.0)]  # web's span has not come yet
    second = s.add([sp("web", "w1", t=0.8, dur=1.0), sp("web", "w2", parent="w1", t=0.85)])
    assert second.calls == [("web", "cart", 1, T0 + 0.9)]  # the waiting child, now that its parent came


def test_durations_percentiles_and_operations_with_a_cap():
    s = SpanSignals(SpanSettings(lateness_seconds=0, max_operations=2))
    spans = [sp("api", f"s{i}", t=1 + i * 0.1, dur=(i + 1) / 100, name=f"GET /items/{1000 + i % 3}/{op}")
             for i, op in enumerate(["a", "b", "c", "a"] * 5)]
    s.add(spans)
    got = points_of(s.add([sp("api", "late-trigger", t=65)]))
    durations = sorted((i + 1) / 100 for i in range(20))
    assert got[("api", P95_METRIC, ())] == pytest.approx(durations[18] + 0.05 * (durations[19] - durations[18]))
    ops = {labels[0][1] for (_, metric, labels) in got if labels and metric == REQUESTS_METRIC}
    assert ops == {"GET /items/<NUM>/a", "GET /items/<NUM>/b", OTHER_OPERATION}
    assert got[("api", REQUESTS_METRIC, (("operation", "GET /items/<NUM>/a"),))] * 60 == 10
    assert got[("api", REQUESTS_METRIC, (("operation", OTHER_OPERATION),))] * 60 == 5
    assert operation_of("GET /orders/3f2a6c1e-0b1d-4e8a-9c3f-5a6b7c8d9e0f") == "GET /orders/<UUID>"


def test_a_bucket_is_emitted_once_event_time_is_lateness_past_it_and_late_spans_are_ignored():
    s = SpanSignals(SpanSettings(lateness_seconds=30))
    assert s.add([sp("api", "a", t=10)]).points == []
    assert s.add([sp("api", "b", t=80)]).points == []  # 80 < 60 + 30: the first minute may still get spans
    assert points_of(s.add([sp("api", "c", t=59)]))  == {}  # in time for it
    out = points_of(s.add([sp("api", "d", t=95)]))
    assert out[("api", REQUESTS_METRIC, ())] * 60 == 2
    assert s.add([sp("api", "e", t=20)]).points == [] and s.stats["late"] == 1


def test_redelivered_spans_count_once():
    batch = [sp("web", "w1", t=1), sp("db", "d1", parent="w1", t=1.1), sp("db", "d2", parent="w1", t=1.2)]
    once, twice = SpanSignals(), SpanSignals()
    a = once.add(batch)
    b = twice.add(batch)
    again = twice.add(batch)
    assert a == b and again.calls == [] and twice.stats["duplicates"] == 3
    end = [sp("web", "w9", t=200)]
    assert points_of(once.add(end)) == points_of(twice.add(end))


def test_quiet_services_get_zeros_up_to_a_bound_then_are_forgotten():
    s = SpanSignals(SpanSettings(lateness_seconds=0, max_gap_buckets=3))
    s.add([sp("api", "a", t=1), sp("web", "w", t=1)])
    out = s.add([sp("web", f"w{i}", t=60 * i + 1) for i in range(1, 8)])
    api = sorted((p.t - T0, p.value) for p in out.points
                 if p.series.service == "api" and p.series.metric == REQUESTS_METRIC and not p.series.labels)
    assert api == [(60.0, 1 / 60), (120.0, 0.0), (180.0, 0.0), (240.0, 0.0)]
    assert "api" not in s._services and "web" in s._services


def test_a_gap_in_the_whole_stream_is_no_zero_traffic():
    """Nezha recorded spans only around its faults: minutes with no span of any service are a
    gap, not a quiet service; a minute when others' spans came is a zero."""
    s = SpanSignals(SpanSettings(lateness_seconds=0))
    s.add([sp("api", "a0", t=1), sp("web", "w0", t=2)])
    out = s.add([sp("web", "w1", t=61)] + [sp("api", f"a{i}", t=600 + i) for i in range(1, 3)]
                + [sp("web", "w9", t=700)])
    api = [(p.t - T0, p.value * 60) for p in out.points if p.series.id == "api/span.requests.rate"]
    web = [(p.t - T0, p.value * 60) for p in out.points if p.series.id == "web/span.requests.rate"]
    assert api == [(60.0, 1), (120.0, 0.0), (660.0, 2)]  # 2..9 minutes: nobody sent a span
    assert web == [(60.0, 1), (120.0, 1), (660.0, 0.0)]


def test_span_memory_is_bounded_by_count_and_age():
    s = SpanSignals(SpanSettings(max_spans=1000, span_ttl_seconds=60))
    s.add([sp("api", f"s{i}", parent=f"missing{i}", t=i * 0.01) for i in range(3000)])
    assert len(s._recent) <= 1000 and s._waiting_n <= 1000
    s.add([sp("api", "late", t=500)])
    assert len(s._recent) == 1 and s._waiting_n == 0  # older than the ttl


# --- the learned graph and drift --------------------------------------------------------------------

def declared(*edges, nodes=()):
    import networkx as nx
    g = nx.DiGraph(list(edges))
    g.add_nodes_from(nodes)
    return g


def test_learned_graph_takes_calls_between_declared_services_only():
    g = LearnedGraph(declared(("web", "api"), nodes=["db"]))
    assert g.observe([("api", "db", 2, 10.0), ("web", "api", 5, 10.0), ("web", "stranger", 1, 10.0),
                      ("db", "db", 1, 10.0)]) == [("api", "db")]
    assert g.observe([("api", "db", 3, 20.0)]) == []  # not new
    assert sorted(g.graph().edges(data="declared")) == [("api", "db", False), ("web", "api", True)]
    assert [(e.caller, e.callee, e.calls, e.last_seen) for e in g.edges()] == [("api", "db", 5, 20.0),
                                                                                ("web", "api", 5, 10.0)]


def test_drift_names_undeclared_calls_and_declared_calls_gone_quiet_between_traced_services():
    g = LearnedGraph(declared(("web", "api"), ("api", "db"), ("web", "legacy")), stale_after=600)
    assert not g.drift(now=10_000.0)  # nothing seen yet: nothing can be stale
    g.observe([("web", "api", 1, 1000.0), ("api", "cache", 1, 1000.0)])  # cache is not declared: ignored
    g2 = LearnedGraph(declared(("web", "api"), ("api", "db"), ("web", "legacy"), ("web", "db")), stale_after=600)
    g2.observe([("web", "api", 1, 1000.0), ("db", "api", 1, 1000.0)])
    d = g2.drift(now=1500.0)
    assert [(e.caller, e.callee) for e in d.undeclared] == [("db", "api")]
    assert [(e.caller, e.callee) for e in d.stale] == []  # 500 s < 600 s
    d = g2.drift(now=1700.0)
    # web -> legacy is never checked: legacy shows in no span (not instrumented, not gone).
    assert [(e.caller, e.callee, e.last_seen) for e in d.stale] == [("api", "db", None), ("web", "api", 1000.0),
                                                                    ("web", "db", None)]
    assert [(e.caller, e.callee) for e in d.involving(["db"]).stale] == [("api", "db"), ("web", "db")]


def test_redeclaring_keeps_learned_calls_and_drops_those_of_removed_services():
    g = LearnedGraph(declared(nodes=["a", "b", "c"]))
    g.observe([("a", "b", 1, 1.0), ("b", "c", 1, 1.0)])
    assert g.redeclare(declared(("a", "b"))) == []
    assert sorted(g.graph().edges) == [("a", "b")]


def test_report_line_on_drift_is_short_and_only_about_the_incident():
    g = LearnedGraph(declared(("web", "api"), nodes=["db", "x", "y"]), stale_after=3600)
    g.observe([("api", "db", 3, 10.0), ("x", "y", 1, 10.0), ("web", "api", 1, 10.0)])
    assert _drift_line(g.drift(5000.0), ["db"]) == ("- Call graph drift: seen in spans, not declared: "
                                                    "`api -> db` (3 calls)")
    assert _drift_line(g.drift(5000.0), ["web"]) == ("- Call graph drift: declared, not seen in spans for 1h 00m: "
                                                     "`web -> api` (1 call)")
    assert _drift_line(g.drift(5000.0), ["nobody"]) is None


# --- the stages --------------------------------------------------------------------------------------

TOPOLOGY = """
name: traces-test
services:
  web: {entrypoint: true, depends_on: [api]}
  api: {depends_on: [search]}
  search: {}
  cart: {}
  db: {kind: datastore}
traces: {stale_after: 10m, learned_graph: %s}
"""
CALLS = {"web": ["api", "search"], "api": ["cart"], "cart": ["db"]}


def run(learned: bool):
    topo = parse_topology_text(TOPOLOGY % ("true" if learned else "false"))
    detect, correlate = DetectStage(topo), CorrelateStage(topo)
    incidents, reports, events = [], [], []
    for req in make_traces(CALLS, "web", T0, 70, fault=("db", T0 + 45 * 60, T0 + 55 * 60)):
        res = detect.process_traces(orjson.dumps(req))
        evs = [codec.decode_alert_event(codec.encode_alert_event(e)) for e in res.events]
        events += evs
        out = correlate.process(evs)
        incidents += out.incidents
        reports += out.reports
    return incidents, reports, events, correlate


def test_span_series_alert_and_the_learned_graph_makes_one_incident_with_the_right_cause():
    incidents, reports, events, correlate = run(learned=True)
    alerts = [e for e in events if isinstance(e, Alert) and e.status == "firing"]
    assert alerts and all(a.source == "traces" and a.metric.startswith("span.") for a in alerts)
    beats = [e for e in events if isinstance(e, Heartbeat)]
    assert all(e.source == "traces" for e in beats) and any(e.calls for e in beats)
    opened = {i.id for i in incidents}
    assert len(opened) == 1, [(i.title, i.services) for i in incidents]
    last = incidents[-1]
    assert last.status == "resolved" and set(last.services) >= {"db", "cart"}
    assert last.root_causes[0].service == "db"
    assert last.root_causes[0].path[:2] == ("db", "cart")  # cart -> db is known from spans only
    (report,) = [r for _, r in reports]
    assert "- Call graph drift: seen in spans, not declared: `api -> cart`" in report
    assert "declared, not seen in spans for 10m 00s: `api -> search`" in report


def test_without_the_learned_graph_the_undeclared_calls_split_the_fault():
    incidents, _, _, correlate = run(learned=False)
    assert len({i.id for i in incidents}) > 1
    assert correlate.drift().undeclared  # still reported


def test_traces_wait_for_the_metrics_event_time_and_set_no_lane():
    topo = parse_topology({"services": {"a": {}, "b": {}}})
    stage = CorrelateStage(topo)
    beat = Heartbeat(at=T0 + 100, source="traces", calls=(("a", "b", 1, T0 + 100),))
    stage.process([Heartbeat(at=T0 + 50)])  # the metrics are at T0 + 50
    stage.process([beat])
    assert not stage.learned.edges() and stage._held == [beat]
    stage.process([Heartbeat(at=T0 + 120)])
    assert [(e.caller, e.callee) for e in stage.learned.edges()] == [("a", "b")]
    assert set(stage._lanes) == {("detector", "")}


def test_a_traces_message_gives_its_calls_on_its_heartbeat():
    topo = parse_topology({"services": {"web": {}, "db": {}}})
    stage = DetectStage(topo)
    (beat,) = stage.process_traces(otlp("web", span("w1", dur=1.0))).events
    assert (beat.at, beat.source, beat.calls) == (T0 + 1.0, "traces", ())
    (beat,) = stage.process_traces(otlp("db", span("d1", parent="w1", start=T0 + 0.1))).events
    assert (beat.at, beat.calls) == (T0 + 1.0, (("web", "db", 1, T0 + 0.1),))  # no time moved: the mark
    (beat,) = stage.process_traces(otlp("db", span("d2", parent="w1", start=T0 + 0.5, dur=1.0))).events
    assert (beat.at, beat.calls) == (T0 + 1.5, (("web", "db", 1, T0 + 0.5),))


def test_config_has_the_traces_topic_and_section_validated_with_paths():
    topo = parse_topology({"services": {"a": {}}})
    assert topo.topics.traces == "telemetry.traces" and topo.topics.traces in topo.topics.all()
    assert topo.traces.stale_after.total_seconds() == 3600 and topo.traces.learned_graph
    with pytest.raises(ConfigError) as exc:
        parse_topology({"services": {"a": {}}, "traces": {"stale_after": "0s", "max_operation": 3}})
    assert exc.value.problems == [("traces.stale_after", "must be a positive duration such as '1m' (got '0s')"),
                                  ("traces.max_operation", "unknown key 'max_operation'")]
