"""Root-cause ranking over the call graph."""
import networkx as nx

import pytest

from correlators.rca import classify_metric, propagation_path, rank_root_causes, suspect_missing_edge
from detectors.records import Alert


def alert(service, metric, t, score=0.99, labels=()):
    return Alert("fp-" + service + metric, "firing", service, metric, f"{service}/{metric}", labels, score, 1.0, 0.1, t, t)


SHOP = nx.DiGraph([("frontend", "checkout"), ("checkout", "orders"), ("orders", "orders-db"),
                   ("checkout", "payments"), ("payments", "payment-gateway"), ("payment-gateway", "card-network")])
SHOP.nodes["frontend"]["entrypoint"] = True
SHOP.nodes["card-network"]["kind"] = "external"


def services(rcs):
    return [rc.service for rc in rcs]


def test_the_deepest_explaining_service_ranks_first_with_its_chain():
    rcs = rank_root_causes(SHOP, [
        alert("frontend", "http.server.errors.rate", 60), alert("checkout", "http.server.request.duration.p95", 40),
        alert("orders", "http.server.request.duration.p95", 20), alert("orders-db", "db.client.connections.utilization", 0)])
    assert services(rcs)[0] == "orders-db"
    assert rcs[0].kind == "saturation"
    assert rcs[0].path == ("orders-db", "orders", "checkout", "frontend")
    assert rcs[0].evidence[0].series == "orders-db/db.client.connections.utilization"
    assert 0 < sum(rc.score for rc in rcs) <= 1.0001


def test_a_silent_external_dependency_is_named_when_it_explains_its_callers():
    rcs = rank_root_causes(SHOP, [alert("payment-gateway", "http.server.errors.rate", 0)])
    assert "card-network" in services(rcs)
    cn = next(rc for rc in rcs if rc.service == "card-network")
    assert cn.kind == "unobserved"
    assert cn.path == ("card-network", "payment-gateway")


def test_a_healthy_observed_dependency_is_not_blamed():
    rcs = rank_root_causes(SHOP, [alert("checkout", "http.server.request.duration.p95", 0)], observed={"orders", "payments"})
    assert services(rcs) == ["checkout"]


def test_only_known_or_alerting_services_are_named():
    rcs = rank_root_causes(SHOP, [alert("mystery", "cpu", 0), alert("orders", "http.server.errors.rate", 5)])
    assert set(services(rcs)) <= {"mystery", "orders", "orders-db"} | set(SHOP)


def test_the_graph_is_not_mutated():
    g = SHOP.copy()
    rank_root_causes(g, [alert("orders", "http.server.errors.rate", 0)])
    assert nx.utils.graphs_equal(g, SHOP)


def test_classify_metric():
    assert classify_metric("system.filesystem.utilization") == "saturation"
    assert classify_metric("db.client.connections.utilization") == "saturation"
    # CPU rises with any load: a resource signal, not saturation proper
    assert classify_metric("process.cpu.utilization") == "resource"
    assert classify_metric("process.memory.usage") == "resource"
    assert classify_metric("http.server.errors.rate") == "errors"
    assert classify_metric("http.server.request.duration.mean") == "latency"
    assert classify_metric("http.server.requests.rate") == "traffic"


def test_propagation_path_prefers_an_affected_entrypoint():
    assert propagation_path(SHOP, "orders-db", {"orders", "checkout", "frontend"}) == (
        "orders-db", "orders", "checkout", "frontend")
    assert propagation_path(SHOP, "orders-db", set()) == ("orders-db",)


def test_a_traffic_surge_does_not_blame_every_busy_dependency():
    # Traffic x3 at the entry point: every callee gets busier (traffic, CPU), but only the
    # orders path fails. The failing pool explains the failures; busy payments does not.
    surge = [alert(s, "http.server.requests.rate", 0) for s in ("frontend", "checkout", "orders", "payments",
                                                                "payment-gateway", "orders-db")]
    busy = [alert(s, "process.cpu.utilization", 10) for s in ("payments", "payment-gateway", "checkout")]
    failing = [alert("orders-db", "db.client.connections.utilization", 10),
               alert("orders", "http.server.request.duration.p95", 30),
               alert("checkout", "http.server.errors.rate", 60), alert("frontend", "http.server.errors.rate", 70)]
    rcs = rank_root_causes(SHOP, surge + busy + failing)
    assert services(rcs)[0] == "orders-db"
    assert rcs[0].path == ("orders-db", "orders", "checkout", "frontend")


def test_a_silent_dependency_outranks_a_caller_that_only_fails_on_every_node():
    rcs = rank_root_causes(SHOP, [alert("payment-gateway", "http.server.errors.rate", 0),
                                  alert("payments", "http.server.errors.rate", 20)])
    assert services(rcs)[0] == "card-network"
    assert rcs[0].path == ("card-network", "payment-gateway", "payments")


def test_a_failure_on_one_node_stays_with_the_caller():
    node = (("host.name", "gw-2"),)
    rcs = rank_root_causes(SHOP, [alert("payment-gateway", "http.server.errors.rate", 0, labels=node),
                                  alert("payments", "http.server.errors.rate", 20)])
    assert services(rcs)[0] == "payment-gateway"


def test_a_busy_caller_does_not_make_its_silent_dependency_the_cause():
    # the caller's own resource signal explains it; the silent dependency is not first
    rcs = rank_root_causes(SHOP, [alert("payment-gateway", "process.cpu.utilization", 0),
                                  alert("payment-gateway", "http.server.errors.rate", 5)])
    assert services(rcs)[0] == "payment-gateway"


def surge_alert(service, t, value=300.0, expected=100.0):
    return Alert("fp-surge-" + service, "firing", service, "http.server.requests.rate",
                 f"{service}/http.server.requests.rate", (), 0.99, value, expected, t, t)


def test_a_surge_at_the_entry_point_is_a_leading_candidate_when_nothing_ran_out():
    # load slows every service below the entry point at once, on both branches
    g = SHOP.copy()
    g.add_edge("payments", "payments-db")
    rcs = rank_root_causes(g, [surge_alert("frontend", 0)] + [
        alert(svc, "http.server.request.duration.p95", 30)
        for svc in ("checkout", "orders", "orders-db", "payments", "payments-db")])
    surge = next(rc for rc in rcs if rc.service == "frontend")
    assert surge.kind == "traffic" and rcs.index(surge) < 3 and surge.path == ("frontend",)


def test_a_resource_that_ran_out_under_a_surge_stays_first_and_the_surge_is_a_candidate():
    full = Alert("fp-pool", "firing", "orders-db", "db.client.connections.utilization",
                 "orders-db/db.client.connections.utilization", (), 0.99, 1.0, 0.3, 10, 10)
    rcs = rank_root_causes(SHOP, [surge_alert("frontend", 0), full,
                                  alert("orders", "http.server.errors.rate", 30),
                                  alert("checkout", "http.server.errors.rate", 40),
                                  alert("frontend", "http.server.errors.rate", 50)])
    assert services(rcs)[0] == "orders-db"
    assert next(rc for rc in rcs if rc.service == "frontend").kind == "traffic"  # listed as the trigger


def test_a_recent_change_makes_a_service_the_likely_cause_and_is_its_evidence():
    from correlators.records import Change

    failing = [alert("checkout", "http.server.errors.rate", 100), alert("orders", "http.server.errors.rate", 100)]
    without = rank_root_causes(SHOP, failing)
    assert services(without)[0] == "orders"
    deploy = Change("deploy-42", "checkout", "deploy", 40.0, "checkout v2.3.1")
    rcs = rank_root_causes(SHOP, failing, changes=[deploy])
    assert services(rcs)[0] == "checkout"
    assert rcs[0].evidence[0].metric == "change.deploy" and "v2.3.1" in rcs[0].evidence[0].detail


def test_a_change_long_before_is_not_evidence():
    from correlators.records import Change

    failing = [alert("checkout", "http.server.errors.rate", 10_000), alert("orders", "http.server.errors.rate", 10_000)]
    rcs = rank_root_causes(SHOP, failing, changes=[Change("d1", "checkout", "deploy", 0.0)], change_window=3600)
    assert services(rcs)[0] == "orders"


def test_a_changed_dependency_that_looks_healthy_is_a_candidate():
    from correlators.records import Change

    rcs = rank_root_causes(SHOP, [alert("orders", "http.server.errors.rate", 100)],
                           changes=[Change("cfg-7", "orders-db", "config", 90.0, "max_connections 100 -> 20")])
    cand = next(rc for rc in rcs if rc.service == "orders-db")
    assert cand.kind == "change" and cand.evidence[0].detail.startswith("config cfg-7")


# --- suspecting a call missing from the graph ------------------------------------------------------

ERR, LAT, POOL, CPU = ("http.server.errors.rate", "http.server.request.duration.p95",
                       "db.client.connections.utilization", "process.cpu.utilization")
#   web -> api ; worker -> db ; the graph lacks api -> db
STALE = nx.DiGraph([("web", "api"), ("worker", "db")])


def suspect(caller_alerts, callee_alerts, g=STALE, caller="api", callee="db", **kw):
    return suspect_missing_edge(g, caller_alerts, callee_alerts, caller=caller, callee=callee,
                                **{"window": 300.0, "min_lag": 10.0, "max_hops": 2, **kw})


def test_the_caller_that_failed_after_the_callee_is_suspected_with_its_lag():
    e = suspect([alert("api", ERR, 140)], [alert("db", ERR, 100)], related_incident="inc-db")
    assert (e.caller, e.callee, e.lag_s, e.related_incident, e.merged) == ("api", "db", 40.0, "inc-db", False)
    assert e.reason == "api started failing (errors) 40s after db (errors) with no declared path between them and no cause of its own"


def test_a_cause_below_explains_any_symptom_above():
    e = suspect([alert("api", LAT, 140), alert("api", ERR, 150)], [alert("db", POOL, 100)])
    assert (e.caller, e.callee, e.lag_s) == ("api", "db", 40.0)
    assert "(errors, latency)" in e.reason and "(saturation)" in e.reason


def test_the_direction_follows_the_onsets():
    # db failing after api is not db calling api... unless asked that way round
    assert suspect([alert("api", ERR, 100)], [alert("db", ERR, 140)]) is None
    e = suspect([alert("db", ERR, 140)], [alert("api", ERR, 100)], caller="db", callee="api")
    assert (e.caller, e.callee) == ("db", "api")


@pytest.mark.parametrize("why, caller_alerts, callee_alerts, kw", [
    ("same onset", [alert("api", ERR, 100)], [alert("db", ERR, 100)], {}),
    ("under min_lag", [alert("api", ERR, 105)], [alert("db", ERR, 100)], {}),
    ("beyond window", [alert("api", ERR, 500)], [alert("db", ERR, 100)], {}),
    ("caller has a resource signal", [alert("api", ERR, 140), alert("api", CPU, 140)], [alert("db", ERR, 100)], {}),
    ("caller has a saturation signal", [alert("api", ERR, 140), alert("api", POOL, 150)], [alert("db", ERR, 100)], {}),
    ("caller's symptom is not the callee's", [alert("api", LAT, 140)], [alert("db", ERR, 100)], {}),
    ("callee no longer fires", [alert("api", ERR, 140)],
     [Alert("fp-db", "resolved", "db", ERR, "db/" + ERR, (), 0.99, 1.0, 0.1, 100, 130)], {}),
    ("no alert of the caller", [alert("web", ERR, 140)], [alert("db", ERR, 100)], {}),
    ("unknown service", [alert("ghost", ERR, 140)], [alert("db", ERR, 100)], {"caller": "ghost"}),
])
def test_independent_faults_are_not_taken_for_a_missing_call(why, caller_alerts, callee_alerts, kw):
    assert suspect(caller_alerts, callee_alerts, **kw) is None, why


def test_a_declared_call_or_path_is_never_suspected():
    direct = nx.DiGraph([("api", "db")])
    far = nx.DiGraph([("api", "a"), ("a", "b"), ("b", "c"), ("c", "db")])
    for g in (direct, far):
        assert suspect([alert("api", ERR, 140)], [alert("db", ERR, 100)], g=g, max_hops=0) is None


def test_services_within_max_hops_are_the_correlators_business_not_a_missing_call():
    # api and db share a caller (2 hops apart, undirected): they would have been grouped
    g = nx.DiGraph([("web", "api"), ("web", "db")])
    assert suspect([alert("api", ERR, 140)], [alert("db", ERR, 100)], g=g, max_hops=2) is None
    assert suspect([alert("api", ERR, 140)], [alert("db", ERR, 100)], g=g, max_hops=1) is not None
