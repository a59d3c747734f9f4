"""A generic webhook: ``POST`` of the ticket record (the ``aiops.tickets`` JSON) to one URL.

Every request carries ``Idempotency-Key: <ticket_key>:<event>:<incident_version>``, the same
for a retry or a redelivery, so the receiver can drop duplicates. Optional
``Authorization: Bearer <token>``. The ticket id is the answer's ``id`` when it has one, else
the ticket key.
"""
from __future__ import annotations

from dataclasses import dataclass

from detectors.records import rfc3339
from remediators.records import TICKET_SCHEMA_VERSION, TicketEvent
from remediators.sink_config import WebhookSink
from remediators.sinks.base import JSON_HEADERS, HttpRequest, HttpResponse, Secret, Steps


def idempotency_key(ev: TicketEvent) -> str:
    """The same key for a retry or a redelivery of one event.

    >>> idempotency_key(TicketEvent("inc-1", "update", "inc-1", 3, "webhook", "sre", None, "P2", "t", "", (), 0.0))
    'inc-1:update:3'
    """
    return f"{ev.ticket_key}:{ev.event}:{ev.incident_version}"


def ticket_record(ev: TicketEvent) -> dict:
    """The ``aiops.tickets`` record (``streams/schemas/ticket.schema.json``) as a dict."""
    return {
        "schema_version": TICKET_SCHEMA_VERSION, "ticket_key": ev.ticket_key, "event": ev.event,
        "incident_id": ev.incident_id, "incident_version": ev.incident_version, "sink": ev.sink, "team": ev.team,
        "assignee": ev.assignee, "priority": ev.priority, "title": ev.title, "description": ev.description,
        "tags": list(ev.tags), "at": rfc3339(ev.at), "runbooks": list(ev.runbooks),
    }


@dataclass(frozen=True)
class Webhook:
    cfg: WebhookSink
    name: str = "webhook"

    def _post(self, ev: TicketEvent) -> HttpRequest:
        headers = (*JSON_HEADERS, *sorted(self.cfg.headers.items()), ("Idempotency-Key", idempotency_key(ev)))
        env = self.cfg.token_env
        return HttpRequest("POST", self.cfg.url, headers, ticket_record(ev),
                           Secret(env, "header", "Authorization", "Bearer {}") if env else None)

    def known_id(self, ev: TicketEvent) -> str | None:
        return ev.ticket_key

    def search(self, ev: TicketEvent) -> None:
        return None

    def found(self, ev: TicketEvent, resp: HttpResponse) -> str | None:
        return None

    def create(self, ev: TicketEvent) -> HttpRequest:
        return self._post(ev)

    def created(self, ev: TicketEvent, resp: HttpResponse) -> str:
        try:
            data = resp.json()
        except Exception:  # noqa: BLE001 - any 2xx body is fine: the receiver need not answer JSON
            data = None
        if isinstance(data, dict) and isinstance(data.get("id"), (str, int)) and str(data["id"]):
            return str(data["id"])
        return ev.ticket_key

    def apply(self, ev: TicketEvent, ticket_id: str) -> Steps:
        yield self._post(ev)
