"""`aiops simulate` then `aiops replay --logs`: the bad gateway node's incident carries the log
template and a sample line from gw-2 as evidence; logs add no incident of their own anywhere; the
output stays byte-identical across runs."""
from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from detectors.records import parse_rfc3339
from evaluation.metrics import final_versions as final
from streams.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logs")
    topo = str(REPO / "topology.yaml")
    assert cli(["simulate", "--topology", topo, "--out", str(tmp / "sim")]) == 0
    sim = tmp / "sim"
    outs, seconds = [], []
    for i, logs in enumerate([True, True, False]):
        out = tmp / f"incidents{i}.jsonl"
        started = time.monotonic()
        args = ["replay", "--topology", topo, "--input", str(sim / "telemetry.jsonl"), "--output", str(out), "--quiet"]
        assert cli(args + (["--logs", str(sim / "logs.jsonl")] if logs else [])) == 0
        seconds.append(time.monotonic() - started)
        outs.append(out)
    load = lambda p: [orjson.loads(line) for line in p.read_bytes().splitlines()]  # noqa: E731
    return {"sim": sim, "outs": outs, "seconds": seconds, "truth": orjson.loads((sim / "truth.json").read_bytes()),
            "with": final(load(outs[0])), "without": final(load(outs[2]))}


def in_window(fault, incidents):
    return [i for i in incidents.values() if fault["start"] - 60 <= parse_rfc3339(i["opened_at"]) <= fault["end"]]


def test_simulated_logs_are_otlp_json_with_gw2_errors(run):
    lines = (run["sim"] / "logs.jsonl").read_bytes().splitlines()
    assert lines
    first = orjson.loads(lines[0])
    assert set(first) == {"resourceLogs"}
    gw2 = [rec["body"]["stringValue"]
           for req in map(orjson.loads, lines) for rl in req["resourceLogs"]
           if {"key": "host.name", "value": {"stringValue": "gw-2"}} in rl["resource"]["attributes"]
           for sl in rl["scopeLogs"] for rec in sl["logRecords"] if rec["severityNumber"] >= 17]
    assert any(b.startswith("upstream card-network connection reset by peer node=gw-2 txn=") for b in gw2)


def test_bad_gateway_incident_carries_the_gw2_log_template(run):
    (fault,) = [f for f in run["truth"] if f["scenario"] == "bad-gateway-node"]
    (inc,) = in_window(fault, run["with"])
    assert inc["root_causes"][0]["service"] == "payment-gateway"
    details = [e["detail"] for e in inc["root_causes"][0]["evidence"] if e["metric"].startswith("log.template")]
    assert any("node=gw-2" in d and "template" in d and "sample" in d for d in details), details


def test_logs_add_no_incident_and_keep_root_causes(run):
    for fault in run["truth"]:
        got, want = in_window(fault, run["with"]), in_window(fault, run["without"])
        assert len(got) == len(want) == 1, fault["scenario"]
        assert got[0]["root_causes"][0]["service"] == want[0]["root_causes"][0]["service"] == fault["root_cause"]
    assert len(run["with"]) == len(run["without"])


def test_replay_with_logs_is_byte_identical_and_fast(run):
    a, b = run["outs"][:2]
    assert a.read_bytes() == b.read_bytes()
    assert run["seconds"][0] < 15, run["seconds"]
