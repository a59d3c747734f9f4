"""The evaluation's arithmetic on hand-made inputs, and one small topology end to end."""
from __future__ import annotations

import math
import time
from pathlib import Path

import orjson
import pytest

from detectors.records import rfc3339
from evaluation import metrics as m
from evaluation.cases import CATEGORIES, build_runs, expected_kind
from evaluation.core import run_core
from evaluation.run import TOPOLOGIES, evaluate_run
from streams.config import load_topology
from streams.simulate import Fault
from streams.replay import replay

T0 = 1_767_225_600.0


def inc(id_, opened, services, roots, version=1, updated=None):
    return {"id": id_, "version": version, "opened_at": rfc3339(T0 + opened),
            "updated_at": rfc3339(T0 + (updated if updated is not None else opened + 30)),
            "services": list(services), "root_causes": [{"service": s, "kind": "errors"} for s in roots],
            "title": f"{id_}"}


def fault(id_, service, start, end, related=(), category="single"):
    return m.FaultTruth(id_, service, "errors", T0 + start, T0 + end, frozenset(related), category)


@pytest.mark.parametrize("ranks,k,want", [
    ([1, 1, 1, 1], 1, 1.0),
    ([1, 2, 3, None], 1, 0.25),
    ([1, 2, 3, None], 3, 0.75),
    ([1, 2, 3, None], 5, 0.75),
    ([6, None], 5, 0.0),
])
def test_ac_at_k(ranks, k, want):
    assert m.ac_at(ranks, k) == want


def test_ac_at_k_of_nothing_is_nan():
    assert math.isnan(m.ac_at([], 1)) and math.isnan(m.avg_at_5([]))


@pytest.mark.parametrize("ranks,want", [
    ([1], 1.0),
    ([2], 0.8),  # in the top k for k = 2..5
    ([5], 0.2),
    ([None], 0.0),
    ([1, 3], (1.0 + 0.6) / 2),
])
def test_avg_at_5_is_the_mean_of_ac1_to_ac5(ranks, want):
    assert m.avg_at_5(ranks) == pytest.approx(want)


def test_rank_is_one_based_and_none_when_absent():
    i = inc("a", 0, ["web"], ["web", "db"])
    assert (m.rank_of("web", i), m.rank_of("db", i), m.rank_of("cache", i)) == (1, 2, None)


def test_final_versions_keep_the_highest_version():
    recs = [inc("a", 0, ["web"], ["web"]), inc("a", 0, ["web", "db"], ["db", "web"], version=3),
            inc("a", 0, ["web"], ["web"], version=2)]
    assert m.final_versions(recs)["a"]["version"] == 3
    assert m.first_notified(recs) == {"a": T0 + 30}


@pytest.mark.parametrize("opened,services,want", [
    (0, ["db"], True),
    (-60, ["db"], True),  # an onset a sample or two early still counts
    (-61, ["db"], False),
    (600, ["web"], True),  # a caller of the faulted service
    (601, ["db"], False),  # after the fault ended
    (100, ["mail"], False),  # same time, unrelated service
])
def test_matching_by_time_window_and_services(opened, services, want):
    f = fault("f", "db", 0, 600, related={"web", "api"})
    assert m.matches(f, inc("i", opened, services, services)) is want


def test_noise_windows_match_nothing():
    noise = m.FaultTruth("n", None, "noise", T0, T0 + 60)
    assert not m.matches(noise, inc("i", 10, ["web"], ["web"]))


def test_false_incidents_fragmentation_and_best_rank():
    faults = [fault("f1", "db", 0, 600, {"web"}), fault("f2", "cache", 3600, 4200, {"web"}),
              m.FaultTruth("noise", None, "noise", T0 + 7200, T0 + 7260)]
    records = [
        inc("a", 10, ["web", "db"], ["web", "db"]),  # f1, db second
        inc("b", 40, ["db"], ["db"]),  # f1 again: db first, a second incident for one fault
        inc("b", 40, ["db"], ["db"], version=2),
        inc("c", 2000, ["web"], ["web"]),  # quiet time: false
        inc("d", 7210, ["mail"], ["mail"]),  # during the noise spike: false
    ]
    results, false = m.score_faults(faults, records)
    by = {r.fault.id: r for r in results}
    assert [r.fault.id for r in results] == ["f1", "f2"]  # noise windows are not faults
    assert by["f1"].incidents == ("a", "b") and by["f1"].rank == 1 and by["f1"].top == "db"
    assert by["f1"].delay == 10 and by["f1"].notify_delay == 40
    assert not by["f2"].detected and by["f2"].rank is None
    assert [i["id"] for i in false] == ["c", "d"]
    s = m.summarize(results, false, hours=4.0)
    assert (s["recall"], s["ac1"], s["ac3"], s["false_incidents"], s["false_per_hour"], s["incidents_per_fault"]) \
        == (0.5, 0.5, 0.5, 2, 0.5, 2.0)
    assert m.verdicts(s) == {"detection recall": False, "AC@1": False, "AC@3": False,
                             "false incidents/h": False, "incidents per fault": False}


def test_one_incident_can_answer_two_concurrent_faults():
    faults = [fault("f1", "db", 0, 600, {"web"}, "concurrent"), fault("f2", "cache", 0, 600, {"web"}, "concurrent")]
    results, false = m.score_faults(faults, [inc("a", 5, ["web", "db", "cache"], ["db", "cache"])])
    assert [r.rank for r in results] == [1, 2] and false == []
    assert m.summarize(results, false, 1.0)["incidents_per_fault"] == 1.0


def test_an_incident_per_concurrent_fault_is_one_incident_each():
    # Both incidents reach the shared entry point "web", so both match both faults by services;
    # each is credited to the fault whose service it names.
    faults = [fault("f1", "db", 0, 600, {"web"}, "concurrent"), fault("f2", "cache", 0, 600, {"web"}, "concurrent")]
    records = [inc("a", 5, ["web", "db"], ["db", "web"]), inc("b", 8, ["web", "cache"], ["cache", "web"])]
    results, false = m.score_faults(faults, records)
    assert [r.incidents for r in results] == [("a",), ("b",)] and false == []
    assert m.summarize(results, false, 1.0)["incidents_per_fault"] == 1.0


def test_targets_pass_on_perfect_figures():
    s = {"recall": 1.0, "ac1": 0.95, "ac3": 1.0, "false_per_hour": 0.0, "incidents_per_fault": 1.0}
    assert all(m.verdicts(s).values())
    assert not m.verdicts({**s, "ac1": math.nan})["AC@1"]


def test_quantile():
    assert m.quantile([1, 2, 3, 4, 5], 0.5) == 3 and m.quantile([0, 10], 0.9) == 9


# --- cases --------------------------------------------------------------------------------------


def test_fixtures_load_and_cases_are_deterministic():
    for path in sorted(TOPOLOGIES.glob("*.yaml")):
        topo = load_topology(path)
        a = build_runs(topo, seed=3)
        b = build_runs(topo, seed=3)
        assert [(r.name, r.cases) for r in a] == [(r.name, r.cases) for r in b]
        cats = {c.category for r in a for c in r.cases}
        assert cats == set(CATEGORIES), (path.stem, cats)
        for r in a:
            for c in r.cases:
                assert all(f.service in topo.services for f in c.faults)
                if c.category == "missing-edge":
                    u, v = c.removed_edge
                    assert v in topo.services[u].depends_on and v not in r.pipeline_topology.services[u].depends_on
                if c.category == "uninstrumented":
                    assert r.topology.services[c.roots[0]].kind == "external"


def test_expected_kind():
    topo = load_topology(TOPOLOGIES / "sock-shop.yaml")
    assert expected_kind(topo, Fault("carts-db", "saturation", 0, 60)) == "saturation"
    assert expected_kind(topo, Fault("carts", "saturation", 0, 60)) == "resource"
    assert expected_kind(topo, Fault("carts", "crash", 0, 60)) == "unobserved"


# --- end to end ---------------------------------------------------------------------------------


def test_core_matches_aiops_replay_byte_for_byte(tmp_path):
    from streams import simulate as sim
    topo = load_topology(TOPOLOGIES / "online-boutique.yaml")
    run = build_runs(topo, quick=True)[0]
    result = sim.simulate(topo, run.scenarios()[:1])
    path = tmp_path / "telemetry.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in result.requests))
    replay(topo, path, tmp_path / "incidents.jsonl", drain=True, progress=None)
    want = [orjson.loads(line) for line in (tmp_path / "incidents.jsonl").read_bytes().splitlines()]
    got = run_core(topo, result.requests).incidents
    assert got == want and got


def test_one_small_topology_end_to_end():
    started = time.monotonic()
    topo = load_topology(TOPOLOGIES / "online-boutique.yaml")
    run = build_runs(topo, quick=True)[0]
    out = evaluate_run(run)
    assert time.monotonic() - started < 20
    results = out["results"]
    assert {r.fault.category for r in results} == {"single", "concurrent"}
    s = m.summarize(results, out["false"], out["hours"])
    assert s["faults"] == len(results) and 0.0 <= s["recall"] <= 1.0
    assert s["recall"] > 0.5, "the pipeline found almost nothing: the harness is broken"
    assert out["hours"] == pytest.approx((2700 + len(run.cases) * 3000) / 3600)
