"""Guard rails of the dispatcher: approvals, rate limit, concurrency, blast radius, circuit
breaker and verification. Timelines in event time; no clock, no I/O."""
from __future__ import annotations

from dataclasses import replace

from remediators.dispatch import DispatchState, approve, dispatch, expire_and_verify, record_result
from tests.unit.test_dispatch import DB, DISK, GW, MIN, POLICIES, T0, incident, rc, ev, topology


def live(**guards):
    """Execution on (not dry-run), with the given guard settings."""
    topo = topology(dry_run=False)
    from remediators.config import GuardSettings

    rem = topo.remediation.model_copy(update={"guards": GuardSettings.model_validate(guards)})
    return topo.model_copy(update={"remediation": rem})


def risky_topology():
    policies = [dict(POLICIES[0], steps=[dict(POLICIES[0]["steps"][0], risky=True)])]
    return topology(dry_run=False, policies=policies)


def run(topo, *incs, state=None):
    state = state or DispatchState()
    actions, tickets = [], []
    for inc in incs:
        state, a, t = dispatch(state, inc, topology=topo)
        actions += a
        tickets += t
    return state, actions, tickets


def test_a_risky_step_waits_for_approval_and_records_who_approved():
    topo = risky_topology()
    state, (act,), _ = run(topo, incident(DB))
    assert act.decision == "awaiting_approval" and act.mode == "execute"
    state, (ok,) = approve(state, act.id, "alice", T0 + 5 * MIN, topo)
    assert ok.decision == "approved" and ok.approved_by == "alice" and ok.id == act.id
    # a redelivered approval changes nothing
    assert approve(state, act.id, "alice", T0 + 6 * MIN, topo) == (state, [])


def test_an_approval_expires():
    topo = risky_topology()
    state, (act,), _ = run(topo, incident(DB))
    state2, (late,) = approve(state, act.id, "bob", T0 + 31 * MIN, topo)
    assert late.decision == "expired" and late.approved_by == "bob"
    # and without any approval, time alone expires it
    _, expired, _ = expire_and_verify(state, T0 + 31 * MIN, {}, topo)
    assert [a.decision for a in expired] == ["expired"]


def test_rate_limit_counts_executed_steps_per_hour():
    topo = live(max_actions_per_hour=1, max_concurrent=10)
    incs = [incident(DB, id="inc-1"), incident(DISK, id="inc-2", at=T0 + MIN)]
    _, actions, _ = run(topo, *incs)
    assert [a.decision for a in actions] == ["planned", "skipped"]
    assert "rate limit" in actions[1].reason
    # an hour later the budget is back
    _, later, _ = run(topo, incs[0], incident(DISK, id="inc-3", at=T0 + 61 * MIN))
    assert [a.decision for a in later] == ["planned", "planned"]


def test_concurrency_cap_until_a_result_frees_the_slot():
    topo = live(max_concurrent=1)
    state, (first,), _ = run(topo, incident(DB, id="inc-1"))
    state, (second,), _ = run(topo, incident(DISK, id="inc-2", at=T0 + MIN), state=state)
    assert second.decision == "skipped" and "concurrency" in second.reason
    state = record_result(state, replace(first, decision="executed", at=T0 + 2 * MIN), topo)
    state, (third,), _ = run(topo, incident(DISK, id="inc-3", at=T0 + 3 * MIN), state=state)
    assert third.decision == "planned"


def test_blast_radius_limits_targets_per_incident():
    topo = live(max_targets_per_incident=1, max_concurrent=10)
    _, actions, _ = run(topo, incident(GW, priority="P1"))
    assert [a.decision for a in actions] == ["planned", "skipped"]
    assert "blast radius" in actions[1].reason


def test_circuit_breaker_opens_after_repeated_failures_and_closes_after_a_while():
    topo = live(breaker_failures=2, max_concurrent=10, max_actions_per_hour=100)
    state = DispatchState()
    for n in range(2):
        state, (act,), _ = run(topo, incident(DB, id=f"inc-{n}", at=T0 + 20 * n * MIN), state=state)
        assert act.decision == "planned"  # past the 15-minute cooldown each time
        state = record_result(state, replace(act, decision="failed", at=T0 + 20 * n * MIN + 30), topo)
    state, (held,), _ = run(topo, incident(DB, id="inc-9", at=T0 + 40 * MIN), state=state)
    assert held.decision == "skipped" and "circuit open" in held.reason
    state, (again,), _ = run(topo, incident(DB, id="inc-10", at=T0 + 2 * 3600), state=state)
    assert again.decision == "planned"


def test_a_fix_that_did_not_work_escalates_the_ticket_once_and_is_not_repeated():
    topo = live(verify_after=600)
    inc = incident(DB)
    state, (act,), tickets = run(topo, inc)
    assert [t.event for t in tickets] == ["create"]
    state = record_result(state, replace(act, decision="executed", at=T0 + 30), topo)
    still_open = replace(inc, version=2, updated_at=T0 + 11 * MIN, reason="alerts_added")
    state, again, _ = run(topo, still_open, state=state)
    assert again == []  # same incident, same step id: never planned twice
    state, _, esc = expire_and_verify(state, T0 + 11 * MIN, {inc.id: still_open}, topo)
    assert [t.event for t in esc] == ["escalate"] and "did not resolve" in esc[0].description
    assert expire_and_verify(state, T0 + 20 * MIN, {inc.id: still_open}, topo)[2] == []


def test_a_fix_that_worked_does_not_escalate():
    topo = live(verify_after=600)
    inc = incident(DB)
    state, (act,), _ = run(topo, inc)
    state = record_result(state, replace(act, decision="executed", at=T0 + 30), topo)
    resolved = replace(inc, version=2, status="resolved", updated_at=T0 + 5 * MIN, reason="resolved")
    state, _, tickets = run(topo, resolved, state=state)
    assert [t.event for t in tickets] == ["resolve"]
    assert expire_and_verify(state, T0 + 11 * MIN, {inc.id: resolved}, topo)[2] == []


def test_dry_run_still_reports_what_the_guards_would_decide_but_never_counts_as_executed():
    topo = topology()  # dry run by default
    state, actions, _ = run(topo, incident(DB, id="inc-1"), incident(DISK, id="inc-2"))
    assert {a.mode for a in actions} == {"dry_run"} and state.in_flight == {} and state.executed_at == ()


def test_cooldown_is_per_subject_not_per_shared_topic():
    topo = topology()
    gw1 = rc("payment-gateway", "errors", ev("http.server.requests.errors.rate", **{"host.name": "gw-1"}))
    _, actions, _ = run(topo, incident(GW, id="inc-1", priority="P1"), incident(gw1, id="inc-2", priority="P1", at=T0 + MIN))
    assert [a.decision for a in actions] == ["planned"] * 4  # gw-2 then gw-1: both drained and rerouted


def test_crash_loop_after_a_deploy_rolls_back_with_approval_otherwise_restarts():
    from correlators.records import Evidence
    from streams.config import load_topology

    topo = load_topology("topology.yaml")
    restarts = Evidence(series="checkout/k8s.container.restarts.rate", metric="k8s.container.restarts.rate",
                        score=0.99, value=0.2, expected=0.0, at=T0)
    deploy = Evidence(series="checkout/change.deploy", metric="change.deploy", score=1.0, value=float("nan"),
                      expected=float("nan"), at=T0 - 5 * MIN, detail="deploy d-9: checkout v2.3.1")
    _, (after_deploy,), _ = run(topo, incident(rc("checkout", "errors", deploy, restarts)))
    assert after_deploy.policy == "rollback-crashlooping-deploy" and dict(after_deploy.params)["operation"] == "undo"
    _, (no_change,), _ = run(topo, incident(rc("checkout", "errors", restarts), id="inc-2"))
    assert no_change.policy == "restart-crashlooping-pod" and dict(no_change.params)["operation"] == "restart"
    old = replace(deploy, at=T0 - 3 * 3600)
    _, (stale,), _ = run(topo, incident(rc("checkout", "errors", old, restarts), id="inc-3"))
    assert stale.policy == "restart-crashlooping-pod"


def test_no_action_while_the_ranking_is_a_toss_up():
    topo = topology()
    close = incident(replace(DB, score=0.40), rc("catalog-db", "saturation", ev("db.client.connections.utilization")))
    close = replace(close, root_causes=(replace(DB, score=0.40), replace(close.root_causes[1], score=0.38)))
    state, actions, _ = run(topo, close)
    assert actions == []
    clear = replace(close, version=2, root_causes=(replace(DB, score=0.6), replace(close.root_causes[1], score=0.2)))
    _, actions, _ = run(topo, clear, state=state)
    assert [a.target for a in actions] == ["deployment/orders-db-pooler"]
