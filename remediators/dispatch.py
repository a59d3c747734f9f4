"""Map incident updates to guarded runbook actions and ticket events. Pure: no I/O, no clock.

``dispatch(state, incident, topology=...)`` returns a new state and what to emit. Everything it
emits carries an idempotency key derived from data (the action id, the ticket key = incident
id), and the state remembers what was emitted, so a redelivered or replayed incident update
never plans an action twice nor opens a second ticket.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from correlators.records import Incident, RootCause
from detectors.records import rfc3339, stable_hash
from remediators.config import Policy
from remediators.records import Action, TicketEvent
from remediators.runbooks import RunbookIndex, runbook_refs

if TYPE_CHECKING:  # streams.config imports remediators.config; avoid the cycle at run time
    from streams.config import Topology

_PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")


@dataclass(frozen=True)
class DispatchState:
    """Everything the dispatcher remembers. Replaced, never mutated, so a caller can keep the
    previous state (and a replay rebuilds exactly the same one)."""

    emitted_actions: frozenset[str] = frozenset()
    tickets: dict[str, tuple[int, str]] = field(default_factory=dict)  # incident id -> (version, last event)
    cooldown_until: dict[tuple[str, str], float] = field(default_factory=dict)  # (policy, subject) -> time
    executed_at: tuple[float, ...] = ()  # when executed (not dry-run) steps were planned: the rate limit
    in_flight: dict[str, Action] = field(default_factory=dict)  # executed steps without a result yet
    awaiting: dict[str, tuple[Action, float]] = field(default_factory=dict)  # action id -> (action, expires)
    failures: dict[str, int] = field(default_factory=dict)  # policy -> consecutive failures
    breaker_open_until: dict[str, float] = field(default_factory=dict)  # policy -> time
    verify: dict[str, tuple[float, str]] = field(default_factory=dict)  # action id -> (deadline, incident id)


class _Missing(KeyError):
    pass


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders (names may contain dots, as OTLP attributes do).

    >>> render("nodes/{host.name}/drain?i={incident_id}", {"host.name": "gw-2", "incident_id": "inc-1"})
    'nodes/gw-2/drain?i=inc-1'
    """
    def sub(m: re.Match) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise _Missing(m.group(1)) from None
    return _PLACEHOLDER.sub(sub, template)


def _matches(policy: Policy, inc: Incident, rc: RootCause) -> bool:
    m = policy.match
    if inc.priority not in m.priority:
        return False
    if not fnmatch.fnmatchcase(rc.service, m.root_cause_service) or not fnmatch.fnmatchcase(rc.kind, m.cause):
        return False
    if m.metric != "*" and not any(fnmatch.fnmatchcase(e.metric, m.metric) for e in rc.evidence):
        return False
    if m.changed_within is not None:
        horizon = inc.updated_at - m.changed_within.total_seconds()
        if not any(e.metric.startswith("change.") and e.at >= horizon for e in rc.evidence):
            return False
    if m.labels:
        def ok(labels: dict[str, str]) -> bool:
            return all(k in labels and fnmatch.fnmatchcase(labels[k], v) for k, v in m.labels.items())
        if not any(ok(dict(e.labels)) for e in rc.evidence):
            return False
    return True


def _values(inc: Incident, rc: RootCause, policy: Policy) -> dict[str, str]:
    """Template values: the evidence labels (the matching evidence first), then the incident."""
    values: dict[str, str] = {}
    for e in reversed(rc.evidence):
        if policy.match.metric == "*" or fnmatch.fnmatchcase(e.metric, policy.match.metric):
            values.update(dict(e.labels))
    values.update({"service": rc.service, "incident_id": inc.id, "priority": inc.priority})
    return values


def plan_actions(state: DispatchState, inc: Incident, topology: Topology) -> tuple[DispatchState, list[Action]]:
    if inc.status != "open" or not inc.root_causes:
        return state, []
    rc = inc.root_causes[0]
    rem = topology.remediation
    if len(inc.root_causes) > 1 and rc.score < rem.guards.min_lead * inc.root_causes[1].score:
        return state, []  # not sure yet which service to fix; a later update decides
    for policy in rem.policies:
        if not _matches(policy, inc, rc):
            continue
        values = _values(inc, rc, policy)
        try:
            steps = [(i, step, render(step.target, values),
                      tuple(sorted((k, render(str(v), values)) for k, v in step.params.items())))
                     for i, step in enumerate(policy.steps)]
        except _Missing:
            continue  # the evidence lacks a label the policy needs to aim: it does not apply
        out: list[Action] = []
        emitted = set(state.emitted_actions)
        cooldowns = dict(state.cooldown_until)
        guards = rem.guards
        now = inc.updated_at
        executed_at = [t for t in state.executed_at if t > now - 3600.0]
        in_flight = dict(state.in_flight)
        awaiting = dict(state.awaiting)
        verify = dict(state.verify)
        dry_run = rem.dry_run if policy.dry_run is None else policy.dry_run
        targets = {a.target for a in state.in_flight.values() if a.incident_id == inc.id}
        for i, step, target, params in steps:
            action_id = "act-" + stable_hash(inc.id, policy.name, str(i), target)
            if action_id in emitted:
                continue
            emitted.add(action_id)
            # A step's subject is its target and its arguments: one reroute topic serves every
            # gateway node, and draining gw-1 must not cool down draining gw-2.
            subject = target + "?" + "&".join(f"{k}={v}" for k, v in params if k not in ("incident",))
            # The cooldown left by earlier plans, not by this plan's own steps: two steps of one
            # policy on one target (scale, then restart a deployment) must both run.
            until = state.cooldown_until.get((policy.name, subject))
            breaker = state.breaker_open_until.get(policy.name)
            if until is not None and now < until:
                decision, reason = "skipped", f"cooldown on {target} until {rfc3339(until)}"
            elif breaker is not None and now < breaker:
                decision, reason = "skipped", (f"circuit open after {guards.breaker_failures} failures of "
                                               f"{policy.name}, until {rfc3339(breaker)}")
            elif target not in targets and len(targets) >= guards.max_targets_per_incident:
                decision, reason = "skipped", (f"blast radius: this incident already touches "
                                               f"{len(targets)} targets (max {guards.max_targets_per_incident})")
            elif not dry_run and len(executed_at) >= guards.max_actions_per_hour:
                decision, reason = "skipped", f"rate limit: {len(executed_at)} executed steps in the last hour"
            elif not dry_run and not step.risky and len(in_flight) >= guards.max_concurrent:
                decision, reason = "skipped", f"concurrency cap: {len(in_flight)} steps still running"
            else:
                cooldowns[(policy.name, subject)] = now + policy.cooldown.total_seconds()
                targets.add(target)
                if dry_run:
                    decision, reason = "planned", "dry run: recorded, not executed"
                elif step.risky:
                    decision, reason = "awaiting_approval", (
                        f"risky step: waits for an operator's approval until "
                        f"{rfc3339(now + guards.approval_ttl.total_seconds())}")
                else:
                    decision, reason = "planned", "guard rails passed"
            act = Action(
                id=action_id, incident_id=inc.id, incident_version=inc.version, policy=policy.name, step=i,
                kind=step.kind, target=target, params=params, mode="dry_run" if dry_run else "execute",
                decision=decision, reason=f"{rc.kind} on {rc.service} matched policy {policy.name}: {reason}",
                at=now)
            if decision == "awaiting_approval":
                awaiting[action_id] = (act, now + guards.approval_ttl.total_seconds())
            elif decision == "planned" and not dry_run:
                executed_at.append(now)
                in_flight[action_id] = act
                verify[action_id] = (now + guards.verify_after.total_seconds(), inc.id)
            out.append(act)
        return replace(state, emitted_actions=frozenset(emitted), cooldown_until=cooldowns,
                       executed_at=tuple(executed_at), in_flight=in_flight, awaiting=awaiting, verify=verify), out
    return state, []


def approve(state: DispatchState, action_id: str, by: str, at: float,
            topology: Topology) -> tuple[DispatchState, list[Action]]:
    """An operator's approval of a risky step: the step is released to the executor, unless the
    approval came too late or the step is unknown (both recorded, neither executed)."""
    entry = state.awaiting.get(action_id)
    if entry is None:
        return state, []  # unknown, already decided, or a redelivered approval
    act, expires = entry
    awaiting = {k: v for k, v in state.awaiting.items() if k != action_id}
    if at > expires:
        out = replace(act, decision="expired", approved_by=by, at=at,
                      reason=f"approval by {by} at {rfc3339(at)} came after it expired at {rfc3339(expires)}")
        return replace(state, awaiting=awaiting), [out]
    out = replace(act, decision="approved", approved_by=by, at=at, reason=f"approved by {by}")
    return replace(state, awaiting=awaiting, in_flight={**state.in_flight, action_id: out},
                   executed_at=state.executed_at + (at,),
                   verify={**state.verify, action_id: (at + topology.remediation.guards.verify_after.total_seconds(),
                                                       act.incident_id)}), [out]


def record_result(state: DispatchState, result: Action, topology: Topology) -> DispatchState:
    """The executor's outcome of a step: frees its concurrency slot and feeds the policy's
    circuit breaker (consecutive failures open it; a success closes it)."""
    if result.id not in state.in_flight:
        return state  # a duplicate result, or one for a step we did not release
    in_flight = {k: v for k, v in state.in_flight.items() if k != result.id}
    failures = dict(state.failures)
    breaker = dict(state.breaker_open_until)
    guards = topology.remediation.guards
    if result.decision == "failed":
        failures[result.policy] = failures.get(result.policy, 0) + 1
        if failures[result.policy] >= guards.breaker_failures:
            breaker[result.policy] = result.at + guards.breaker_open_for.total_seconds()
            failures[result.policy] = 0
    else:
        failures[result.policy] = 0
    verify = state.verify if result.decision != "failed" else {k: v for k, v in state.verify.items() if k != result.id}
    return replace(state, in_flight=in_flight, failures=failures, breaker_open_until=breaker, verify=verify)


def expire_and_verify(state: DispatchState, now: float, open_incidents: dict[str, Incident],
                      topology: Topology) -> tuple[DispatchState, list[Action], list[TicketEvent]]:
    """Event time moved to ``now``: approvals that ran out expire; an executed fix whose incident
    is still open after ``verify_after`` did not work, so its ticket escalates (and the step,
    keyed by its id, is never planned again for that incident)."""
    actions: list[Action] = []
    tickets: list[TicketEvent] = []
    awaiting = dict(state.awaiting)
    for aid, (act, expires) in sorted(state.awaiting.items()):
        if now > expires:
            del awaiting[aid]
            actions.append(replace(act, decision="expired", at=expires,
                                   reason=f"no approval before {rfc3339(expires)}"))
    verify = dict(state.verify)
    for aid, (deadline, incident_id) in sorted(state.verify.items()):
        if now < deadline:
            continue
        del verify[aid]
        inc = open_incidents.get(incident_id)
        if inc is None or inc.status != "open" or incident_id not in state.tickets:
            continue  # resolved in time: the fix worked
        cfg = topology.tickets
        team = inc.owner or cfg.default_team
        spec = cfg.teams.get(team)
        tickets.append(TicketEvent(
            ticket_key=inc.id, event="escalate", incident_id=inc.id, incident_version=inc.version,
            sink=(spec.sink if spec and spec.sink else cfg.sink), team=team, assignee=spec.assignee if spec else None,
            priority=inc.priority, title=f"[{inc.priority}] {inc.title}",
            description=f"Automatic remediation {aid} did not resolve the incident within "
                        f"{topology.remediation.guards.verify_after}; a human must take over.",
            tags=("aiops", inc.priority.lower(), "escalated"), at=deadline))
    return replace(state, awaiting=awaiting, verify=verify), actions, tickets


def _description(inc: Incident, actions: list[Action]) -> str:
    lines = [f"**{inc.title}**", "", f"- Priority: {inc.priority} ({inc.severity})",
             f"- Status: {inc.status} (update {inc.version}: {inc.reason})",
             f"- Opened: {rfc3339(inc.opened_at)}", f"- Affected services: {', '.join(inc.services)}",
             f"- Alerts: {inc.alert_count} ({inc.firing_count} firing)", "", "**Root cause candidates**", ""]
    for n, rc in enumerate(inc.root_causes, 1):
        lines.append(f"{n}. `{rc.service}` ({rc.kind}, score {rc.score:.2f}): {' -> '.join(rc.path)}")
        for e in rc.evidence[:3]:
            lines.append(f"   - `{e.series}` = {e.value:.4g} (expected {e.expected:.4g})")
    if actions:
        lines += ["", "**Actions**", ""]
        lines += [f"- {a.kind} `{a.target}`: {a.decision} ({a.mode})" for a in actions]
    return "\n".join(lines)


def ticket_events(state: DispatchState, inc: Incident, topology: Topology, actions: list[Action],
                  runbooks: RunbookIndex | None = None) -> tuple[DispatchState, list[TicketEvent]]:
    cfg = topology.tickets
    seen = state.tickets.get(inc.id)
    if seen is not None and inc.version <= seen[0]:
        return state, []  # a redelivered or replayed update: already handled
    if seen is None:
        # The ticket opens with the record that pages: one published while correlation.notify.hold
        # holds the incident (or below min_priority) opens none yet.
        if inc.status != "open" or not inc.notifies or _PRIORITY_RANK[inc.priority] > _PRIORITY_RANK[cfg.min_priority]:
            return state, []
        event = "create"
    elif inc.status == "resolved":
        event = "resolve"
    elif not inc.notifies:
        # Not news for a responder (correlation.notify): every sink notifies on an update (a
        # webhook POST, a PagerDuty trigger, a tracker's watchers), so none is sent. The next
        # update or the resolve carries the whole incident; aiops.incidents has every version.
        return state, []
    else:
        event = "update"
    team = inc.owner or cfg.default_team
    spec = cfg.teams.get(team)
    tags = ("aiops", inc.priority.lower(), *(f"service:{s}" for s in inc.services))
    tk = TicketEvent(
        ticket_key=inc.id, event=event, incident_id=inc.id, incident_version=inc.version,
        sink=(spec.sink if spec and spec.sink else cfg.sink), team=team, assignee=spec.assignee if spec else None,
        priority=inc.priority, title=f"[{inc.priority}] {inc.title}", description=_description(inc, actions),
        tags=tags, at=inc.updated_at if inc.resolved_at is None else inc.resolved_at,
        runbooks=runbook_refs(runbooks, inc))
    tickets = {**state.tickets, inc.id: (inc.version, event)}
    return replace(state, tickets=tickets), [tk]


def dispatch(state: DispatchState, inc: Incident, *, topology: Topology, runbooks: RunbookIndex | None = None
             ) -> tuple[DispatchState, list[Action], list[TicketEvent]]:
    """Plan actions and ticket events for one incident update; tickets carry the best runbooks."""
    state, actions = plan_actions(state, inc, topology)
    state, tickets = ticket_events(state, inc, topology, actions, runbooks)
    return state, actions, tickets


def forget(state: DispatchState, incident_ids: set[str]) -> DispatchState:
    """Drop the ticket records of incidents that can no longer change, bounding state."""
    return replace(state, tickets={k: v for k, v in state.tickets.items() if k not in incident_ids})
