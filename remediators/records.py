"""Records for ``aiops.actions`` and ``aiops.tickets``."""
from __future__ import annotations

from dataclasses import dataclass, field

ACTION_SCHEMA_VERSION = 1
TICKET_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Action:
    """A decision about one runbook step for one incident.

    ``id`` is the idempotency key: the same incident and policy step always give the same id,
    so a replay or a redelivery can be recognised and never runs the step twice.
    """

    id: str
    incident_id: str
    incident_version: int
    policy: str
    step: int
    kind: str  # "exec" | "http" | "kubernetes" | "kafka"
    target: str
    params: tuple[tuple[str, str], ...]
    mode: str  # "dry_run" | "execute"
    decision: str  # "planned" | "awaiting_approval" | "skipped"
    reason: str
    at: float
    approved_by: str | None = None
    result: str | None = None


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """Create, update or resolve the one ticket of an incident. ``ticket_key`` is the incident id."""

    ticket_key: str
    event: str  # "create" | "update" | "resolve"
    incident_id: str
    incident_version: int
    sink: str
    team: str
    assignee: str | None
    priority: str
    title: str
    description: str  # markdown
    tags: tuple[str, ...]
    at: float
    runbooks: tuple[str, ...] = field(default=())
