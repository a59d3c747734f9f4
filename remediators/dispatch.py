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

if TYPE_CHECKING:  # streams.config imports remediators.config; avoid the cycle at run time
    from streams.config import Topology

_PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")


@dataclass(frozen=True)
class DispatchState:
    emitted_actions: frozenset[str] = frozenset()
    tickets: dict[str, tuple[int, str]] = field(default_factory=dict)  # incident id -> (version, last event)
    cooldown_until: dict[tuple[str, str], float] = field(default_factory=dict)  # (policy, target) -> time


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
        dry_run = rem.dry_run if policy.dry_run is None else policy.dry_run
        for i, step, target, params in steps:
            action_id = "act-" + stable_hash(inc.id, policy.name, str(i), target)
            if action_id in emitted:
                continue
            emitted.add(action_id)
            # The cooldown left by earlier plans, not by this plan's own steps: two steps of one
            # policy on one target (scale, then restart a deployment) must both run.
            until = state.cooldown_until.get((policy.name, target))
            if until is not None and inc.updated_at < until:
                decision, reason = "skipped", f"cooldown on {target} until {rfc3339(until)}"
            else:
                cooldowns[(policy.name, target)] = inc.updated_at + policy.cooldown.total_seconds()
                if dry_run:
                    decision, reason = "planned", "dry run: recorded, not executed"
                elif step.risky:
                    decision, reason = "awaiting_approval", "risky step: waits for an operator's approval"
                else:
                    decision, reason = "planned", "guard rails passed"
            out.append(Action(
                id=action_id, incident_id=inc.id, incident_version=inc.version, policy=policy.name, step=i,
                kind=step.kind, target=target, params=params, mode="dry_run" if dry_run else "execute",
                decision=decision, reason=f"{rc.kind} on {rc.service} matched policy {policy.name}: {reason}",
                at=inc.updated_at))
        return replace(state, emitted_actions=frozenset(emitted), cooldown_until=cooldowns), out
    return state, []


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


def ticket_events(state: DispatchState, inc: Incident, topology: Topology,
                  actions: list[Action]) -> tuple[DispatchState, list[TicketEvent]]:
    cfg = topology.tickets
    seen = state.tickets.get(inc.id)
    if seen is not None and inc.version <= seen[0]:
        return state, []  # a redelivered or replayed update: already handled
    if seen is None:
        if inc.status != "open" or _PRIORITY_RANK[inc.priority] > _PRIORITY_RANK[cfg.min_priority]:
            return state, []
        event = "create"
    else:
        event = "resolve" if inc.status == "resolved" else "update"
    team = inc.owner or cfg.default_team
    spec = cfg.teams.get(team)
    tags = ("aiops", inc.priority.lower(), *(f"service:{s}" for s in inc.services))
    tk = TicketEvent(
        ticket_key=inc.id, event=event, incident_id=inc.id, incident_version=inc.version,
        sink=(spec.sink if spec and spec.sink else cfg.sink), team=team, assignee=spec.assignee if spec else None,
        priority=inc.priority, title=f"[{inc.priority}] {inc.title}", description=_description(inc, actions),
        tags=tags, at=inc.updated_at if inc.resolved_at is None else inc.resolved_at)
    tickets = {**state.tickets, inc.id: (inc.version, event)}
    return replace(state, tickets=tickets), [tk]


def dispatch(state: DispatchState, inc: Incident, *, topology: Topology
             ) -> tuple[DispatchState, list[Action], list[TicketEvent]]:
    """Plan actions and ticket events for one incident update."""
    state, actions = plan_actions(state, inc, topology)
    state, tickets = ticket_events(state, inc, topology, actions)
    return state, actions, tickets


def forget(state: DispatchState, incident_ids: set[str]) -> DispatchState:
    """Drop the ticket records of incidents that can no longer change, bounding state."""
    return replace(state, tickets={k: v for k, v in state.tickets.items() if k not in incident_ids})
