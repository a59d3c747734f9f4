"""`aiops replay --traces`: spans merged with metrics by event time. A slow, failing datastore that
the topology lists without any calls gets one incident whose root cause is the datastore and whose
path runs over calls learned from the spans; the ticket's report names the drift; a bad traces
line is dead-lettered; the output is byte-identical across runs and equal to what the evaluation
core gives for the same messages; `aiops topology show --learned` prints the drift."""
from __future__ import annotations

import random

import orjson
import pytest

from evaluation.core import run_core
from evaluation.metrics import final_versions as final
from evaluation.real import Segment, merged_messages
from streams.cli import main as cli
from streams.config import load_topology
from tests.traces_fixture import make_traces

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
TOPOLOGY = """
name: traces-replay
services:
  web: {entrypoint: true, depends_on: [api]}
  api: {depends_on: [search]}   # api -> search is never called; api -> cart is, undeclared
  search: {}
  cart: {}
  db: {kind: datastore}
traces: {stale_after: 10m}
"""
CALLS = {"web": ["api", "search"], "api": ["cart"], "cart": ["db"]}
BAD_LINE = b'{"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{"spanId": "ab"}]}]}]}'


def metrics(minutes: int) -> list[dict]:
    """A calm gauge per service per minute: the metrics lane the spans are merged with."""
    rng = random.Random(1)
    out = []
    for m in range(minutes):
        ns = str(int(T0 + m * 60 + 5) * 1_000_000_000)
        out.append({"resourceMetrics": [
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}}]},
             "scopeMetrics": [{"metrics": [{"name": "process.cpu.utilization", "gauge": {"dataPoints": [
                 {"timeUnixNano": ns, "asDouble": 0.3 + 0.02 * rng.random()}]}}]}]}
            for s in ("web", "api", "search", "cart", "db")]})
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("traces")
    topo = tmp / "topology.yaml"
    topo.write_text(TOPOLOGY)
    mets = metrics(75)
    spans = make_traces(CALLS, "web", T0, 75, fault=("db", T0 + 45 * 60, T0 + 55 * 60))
    (tmp / "metrics.jsonl").write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in mets))
    lines = [orjson.dumps(r) for r in spans]
    lines.insert(len(lines) // 2, BAD_LINE)
    (tmp / "traces.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    outs = []
    for i in range(2):
        out = {k: tmp / f"{k}{i}.jsonl" for k in ("incidents", "tickets", "deadletter")}
        assert cli(["replay", "--topology", str(topo), "--input", str(tmp / "metrics.jsonl"), "--traces",
                    str(tmp / "traces.jsonl"), "--output", str(out["incidents"]), "--tickets", str(out["tickets"]),
                    "--deadletter", str(out["deadletter"]), "--drain", "--quiet"]) == 0
        outs.append(out)
    return {"tmp": tmp, "topology": topo, "outs": outs, "metrics": mets, "spans": spans}


def load(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_one_incident_rooted_at_the_datastore_over_learned_calls(run):
    incidents = final(load(run["outs"][0]["incidents"]))
    assert len(incidents) == 1, [(i["title"], i["services"]) for i in incidents.values()]
    (inc,) = incidents.values()
    assert inc["status"] == "resolved" and {"db", "cart"} <= set(inc["services"])
    rc = inc["root_causes"][0]
    assert rc["service"] == "db" and rc["path"][:2] == ["db", "cart"]
    assert any(e["metric"].startswith("span.") for e in rc["evidence"])
    resolve = [t for t in load(run["outs"][0]["tickets"]) if t["event"] == "resolve"]
    assert "- Call graph drift: seen in spans, not declared: `api -> cart`" in resolve[0]["description"]


def test_a_bad_traces_line_is_dead_lettered_with_its_reason(run):
    (dead,) = load(run["outs"][0]["deadletter"])
    assert dead["topic"] == "telemetry.traces" and dead["reason"] == "resource without attribute 'service.name'"


def test_replay_is_byte_identical_and_the_evaluation_core_agrees(run):
    a, b = run["outs"]
    for k in a:
        assert a[k].read_bytes() == b[k].read_bytes(), k
    segment = Segment("t", run["metrics"], [], (0.0, 0.0), (0.0, 0.0), 0, 0.0, tuple(run["spans"]))
    core = run_core(load_topology(run["topology"]), merged_messages(segment))
    assert [orjson.dumps(r) for r in core.incidents] == a["incidents"].read_bytes().splitlines()


def test_topology_show_learned_prints_the_drift(run, capsys):
    assert cli(["topology", "show", "--topology", str(run["topology"]), "--learned", "--traces",
                str(run["tmp"] / "traces.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "(1 undecodable lines)" in out
    section = out.split("seen in spans, not declared (3):\n")[1].split("\n\n")[0].splitlines()
    assert [line.split(" (")[0].strip() for line in section] == ["api -> cart", "cart -> db", "web -> search"]
    assert "  api -> search (never seen)" in out
    assert cli(["topology", "show", "--topology", str(run["topology"]), "--learned"]) == 2
