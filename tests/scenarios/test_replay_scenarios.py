"""`aiops simulate` then `aiops replay`: every injected fault becomes an incident with its root cause
in the top 3 (first for the shipped scenarios), the output is byte-identical across runs, and the
shipped policies and ticket routing answer each fault."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from detectors.records import parse_rfc3339
from evaluation.metrics import final_versions as final
from streams import simulate as sim
from streams.cli import main as cli
from streams.config import load_topology

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    topo = REPO / "topology.yaml"
    assert cli(["simulate", "--topology", str(topo), "--out", str(tmp / "sim")]) == 0
    outs = []
    for i in range(2):
        out = tmp / f"incidents{i}.jsonl"
        assert cli(["replay", "--topology", str(topo), "--input", str(tmp / "sim" / "telemetry.jsonl"),
                    "--output", str(out), "--actions", str(tmp / f"actions{i}.jsonl"),
                    "--tickets", str(tmp / f"tickets{i}.jsonl"), "--quiet"]) == 0
        outs.append(out)
    truth = orjson.loads((tmp / "sim" / "truth.json").read_bytes())
    if isinstance(truth, dict):
        truth = truth.get("faults", truth)
    load = lambda p: [orjson.loads(line) for line in p.read_bytes().splitlines()]  # noqa: E731
    return {"tmp": tmp, "outs": outs, "truth": truth, "incidents": load(outs[0]),
            "actions": load(tmp / "actions0.jsonl"), "tickets": load(tmp / "tickets0.jsonl")}


def incidents_for(fault, incidents):
    start, end = fault["start"], fault["end"]
    return [i for i in final(incidents).values() if start - 60 <= parse_rfc3339(i["opened_at"]) <= end]


def test_replay_is_byte_identical(run):
    a, b = run["outs"]
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes(), "no incidents at all"


def test_every_fault_is_found_once_with_its_root_cause_first(run):
    assert len(run["truth"]) == len(sim.load_scenarios(None))
    for fault in run["truth"]:
        found = incidents_for(fault, run["incidents"])
        assert len(found) == 1, (fault["scenario"], [i["title"] for i in found])
        ranked = [rc["service"] for rc in found[0]["root_causes"]]
        assert ranked[0] == fault["root_cause"], (fault["scenario"], ranked)


def test_no_false_incidents_outside_the_faults(run):
    claimed = {i["id"] for f in run["truth"] for i in incidents_for(f, run["incidents"])}
    spurious = [i["title"] for i in final(run["incidents"]).values() if i["id"] not in claimed]
    assert spurious == []


def test_every_incident_resolves_after_its_fault(run):
    for fault in run["truth"]:
        for inc in incidents_for(fault, run["incidents"]):
            assert inc["status"] == "resolved", fault["scenario"]
            assert parse_rfc3339(inc["resolved_at"]) >= fault["end"]


def test_the_shipped_policies_and_owners_answer_each_fault(run):
    for fault in run["truth"]:
        (inc,) = incidents_for(fault, run["incidents"])
        actions = [a for a in run["actions"] if a["incident_id"] == inc["id"]]
        tickets = [t for t in run["tickets"] if t["incident_id"] == inc["id"]]
        if fault.get("policy"):
            assert {a["policy"] for a in actions} == {fault["policy"]}, fault["scenario"]
            assert all(a["mode"] == "dry_run" for a in actions)
        assert [t["event"] for t in tickets][0] == "create" and [t["event"] for t in tickets][-1] == "resolve"
        assert len([t for t in tickets if t["event"] == "create"]) == 1
        if fault.get("team"):
            assert tickets[0]["team"] == fault["team"], fault["scenario"]
