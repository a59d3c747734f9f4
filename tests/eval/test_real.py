"""``evaluation.real`` on a tiny Nezha-like day built here: conversion, topology, faults, scoring."""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from detectors.records import Alert, rfc3339
from evaluation import real
from evaluation.metrics import FaultTruth, first_versions
from streams.config import load_topology
from streams.replay import replay

DAY = "2022-08-23"
T0 = datetime(2022, 8, 23, 12, 0, tzinfo=timezone.utc).timestamp()
WEB, API = "web-5f6585d649-fnmft", "api-579f59597d-wc2lz"
POD_HEADER = ["Time", "TimeStamp", "PodName", "CpuUsageRate(%)", "PodServerLatencyP90(s)", "NodeCpuUsageRate(%)"]
MINUTES = 5


def write_gz_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    with gzip.open(path, "wt") as fh:
        fh.write(buf.getvalue())


def pod_rows(pod: str, second: int, latency: list[str]) -> list[list]:
    # Seconds past the minute as in the real files (28, 29): one request a minute all the same.
    return [[f"t{m}", int(T0) + 60 * m + second, pod, 10.0 + m, latency[m], 3.5] for m in range(MINUTES)]


WEB_LATENCY = ["0.5", "0.6", "0.7", "0.8", "0.9"]


def make_day(root: Path, *, traces: bool = False) -> Path:
    """A Nezha-like day under ``root/real/nezha/DAY``: two pods, a front service, one fault; the
    call graph in dependency.csv (Online Boutique style) or in traces (Train Ticket style)."""
    day = root / "real" / "nezha" / DAY
    metric = day / "metric"
    write_gz_csv(metric / f"{WEB}_metric.csv.gz", POD_HEADER, pod_rows(WEB, 28, WEB_LATENCY))
    api = pod_rows(API, 29, ["0.1", "nan", "", "0.1", "0.1"])  # NaN and empty cells are left out
    write_gz_csv(metric / f"{API}_metric.csv.gz", POD_HEADER, api)
    # The entry point's view: its p90 is the web pod's own column (dropped), the success rate is new.
    write_gz_csv(metric / "front_service.csv.gz",
                 ["Time", "TimeStamp", "ServiceName", "SuccessRate(%)", "LatencyP90(s)"],
                 [[f"t{m}", int(T0) + 60 * m + 28, "Frontend", 100.0 - m, WEB_LATENCY[m]] for m in range(MINUTES)])
    if traces:
        spans = [
            ["t1", "s1", "root", WEB, "GET /", T0 * 1e9, T0 * 1e9 + 5e6, 5e6],
            ["t1", "s2", "s1", WEB, "HTTP GET", T0 * 1e9, T0 * 1e9 + 4e6, 4e6],  # same service: no call
            ["t1", "s3", "s2", API, "/api", T0 * 1e9, T0 * 1e9 + 3e6, 3e6],  # web -> api
            ["t1", "s4", "gone", API, "/api", T0 * 1e9, T0 * 1e9 + 3e6, 3e6],  # parent not in the file
        ]
        write_gz_csv(day / "trace" / "12_03_trace.csv.gz",
                     ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano",
                      "EndTimeUnixNano", "Duration"], spans)
    else:
        write_gz_csv(metric / "dependency.csv.gz", ["Source", "Target", "Weight"],
                     [["web", "api", 1], ["web", "33.33.33.167", 1], ["loadgenerator", "33.33.33.79", 1]])
    # inject_timestamp is 8 hours off, as in some real faults: inject_time (UTC) is the truth.
    faults = {"12": [{"inject_time": f"{DAY} 12:03:10", "inject_timestamp": str(int(T0) + 190 - 8 * 3600),
                      "inject_pod": API, "inject_type": "cpu_contention"}]}
    (day / f"{DAY}-fault_list.json").write_text(json.dumps(faults))
    return day


def resources(msg: dict) -> dict[tuple, list[str]]:
    out = {}
    for rm in msg["resourceMetrics"]:
        attrs = tuple((a["key"], a["value"]["stringValue"]) for a in rm["resource"]["attributes"])
        out[attrs] = [m["name"] for sm in rm["scopeMetrics"] for m in sm["metrics"]]
    return out


# --- conversion -----------------------------------------------------------------------------

def test_one_request_a_minute_with_the_columns_names_and_pod_attributes(tmp_path):
    ds = real.load_nezha_day(make_day(tmp_path), "nezha-ob", "tiny")
    msgs = ds.segments[0].messages
    assert len(msgs) == MINUTES
    first = resources(msgs[0])
    assert first[(("service.name", "web"), ("k8s.pod.name", WEB))] == [
        "CpuUsageRate(%)", "PodServerLatencyP90(s)", "NodeCpuUsageRate(%)"]
    assert (("service.name", "api"), ("k8s.pod.name", API)) in first
    # The front service's rows join the web pod's minute as the web service's, its p90 dropped.
    assert first[(("service.name", "web"),)] == ["SuccessRate(%)"]
    # NaN (minute 1) and empty (minute 2) cells are skipped, the rest of the row kept.
    assert resources(msgs[1])[(("service.name", "api"), ("k8s.pod.name", API))] == [
        "CpuUsageRate(%)", "NodeCpuUsageRate(%)"]
    def times(msg: dict) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for rm in msg["resourceMetrics"]:
            pod = {a["key"]: a["value"]["stringValue"] for a in rm["resource"]["attributes"]}.get("k8s.pod.name", "-")
            out.setdefault(pod, set()).update(int(p["timeUnixNano"]) for sm in rm["scopeMetrics"]
                                              for x in sm["metrics"] for p in x["gauge"]["dataPoints"])
        return out

    # Each point keeps its row's own time; the rows of one minute share a request.
    for m, msg in enumerate(msgs):
        assert times(msg) == {WEB: {(int(T0) + 60 * m + 28) * 10**9}, API: {(int(T0) + 60 * m + 29) * 10**9},
                              "-": {(int(T0) + 60 * m + 28) * 10**9}}


def test_call_latencies_are_the_callers_gauges_labelled_with_the_callee(tmp_path):
    day = make_day(tmp_path)
    # source_50: each caller's median latency of calls to each callee, at the caller; a column whose
    # ends are not both services (the load generator) is left out, as are empty cells.
    write_gz_csv(day / "metric" / "source_50.csv.gz", ["time", "timestamp", "web_api", "loadgenerator_web"],
                 [[f"t{m}", int(T0) + 60 * m + 30, "" if m == 2 else 0.005 * (m + 1), 0.1] for m in range(MINUTES)])
    ds = real.load_nezha_day(day, "nezha-ob", "tiny")
    msgs = ds.segments[0].messages
    assert len(msgs) == MINUTES  # joined to each minute's request, not a request of their own
    # a resource of its own for the caller's service (after the front service's, same attributes)
    assert resources(msgs[0])[(("service.name", "web"),)] == [real.CALL_LATENCY_METRIC]
    points = [p for rm in msgs[0]["resourceMetrics"] for sm in rm["scopeMetrics"] for x in sm["metrics"]
              if x["name"] == real.CALL_LATENCY_METRIC for p in x["gauge"]["dataPoints"]]
    assert points == [{"timeUnixNano": str((int(T0) + 30) * 10**9), "asDouble": 0.005,
                       "attributes": [{"key": "peer.service", "value": {"stringValue": "api"}}]}]
    assert real.CALL_LATENCY_METRIC not in resources(msgs[2]).get((("service.name", "web"),), [])
    assert any("1 caller-callee latencies" in n for n in ds.notes)


def test_front_service_is_matched_to_its_pod_and_repeated_columns_dropped():
    pods = {WEB: [{"TimeStamp": "60", "PodServerLatencyP90(s)": "0.5", "PodSuccessRate(%)": "0"}],
            API: [{"TimeStamp": "61", "PodServerLatencyP90(s)": "0.1", "PodSuccessRate(%)": "0"}]}
    rows = [{"TimeStamp": "62", "ServiceName": "Frontend", "SuccessRate(%)": "0", "LatencyP50(s)": "0.2",
             "LatencyP90(s)": "0.5"}]
    pod, kept, dropped = real.front_service_table(rows, pods)
    assert pod == WEB and dropped == ["SuccessRate(%)", "LatencyP90(s)"]
    assert kept == [{"TimeStamp": "62", "ServiceName": "Frontend", "LatencyP50(s)": "0.2"}]
    assert real.front_service_table([{**rows[0], "LatencyP90(s)": "9"}], pods) is None


def test_topology_from_dependency_csv_drops_addresses_and_unknown_services(tmp_path):
    ds = real.load_nezha_day(make_day(tmp_path), "nezha-ob", "tiny")
    t = ds.topology
    assert sorted(t.services) == ["api", "web"]
    assert t.services["web"].depends_on == ["api"] and t.services["web"].entrypoint
    assert not t.services["api"].entrypoint


def test_topology_from_traces_when_no_dependency_file(tmp_path):
    ds = real.load_nezha_day(make_day(tmp_path, traces=True), "nezha-tt", "tiny")
    assert ds.topology.services["web"].depends_on == ["api"] and ds.topology.services["web"].entrypoint
    assert ds.topology.services["api"].depends_on == []
    # The same graph is the scoring truth: web calls api, so web is the fault's caller.
    assert ds.segments[0].faults[0].related == frozenset({"web"})


def test_entrypoint_is_the_uncalled_service_calling_the_most():
    spec = real.topology_spec("t", ["ui", "gw", "a", "b", "admin"], {("gw", "a"), ("gw", "b"), ("admin", "a"), ("a", "b")})
    assert [s for s, v in spec["services"].items() if v.get("entrypoint")] == ["gw"]


@pytest.fixture
def local_time_utc_plus_8(monkeypatch):
    """The machine's clock where the data was recorded (UTC+8): a local-time reading is 8 hours off."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_faults_start_at_inject_time_read_as_utc(tmp_path, local_time_utc_plus_8):
    day = make_day(tmp_path)
    (f,) = real.read_fault_list(day / f"{DAY}-fault_list.json")
    assert f.start == T0 + 190 and f.service == "api" and f.kind == "cpu_contention" and f.pod == API


def test_quiet_period_runs_from_15_min_after_the_last_fault_to_the_last_row(tmp_path):
    seg = real.load_nezha_day(make_day(tmp_path), "nezha-ob", "tiny").segments[0]
    assert seg.quiet == (T0 + 190 + 900, T0 + 60 * (MINUTES - 1) + 29 + 1)
    assert seg.fault_period == (T0 + 190 - 60, T0 + 190 + 900)


def test_written_files_replay_as_the_core_ran_them(tmp_path):
    make_day(tmp_path)
    out = tmp_path / "out"
    result = real.evaluate_dataset("nezha-ob", shared=tmp_path, out=out)
    assert result["faults"] == 1 and result["messages"] == MINUTES
    where = out / "nezha-ob"
    topology = load_topology(where / "topology.yaml")
    assert topology == real.load_dataset("nezha-ob", tmp_path).topology
    summary = replay(topology, where / "metrics.otlp.jsonl", tmp_path / "replayed.jsonl", drain=True, progress=None)
    assert summary.dead_lettered == 0 and summary.lines == MINUTES
    assert summary.points == 3 * MINUTES + 3 * MINUTES - 2 + MINUTES  # web, api less two cells, front service
    assert (tmp_path / "replayed.jsonl").read_bytes() == (where / "incidents.jsonl").read_bytes()


# --- scoring on hand-made alerts and incidents ----------------------------------------------

START = T0 + 3600.0
FAULT = FaultTruth("f1", "db", "cpu", START, START + 300, frozenset({"api", "web"}))


def alert(service: str, starts: float, status: str = "firing", at: float | None = None, series: str | None = None):
    series = series or f"{service}/cpu"
    return Alert(fingerprint=series, status=status, service=service, metric="cpu", series=series, labels=(),
                 score=0.99, value=1.0, expected=0.0, starts_at=starts, at=at if at is not None else starts)


def record(id_: str, version: int, opened: float, services, roots, notification="page", status="open"):
    return {"id": id_, "version": version, "status": status, "opened_at": rfc3339(opened),
            "updated_at": rfc3339(opened + 60 * version), "services": list(services), "title": id_,
            "root_causes": [{"service": s} for s in roots], "notification": notification}


def test_an_episode_is_counted_once_and_resolved_alerts_not_at_all():
    onsets = real.alert_onsets([alert("web", START), alert("web", START, at=START + 60),
                                alert("web", START, status="resolved"), alert("api", START + 5)])
    assert onsets == {("web/cpu", START): "web", ("api/cpu", START + 5): "api"}


@pytest.mark.parametrize("alerts,want", [
    ([alert("web", START + 30)], 30.0),  # a caller of the root cause, not directly
    ([alert("db", START - 50), alert("web", START + 30)], -50.0),  # the first counts
    ([alert("other", START + 10)], None),  # unrelated service
    ([alert("db", START - 90)], None),  # too early
    ([alert("db", START + 301)], None),  # too late
])
def test_a_fault_is_found_by_an_alert_on_it_or_a_caller_within_the_window(alerts, want):
    assert real.first_alert_delay(FAULT, real.alert_onsets(alerts)) == want


def tiny_segment(**kw) -> real.Segment:
    f2 = FaultTruth("f2", "cache", "cpu", START + 600, START + 900, frozenset({"web"}))
    base = dict(name="s", messages=[], faults=[FAULT, f2], quiet=(START + 3600, START + 3600 + 2 * 3600),
                fault_period=(START - 60, START + 3600), quiet_series=10, warmup_end=T0)
    return real.Segment(**{**base, **kw})


def test_recall_false_incidents_and_alert_rates_over_the_quiet_period():
    q0 = START + 3600
    alerts = [alert("web", START + 30),  # finds f1 through a caller; f2 (at +600) has none
              alert("db", q0 + 10), alert("db", q0 + 10, at=q0 + 70), alert("api", q0 + 99),
              alert("api", q0 - 10)]  # before the quiet period
    records = [record("i-fault", 1, START + 40, ["web"], ["web"]),
               record("i-quiet", 1, q0 + 100, ["db"], ["db"]), record("i-quiet", 2, q0 + 100, ["db"], ["db"], "silent"),
               record("i-quiet2", 1, q0 + 5000, ["api"], ["api"], "silent")]
    s = real.summarize_runs([real.score_segment(tiny_segment(), records, alerts)])
    assert (s["faults"], s["found"], s["recall"], s["missed"]) == (2, 1, 0.5, ["f2"])
    assert s["delay_p50_s"] == 30.0
    assert s["false_incidents"] == 2 and s["quiet_hours"] == 2.0
    assert s["false_per_hour"] == 1.0 and s["false_per_day"] == 24.0
    assert s["quiet_pages"] == 1  # i-quiet2 never paged
    assert s["quiet_notifications"] == 1 and s["open_at_quiet_start"] == 1  # i-fault never resolved
    assert s["quiet_alerts"] == 2 and s["alerts_per_series_day"] == pytest.approx(2 / (10 * 2 / 24))
    assert s["incidents_per_fault"] == 0.5  # one incident opened in the fault period, two faults


def test_an_incident_resolved_before_the_quiet_period_is_not_open_in_it():
    records = [record("a", 1, START, ["db"], ["db"]), record("a", 2, START, ["db"], ["db"], "resolve", "resolved"),
               record("b", 1, START, ["db"], ["db"])]
    assert real.open_at(records, START + 30) == 0  # nothing published yet
    assert real.open_at(records, START + 90) == 2
    assert real.open_at(records, START + 150) == 1


def test_own_incident_and_the_rank_in_its_first_paging_record():
    records = [
        # Opens with f1, involves a caller; held silent first: the rank is the page's (v2), not v1's.
        record("own", 1, START + 100, ["web"], ["web"], "silent"),
        record("own", 2, START + 100, ["web", "db"], ["api", "db"], "page"),
        record("own", 3, START + 100, ["web", "db"], ["db"], "update"),
        record("late", 1, START + 400, ["db"], ["db"]),  # opened after the window
        record("unrelated", 1, START + 10, ["other"], ["db"]),  # involves neither db nor a caller
    ]
    opened = real.incidents_opened(records)
    assert real.own_incidents(FAULT, opened) == ["own"]
    score = real.score_fault(FAULT, {}, opened, first_versions(records))
    assert score.own_incidents == ("own",) and score.rank_first == 2 and not score.found
    s = real.summarize_runs([real.score_segment(tiny_segment(faults=[FAULT]), records, [])])
    assert (s["own_incident"], s["ac1"], s["ac3"]) == (1, 0.0, 1.0)
    assert s["avg5"] == pytest.approx(0.8)


def test_an_incident_that_never_paged_ranks_nothing():
    records = [record("own", 1, START, ["db"], ["db"], "silent")]
    s = real.summarize_runs([real.score_segment(tiny_segment(faults=[FAULT]), records, [])])
    assert s["own_incident"] == 1 and s["ac1"] == 0.0


def test_no_quiet_time_gives_nan_rates_not_errors():
    s = real.summarize_runs([real.score_segment(tiny_segment(quiet=(START, START)), [], [])])
    assert math.isnan(s["false_per_hour"]) and math.isnan(s["alerts_per_series_day"])


LOG_HEADER = ["Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log"]


def docker_line(text: str) -> str:
    return json.dumps({"log": text + "\n", "stream": "stdout", "time": "2022-08-23T12:01:00Z"})


def test_spans_and_logs_become_otlp_requests_per_minute(tmp_path):
    day = make_day(tmp_path, traces=True)
    t = int(T0) * 10**9
    write_gz_csv(day / "log" / "12_03_log.csv.gz", LOG_HEADER, [
        ["x", t + 61 * 10**9, "n", API, "server", "t1", "s3", docker_line("20:01:01.000 ERROR a.B#1 db timeout")],
        ["x", t + 62 * 10**9, "n", API, "server", "", "", docker_line("20:01:02.000 INFO  a.B#2 ok")],
        ["x", t + 63 * 10**9, "n", API, "server", "", "", '{"log": "truncated'],  # left out
        ["x", -6795364578871345152, "n", API, "server", "", "", docker_line("garbage time")],  # left out
    ])
    (req,) = real.trace_requests(sorted((day / "trace").glob("*.csv.gz")))
    by_pod = {rs["resource"]["attributes"][1]["value"]["stringValue"]: rs for rs in req["resourceSpans"]}
    assert by_pod[WEB]["resource"]["attributes"][0] == {"key": "service.name", "value": {"stringValue": "web"}}
    spans = {s["spanId"]: s for rs in req["resourceSpans"] for s in rs["scopeSpans"][0]["spans"]}
    assert "parentSpanId" not in spans["s1"] and spans["s3"]["parentSpanId"] == "s2"
    assert abs(int(spans["s3"]["endTimeUnixNano"]) - (t + 3_000_000)) < 1000 and "kind" not in spans["s3"]  # floats in
    logs, bad = real.log_requests(sorted((day / "log").glob("*.csv.gz")))
    assert bad == 2 and len(logs) == 1
    records = logs[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert [(r["severityText"], r["severityNumber"], r["body"]["stringValue"], r.get("traceId")) for r in records] == [
        ("ERROR", 17, "20:01:01.000 ERROR a.B#1 db timeout", "t1"), ("INFO", 9, "20:01:02.000 INFO  a.B#2 ok", None)]
    seg = real.load_nezha_day(day, "nezha-tt", "tiny").segments[0]
    assert len(seg.traces) == 1 and len(seg.logs) == 1
    kinds = [m[0] for m in real.merged_messages(seg)]
    assert kinds.count("traces") == 1 and kinds.count("logs") == 1 and kinds.count("metrics") == MINUTES
    assert real.load_nezha_day(day, "nezha-tt", "tiny", signals="metrics").segments[0].traces == ()


def test_written_spans_and_logs_replay_as_the_core_ran_them(tmp_path):
    make_day(tmp_path, traces=True)
    day = tmp_path / "real" / "nezha" / DAY
    tt = tmp_path / "real" / "nezha" / real.NEZHA_DAYS["nezha-tt"][0]
    day.rename(tt)
    for f in tt.glob(f"{DAY}-*"):
        f.rename(tt / f.name.replace(DAY, tt.name))
    out = tmp_path / "out"
    result = real.evaluate_dataset("nezha-tt", shared=tmp_path, out=out)
    assert result["signals"] == ["metrics", "traces"]
    where = out / "nezha-tt"
    topology = load_topology(where / "topology.yaml")
    summary = replay(topology, where / "metrics.otlp.jsonl", tmp_path / "replayed.jsonl", drain=True, progress=None,
                     traces=where / "traces.otlp.jsonl")
    assert summary.dead_lettered == 0 and summary.lines == MINUTES + 1
    assert (tmp_path / "replayed.jsonl").read_bytes() == (where / "incidents.jsonl").read_bytes()
    metrics_only = real.evaluate_dataset("nezha-tt", shared=tmp_path, signals="metrics")
    assert metrics_only["signals"] == ["metrics"] and metrics_only["messages"] == MINUTES
