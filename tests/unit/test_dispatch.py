"""remediators.dispatch: incident updates to guarded runbook actions and ticket events."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from correlators.records import Evidence, Incident, RootCause
from remediators.dispatch import DispatchState, dispatch, forget
from streams.config import parse_topology

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
MIN = 60.0

# The shipped example's policies and ticket teams, trimmed to what these tests need.
POLICIES = [
    {"name": "db-pool-saturated",
     "match": {"cause": "saturation", "metric": "db.client.connections.*"},
     "steps": [{"kind": "kubernetes", "target": "deployment/{service}-pooler",
                "params": {"operation": "scale", "replicas": "+1", "max_replicas": 6}}],
     "cooldown": "15m"},
    {"name": "drain-gateway-node",
     "match": {"root_cause_service": "payment-gateway", "cause": "errors", "labels": {"host.name": "*"},
               "priority": ["P1", "P2"]},
     "steps": [{"kind": "http",
                "target": "https://lb-admin.payments.internal/v1/pools/payment-gateway/nodes/{host.name}/drain",
                "params": {"method": "POST"}},
               {"kind": "kafka", "target": "ops.traffic-control",
                "params": {"command": "reroute", "service": "{service}", "away_from": "{host.name}",
                           "incident": "{incident_id}"}}],
     "cooldown": "30m"},
    {"name": "compress-old-logs",
     "match": {"cause": "saturation", "metric": "system.filesystem.*"},
     "steps": [{"kind": "exec", "target": "runbooks/compress-old-logs.sh",
                "params": {"host": "{service}", "args": "{mountpoint}"}}],
     "cooldown": "1h"},
]
DRAIN_URL = "https://lb-admin.payments.internal/v1/pools/payment-gateway/nodes/{}/drain"


def topology(*, dry_run: bool | None = None, policies: list | None = None, tickets: dict | None = None):
    remediation: dict = {"policies": POLICIES if policies is None else policies}
    if dry_run is not None:
        remediation["dry_run"] = dry_run
    return parse_topology({
        "services": {"checkout": {"depends_on": ["orders-db", "payment-gateway"], "owner": "team-shop"},
                     "orders-db": {"owner": "team-db"}, "payment-gateway": {"owner": "team-payments"},
                     "log-host": {"owner": "team-platform"}},
        "remediation": remediation,
        "tickets": tickets if tickets is not None else {
            "default_team": "sre",
            "teams": {"team-db": {"assignee": "db-oncall"}, "team-payments": {"assignee": "payments-oncall"},
                      "team-web": {"sink": "jira"}}},
    })


TOPO = topology()


def ev(metric: str, **labels: str) -> Evidence:
    lab = tuple(sorted(labels.items()))
    return Evidence(series=f"x/{metric}", metric=metric, score=0.99, value=1.0, expected=0.5, at=T0, labels=lab)


def rc(service: str, kind: str, *evidence: Evidence) -> RootCause:
    return RootCause(service=service, score=0.9, kind=kind, path=(service,), evidence=evidence)


def incident(*root_causes: RootCause, id: str = "inc-1", version: int = 1, status: str = "open",
             priority: str = "P2", owner: str | None = None, at: float = T0, reason: str = "opened") -> Incident:
    return Incident(id=id, version=version, status=status, reason=reason, opened_at=T0, updated_at=at,
                    resolved_at=at if status == "resolved" else None, title="something is wrong",
                    priority=priority, severity="critical", services=("checkout",), alert_count=2, firing_count=2,
                    fingerprints=("f1", "f2"), root_causes=root_causes, owner=owner)


DB = rc("orders-db", "saturation", ev("db.client.connections.utilization", pool="main"))
GW = rc("payment-gateway", "errors", ev("http.server.requests.errors.rate", **{"host.name": "gw-2"}))
DISK = rc("log-host", "saturation", ev("system.filesystem.utilization", mountpoint="/var"))


def actions_of(inc: Incident, topo=TOPO, state: DispatchState | None = None):
    _, actions, _ = dispatch(state or DispatchState(), inc, topology=topo)
    return actions


# --- matching and templating -------------------------------------------------------------------

@pytest.mark.parametrize("inc, want", [
    (incident(DB), [("db-pool-saturated", "kubernetes", "deployment/orders-db-pooler",
                     (("max_replicas", "6"), ("operation", "scale"), ("replicas", "+1")))]),
    (incident(GW, priority="P1"), [
        ("drain-gateway-node", "http", DRAIN_URL.format("gw-2"), (("method", "POST"),)),
        ("drain-gateway-node", "kafka", "ops.traffic-control",
         (("away_from", "gw-2"), ("command", "reroute"), ("incident", "inc-1"), ("service", "payment-gateway")))]),
    (incident(DISK, priority="P4"), [("compress-old-logs", "exec", "runbooks/compress-old-logs.sh",
                                      (("args", "/var"), ("host", "log-host")))]),
], ids=["db-pool", "drain-node", "compress-logs"])
def test_a_policy_matching_the_top_root_cause_plans_its_steps(inc, want):
    got = actions_of(inc)
    assert [(a.policy, a.kind, a.target, a.params) for a in got] == want
    assert [a.step for a in got] == list(range(len(want)))
    assert all(a.incident_id == inc.id and a.incident_version == inc.version and a.at == inc.updated_at for a in got)


@pytest.mark.parametrize("inc", [
    incident(GW, priority="P3"),  # priority not in [P1, P2]
    incident(rc("payments", "errors", ev("http.server.requests.errors.rate", **{"host.name": "gw-2"}))),  # service
    incident(rc("payment-gateway", "errors", ev("http.server.requests.errors.rate"))),  # no host.name label
    incident(rc("orders-db", "latency", ev("db.client.connections.utilization"))),  # cause
    incident(rc("orders-db", "saturation", ev("db.client.operation.duration.p95"))),  # evidence metric
    incident(rc("log-host", "saturation", ev("system.filesystem.utilization"))),  # template needs {mountpoint}
    incident(rc("checkout", "latency", ev("http.server.duration.p95")), DB),  # only the top root cause counts
    incident(DB, status="resolved", version=2),
    incident(),  # no root cause
], ids=["priority", "service", "labels", "cause", "metric", "missing-template-label", "top-only", "resolved",
        "no-root-cause"])
def test_no_action_unless_every_given_field_matches(inc):
    assert actions_of(inc) == []


def test_evidence_labels_match_by_glob():
    topo = topology(policies=[{"name": "p", "match": {"labels": {"host.name": "gw-*"}},
                               "steps": [{"kind": "exec", "target": "drain {host.name}"}]}])
    assert [a.target for a in actions_of(incident(GW), topo)] == ["drain gw-2"]
    other = rc("payment-gateway", "errors", ev("m", **{"host.name": "db-1"}))
    assert actions_of(incident(other), topo) == []


def test_the_first_matching_policy_wins():
    both = [{"name": "first", "match": {"cause": "saturation"}, "steps": [{"kind": "exec", "target": "a"}]},
            {"name": "second", "steps": [{"kind": "exec", "target": "b"}]}]
    assert [a.policy for a in actions_of(incident(DB), topology(policies=both))] == ["first"]
    assert [a.policy for a in actions_of(incident(GW), topology(policies=both))] == ["second"]


def test_targets_take_labels_from_the_matching_evidence_first():
    topo = topology(policies=[{"name": "p", "match": {"metric": "disk.*"},
                               "steps": [{"kind": "exec", "target": "clean {host.name}:{mountpoint}"}]}])
    cause = rc("log-host", "saturation",
               ev("cpu.util", **{"host.name": "not-this-one"}),
               ev("disk.util", **{"host.name": "h1", "mountpoint": "/var"}),
               ev("disk.util", **{"host.name": "h2", "mountpoint": "/"}))
    assert [a.target for a in actions_of(incident(cause), topo)] == ["clean h1:/var"]


# --- dry run, approval ---------------------------------------------------------------------------

@pytest.mark.parametrize("global_dry_run, policy_dry_run, risky, want", [
    (None, None, False, ("dry_run", "planned")),  # dry_run is the default
    (None, None, True, ("dry_run", "planned")),  # nothing awaits approval that will not run
    (False, None, False, ("execute", "planned")),
    (False, None, True, ("execute", "awaiting_approval")),
    (False, True, True, ("dry_run", "planned")),  # the policy overrides
    (True, False, False, ("execute", "planned")),
])
def test_dry_run_and_approval(global_dry_run, policy_dry_run, risky, want):
    policy = {"name": "p", "steps": [{"kind": "exec", "target": "restart {service}", "risky": risky}]}
    if policy_dry_run is not None:
        policy["dry_run"] = policy_dry_run
    [a] = actions_of(incident(DB), topology(dry_run=global_dry_run, policies=[policy]))
    assert (a.mode, a.decision) == want
    assert a.reason.startswith("saturation on orders-db matched policy p: ")


# --- cooldown -------------------------------------------------------------------------------------

def test_cooldown_per_policy_and_target():
    state = DispatchState()
    state, [a], _ = dispatch(state, incident(DB, id="inc-a", at=T0), topology=TOPO)
    assert a.decision == "planned"
    # Another incident on the same target within 15m: recorded as skipped, with the reason.
    state, [b], _ = dispatch(state, incident(DB, id="inc-b", at=T0 + 10 * MIN), topology=TOPO)
    assert (b.decision, b.target) == ("skipped", "deployment/orders-db-pooler")
    assert b.reason.endswith("cooldown on deployment/orders-db-pooler until 2023-11-14T22:28:20.000Z")
    # A different target is not cooling down.
    other = rc("catalog-db", "saturation", ev("db.client.connections.utilization"))
    state, [c], _ = dispatch(state, incident(other, id="inc-c", at=T0 + 10 * MIN), topology=TOPO)
    assert (c.decision, c.target) == ("planned", "deployment/catalog-db-pooler")
    # The skip did not extend the cooldown: at 15m it is over.
    state, [d], _ = dispatch(state, incident(DB, id="inc-d", at=T0 + 15 * MIN), topology=TOPO)
    assert d.decision == "planned"


def test_cooldown_is_per_policy():
    twins = [{"name": n, "match": {"cause": c}, "steps": [{"kind": "exec", "target": "restart {service}"}]}
             for n, c in (("on-saturation", "saturation"), ("on-errors", "errors"))]
    topo = topology(policies=twins)
    state, [a], _ = dispatch(DispatchState(), incident(rc("x", "saturation"), id="i1"), topology=topo)
    state, [b], _ = dispatch(state, incident(rc("x", "errors"), id="i2", at=T0 + MIN), topology=topo)
    assert (a.decision, b.decision) == ("planned", "planned") and a.target == b.target == "restart x"


def test_steps_of_one_plan_on_the_same_target_do_not_cool_each_other_down():
    policy = {"name": "p", "steps": [{"kind": "kubernetes", "target": "deployment/{service}",
                                      "params": {"operation": "scale"}},
                                     {"kind": "kubernetes", "target": "deployment/{service}",
                                      "params": {"operation": "rollout-restart"}}]}
    got = actions_of(incident(DB), topology(policies=[policy]))
    assert [a.decision for a in got] == ["planned", "planned"]


# --- idempotency ---------------------------------------------------------------------------------

def test_a_redelivered_update_produces_nothing_new():
    inc = incident(GW, priority="P1")
    state, actions, tickets = dispatch(DispatchState(), inc, topology=TOPO)
    assert len(actions) == 2 and [t.event for t in tickets] == ["create"]
    again, actions2, tickets2 = dispatch(state, inc, topology=TOPO)
    assert (actions2, tickets2) == ([], [])
    assert again == state


def test_later_updates_do_not_replan_the_same_steps():
    state, first, _ = dispatch(DispatchState(), incident(DB, version=1), topology=TOPO)
    state, second, tickets = dispatch(state, incident(DB, version=2, at=T0 + MIN, reason="alerts_added"),
                                      topology=TOPO)
    assert len(first) == 1 and second == [] and [t.event for t in tickets] == ["update"]


def test_action_ids_derive_from_data():
    a1 = actions_of(incident(GW, priority="P1"))
    a2 = actions_of(incident(GW, priority="P1"))
    b = actions_of(incident(GW, priority="P1", id="inc-2"))
    assert [a.id for a in a1] == [a.id for a in a2]
    assert len({a.id for a in a1 + b}) == 4 and all(a.id.startswith("act-") for a in a1 + b)


def test_dispatch_does_not_mutate_its_inputs():
    state, _, _ = dispatch(DispatchState(), incident(DB, id="inc-a"), topology=TOPO)
    before = copy.deepcopy(state)
    dispatch(state, incident(DB, id="inc-b", at=T0 + 20 * MIN), topology=TOPO)
    assert state == before


# --- tickets -------------------------------------------------------------------------------------

def test_one_create_then_updates_then_resolve():
    timeline = [incident(DB, version=1),
                incident(DB, version=2, at=T0 + MIN, reason="alerts_added"),
                incident(DB, version=2, at=T0 + MIN, reason="alerts_added"),  # redelivered
                incident(DB, version=1),  # replayed out of order
                incident(DB, version=3, at=T0 + 2 * MIN, reason="alerts_resolved"),
                incident(DB, version=4, at=T0 + 9 * MIN, status="resolved", reason="resolved")]
    state, events = DispatchState(), []
    for inc in timeline:
        state, _, tickets = dispatch(state, inc, topology=TOPO)
        events += [(t.event, t.incident_version, t.at) for t in tickets]
    assert events == [("create", 1, T0), ("update", 2, T0 + MIN), ("update", 3, T0 + 2 * MIN),
                      ("resolve", 4, T0 + 9 * MIN)]


def test_a_silent_update_touches_no_ticket_but_still_plans_actions():
    # correlation.notify: a record that notifies nobody must not reach a receiver through the
    # ticket sinks either (a webhook POST, a PagerDuty trigger); the next notifying one carries all.
    state, _, [create] = dispatch(DispatchState(), incident(GW, version=1, reason="opened"), topology=TOPO)
    silent = replace(incident(DB, version=2, at=T0 + MIN, reason="alerts_added"), notification="silent")
    state, actions, tickets = dispatch(state, silent, topology=TOPO)
    assert tickets == [] and actions
    state, _, [upd] = dispatch(state, replace(incident(DB, version=3, at=T0 + 2 * MIN, reason="alerts_added",
                                                       priority="P1"), notification="update"), topology=TOPO)
    quiet = replace(incident(DB, version=4, at=T0 + 3 * MIN, reason="alerts_resolved"), notification="silent")
    state, _, none = dispatch(state, quiet, topology=TOPO)
    state, _, [res] = dispatch(state, replace(incident(DB, version=5, at=T0 + 9 * MIN, status="resolved",
                                                       reason="resolved"), notification="resolve"), topology=TOPO)
    assert none == []
    assert [(t.event, t.incident_version) for t in (create, upd, res)] == [("create", 1), ("update", 3), ("resolve", 5)]


def test_ticket_fields():
    _, actions, [tk] = dispatch(DispatchState(), incident(DB, owner="team-db", priority="P1"), topology=TOPO)
    assert (tk.ticket_key, tk.incident_id, tk.sink, tk.team, tk.assignee, tk.priority) == \
        ("inc-1", "inc-1", "topic", "team-db", "db-oncall", "P1")
    assert tk.title == "[P1] something is wrong"
    assert tk.tags == ("aiops", "p1", "service:checkout")
    assert "1. `orders-db` (saturation, score 0.90): orders-db" in tk.description
    assert "- kubernetes `deployment/orders-db-pooler`: planned (dry_run)" in tk.description
    assert len(actions) == 1


@pytest.mark.parametrize("owner, want", [
    ("team-db", ("team-db", "db-oncall", "topic")),
    ("team-web", ("team-web", None, "jira")),  # the team's own sink
    ("team-unlisted", ("team-unlisted", None, "topic")),
    (None, ("sre", None, "topic")),  # no owner: the default team
])
def test_ticket_team_is_the_owner_else_the_default_team(owner, want):
    _, _, [tk] = dispatch(DispatchState(), incident(DB, owner=owner), topology=TOPO)
    assert (tk.team, tk.assignee, tk.sink) == want


def test_default_team_assignee_comes_from_teams():
    topo = topology(tickets={"default_team": "ops", "teams": {"ops": {"assignee": "ops-oncall"}}})
    _, _, [tk] = dispatch(DispatchState(), incident(DB), topology=topo)
    assert (tk.team, tk.assignee) == ("ops", "ops-oncall")


@pytest.mark.parametrize("min_priority, priority, creates", [
    ("P4", "P4", True), ("P2", "P1", True), ("P2", "P2", True), ("P2", "P3", False), ("P1", "P2", False),
])
def test_min_priority_filters_tickets(min_priority, priority, creates):
    topo = topology(tickets={"min_priority": min_priority})
    _, _, tickets = dispatch(DispatchState(), incident(DB, priority=priority), topology=topo)
    assert [t.event for t in tickets] == (["create"] if creates else [])


def test_an_incident_escalating_past_min_priority_gets_its_ticket_then():
    topo = topology(tickets={"min_priority": "P2"})
    state, _, t1 = dispatch(DispatchState(), incident(DB, priority="P3"), topology=topo)
    state, _, t2 = dispatch(state, incident(DB, priority="P1", version=2, at=T0 + MIN), topology=topo)
    assert t1 == [] and [(t.event, t.priority) for t in t2] == [("create", "P1")]


def test_no_ticket_for_an_incident_first_seen_resolved():
    _, _, tickets = dispatch(DispatchState(), incident(DB, status="resolved", version=3), topology=TOPO)
    assert tickets == []


def test_forget_drops_ticket_records_only_of_the_given_incidents():
    state = DispatchState()
    for i in ("a", "b"):
        state, _, _ = dispatch(state, incident(DB, id=i, at=T0 + 30 * MIN * (i == "b")), topology=TOPO)
    kept = forget(state, {"a"})
    assert set(kept.tickets) == {"b"} and kept.emitted_actions == state.emitted_actions
    # A forgotten incident's actions stay emitted: a late redelivery still plans nothing.
    _, actions, _ = dispatch(kept, incident(DB, id="a"), topology=TOPO)
    assert actions == []


def test_priority_and_template_values_are_available_to_steps():
    topo = topology(policies=[{"name": "p", "steps": [{"kind": "http", "target": "https://x/{incident_id}",
                                                        "params": {"p": "{priority}", "n": 3, "b": True}}]}])
    [a] = actions_of(replace(incident(DB), priority="P3"), topo)
    assert a.target == "https://x/inc-1" and a.params == (("b", "True"), ("n", "3"), ("p", "P3"))
