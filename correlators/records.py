"""The incident record that other services consume from ``aiops.incidents``.

Consumers key by ``id`` and keep the highest ``version``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

INCIDENT_SCHEMA_VERSION = 1
MAX_FINGERPRINTS = 50


@dataclass(frozen=True, slots=True)
class Evidence:
    """A series that supports a root-cause candidate."""

    series: str
    metric: str
    score: float
    value: float
    expected: float
    at: float
    detail: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RootCause:
    """A ranked candidate. ``path`` runs from the root cause up to the most upstream affected
    service, i.e. against the call direction: ``orders-db -> orders -> checkout -> frontend``."""

    service: str
    score: float
    kind: str  # "saturation" | "errors" | "latency" | "traffic" | "resource" | "unobserved" | "anomaly"
    path: tuple[str, ...]
    evidence: tuple[Evidence, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SuspectedEdge:
    """A call the topology lacks, suspected from onset order and co-anomaly: ``caller`` started
    failing ``lag_s`` seconds after ``callee``, with no declared path between them and nothing of
    its own to explain it (see :func:`correlators.rca.suspect_missing_edge`).

    ``related_incident`` is the incident holding the other side: the callee's incident on the
    caller's record and the caller's on the callee's; this incident's own id when the caller's
    alerts were merged into it (``merged``)."""

    caller: str
    callee: str
    lag_s: float
    reason: str
    related_incident: str
    merged: bool = False


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    version: int
    status: str  # "open" | "resolved"
    reason: str  # why this update was sent: "opened" | "alerts_added" | "alerts_changed" | "alerts_resolved" | "repeat" | "resolved" | "reopened"
    opened_at: float
    updated_at: float
    resolved_at: float | None
    title: str
    priority: str  # "P1" (most urgent) .. "P4"
    severity: str
    services: tuple[str, ...]
    alert_count: int
    firing_count: int
    fingerprints: tuple[str, ...]
    root_causes: tuple[RootCause, ...] = ()
    owner: str | None = None
    labels: tuple[tuple[str, str], ...] = field(default=())
    # Whether this record reaches a receiver (correlation.notify): "page" (opened, reopened),
    # "update" (got worse, or a repeat), "resolve", or "silent" (published for consumers and
    # the record, but nobody is notified). The correlator always sets it.
    notification: str = "update"
    # Calls missing from topology.yaml, suspected from this incident's alerts and another's
    # (correlation.suspect_edges); empty when none is.
    suspected_edges: tuple[SuspectedEdge, ...] = ()

    @property
    def notifies(self) -> bool:
        return self.notification != "silent"


CHANGE_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Change:
    """A deploy, config change, scaling or rollback of a service (``telemetry.changes``).

    Changes are the most common cause of incidents; one shortly before a service's anomaly
    makes that service a likely root cause, and a rollback policy can key on it."""

    id: str
    service: str
    kind: str  # "deploy" | "config" | "scale" | "rollback" | other
    at: float
    description: str = ""
