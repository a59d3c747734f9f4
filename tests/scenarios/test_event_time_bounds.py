"""One bad clock must not blind the pipeline (issue: hostile input, event time).

`aiops simulate` then `aiops replay` with metrics, logs, spans, other tools' alerts and changes;
then the same input with one record per kind dated 2099-01-01 (inside the 2000..2100 window the
decoders accept) or far in the past, plus a dead-lettered log line dated year 9999, each in the
middle of its file. The incidents must be byte-identical: the bad records are dead-lettered with
the reason, move no clock and reorder nothing.
"""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.cli import main as cli
from streams.config import load_topology
from tests.traces_fixture import make_traces

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topology.yaml"
Y2099 = 4070908800  # 2099-01-01T00:00:00Z
Y2001 = 978307200  # 2001-01-01T00:00:00Z


def _ns(t: float) -> str:
    return str(int(t) * 1_000_000_000)


def _metric(service: str, t: float, value: float) -> bytes:
    return orjson.dumps({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeMetrics": [{"metrics": [{"name": "process.cpu.utilization", "gauge": {"dataPoints": [
            {"timeUnixNano": _ns(t), "asDouble": value}]}}]}]}]})


def _log(service: str, t_ns: str) -> bytes:
    return orjson.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": t_ns, "severityNumber": 17, "severityText": "ERROR",
                                       "body": {"stringValue": "clock says the future"}}]}]}]})


def _alertmanager(service: str, starts: str) -> bytes:
    return orjson.dumps({"source": "alertmanager", "payload": {
        "version": "4", "status": "firing", "receiver": "aiops", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://am", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "Skewed", "service": service},
                    "annotations": {}, "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "00000000000000ff"}]}})


def _insert(lines: list[bytes], extra: list[bytes]) -> list[bytes]:
    """``extra`` in the middle of ``lines``."""
    mid = len(lines) // 2
    return lines[:mid] + extra + lines[mid:]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("event-time")
    assert cli(["simulate", "--topology", str(TOPOLOGY), "--out", str(tmp / "sim")]) == 0
    sim = tmp / "sim"
    metrics = (sim / "telemetry.jsonl").read_bytes().splitlines()
    logs = (sim / "logs.jsonl").read_bytes().splitlines()
    start = orjson.loads((sim / "truth.json").read_bytes())[0]["start"] - 3600
    topology = load_topology(TOPOLOGY)
    calls = {s: list(spec.depends_on) for s, spec in topology.services.items()}
    entry = next(s for s, spec in topology.services.items() if spec.entrypoint)
    spans = [orjson.dumps(r) for r in make_traces(calls, entry, start, 30, per_minute=2, batch_seconds=60)]
    service = sorted(topology.services)[0]
    clean = {"input": metrics, "logs": logs, "traces": spans, "external": [], "changes": []}
    hostile = {
        "input": _insert(metrics, [_metric(service, Y2099, 0.5), _metric(service, Y2001, 0.5)]),
        "logs": _insert(logs, [_log(service, _ns(Y2099)), _log(service, "253402300799000000000")]),  # and 9999
        "traces": _insert(spans, [orjson.dumps(make_traces(calls, entry, Y2099, 1, per_minute=1)[0])]),
        "external": [_alertmanager(service, "2099-01-01T00:00:00Z")],
        "changes": [orjson.dumps({"schema_version": 1, "id": "chg-2099", "service": service,
                                  "kind": "deploy", "at": "2099-01-01T00:00:00Z", "description": "from the future"})],
    }
    out = {}
    for name, files in (("clean", clean), ("hostile", hostile)):
        paths = {}
        for kind, lines in files.items():
            paths[kind] = tmp / f"{name}-{kind}.jsonl"
            paths[kind].write_bytes(b"".join(line + b"\n" for line in lines))
        inc, dead = tmp / f"{name}-incidents.jsonl", tmp / f"{name}-dead.jsonl"
        args = ["replay", "--topology", str(TOPOLOGY), "--input", str(paths["input"]), "--logs", str(paths["logs"]),
                "--traces", str(paths["traces"]), "--external", str(paths["external"]),
                "--changes", str(paths["changes"]), "--output", str(inc), "--deadletter", str(dead), "--drain",
                "--quiet"]
        assert cli(args) == 0
        out[name] = (inc.read_bytes(), [orjson.loads(line) for line in dead.read_bytes().splitlines()])
    return out


def test_the_incidents_are_byte_identical(run):
    clean, hostile = run["clean"][0], run["hostile"][0]
    assert clean and clean.count(b"\n") >= 3
    assert hostile == clean


def test_each_bad_record_is_dead_lettered_with_the_reason(run):
    before = {(d["topic"], d["reason"]) for d in run["clean"][1]}
    new = [(d["topic"], d["reason"]) for d in run["hostile"][1] if (d["topic"], d["reason"]) not in before]
    reasons = " | ".join(r for _, r in new)
    topics = {t for t, _ in new}
    assert {"telemetry.metrics", "telemetry.logs", "telemetry.traces"} <= topics, new
    assert any(t.startswith("alerts.") for t in topics), new
    assert reasons.count("out of time") >= 5, reasons  # 2099 and 2001 points, 2099 record, span, alert
    assert "2099-01-01T00:00:00" in reasons


def test_a_gap_in_the_data_is_not_a_bad_clock(tmp_path):
    """Two hours without telemetry (a Collector down, a quiet service) and then data again: the
    data after the gap is far ahead of event time, but the message after it agrees, so it is
    taken. A lone message from the future, with normal messages around it, is not."""
    from streams.replay import replay

    topology = load_topology(TOPOLOGY)
    service = sorted(topology.services)[0]
    t0 = 1_767_225_600
    times = [t0 + 60 * m for m in range(10)] + [t0 + 7200 + 60 * m for m in range(10)]
    lines = [_metric(service, t, 0.4) for t in times]
    lines.insert(15, _metric(service, t0 + 7200 + 3 * 3600, 0.4))  # three hours ahead of its neighbours
    telemetry = tmp_path / "telemetry.jsonl"
    telemetry.write_bytes(b"".join(line + b"\n" for line in lines))
    dead = tmp_path / "dead.jsonl"
    summary = replay(topology, telemetry, tmp_path / "incidents.jsonl", deadletter=dead, progress=None)
    assert summary.points == len(times)
    (reason,) = [orjson.loads(line)["reason"] for line in dead.read_bytes().splitlines()]
    assert "1 point(s) out of time, e.g. at 2026-01-01T05:00:00" in reason, reason
