"""ClickUp API v2: one task per incident.

- create: ``POST {base}/api/v2/list/{list_id}/task`` with ``name``, ``markdown_description``,
  ``priority`` (1 urgent .. 4 low), ``assignees`` (user ids), ``tags`` and the incident id in a
  text Custom Field (``custom_fields: [{"id", "value"}]``), or in a tag ``aiops-<incident id>``.
- search (ClickUp has no idempotency key): ``GET {base}/api/v2/list/{list_id}/task`` filtered by
  that Custom Field (``custom_fields=[{"field_id", "operator": "=", "value"}]``) or tag (``tags[]``),
  with ``include_closed=true``; the answer is checked for an exact match.
- update: ``PUT {base}/api/v2/task/{task_id}``; resolve: the same with ``status``.
- auth: header ``Authorization: <token>`` (a ``pk_`` personal token, no "Bearer").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from remediators.records import TicketEvent
from remediators.sink_config import ClickUpSink
from remediators.sinks.base import JSON_HEADERS, HttpRequest, HttpResponse, Secret, SinkError, Steps


def incident_tag(ev: TicketEvent) -> str:
    """The tag that carries the incident id when no Custom Field is configured (ClickUp lowercases tags).

    >>> incident_tag(TicketEvent("INC-42", "create", "INC-42", 1, "clickup", "sre", None, "P1", "t", "", (), 0.0))
    'aiops-inc-42'
    """
    return f"aiops-{ev.ticket_key}".lower()


@dataclass(frozen=True)
class ClickUp:
    cfg: ClickUpSink
    name: str = "clickup"

    def _secret(self) -> Secret:
        return Secret(self.cfg.token_env, "header", "Authorization", "{}")

    def _assignees(self, ev: TicketEvent) -> list[int]:
        uid = self.cfg.assignees.get(ev.assignee) if ev.assignee else None
        if uid is None and ev.assignee and ev.assignee.isdigit():
            uid = int(ev.assignee)
        return [uid] if uid is not None else []

    def _tags(self, ev: TicketEvent) -> list[str]:
        tags = list(ev.tags)
        if not self.cfg.incident_field_id:
            tags.append(incident_tag(ev))
        return tags

    def known_id(self, ev: TicketEvent) -> str | None:
        return None

    def search(self, ev: TicketEvent) -> HttpRequest:
        query: list[tuple[str, str]] = [("include_closed", "true")]
        if self.cfg.incident_field_id:
            query.append(("custom_fields", json.dumps(
                [{"field_id": self.cfg.incident_field_id, "operator": "=", "value": ev.ticket_key}])))
        else:
            query.append(("tags[]", incident_tag(ev)))
        url = f"{self.cfg.base_url}/api/v2/list/{quote(self.cfg.list_id, safe='')}/task?{urlencode(query)}"
        return HttpRequest("GET", url, (("Accept", "application/json"),), None, self._secret())

    def found(self, ev: TicketEvent, resp: HttpResponse) -> str | None:
        data = resp.json()
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(tasks, list):
            raise SinkError(f"ClickUp search: expected {{'tasks': [...]}} (got {resp.excerpt()!r})")
        # "=" is a fuzzy match: keep only the exact incident id.
        for task in tasks:
            if not isinstance(task, dict) or "id" not in task:
                continue
            if self.cfg.incident_field_id:
                if any(isinstance(f, dict) and f.get("id") == self.cfg.incident_field_id
                       and f.get("value") == ev.ticket_key for f in task.get("custom_fields") or ()):
                    return str(task["id"])
            elif any(isinstance(t, dict) and t.get("name") == incident_tag(ev) for t in task.get("tags") or ()):
                return str(task["id"])
        return None

    def create(self, ev: TicketEvent) -> HttpRequest:
        body: dict = {"name": ev.title, "markdown_description": ev.description,
                      "priority": self.cfg.priorities[ev.priority], "tags": self._tags(ev)}
        if assignees := self._assignees(ev):
            body["assignees"] = assignees
        if self.cfg.incident_field_id:
            body["custom_fields"] = [{"id": self.cfg.incident_field_id, "value": ev.ticket_key}]
        url = f"{self.cfg.base_url}/api/v2/list/{quote(self.cfg.list_id, safe='')}/task"
        return HttpRequest("POST", url, JSON_HEADERS, body, self._secret(), retry_safe=False)

    def created(self, ev: TicketEvent, resp: HttpResponse) -> str:
        data = resp.json()
        if not isinstance(data, dict) or not data.get("id"):
            raise SinkError(f"ClickUp create: expected a task with an id (got {resp.excerpt()!r})")
        return str(data["id"])

    def apply(self, ev: TicketEvent, ticket_id: str) -> Steps:
        body: dict = {"name": ev.title, "markdown_description": ev.description,
                      "priority": self.cfg.priorities[ev.priority]}
        if assignees := self._assignees(ev):
            body["assignees"] = {"add": assignees, "rem": []}
        if ev.event == "resolve":
            body["status"] = self.cfg.resolved_status
        yield HttpRequest("PUT", f"{self.cfg.base_url}/api/v2/task/{quote(ticket_id, safe='')}", JSON_HEADERS,
                          body, self._secret())
