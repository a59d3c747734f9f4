"""PagerDuty Events API v2: one alert per incident, deduplicated by PagerDuty on ``dedup_key``.

``POST https://events.pagerduty.com/v2/enqueue`` (JSON, no auth header: the ``routing_key`` in
the body is the credential) with ``event_action`` ``trigger`` (create and update: PagerDuty folds
a trigger with an open alert's ``dedup_key`` into that alert) or ``resolve``; ``dedup_key`` is the
incident id; ``payload.summary``/``source``/``severity`` are required. Answers 202 with the
``dedup_key``, which is the ticket id.
"""
from __future__ import annotations

from dataclasses import dataclass

from detectors.records import rfc3339
from remediators.records import TicketEvent
from remediators.sink_config import PagerDutySink
from remediators.sinks.base import JSON_HEADERS, HttpRequest, HttpResponse, Secret, SinkError, Steps


@dataclass(frozen=True)
class PagerDuty:
    cfg: PagerDutySink
    name: str = "pagerduty"

    def _event(self, ev: TicketEvent, action: str) -> HttpRequest:
        body: dict = {"event_action": action, "dedup_key": ev.ticket_key[:255]}
        if action == "trigger":
            body["payload"] = {
                "summary": ev.title[:1024], "source": self.cfg.source, "severity": self.cfg.severities[ev.priority],
                "timestamp": rfc3339(ev.at), "group": ev.team, "class": "incident",
                "custom_details": {"incident_id": ev.incident_id, "incident_version": ev.incident_version,
                                   "team": ev.team, "assignee": ev.assignee, "priority": ev.priority,
                                   "tags": list(ev.tags), "description": ev.description},
            }
            body["client"] = "aiops"
            if ev.runbooks:
                body["links"] = [{"href": r, "text": "Runbook"} for r in ev.runbooks]
        return HttpRequest("POST", self.cfg.url, JSON_HEADERS, body,
                           Secret(self.cfg.token_env, "body", "routing_key"))

    def known_id(self, ev: TicketEvent) -> str | None:
        return ev.ticket_key[:255]

    def search(self, ev: TicketEvent) -> None:
        return None

    def found(self, ev: TicketEvent, resp: HttpResponse) -> str | None:
        return None

    def create(self, ev: TicketEvent) -> HttpRequest:
        return self._event(ev, "trigger")

    def created(self, ev: TicketEvent, resp: HttpResponse) -> str:
        data = resp.json()
        if not isinstance(data, dict) or data.get("status") != "success":
            raise SinkError(f"PagerDuty: expected status 'success' (got {resp.excerpt()!r})")
        return str(data.get("dedup_key") or ev.ticket_key[:255])

    def apply(self, ev: TicketEvent, ticket_id: str) -> Steps:
        yield self._event(ev, "resolve" if ev.event == "resolve" else "trigger")
