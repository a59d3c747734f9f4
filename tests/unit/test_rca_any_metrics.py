"""The right cause first, on metrics named any way.

Real metrics are named ``CpuUsageRate(%)``, ``PodServerLatencyP90(s)``, ``SyscallRead``: the kind
of a signal is used where :func:`classify_metric` can tell it, and everywhere else the ranking
rests on what the data says: whose own series departed first and furthest from normal, whether
its dependencies are healthy, which readings are one shared series (a node's) seen through
several services.
"""
import networkx as nx
import pytest

from correlators.rca import alert_kind, classify_metric, departure, rank_root_causes, shared_series
from detectors.records import Alert

#   gw -> a, b, c (an entry point calling every service);  a -> a-db
G = nx.DiGraph([("gw", "a"), ("gw", "b"), ("gw", "c"), ("a", "a-db")])
G.nodes["gw"]["entrypoint"] = True


def alert(service, metric, t=0.0, value=2.0, expected=1.0, score=0.99, pod=None):
    labels = (("k8s.pod.name", pod or f"{service}-7d9f-x1"),)
    return Alert(f"fp-{service}-{metric}", "firing", service, metric, f"{service}/{metric}", labels, score, value,
                 expected, t, t)


def top(alerts, g=G):
    return [rc.service for rc in rank_root_causes(g, alerts)]


def test_departure_is_unit_free_and_symmetric():
    assert departure(alert("a", "X", value=10.0, expected=1.0)) == pytest.approx(0.99 * 0.9)
    assert departure(alert("a", "X", value=1.0, expected=10.0)) == pytest.approx(0.99 * 0.9)
    assert departure(alert("a", "X", value=34.1, expected=33.4)) < 0.03  # a memory series drifting
    assert departure(alert("a", "X", value=0.0, expected=0.0)) == 0.0
    assert departure(alert("a", "X", value=float("nan"), expected=1.0)) == 0.99


def test_the_service_that_departed_furthest_ranks_first_whatever_its_metrics_are_called():
    # the entry point shows both (it calls both); a's own series rose tenfold, b's by 3 %
    alerts = [alert("gw", "PodServerLatencyP90(s)", value=4.0, expected=0.5),
              alert("a", "SyscallWrite", value=900.0, expected=90.0), alert("b", "SyscallWrite", value=93.0, expected=90.0)]
    assert top(alerts)[0] == "a"
    alerts[1:] = [alert("a", "SyscallWrite", value=93.0, expected=90.0), alert("b", "SyscallWrite", value=900.0, expected=90.0)]
    assert top(alerts)[0] == "b"


def test_the_service_that_departed_first_ranks_first():
    alerts = [alert("gw", "LatencyP90(s)", 60, value=4.0, expected=0.5),
              alert("a", "Workload(Ops)", 0, value=1.0, expected=10.0), alert("b", "Workload(Ops)", 240, value=1.0, expected=10.0)]
    assert top(alerts)[0] == "a"


def test_a_service_whose_dependencies_also_fail_is_not_the_root():
    # gw -> a -> a-db, all with series of no known kind: a-db explains a and gw, a explains gw
    alerts = [alert("gw", "Foo", 0, value=5.0), alert("a", "Foo", 0, value=5.0), alert("a-db", "Foo", 0, value=5.0)]
    rcs = rank_root_causes(G, alerts)
    assert [rc.service for rc in rcs][:3] == ["a-db", "a", "gw"]
    assert rcs[0].path == ("a-db", "a", "gw")


def test_a_pods_cpu_contention_is_its_services_not_its_nodes_or_neighbours():
    # a's pod gets its CPU taken: its own CPU rises, its node's CPU (reported with every pod on
    # the node: a, b and c) rises the same, and its neighbour b is a little slower
    node = [alert(s, "NodeCpuUsageRate(%)", 0, value=71.0, expected=22.5) for s in ("a", "b", "c")]
    alerts = node + [alert("a", "CpuUsageRate(%)", 0, value=98.0, expected=20.0),
                     alert("b", "PodServerLatencyP90(s)", 0, value=0.012, expected=0.010),
                     alert("gw", "PodServerLatencyP90(s)", 60, value=0.9, expected=0.3)]
    assert shared_series(alerts) == frozenset(a.fingerprint for a in node)
    rcs = rank_root_causes(G, alerts)
    assert rcs[0].service == "a" and rcs[0].kind == "resource"
    # its evidence is its own series first; the node's follows, named as shared
    assert [e.metric for e in rcs[0].evidence] == ["CpuUsageRate(%)", "NodeCpuUsageRate(%)"]
    assert rcs[0].evidence[1].detail.endswith("the same readings under a, b, c")


def test_when_a_shared_series_is_all_there_is_each_service_sharing_it_is_a_suspect():
    # the node's CPU fell under two pods, and the entry point fails: either may be the cause
    node = [alert(s, "NodeCpuUsageRate(%)", 0, value=2.0, expected=5.0) for s in ("a", "b")]
    rcs = rank_root_causes(G, node + [alert("gw", "SuccessRate(%)", 60, value=23.0, expected=100.0)])
    assert {"a", "b"} <= {rc.service for rc in rcs}


def test_equal_readings_of_one_metric_under_several_services_are_one_shared_series():
    x = [alert(s, "NodeNetworkReceiveBytes", 0, value=7.87e4, expected=2.523e4) for s in ("a", "b")]
    other = alert("c", "NodeNetworkReceiveBytes", 0, value=7.87e4, expected=2.6e4)  # another forecast
    idle = [alert(s, "Errors", 0, value=1.0, expected=0.0) for s in ("a", "b")]  # an idle count: too common
    assert shared_series(x + [other] + idle) == frozenset(a.fingerprint for a in x)


def test_kinds_where_the_name_tells_them():
    assert classify_metric("CpuUsageRate(%)") == "resource"
    assert classify_metric("MemoryUsage(Mi)") == "resource"
    assert classify_metric("PodServerLatencyP90(s)") == "latency"
    assert classify_metric("SuccessRate(%)") == "errors"  # falls when requests fail
    assert classify_metric("log.template.new") == "errors"  # the log detector's error templates
    assert classify_metric("log.template.rate") == "errors"
    assert classify_metric("span.duration.p95") == "latency"
    assert classify_metric("span.requests.rate") == "traffic"
    assert classify_metric("SyscallRead") == "anomaly"  # nothing tells: the data decides


def test_a_resource_used_less_than_normal_ran_out_of_nothing():
    assert alert_kind(alert("a", "CpuUsageRate(%)", value=2.0, expected=30.0)) == "traffic"
    assert alert_kind(alert("a", "CpuUsageRate(%)", value=90.0, expected=30.0)) == "resource"


def test_a_cause_with_no_caller_failing_still_ranks_first():
    # only the root's CPU and unrelated memory drifts elsewhere: nothing fails for it to explain
    alerts = [alert("b", "CpuUsageRate(%)", 0, value=99.0, expected=2.0),
              alert("a", "MemoryUsage(Mi)", 0, value=3.4e8, expected=3.3e8), alert("c", "MemoryUsage(Mi)", 0, value=1.1e8, expected=1.0e8)]
    assert top(alerts)[0] == "b"


def test_a_new_error_log_template_names_the_callee_not_its_caller():
    # gw -> a -> a-db: a-db logs a new error template, a logs one too a little later (its calls fail)
    alerts = [alert("a-db", "log.template.new", 0, value=0.0167, expected=0.0),
              alert("a", "log.template.new", 30, value=0.0167, expected=0.0)]
    rcs = rank_root_causes(G, alerts)
    assert rcs[0].service == "a-db" and rcs[0].kind == "errors"
    assert rcs[0].evidence[0].metric == "log.template.new"


def test_span_durations_that_rose_at_a_service_and_not_below_it_name_the_service():
    # a's own span durations rose fivefold; a-db's spans are fine (no alert), only its memory
    # drifted a little: a is slow by itself
    alerts = [alert("gw", "span.duration.p95", 30, value=2.5, expected=0.5),
              alert("a", "span.duration.p95", 0, value=2.4, expected=0.45),
              alert("a-db", "MemoryUsage(Mi)", 0, value=3.4e8, expected=3.3e8)]
    assert top(alerts)[0] == "a"
    # when a-db's spans rose first, a-db is the cause
    alerts[2] = alert("a-db", "span.duration.p95", 0, value=2.0, expected=0.02)
    assert top(alerts)[0] == "a-db"


def test_each_ranked_cause_carries_the_evidence_that_ranked_it():
    alerts = [alert("gw", "PodServerLatencyP90(s)", 60, value=4.0, expected=0.5),
              alert("a", "SyscallWrite", 0, value=900.0, expected=90.0)]
    for rc in rank_root_causes(G, alerts):
        assert rc.evidence and all(e.series.startswith(rc.service + "/") for e in rc.evidence)


def call_alert(caller, callee, t=0.0, value=0.175, expected=0.005, metric="CallLatencyP50(s)"):
    """A caller's latency of calls to ``callee``, labelled as client instrumentation and meshes do."""
    return Alert(f"fp-{caller}-{callee}", "firing", caller, metric, f"{caller}/{metric}{{peer={callee}}}",
                 (("peer.service", callee),), 0.99, value, expected, t, t)


def test_latency_of_calls_to_a_named_service_points_at_that_service():
    # A delay on b's network: the entry point's calls to b slow down, b's own series show nothing.
    # The series names b (peer.service), so b ranks first, not the caller and not a or c.
    assert top([call_alert("gw", "b")])[0] == "b"
    # The same with the caller's other, unlabelled latency up too (it waited on b).
    assert top([call_alert("gw", "b"), alert("gw", "PodServerLatencyP90(s)", t=30.0)])[0] == "b"
    rc = rank_root_causes(G, [call_alert("gw", "b")])[0]
    assert rc.kind == "latency" and rc.evidence and "calls to b" in rc.evidence[0].detail


def test_a_named_callee_with_a_cause_of_its_own_is_still_the_cause():
    # a's CPU ran out and gw's calls to a slowed: a, with its own evidence.
    got = top([call_alert("gw", "a", t=30.0), alert("a", "CpuUsageRate(%)", value=95.0, expected=20.0)])
    assert got[0] == "a"


def test_a_peer_label_on_what_is_not_a_rising_latency_names_nobody():
    # Fewer bytes to a peer, or a peer that is the series' own service, is no evidence about a callee.
    assert top([call_alert("gw", "b", metric="NetworkTransmitBytes", value=1.0, expected=5.0),
                alert("gw", "PodServerLatencyP90(s)")])[0] == "gw"
    assert top([call_alert("gw", "gw")])[0] == "gw"
