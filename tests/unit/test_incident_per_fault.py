"""One incident per fault: hand-made alert streams with faults 4 to 9 minutes apart, as on the
Nezha days, on a graph whose entry point calls every service (as Train Ticket's gateway does).

Every service is within two hops of every other through the entry point, so nearness alone
would put every fault of the day into one incident. What keeps them apart is the root cause:
an alert joins an open incident only as that incident's failure spreading (its service calls
the incident's root cause, which still fails, and its anomaly began within
``propagation_window`` of the cause's latest one); anything else is a failure of its own.
"""
import networkx as nx
import pytest

from correlators.config import CorrelationSettings, NotifySettings
from correlators.correlate import Correlator
from detectors.records import Alert, Heartbeat

#   gateway -> every service;  checkout -> cart, currency, email;  cart -> cart-db
HUB = nx.DiGraph([("gateway", s) for s in ("cart", "checkout", "currency", "email", "ads")]
                 + [("checkout", "cart"), ("checkout", "currency"), ("checkout", "email"), ("cart", "cart-db")])
HUB.nodes["gateway"]["entrypoint"] = True
CFG = CorrelationSettings(notify=NotifySettings(hold={}))  # production timings, pages at once
MIN = 60.0
LAT, ERR, CPU = "LatencyP90(s)", "ErrorCount", "CpuUsageRate(%)"


def alert(service, metric, t, *, status="firing", starts_at=None, value=2.0, expected=None):
    series = f"{service}/{metric}"
    # Each series its own forecast: equal readings under two services would be one shared series.
    expected = 0.2 + sum(map(ord, series)) % 89 / 10_000 if expected is None else expected
    return Alert("fp-" + series, status, service, metric, series, (), 0.99 if status == "firing" else 0.0,
                 value, expected, t if starts_at is None else starts_at, t)


def resolved(a: Alert, t: float) -> Alert:
    return Alert(a.fingerprint, "resolved", a.service, a.metric, a.series, a.labels, 0.0, a.expected, a.expected,
                 a.starts_at, t)


def fault(root, at, *callers, metric=LAT, lag=MIN):
    """The root fails at ``at``; each caller shows it one sample later."""
    return [alert(root, metric, at)] + [alert(c, LAT, at + lag) for c in callers]


def replay(events, until, cfg=CFG, graph=HUB):
    """Feed the events in time order with a heartbeat every 10 s (a collection interval) up to
    ``until``; return every record and each incident's last record."""
    c = Correlator(graph, cfg)
    events = sorted(events, key=lambda e: e.at)
    out, t, i = [], 0.0, 0
    while t <= until:
        batch = []
        while i < len(events) and events[i].at <= t:
            batch.append(events[i])
            i += 1
        out += c.ingest(batch + [Heartbeat(t)])
        t += 10.0
    last = {}
    for inc in out:
        last[inc.id] = inc
    return out, last


def root(inc):
    return inc.root_causes[0].service


def test_faults_minutes_apart_under_a_hub_open_one_incident_each_with_its_own_root_cause():
    # cart at 0 (its symptoms still firing when the next fault starts), currency 6 minutes
    # later, email 5 minutes after that: the gateway shows each one, on new series.
    events = (fault("cart", 0, "checkout", "gateway")
              + [alert("currency", LAT, 6 * MIN), alert("checkout", "ClientLatencyP90(s)", 7 * MIN),
                 alert("gateway", "ServerLatencyP90(s)", 7 * MIN)]
              + [alert("email", ERR, 11 * MIN), alert("checkout", ERR, 12 * MIN), alert("gateway", ERR, 12 * MIN)])
    _, last = replay(events, 15 * MIN)
    assert sorted(root(i) for i in last.values()) == ["cart", "currency", "email"]
    by_root = {root(i): i for i in last.values()}
    assert by_root["cart"].opened_at == 0 and by_root["currency"].opened_at == 6 * MIN
    assert by_root["email"].opened_at == 11 * MIN
    # each fault's symptoms are in its own incident, not in the older one that is still open
    assert set(by_root["currency"].services) == {"currency", "checkout", "gateway"}
    assert set(by_root["cart"].services) == {"cart", "checkout", "gateway"}


def test_a_false_incident_on_the_entry_point_does_not_swallow_the_next_fault():
    # a spike on the gateway opens an incident that stays open (its alert keeps firing); four
    # minutes later cart fails: the gateway calls cart, not the other way round
    events = [alert("gateway", "Syscalls", 0)] + fault("cart", 4 * MIN, "checkout")
    _, last = replay(events, 8 * MIN)
    assert sorted(root(i) for i in last.values()) == ["cart", "gateway"]
    cart = next(i for i in last.values() if root(i) == "cart")
    assert cart.opened_at == 4 * MIN and set(cart.services) == {"cart", "checkout"}


@pytest.mark.parametrize("later_min, incidents", [(9, 2), (6, 2), (4, 1)])
def test_a_failure_below_takes_its_callers_symptoms_only_within_the_propagation_window(later_min, incidents):
    # cart-db fails (and still fires); later, checkout and the gateway fail with symptoms only.
    # They call cart-db (through cart), but a failure does not take six minutes to show above
    # it: later than propagation_window (5m) it is a failure of its own. Within it, a symptom
    # of cart-db's failure and a new failure of checkout look the same: it joins.
    events = [alert("cart-db", "PoolUsage", 0), alert("cart", LAT, MIN),
              alert("checkout", ERR, later_min * MIN), alert("gateway", ERR, later_min * MIN)]
    _, last = replay(events, (later_min + 4) * MIN)
    assert len(last) == incidents
    assert min(last.values(), key=lambda i: i.opened_at).root_causes[0].service == "cart-db"
    if incidents == 2:
        assert {root(i) for i in last.values()} == {"cart-db", "checkout"}


def test_symptoms_that_follow_their_cause_within_minutes_join_its_incident():
    events = [alert("cart-db", "PoolUsage", 0), alert("cart", LAT, 2 * MIN), alert("checkout", LAT, 3 * MIN),
              alert("gateway", LAT, 4 * MIN)]
    _, last = replay(events, 8 * MIN)
    [inc] = last.values()
    assert root(inc) == "cart-db"
    assert inc.services == ("cart", "cart-db", "checkout", "gateway")
    assert inc.root_causes[0].path == ("cart-db", "cart", "gateway")  # the gateway calls cart directly


def test_a_new_root_cause_after_the_first_ones_symptoms_cleared_opens_its_own_incident():
    # cart fails at 0 and recovers by 4 min (the incident waits out resolve_after); checkout,
    # which calls cart, fails at 6 min with symptoms only: cart no longer fails, so it is new
    first = fault("cart", 0, "checkout")
    events = first + [resolved(a, 4 * MIN) for a in first] + [alert("checkout", ERR, 6 * MIN)]
    out, last = replay(events, 10 * MIN)
    assert len(last) == 2
    new = next(i for i in last.values() if i.opened_at == 6 * MIN)
    assert new.services == ("checkout",)
    assert [i.alert_count for i in out if i.opened_at == 0][-1] == 2  # the first took nothing new


def test_the_same_service_failing_again_minutes_later_is_a_new_incident():
    # cart fails, recovers, and fails again on the same series 7 minutes after the first onset,
    # while its first incident still waits out resolve_after: a second fault, a second page
    a = alert("cart", LAT, 0)
    events = [a, resolved(a, 3 * MIN), alert("cart", LAT, 7 * MIN)]
    out, last = replay(events, 10 * MIN)
    assert len(last) == 2
    assert sorted(i.opened_at for i in last.values()) == [0, 7 * MIN]
    assert [i.notification for i in out if i.version == 1] == ["page", "page"]


def test_with_reopen_within_the_same_root_cause_failing_again_reopens_its_incident():
    cfg = CFG.model_copy(update={"reopen_within": CorrelationSettings(reopen_within="30m").reopen_within})
    a = alert("cart", LAT, 0)
    events = [a, resolved(a, 3 * MIN), alert("cart", LAT, 12 * MIN)]  # resolved at 8 min, back at 12
    out, last = replay(events, 15 * MIN, cfg=cfg)
    assert len(last) == 1
    assert [i.reason for i in out] == ["opened", "alerts_resolved", "resolved", "reopened"]


def test_an_incident_resolves_when_its_own_alerts_resolve_while_the_system_stays_noisy():
    # cart's failure ends at 3 min; currency keeps failing and new noise keeps arriving elsewhere
    first = fault("cart", 0, "checkout")
    noise = [alert("ads", f"Noise{i}", (2 + 2 * i) * MIN) for i in range(8)]
    events = first + [resolved(a, 3 * MIN) for a in first] + [alert("currency", CPU, 2 * MIN)] + noise
    out, _ = replay(events, 20 * MIN)
    cart = [i for i in out if i.root_causes and root(i) == "cart"]
    assert cart[-1].status == "resolved"
    assert cart[-1].resolved_at == 3 * MIN + CFG.resolve_after.total_seconds()
    assert set(cart[-1].services) == {"cart", "checkout"}


def test_a_cause_of_its_own_on_a_caller_opens_its_own_incident():
    # cart fails; two minutes later checkout's CPU runs out: checkout calls cart, but a resource
    # running out is a cause, not a symptom of cart's failure
    events = fault("cart", 0, "gateway") + [alert("checkout", CPU, 2 * MIN, value=0.99, expected=0.1)]
    _, last = replay(events, 6 * MIN)
    assert sorted(root(i) for i in last.values()) == ["cart", "checkout"]


def test_a_surge_at_the_entry_point_takes_the_load_it_sends_below():
    # requests triple at the gateway; the services below get busy (CPU) a minute later: one
    # incident, whichever busy service ranks first, with the surge among its causes
    events = [alert("gateway", "http.server.requests.rate", 0, value=30.0, expected=10.0)] + [
        alert(s, CPU, MIN, value=0.9, expected=e) for s, e in (("cart", 0.3), ("currency", 0.25))]
    _, last = replay(events, 5 * MIN)
    [inc] = last.values()
    assert ("gateway", "traffic") in {(rc.service, rc.kind) for rc in inc.root_causes}
    assert inc.services == ("cart", "currency", "gateway")


def test_load_a_failing_caller_no_longer_sends_joins_its_incident():
    # checkout fails; a minute later the services it calls see less of everything
    events = [alert("checkout", ERR, 0)] + [alert(s, "Requests", MIN, value=1.0, expected=e)
                                            for s, e in (("cart", 8.0), ("email", 7.5))]
    _, last = replay(events, 5 * MIN)
    [inc] = last.values()
    assert root(inc) == "checkout" and inc.services == ("cart", "checkout", "email")


@pytest.mark.parametrize("gap_min", [4, 5, 6, 7, 8, 9])
def test_a_day_of_faults_gap_minutes_apart_pages_once_per_fault(gap_min):
    # one fault after another on a different service each time, each seen by a caller a minute
    # later; every root still fires when the next fault starts
    roots = ["cart", "currency", "email", "ads", "checkout", "cart-db"]
    seen_by = {"cart-db": "cart"}
    events = []
    for k, r in enumerate(roots):
        t = k * gap_min * MIN
        events += [alert(r, f"Own{k}", t), alert(seen_by.get(r, "gateway"), f"Seen{k}", t + MIN)]
    out, last = replay(events, len(roots) * gap_min * MIN + 5 * MIN)
    assert sorted(root(i) for i in last.values()) == sorted(roots)
    assert sum(1 for i in out if i.notification == "page") == len(roots)


def test_a_call_learned_from_spans_later_is_used_at_once():
    # api -> db is in no declared graph; the traces helper learns it and the stage hands the
    # correlator the new graph (Correlator.reconfigure): api's symptom then joins db's incident
    cfg = CFG.model_copy(update={"suspect_edges": CFG.suspect_edges.model_copy(update={"enabled": False})})
    declared = nx.DiGraph()
    declared.add_nodes_from(["api", "db", "web"])
    learned = declared.copy()
    learned.add_edge("api", "db")

    def run(graph_after):
        c = Correlator(declared, cfg)
        out = c.ingest([alert("db", ERR, 0), Heartbeat(40)])
        c.reconfigure(graph_after, cfg)
        out += c.ingest([alert("api", ERR, 60), Heartbeat(100), Heartbeat(200)])
        return {i.id: i for i in out}

    [inc] = run(learned).values()
    assert inc.services == ("api", "db") and root(inc) == "db"
    assert len(run(declared)) == 2


def test_one_series_seen_through_several_services_is_one_incident():
    # a node's network series reported with each of the three pods on it (the same readings
    # under x, y and z, which have no call between them): one anomaly, one incident
    isolated = nx.DiGraph()
    isolated.add_nodes_from(["x", "y", "z"])
    node = [alert(s, "NodeNetworkReceiveBytes", 0, value=7.87e4, expected=2.52e4) for s in ("x", "y", "z")]
    _, last = replay(node, 3 * MIN, graph=isolated)
    [inc] = last.values()
    assert inc.services == ("x", "y", "z")
    # the same metric with other readings is another series
    other = [alert("x", "NodeNetworkReceiveBytes", 0, value=7.87e4, expected=2.52e4),
             alert("y", "NodeNetworkReceiveBytes", 0, value=7.87e4, expected=3.0e4)]
    _, last = replay(other, 3 * MIN, graph=isolated)
    assert len(last) == 2


def call(caller, callee, t):
    """``caller``'s latency of its calls to ``callee`` (labelled peer.service), risen at ``t``."""
    series = f"{caller}/CallLatencyP50(s){{peer.service={callee}}}"
    return Alert("fp-" + series, "firing", caller, "CallLatencyP50(s)", series, (("peer.service", callee),), 0.99,
                 0.75, 0.004, t, t)


def test_calls_to_another_service_slowing_are_a_failure_of_their_own():
    # cart fails and checkout, which calls cart, shows it: one incident, cart first. Two minutes
    # later checkout's calls to email slow down while cart's failure still fires: checkout calls
    # cart, but the series is about email, which does not call cart, so it opens its own incident
    # with email first.
    events = fault("cart", 0.0, "checkout", metric=CPU) + [call("checkout", "email", 2 * MIN)]
    _, last = replay(events, 10 * MIN)
    tops = sorted(inc.root_causes[0].service for inc in last.values())
    assert tops == ["cart", "email"]


def test_calls_to_the_failing_service_slowing_are_its_failure_spreading():
    events = fault("cart", 0.0, "checkout", metric=CPU) + [call("checkout", "cart", 2 * MIN)]
    _, last = replay(events, 10 * MIN)
    assert [inc.root_causes[0].service for inc in last.values()] == ["cart"]
