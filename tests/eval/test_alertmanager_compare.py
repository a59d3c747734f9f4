"""The Alertmanager comparison: what Prometheus would post, how notifications are counted, and one
timeline through the real Alertmanager (skipped when it is not installed)."""
from __future__ import annotations

import math
import time

import orjson
import pytest

from detectors.records import Alert, rfc3339
from evaluation import alertmanager as am
from evaluation.metrics import FaultTruth

T0 = 1_767_225_600.0
S = am.Settings()


def alert(status, at, *, svc="db", metric="db.cpu", starts=None, severity="warning", labels=(), fp=None, summary=""):
    return Alert(fp or f"{svc}/{metric}", status, svc, metric, f"{svc}/{metric}", labels, 1.0, 1.0, 0.0,
                 starts_at=starts if starts is not None else at, at=at, severity=severity, summary=summary)


def sends_of(alerts, start, until, **kw):
    return [(s.at, [(dict(p.labels)["alertname"], p.starts_at, p.ends_at) for p in s.alerts])
            for s in am.prometheus_sends(alerts, start=start, until=until, settings=am.Settings(**kw))]


# --- what Prometheus posts ------------------------------------------------------------------------

def test_labels_are_an_alerting_rules_with_the_node_as_instance():
    a = alert("firing", 0, svc="cart", metric="rpc.duration", labels=(("host.name", "n-1"), ("k8s.pod", "p")),
              severity="critical")
    assert am.am_labels(a) == (("alertname", "rpc.duration"), ("instance", "n-1"), ("k8s_pod", "p"),
                               ("service", "cart"), ("severity", "critical"))


def test_a_firing_alert_is_sent_at_once_then_after_each_resend_delay_with_ends_at_four_delays_ahead():
    got = sends_of([alert("firing", 100, starts=80)], 100, 300)
    # Prometheus re-sends when last_sent + resend_delay is strictly before now: 100, 170, 240.
    assert got == [(100, [("db.cpu", 80, 340)]), (170, [("db.cpu", 80, 410)]), (240, [("db.cpu", 80, 480)])]


def test_a_resolved_alert_is_sent_with_its_resolution_time_and_re_sent_for_the_retention():
    got = sends_of([alert("firing", 100), alert("resolved", 130)], 100, 400, resolved_retention=120)
    assert got == [(100, [("db.cpu", 100, 340)]), (130, [("db.cpu", 100, 130)]), (200, [("db.cpu", 100, 130)])]
    # after 130 + 120 s the rule forgets it: nothing more


def test_repeated_firing_events_change_nothing_and_a_refire_after_resolution_is_a_new_alert():
    evs = [alert("firing", 100, starts=90), alert("firing", 110, starts=90, severity="critical"),
           alert("resolved", 120), alert("firing", 150, starts=140, severity="critical")]
    sends = am.prometheus_sends(evs, start=100, until=150, settings=S)
    assert [(s.at, [(dict(p.labels)["severity"], p.starts_at, p.ends_at) for p in s.alerts]) for s in sends] == [
        (100, [("warning", 90, 340)]), (120, [("warning", 90, 120)]), (150, [("critical", 140, 390)])]


def test_alerts_due_at_one_evaluation_go_in_one_batch():
    evs = [alert("firing", 100, svc="a"), alert("firing", 100, svc="b"), alert("firing", 105, svc="c")]
    sends = am.prometheus_sends(evs, start=100, until=110, settings=S)
    assert [(s.at, sorted(dict(p.labels)["service"] for p in s.alerts)) for s in sends] == [(100, ["a", "b"]), (110, ["c"])]


def test_the_posted_json_is_prometheus_v2_postable_alerts_in_wall_time():
    p = am.Postable((("alertname", "db.cpu"), ("service", "db")), (("summary", "hot"),), starts_at=T0, ends_at=T0 + 240)
    got = am.postable_json(p, lambda t: 1000.0 + (t - T0) / 20)
    assert got == {"labels": {"alertname": "db.cpu", "service": "db"}, "annotations": {"summary": "hot"},
                   "startsAt": "1970-01-01T00:16:40.000000Z", "endsAt": "1970-01-01T00:16:52.000000Z",
                   "generatorURL": "http://127.0.0.1:9090/graph"}


def test_the_config_scales_every_timer_and_groups_by_service():
    cfg = am.am_config(am.Settings(speedup=20), "http://127.0.0.1:9/x")
    assert cfg["route"] == {"receiver": "webhook", "group_by": ["service"], "group_wait": "1500ms",
                            "group_interval": "3000ms", "repeat_interval": "720000ms"}
    assert cfg["global"] == {"resolve_timeout": "15000ms"}
    assert cfg["receivers"] == [{"name": "webhook", "webhook_configs": [{"url": "http://127.0.0.1:9/x", "send_resolved": True}]}]


def test_settings_follow_the_pipelines_correlation_timers():
    from streams.config import load_topology
    from evaluation.run import TOPOLOGIES

    s = am.Settings.of(load_topology(TOPOLOGIES / "online-boutique.yaml"), speedup=10)
    assert (s.group_wait, s.group_interval, s.repeat_interval, s.speedup) == (30.0, 60.0, 14400.0, 10)


# --- reading and counting notifications ---------------------------------------------------------------

WEBHOOK = {  # the version 4 example of integrations.md (c), trimmed
    "version": "4", "groupKey": '{}:{service="db"}', "truncatedAlerts": 0, "status": "firing", "receiver": "webhook",
    "groupLabels": {"service": "db"}, "commonLabels": {"service": "db"}, "commonAnnotations": {},
    "externalURL": "http://am:9093",
    "alerts": [{"status": "firing", "labels": {"alertname": "db.cpu", "service": "db"}, "annotations": {},
                "startsAt": "2026-01-01T00:00:10.5+00:00", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": "3fff2c2d7595e046"}]}


def test_a_webhook_payload_maps_back_to_event_time():
    n = am.notification_of(WEBHOOK, T0 + 12.0, lambda w: 5000.0 + (w - T0) * 20, "case01")
    assert (n.slice, n.at, n.status, n.group_key) == ("case01", 5240.0, "firing", '{}:{service="db"}')
    assert n.alerts == (am.Notified("db", "firing", 5210.0, "db.cpu"),)


@pytest.mark.parametrize("text,want", [
    ("2026-01-01T00:00:00Z", T0),
    ("2026-01-01T00:00:00.25Z", T0 + 0.25),
    ("2026-01-01T01:00:00.000000001+01:00", T0),
])
def test_go_times_parse(text, want):
    assert am.parse_time(text) == pytest.approx(want)


def note(at, services_starts, status="firing", key=None, sl="s"):
    alerts = tuple(am.Notified(s, "firing" if status == "firing" else "resolved", T0 + t) for s, t in services_starts)
    return am.Notification(sl, T0 + at, status, key or f"{{}}:{{service={services_starts[0][0]!r}}}", alerts)


def fault(id_, svc, start, end, related=()):
    return FaultTruth(id_, svc, "errors", T0 + start, T0 + end, frozenset(related))


@pytest.mark.parametrize("start_offset,svc,want", [
    (-60, "db", True),  # MATCH_BEFORE before the start, inclusive
    (-61, "db", False),
    (600, "db", True),  # the fault's end, inclusive
    (601, "db", False),
    (10, "api", True),  # a caller of the faulted service
    (10, "web", False),  # unrelated
])
def test_a_notification_belongs_to_a_fault_by_window_and_service(start_offset, svc, want):
    f = fault("f", "db", 0, 600, related=("api",))
    assert am.belongs(f, note(700, [(svc, start_offset)])) is want


def test_noise_windows_claim_nothing():
    noise = FaultTruth("n", None, "noise", T0, T0 + 40)
    assert not am.belongs(noise, note(30, [("db", 5)]))


def test_concurrent_faults_prefer_the_one_the_notification_names():
    a, b = fault("a", "db", 0, 600, related=("api",)), fault("b", "cache", 0, 600, related=("api",))
    ns = [note(40, [("db", 10)]), note(50, [("api", 10)]), note(60, [("cache", 20)])]
    assert am.match_notifications([a, b], ns) == {"a": [0, 1], "b": [1, 2]}


def rec(id_, version, status, opened, updated, services=("db",)):
    return {"id": id_, "version": version, "status": status, "opened_at": rfc3339(T0 + opened),
            "updated_at": rfc3339(T0 + updated), "services": list(services), "root_causes": [{"service": "db"}]}


def test_counting_per_fault_on_both_sides():
    f1, f2 = fault("f1", "db", 0, 600, related=("api",)), fault("f2", "db", 3000, 3600, related=("api",))
    noise = FaultTruth("n", None, "noise", T0 + 6000, T0 + 6040)
    ns = [note(40, [("db", 10)]), note(50, [("api", 20)], key="api"), note(110, [("api", 20), ("api", 60)], key="api"),
          note(700, [("db", 10)], status="resolved"),
          note(6010, [("db", 6005)]),  # the noise spike: no fault's
          note(3200, [("db", 2000)])]  # started long before f2: not f2's
    records = [rec("i1", 1, "open", 10, 40), rec("i1", 2, "open", 10, 100), rec("i1", 3, "resolved", 10, 1000),
               rec("i2", 1, "open", 6005, 6040)]
    rows = am.count([f1, f2, noise], ns, records)
    assert [(r.fault, r.am_firing, r.am_resolved, r.am_groups, r.ours_open, r.ours_resolved, r.ours_incidents) for r in rows] == [
        ("f1", 3, 1, 2, 2, 1, 1), ("f2", 0, 0, 0, 0, 0, 0)]
    assert (rows[0].am_delay, rows[0].ours_delay, rows[1].am_delay) == (40.0, 40.0, None)
    assert [n.at - T0 for n in am.unmatched([f1, f2, noise], ns)] == [6010.0, 3200.0]


def test_our_silent_records_reach_no_receiver_and_are_counted_apart():
    f1 = fault("f1", "db", 0, 600, related=("api",))
    records = [dict(rec("i1", 1, "open", 10, 40), notification="page"),
               dict(rec("i1", 2, "open", 10, 100, services=("api", "db")), notification="silent"),
               dict(rec("i1", 3, "open", 10, 160), notification="update"),
               dict(rec("i1", 4, "open", 10, 400), notification="silent"),
               dict(rec("i1", 5, "resolved", 10, 700), notification="resolve")]
    [r] = am.count([f1], [], records)
    assert (r.ours_open, r.ours_resolved, r.ours_incidents, r.ours_silent) == (2, 1, 1, 2)


def row(am_firing, ours_open, am_resolved=0, ours_resolved=0):
    return am.FaultCount("f", "single", "db", am_firing, am_resolved, min(am_firing, 1), 30.0 if am_firing else None,
                         ours_open, ours_resolved, min(ours_open, 1), 30.0 if ours_open else None)


@pytest.mark.parametrize("rows,ratio,passed", [
    ([row(10, 2), row(5, 1)], 5.0, True),
    ([row(9, 2)], 4.5, False),
    ([row(10, 1), row(10, 0)], 10.0, False),  # fewer notifications, but a fault Alertmanager caught we missed
    ([row(10, 1), row(0, 1)], 10.0, True),  # per *detected* fault on each side
])
def test_the_verdict_wants_five_times_fewer_at_equal_or_better_recall(rows, ratio, passed):
    s = am.summarize(rows)
    assert (s["ratio"], s["pass"]) == (ratio, passed)


def test_nothing_detected_is_nan_and_fails():
    s = am.summarize([row(0, 0)])
    assert math.isnan(s["ratio"]) and s["pass"] is False


def test_fault_cases_are_sampled_evenly_and_noise_is_kept():
    from types import SimpleNamespace as C

    cases = [C(roots=("a",)) if i % 4 else C(roots=()) for i in range(12)]  # noise at 0, 4, 8
    assert am.pick(cases, 3) == [0, 1, 4, 6, 8, 11]
    assert am.pick(cases, None) == list(range(12))
    assert am.pick(cases, 0) == [0, 4, 8]


def test_a_slice_keeps_its_window_and_runs_a_tail_past_the_last_event():
    evs = [alert("firing", 95), alert("resolved", 300), alert("firing", 5000)]
    sl = am.make_slice("x", evs, window=(0, 1000), settings=S, tail=200)
    assert (sl.start, sl.end, len(sl.alerts)) == (80, 500, 2)
    assert am.make_slice("y", evs, window=(1000, 2000), settings=S, tail=200).alerts == ()


def test_the_core_with_alerts_gives_run_cores_incidents():
    import numpy as np

    from evaluation.core import run_core
    from evaluation.run import TOPOLOGIES
    from streams import simulate as sim
    from streams.config import load_topology
    from streams.simulate import Fault, Scenario

    topo = load_topology(TOPOLOGIES / "online-boutique.yaml")
    scen = Scenario("errors:cartservice", (Fault("cartservice", "errors", 0, 300),), start=1200, duration=300,
                    recovery=600, root_cause="cartservice")
    with np.errstate(over="ignore"):
        msgs = sim.simulate(topo, [scen], seed=3).requests
    core, alerts = am.core_with_alerts(topo, msgs)
    assert core.incidents == run_core(topo, msgs).incidents
    assert core.alerts == sum(1 for a in alerts if a.status == "firing") > 0


def test_without_alertmanager_the_comparison_says_skipped(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(am.shutil, "which", lambda name: None)
    monkeypatch.setattr(am.os, "access", lambda path, mode: False)
    assert am.find_alertmanager() is None
    assert am.main(["--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "skipped: alertmanager not installed"
    assert orjson.loads((tmp_path / "results.json").read_bytes()) == {"skipped": "skipped: alertmanager not installed"}


# --- the real Alertmanager -------------------------------------------------------------------------

def test_real_alertmanager_groups_by_service_on_a_scaled_timeline():
    """Push at t=100: api/m1 and db/m3, api/m2 at t=110; db resolves at 160, api at 220.
    Want one firing notification per service at group_wait (t=130), db's resolved one at the
    next group_interval tick (190) and api's at the one after its resolution (250)."""
    binary = am.find_alertmanager()
    if binary is None:
        pytest.skip(am.SKIPPED)
    b = T0
    evs = [alert("firing", b + 100, svc="api", metric="m1"), alert("firing", b + 100, svc="db", metric="m3"),
           alert("firing", b + 110, svc="api", metric="m2"), alert("resolved", b + 160, svc="db", metric="m3"),
           alert("resolved", b + 220, svc="api", metric="m1"), alert("resolved", b + 220, svc="api", metric="m2")]
    settings = am.Settings(speedup=30)
    sl = am.make_slice("tiny", evs, window=(b, b + 1000), settings=settings, tail=100)
    started = time.monotonic()
    runs, notes = am.run_slices(binary, [sl], settings)
    assert runs[0].error is None and time.monotonic() - started < 25
    got = sorted(((n.status, n.group_key, len(n.alerts)), n.at - b) for n in notes)
    assert [g for g, _ in got] == [("firing", '{}:{service="api"}', 2), ("firing", '{}:{service="db"}', 1),
                                   ("resolved", '{}:{service="api"}', 2), ("resolved", '{}:{service="db"}', 1)]
    # each within a few event seconds (a fraction of a wall second) of its timer
    for (_, at), want in zip(got, (130, 130, 250, 190)):
        assert want - 3 <= at <= want + 6, got
    rows = am.count([fault("api", "api", 100, 400), fault("db", "db", 100, 400)], notes, [])
    assert [(r.fault, r.am_firing, r.am_resolved, r.am_groups) for r in rows] == [("api", 1, 1, 1), ("db", 1, 1, 1)]
