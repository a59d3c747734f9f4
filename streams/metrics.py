"""Prometheus metrics of the worker, served on /metrics."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

MESSAGES_IN = Counter("aiops_input_messages_total", "Input messages consumed", ["topic"])
POINTS_IN = Counter("aiops_input_points_total", "Normalized data points scored")
DEADLETTER = Counter("aiops_deadletter_total", "Messages sent to the dead-letter topic", ["topic"])
ALERTS = Counter("aiops_alerts_total", "Alert events emitted by the detectors", ["status"])
INCIDENT_UPDATES = Counter("aiops_incident_updates_total", "Incident records published", ["status"])
OPEN_INCIDENTS = Gauge("aiops_open_incidents", "Incidents currently open or waiting for group_wait")
ACTIONS = Counter("aiops_actions_total", "Remediation decisions published", ["decision"])
TICKETS = Counter("aiops_ticket_events_total", "Ticket events published", ["event"])
COMPRESSION = Gauge("aiops_compression_ratio", "Ratio of one pipeline stage's count to the next's", ["stage"])


def observe_compression(detect_stats: dict, correlate_stats: dict) -> None:
    """Anomalous points -> alerts -> incidents: how much the pipeline condenses."""
    alerts = correlate_stats.get("alerts", 0)
    incidents = correlate_stats.get("incidents", 0)
    if alerts and incidents:
        COMPRESSION.labels(stage="alerts_per_incident").set(alerts / incidents)
    anomalous = detect_stats.get("anomalous_points", 0)
    if anomalous and alerts:
        COMPRESSION.labels(stage="anomalous_points_per_alert").set(anomalous / alerts)
