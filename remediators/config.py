"""The ``remediation:`` and ``tickets:`` sections of topology.yaml."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from detectors.config import Duration, Frozen, parse_duration
from remediators.executor_config import ExecutorSettings
from remediators.sink_config import DeliverySettings

Priority = Literal["P1", "P2", "P3", "P4"]
ActionKind = Literal["exec", "http", "kubernetes", "kafka"]


class PolicyMatch(Frozen):
    """Glob patterns on the incident's top root cause; every given field must match."""

    root_cause_service: str = "*"
    cause: str = "*"  # the root cause's kind: saturation, errors, latency, resource, unobserved...
    metric: str = "*"  # any evidence metric of the root cause
    labels: dict[str, str] = Field(default_factory=dict)  # on any evidence series
    priority: list[Priority] = Field(default_factory=lambda: ["P1", "P2", "P3", "P4"])
    # Only when the root cause changed (deploy, config, scaling) this recently: e.g. roll back.
    changed_within: Duration | None = None


class Step(Frozen):
    kind: ActionKind
    # Templated with {service}, {incident_id} and the evidence labels, e.g. {host}.
    target: str
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    risky: bool = False  # risky steps wait for approval even when not in dry-run


class Policy(Frozen):
    name: str
    description: str = ""
    match: PolicyMatch = Field(default_factory=PolicyMatch)
    steps: list[Step] = Field(min_length=1)
    dry_run: bool | None = None  # None: inherit remediation.dry_run
    cooldown: Duration = parse_duration("15m")


class GuardSettings(Frozen):
    """Limits that hold whatever the policies say."""

    approval_ttl: Duration = parse_duration("30m")  # a risky step's approval must arrive within this
    max_actions_per_hour: int = Field(default=10, ge=0)  # executed (not dry-run) steps, all policies together
    max_concurrent: int = Field(default=3, ge=0)  # executed steps whose result has not come back yet
    max_targets_per_incident: int = Field(default=3, ge=1)  # blast radius: distinct targets one incident may touch
    breaker_failures: int = Field(default=3, ge=1)  # consecutive failures of a policy that open its circuit ...
    breaker_open_for: Duration = parse_duration("1h")  # ... for this long
    verify_after: Duration = parse_duration("10m")  # an executed fix whose incident is still open after this escalates
    # Plan only when the top root cause leads the runner-up by this factor; otherwise wait for the
    # next update (the ranking early in a cascade can still change, and a fix aimed at the wrong
    # service is worse than a fix a minute later).
    min_lead: float = Field(default=1.2, ge=1.0)


class RemediationSettings(Frozen):
    dry_run: bool = True  # nothing runs for real unless an operator turns this off
    policies: list[Policy] = Field(default_factory=list)
    guards: GuardSettings = Field(default_factory=GuardSettings)
    executors: ExecutorSettings = Field(default_factory=ExecutorSettings)


class TeamSpec(Frozen):
    assignee: str | None = None
    sink: str | None = None


class TicketSettings(Frozen):
    sink: Literal["topic", "clickup", "jira", "pagerduty", "webhook"] = "topic"
    default_team: str = "sre"
    teams: dict[str, TeamSpec] = Field(default_factory=dict)
    # Tickets open for incidents at or above this priority.
    min_priority: Priority = "P4"
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)  # per-sink settings (docs/tickets.md)
