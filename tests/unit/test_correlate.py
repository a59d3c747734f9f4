"""The correlator as timelines: push alerts at t, expect incident updates at t'."""
from dataclasses import replace

import networkx as nx
import pytest

from correlators.config import CorrelationSettings, NotifySettings
from correlators.correlate import Correlator
from detectors.records import Alert, Heartbeat

#   frontend -> checkout -> orders -> orders-db ;  search -> search-db  (a disjoint part)
GRAPH = nx.DiGraph([("frontend", "checkout"), ("checkout", "orders"), ("orders", "orders-db"), ("search", "search-db")])
GRAPH.nodes["frontend"].update(entrypoint=True, tier=1)
# No page hold here: these timelines are about grouping and the lifecycle; the hold has its own tests.
CFG = CorrelationSettings(group_wait=30, group_interval=60, resolve_after=300, window=900, max_hops=2,
                          reopen_within=1800, repeat_interval=14400, notify=NotifySettings(hold={}))


def alert(service, t, status="firing", metric="http.server.request.duration.p95", starts_at=None, score=0.99,
          severity="critical"):
    series = f"{service}/{metric}"
    # Each series its own forecast: equal readings under two services would be one shared series.
    expected = 0.2 + sum(map(ord, series)) % 89 / 10_000
    return Alert(fingerprint="fp-" + series, status=status, service=service, metric=metric, series=series, labels=(),
                 score=score, value=2.0, expected=expected, starts_at=starts_at if starts_at is not None else t, at=t,
                 severity=severity)


def run(timeline, cfg=CFG):
    c = Correlator(GRAPH, cfg)
    out = []
    for ev in timeline:
        out += c.ingest([ev])
    return c, out


def test_related_alerts_form_one_incident_after_group_wait():
    _, out = run([alert("orders-db", 100, metric="db.client.connections.utilization"), alert("orders", 110),
                  alert("checkout", 120), Heartbeat(129), Heartbeat(131)])
    assert [(i.version, i.status, i.reason) for i in out] == [(1, "open", "opened")]
    inc = out[0]
    assert inc.services == ("checkout", "orders", "orders-db")
    assert inc.alert_count == 3
    assert inc.root_causes[0].service == "orders-db"
    assert inc.root_causes[0].path == ("orders-db", "orders", "checkout")
    assert inc.opened_at == 100


def test_disjoint_parts_of_the_graph_stay_separate():
    _, out = run([alert("orders-db", 100), alert("search-db", 105), Heartbeat(200)])
    assert sorted(i.services for i in out) == [("orders-db",), ("search-db",)]
    assert len({i.id for i in out}) == 2


def test_services_beyond_max_hops_stay_separate():
    # orders-db and frontend are 3 hops apart, but frontend calls orders-db: its failure is orders-db's
    _, out = run([alert("orders-db", 100), alert("frontend", 101), Heartbeat(200), Heartbeat(300)])
    assert len({i.id for i in out}) == 1 and out[-1].services == ("frontend", "orders-db")
    # two services 3 hops apart that do not call each other (b and d under a common caller)
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "d")])
    c = Correlator(g, CFG)
    out = c.ingest([alert("c", 100), alert("d", 101), Heartbeat(200)])
    assert sorted(i.services for i in out) == [("c",), ("d",)]


def test_duplicates_change_nothing():
    a = alert("orders", 100)
    c, out = run([a, a, Heartbeat(131), a, Heartbeat(400), a])
    assert [(i.version, i.reason) for i in out] == [(1, "opened")]
    assert c.stats["duplicates"] == 3


def test_updates_wait_for_group_interval_and_carry_why():
    c, out = run([alert("orders", 100), Heartbeat(131), alert("checkout", 140), Heartbeat(150), Heartbeat(191),
                  alert("orders", 200, status="resolved", starts_at=100), Heartbeat(252),
                  alert("checkout", 260, status="resolved", starts_at=140), Heartbeat(320)])
    # orders resolving while checkout still fails changes nothing a responder acts on: no record
    assert [(i.version, i.reason, i.updated_at) for i in out] == [
        (1, "opened", 131), (2, "alerts_added", 191), (3, "alerts_resolved", 260)]
    assert out[-1].firing_count == 0 and c.stats["quiet_updates"] == 1


def test_resolves_after_the_quiet_period_in_event_time():
    _, out = run([alert("orders", 100), Heartbeat(131), alert("orders", 200, status="resolved", starts_at=100),
                  Heartbeat(499), Heartbeat(501)])
    assert [(i.status, i.reason) for i in out][-1] == ("resolved", "resolved")
    assert out[-1].resolved_at == 500
    assert out[-1].firing_count == 0


def test_recurrence_soon_after_resolution_reopens_the_same_incident():
    # the recurrence is grouped like any new alert; at group_wait its root cause is the resolved one's
    _, out = run([alert("orders", 100), Heartbeat(131), alert("orders", 200, status="resolved", starts_at=100),
                  Heartbeat(501), alert("orders", 900, starts_at=890), Heartbeat(901), Heartbeat(931)])
    assert [(i.status, i.reason) for i in out] == [
        ("open", "opened"), ("open", "alerts_resolved"), ("resolved", "resolved"), ("open", "reopened")]
    assert len({i.id for i in out}) == 1
    assert [i.version for i in out] == [1, 2, 3, 4]


def test_a_new_failure_after_the_reopen_window_is_a_new_incident():
    _, out = run([alert("orders", 100), Heartbeat(131), alert("orders", 200, status="resolved", starts_at=100),
                  Heartbeat(501), alert("orders", 5000, starts_at=5000), Heartbeat(5031)])
    assert len({i.id for i in out}) == 2


def test_incident_id_is_derived_from_data():
    _, a = run([alert("orders", 100), Heartbeat(131)])
    _, b = run([alert("orders", 100), Heartbeat(131)])
    assert a[0].id == b[0].id and a[0].id.startswith("inc-")


def test_priority_grows_with_severity_tier_and_blast_radius():
    _, small = run([alert("search-db", 100, severity="warning"), Heartbeat(200)])
    _, big = run([alert("orders-db", 100), alert("orders", 101), alert("checkout", 102), alert("frontend", 103),
                  Heartbeat(200)])
    assert small[0].priority == "P4"
    assert big[0].priority == "P1"


def test_unchanged_open_incident_is_repeated_after_repeat_interval():
    cfg = CorrelationSettings(group_wait=30, repeat_interval=3600, notify=NotifySettings(hold={}))
    _, out = run([alert("orders", 100), Heartbeat(131), Heartbeat(3730), Heartbeat(3732)], cfg)
    assert [i.reason for i in out] == ["opened", "repeat"]


@pytest.mark.parametrize("late", [10, 200])
def test_time_never_goes_backwards(late):
    c, _ = run([Heartbeat(1000), alert("orders", late), Heartbeat(500)])
    assert c.now == 1000


def test_groups_started_together_merge_before_anyone_is_notified():
    # orders-db and frontend are 3 hops apart, so their simultaneous alerts start two groups;
    # checkout is near both, so the groups are one incident before group_wait ends.
    _, out = run([alert("orders-db", 100), alert("frontend", 100), alert("checkout", 110), Heartbeat(131)])
    assert [(i.version, i.services) for i in out] == [(1, ("checkout", "frontend", "orders-db"))]


def test_a_notified_incident_is_never_merged_away():
    # web calls both a and c; a's and c's incidents are both sent before web's alert arrives
    g = nx.DiGraph([("web", "a"), ("web", "c"), ("a", "a-db"), ("c", "c-db")])
    c = Correlator(g, CFG)
    out = []
    for ev in [alert("a-db", 100), alert("c-db", 100), Heartbeat(131), alert("web", 140), Heartbeat(300)]:
        out += c.ingest([ev])
    assert len({i.id for i in out}) == 2  # web joins the older one; neither vanishes


def test_a_downstream_symptom_joins_its_dependency_incident_instead_of_paging():
    # frontend is 3 hops above orders-db (beyond max_hops) but calls it: inhibited into its incident
    c, out = run([alert("orders-db", 100), Heartbeat(131), alert("frontend", 140), Heartbeat(300)])
    assert len({i.id for i in out}) == 1 and "frontend" in out[-1].services
    assert c.stats["inhibited"] == 1


def test_group_by_labels_keep_environments_apart():
    cfg = CFG.model_copy(update={"group_by": ["env"]})
    prod = replace(alert("orders-db", 100), labels=(("env", "prod"),))
    staging = replace(alert("orders", 101), fingerprint="fp-staging", labels=(("env", "staging"),))
    _, out = run([prod, staging, Heartbeat(200)], cfg=cfg)
    assert len({i.id for i in out}) == 2


def test_a_silenced_alert_opens_nothing_is_counted_and_an_open_incident_still_resolves():
    from datetime import datetime, timezone

    from correlators.config import Silence

    window = Silence(id="maint-1", service="orders*", starts_at=datetime.fromtimestamp(150, timezone.utc),
                     ends_at=datetime.fromtimestamp(2000, timezone.utc), created_by="alice", comment="db upgrade")
    cfg = CFG.model_copy(update={"silences": [window]})
    opened = alert("orders-db", 100)
    c, out = run([opened, Heartbeat(131), alert("orders", 200), replace(opened, status="resolved", at=300),
                  Heartbeat(700)], cfg=cfg)
    assert [i.status for i in out][-1] == "resolved"  # the window does not hold a resolution back
    assert all("orders" not in i.services for i in out)  # the silenced alert joined nothing
    assert c.stats["silenced"] == 1
    # after the window, the same kind of alert pages again
    c2, out2 = run([replace(alert("orders", 2100), fingerprint="fp-late")], cfg=cfg)
    assert c2.stats["silenced"] == 0

def test_the_first_page_waits_a_little_while_two_causes_are_neck_and_neck():
    # two datastores under one caller, equally anomalous at group_wait: hold the page up to
    # settle_wait; the pool that keeps getting worse breaks the tie
    g = nx.DiGraph([("web", "db-a"), ("web", "db-b")])
    pool = "db.client.connections.utilization"
    a = replace(alert("db-a", 100, metric=pool), value=0.55)
    b = replace(alert("db-b", 100, metric=pool), value=0.56)  # equal readings would be one shared series
    worse = replace(a, at=140, value=0.95)
    c = Correlator(g, CFG)
    out = []
    for ev in [a, b, alert("web", 105), Heartbeat(131), worse, Heartbeat(150), Heartbeat(170)]:
        out += c.ingest([ev])
    assert [(i.version, i.updated_at) for i in out] == [(1, 140)]  # not at 131: when the tie breaks
    # without a tie, the page goes out at group_wait as usual
    _, plain = run([alert("orders-db", 100, metric=pool), Heartbeat(131)])
    assert [i.updated_at for i in plain] == [131]


# --- which records notify (correlation.notify) ----------------------------------------------------

def settings(**kw):
    return CorrelationSettings(**{**CFG.model_dump(), **kw})


def test_only_what_a_responder_acts_on_notifies_the_rest_is_published_silent():
    # orders pages at P3; checkout joining changes the services but not the priority: silent;
    # frontend (an entry point, tier 1) joining raises it to P1: a re-notification; everything
    # quiet while the incident waits out resolve_after: silent; resolved: a notification.
    _, out = run([alert("orders", 100), Heartbeat(131), alert("checkout", 140), Heartbeat(191),
                  alert("frontend", 200), Heartbeat(251),
                  *(alert(s, 300, status="resolved", starts_at=t) for s, t in (("orders", 100), ("checkout", 140),
                                                                                ("frontend", 200))),
                  Heartbeat(361), Heartbeat(700)])
    assert [(i.version, i.reason, i.priority, i.notification) for i in out] == [
        (1, "opened", "P3", "page"), (2, "alerts_added", "P3", "silent"), (3, "alerts_added", "P1", "update"),
        (4, "alerts_resolved", "P1", "silent"), (5, "resolved", "P1", "resolve")]


def test_growth_compares_with_the_last_notification_not_the_last_record():
    # One service at a time: never services_added at once, but three since the page is material.
    cfg = settings(notify=NotifySettings(renotify_on=["services_added"], services_added=2, hold={}))
    _, out = run([alert("orders-db", 100), Heartbeat(131), alert("orders", 140), Heartbeat(191),
                  alert("checkout", 200), Heartbeat(251)], cfg)
    assert [(len(i.services), i.notification) for i in out] == [(1, "page"), (2, "silent"), (3, "update")]


def test_any_update_makes_every_record_a_notification():
    cfg = settings(notify=NotifySettings(renotify_on=["any_update"], hold={}))
    _, out = run([alert("orders", 100), Heartbeat(131), alert("checkout", 140), Heartbeat(191)], cfg)
    assert [i.notification for i in out] == ["page", "update"]


def test_a_reopened_incident_pages_again_and_repeats_count_from_the_last_notification():
    _, out = run([alert("orders", 100), Heartbeat(131), alert("orders", 200, status="resolved", starts_at=100),
                  Heartbeat(501), alert("orders", 900, starts_at=890), Heartbeat(931)])
    assert [i.notification for i in out] == ["page", "silent", "resolve", "page"]
    cfg = settings(repeat_interval=3600)
    c, out = run([alert("orders", 100), Heartbeat(131), alert("checkout", 140), Heartbeat(191), Heartbeat(3730),
                  Heartbeat(3732)], cfg)
    # the silent update at 191 does not push the reminder back (to 3791): it is due 3600 s after the page
    assert [(i.reason, i.notification, i.updated_at) for i in out] == [
        ("opened", "page", 131), ("alerts_added", "silent", 191), ("repeat", "update", 3732)]
    assert c.stats["notifications"] == 2


HELD = settings(notify=NotifySettings(hold={"P2": 120, "P3": 180}))


def test_a_failure_that_spreads_pages_once_at_the_priority_it_reached():
    # The same timeline as above with P3 held 3 minutes: orders opens at P3 (published, silent),
    # frontend joining makes it P1 within the hold: the one page says P1.
    _, out = run([alert("orders", 100), Heartbeat(131), alert("checkout", 140), Heartbeat(191),
                  alert("frontend", 200), Heartbeat(251),
                  *(alert(s, 300, status="resolved", starts_at=t) for s, t in (("orders", 100), ("checkout", 140),
                                                                                ("frontend", 200))),
                  Heartbeat(361), Heartbeat(700)], HELD)
    assert [(i.version, i.reason, i.priority, i.notification) for i in out] == [
        (1, "opened", "P3", "silent"), (2, "alerts_added", "P3", "silent"), (3, "alerts_added", "P1", "page"),
        (4, "alerts_resolved", "P1", "silent"), (5, "resolved", "P1", "resolve")]


def test_a_held_incident_pages_when_its_hold_elapses_and_a_p1_pages_at_once():
    c, out = run([alert("orders", 100), Heartbeat(131), Heartbeat(310), Heartbeat(311), Heartbeat(400)], HELD)
    assert [(i.reason, i.notification, i.updated_at) for i in out] == [
        ("opened", "silent", 131), ("hold_elapsed", "page", 311)]
    assert c.stats["notifications"] == 1
    _, p1 = run([alert("frontend", 100), Heartbeat(131)], HELD)
    assert [(i.priority, i.notification) for i in p1] == [("P1", "page")]


def test_an_incident_that_recovers_within_its_hold_pages_nobody():
    _, out = run([alert("orders", 100), Heartbeat(131), alert("orders", 200, status="resolved", starts_at=100),
                  Heartbeat(320), Heartbeat(501)], HELD)
    assert [(i.reason, i.notification) for i in out] == [
        ("opened", "silent"), ("alerts_resolved", "silent"), ("resolved", "silent")]


def test_a_reopened_incident_is_held_again_from_its_reopening():
    _, out = run([alert("orders", 100), Heartbeat(131), Heartbeat(311), alert("orders", 400, status="resolved",
                  starts_at=100), Heartbeat(701), alert("orders", 900, starts_at=890), Heartbeat(931),
                  Heartbeat(1111)], HELD)
    assert [(i.reason, i.notification, i.updated_at) for i in out] == [
        ("opened", "silent", 131), ("hold_elapsed", "page", 311), ("alerts_resolved", "silent", 400),
        ("resolved", "resolve", 700), ("reopened", "silent", 931), ("hold_elapsed", "page", 1111)]


# --- calls missing from the topology (correlation.suspect_edges) ----------------------------------

#   web -> api ;  worker -> db   (the real call api -> db is missing from the graph)
STALE = nx.DiGraph([("web", "api"), ("worker", "db")])
ERR = "http.server.errors.rate"


def stale_run(timeline, **edges):
    cfg = CFG.model_copy(update={"suspect_edges": CFG.suspect_edges.model_copy(update=edges)})
    c = Correlator(STALE, cfg)
    out = []
    for ev in timeline:
        out += c.ingest([ev])
    return c, out


# db fails at 100; api (its undeclared caller) 40 s later, then web above it
MISSING_EDGE = [alert("db", 100, metric=ERR), alert("worker", 130, metric=ERR), alert("api", 140, metric=ERR),
                alert("web", 150, metric=ERR), Heartbeat(171), Heartbeat(250), Heartbeat(400)]


def test_a_missing_call_is_suspected_on_both_incidents_with_direction_lag_and_each_other():
    c, out = stale_run(MISSING_EDGE, merge=False)
    last = {i.id: i for i in out}
    assert len(last) == 2
    db_inc = next(i for i in last.values() if i.root_causes[0].service == "db")
    api_inc = next(i for i in last.values() if i.root_causes[0].service == "api")
    [e] = api_inc.suspected_edges
    assert (e.caller, e.callee, e.lag_s, e.related_incident, e.merged) == ("api", "db", 40.0, db_inc.id, False)
    assert "40s after db" in e.reason
    # the callee's incident learns it in an update of its own (silent: it got no worse)
    [d] = db_inc.suspected_edges
    assert (d.caller, d.callee, d.related_incident) == ("api", "db", api_inc.id)
    assert db_inc.reason == "edge_suspected" and db_inc.notification == "silent"
    assert c.stats["suspected_edges"] == 1 and c.stats["edge_merges"] == 0


def test_with_merge_the_callers_alerts_join_the_callees_incident_ranked_through_the_suspected_call():
    c, out = stale_run(MISSING_EDGE, merge=True)
    assert len({i.id for i in out}) == 1
    inc = out[-1]
    assert inc.services == ("api", "db", "web", "worker")
    assert inc.root_causes[0].service == "db"
    assert inc.root_causes[0].path == ("db", "api", "web")
    [e] = inc.suspected_edges
    assert (e.caller, e.callee, e.related_incident, e.merged) == ("api", "db", inc.id, True)
    assert c.stats["edge_merges"] == 1


@pytest.mark.parametrize("why, api_alerts", [
    ("same instant: no order", [alert("api", 100, metric=ERR)]),
    ("closer than min_lag", [alert("api", 105, metric=ERR)]),
    ("beyond the window", [alert("api", 100 + 301, metric=ERR)]),
    ("a cause of its own", [alert("api", 140, metric=ERR), alert("api", 141, metric="process.cpu.utilization")]),
    ("another symptom than the callee's", [alert("api", 140)]),  # latency, while db only has errors
])
def test_two_independent_faults_in_disjoint_parts_are_not_taken_for_a_missing_call(why, api_alerts):
    c, out = stale_run([alert("db", 100, metric=ERR), *api_alerts, Heartbeat(171), Heartbeat(500), Heartbeat(700)])
    assert len({i.id for i in out}) == 2, why
    assert all(not i.suspected_edges for i in out), why
    assert c.stats["suspected_edges"] == 0


def test_disabled_it_suspects_and_merges_nothing():
    c, out = stale_run(MISSING_EDGE, enabled=False)
    assert len({i.id for i in out}) == 2
    assert all(not i.suspected_edges for i in out)
    assert c.stats["suspected_edges"] == 0


def test_a_declared_call_is_never_suspected():
    # api -> db declared but 3 hops away (beyond max_hops): db's incident is still pending when
    # api's alert arrives, so api opens its own group; a known path is no missing call.
    g = nx.DiGraph([("api", "x"), ("x", "y"), ("y", "db")])
    cfg = CFG.model_copy(update={"max_hops": 1})
    c = Correlator(g, cfg)
    out = []
    for ev in [alert("db", 100, metric=ERR), alert("api", 120, metric=ERR), Heartbeat(151), Heartbeat(400)]:
        out += c.ingest([ev])
    assert all(not i.suspected_edges for i in out)
    assert c.stats["suspected_edges"] == 0


@pytest.mark.parametrize("section, message", [
    ({"window": "0s"}, "correlation.suspect_edges.window: must be a positive duration such as '5m' (got 0)"),
    ({"window": "1m", "min_lag": "2m"}, "correlation.suspect_edges: min_lag (120s) must be shorter than window (60s)"),
    ({"merg": True}, "correlation.suspect_edges.merg: unknown key 'merg'"),
])
def test_suspect_edges_config_is_validated_with_paths(section, message):
    from streams.config import ConfigError, parse_topology

    with pytest.raises(ConfigError) as err:
        parse_topology({"services": {"a": {}}, "correlation": {"suspect_edges": section}})
    assert message in str(err.value)


def test_suspect_edges_defaults():
    s = CorrelationSettings().suspect_edges
    assert (s.enabled, s.window.total_seconds(), s.min_lag.total_seconds()) == (True, 300, 10)


def test_a_redelivered_alert_of_a_resolved_incident_opens_nothing():
    first = alert("orders", 100)
    c, out = run([first, Heartbeat(131), alert("orders", 200, status="resolved", starts_at=100), Heartbeat(501),
                  first, Heartbeat(600), Heartbeat(700)])
    assert [(i.status, i.reason) for i in out] == [("open", "opened"), ("open", "alerts_resolved"),
                                                   ("resolved", "resolved")]
    assert c.stats["duplicates"] == 1 and c.stats["incidents"] == 1


def test_propagation_window_and_reopen_within_defaults():
    s = CorrelationSettings()
    assert (s.propagation_window.total_seconds(), s.reopen_within.total_seconds()) == (300, 0)


def test_a_later_symptom_joins_through_a_suspected_call_merged_into_the_incident():
    # api -> db was suspected and merged; a later anomaly of web (which calls api) is that
    # failure spreading through the suspected call, not a second missing call web -> db
    later = alert("web", 250, metric="http.server.request.duration.p95")
    c, out = stale_run(MISSING_EDGE[:-1] + [later, Heartbeat(300), Heartbeat(400)], merge=True)
    assert len({i.id for i in out}) == 1
    assert [(e.caller, e.callee) for e in out[-1].suspected_edges] == [("api", "db")]
    assert c.stats["suspected_edges"] == 1


def test_no_call_is_suspected_when_several_failures_could_each_explain_the_caller():
    # db and cache (no declared path to api) both fail; api's errors follow both: nothing singles
    # one out, so neither call is suspected and api's failure pages on its own
    g = nx.DiGraph([("web", "api"), ("worker", "db"), ("jobs", "cache")])
    cfg = CFG.model_copy(update={"suspect_edges": CFG.suspect_edges.model_copy(update={"merge": True})})
    c = Correlator(g, cfg)
    out = []
    for ev in [alert("db", 100, metric=ERR), alert("cache", 100, metric=ERR), Heartbeat(131),
               alert("api", 150, metric=ERR), Heartbeat(200), Heartbeat(300)]:
        out += c.ingest([ev])
    assert len({i.id for i in out}) == 3
    assert all(not i.suspected_edges for i in out) and c.stats["suspected_edges"] == 0
