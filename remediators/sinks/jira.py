"""Jira Cloud REST v3: one issue per incident.

- create: ``POST {base}/rest/api/3/issue`` with ``fields``: project key, issue type, summary,
  ``description`` in ADF (built from the Markdown), priority name, labels (with the incident
  label ``aiops-<incident id>``), assignee ``accountId``; answers 201 ``{"id", "key", "self"}``.
- search (Jira has no idempotency key): ``POST {base}/rest/api/3/search/jql`` with
  ``{"jql": "project = KEY AND labels = \\"aiops-...\\"", "fields": ["key"], "maxResults": 2}``.
- update: ``PUT {base}/rest/api/3/issue/{key}`` (204). resolve: the update, then
  ``GET .../issue/{key}/transitions`` and ``POST .../issue/{key}/transitions``
  ``{"transition": {"id"}}``; an issue already in a done status is left alone.
- auth: HTTP Basic ``email:api_token``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from remediators.records import TicketEvent
from remediators.sink_config import JiraSink
from remediators.sinks.adf import markdown_to_adf
from remediators.sinks.base import JSON_HEADERS, HttpRequest, HttpResponse, Secret, SinkError, Steps

_LABEL_BAD = re.compile(r"\s+")


def incident_label(ev: TicketEvent) -> str:
    """The label that finds the incident's issue (labels cannot hold spaces).

    >>> incident_label(TicketEvent("inc 42", "create", "inc 42", 1, "jira", "sre", None, "P1", "t", "", (), 0.0))
    'aiops-inc_42'
    """
    return "aiops-" + _LABEL_BAD.sub("_", ev.ticket_key)


def _jql_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Jira:
    cfg: JiraSink
    name: str = "jira"

    def _secret(self) -> Secret:
        return Secret(self.cfg.token_env, "basic", "Authorization", user=self.cfg.email)

    def _issue_url(self, key: str, suffix: str = "") -> str:
        return f"{self.cfg.base_url}/rest/api/3/issue/{quote(key, safe='')}{suffix}"

    def _fields(self, ev: TicketEvent) -> dict:
        labels = list(dict.fromkeys([_LABEL_BAD.sub("_", t) for t in ev.tags] + [incident_label(ev)]))
        fields: dict = {
            # Jira's summary is one line of at most 255 characters.
            "summary": " ".join(ev.title.split())[:255],
            "description": markdown_to_adf(ev.description),
            "priority": {"name": self.cfg.priorities[ev.priority]},
            "labels": labels,
        }
        account = self.cfg.assignees.get(ev.assignee) if ev.assignee else None
        if account:
            fields["assignee"] = {"accountId": account}
        if self.cfg.incident_field:
            fields[self.cfg.incident_field] = ev.ticket_key
        return fields

    def known_id(self, ev: TicketEvent) -> str | None:
        return None

    def search(self, ev: TicketEvent) -> HttpRequest:
        jql = f"project = {_jql_string(self.cfg.project_key)} AND labels = {_jql_string(incident_label(ev))}"
        return HttpRequest("POST", f"{self.cfg.base_url}/rest/api/3/search/jql", JSON_HEADERS,
                           {"jql": jql, "fields": ["key"], "maxResults": 2}, self._secret())

    def found(self, ev: TicketEvent, resp: HttpResponse) -> str | None:
        data = resp.json()
        issues = data.get("issues") if isinstance(data, dict) else None
        if not isinstance(issues, list):
            raise SinkError(f"Jira search: expected {{'issues': [...]}} (got {resp.excerpt()!r})")
        keys = sorted((str(i["key"]) for i in issues if isinstance(i, dict) and i.get("key")),
                      key=lambda k: (len(k), k))
        return keys[0] if keys else None  # the oldest, should a duplicate ever exist

    def create(self, ev: TicketEvent) -> HttpRequest:
        fields = {"project": {"key": self.cfg.project_key}, "issuetype": {"name": self.cfg.issue_type},
                  **self._fields(ev)}
        return HttpRequest("POST", f"{self.cfg.base_url}/rest/api/3/issue", JSON_HEADERS, {"fields": fields},
                           self._secret(), retry_safe=False)

    def created(self, ev: TicketEvent, resp: HttpResponse) -> str:
        data = resp.json()
        if not isinstance(data, dict) or not data.get("key"):
            raise SinkError(f"Jira create: expected {{'id', 'key'}} (got {resp.excerpt()!r})")
        return str(data["key"])

    def apply(self, ev: TicketEvent, ticket_id: str) -> Steps:
        yield HttpRequest("PUT", self._issue_url(ticket_id), JSON_HEADERS, {"fields": self._fields(ev)},
                          self._secret())
        if ev.event != "resolve":
            return
        resp = yield HttpRequest("GET", self._issue_url(ticket_id, "/transitions"), (("Accept", "application/json"),),
                                 None, self._secret())
        data = resp.json()
        transitions = data.get("transitions") if isinstance(data, dict) else None
        if not isinstance(transitions, list):
            raise SinkError(f"Jira transitions: expected {{'transitions': [...]}} (got {resp.excerpt()!r})")
        want = self.cfg.resolve_transition.casefold()
        for t in transitions:
            if not isinstance(t, dict):
                continue
            to = t.get("to") if isinstance(t.get("to"), dict) else {}
            if str(t.get("name", "")).casefold() == want or str(to.get("name", "")).casefold() == want:
                # Not retry-safe: a second POST of a done transition is a 400. After a lost answer
                # the engine starts these steps again, and the check below sees the issue is done.
                yield HttpRequest("POST", self._issue_url(ticket_id, "/transitions"), JSON_HEADERS,
                                  {"transition": {"id": str(t["id"])}}, self._secret(), retry_safe=False)
                return
        resp = yield HttpRequest("GET", self._issue_url(ticket_id, "?fields=status"),
                                 (("Accept", "application/json"),), None, self._secret())
        status = (resp.json() or {}).get("fields", {}).get("status", {}) if isinstance(resp.json(), dict) else {}
        name = str(status.get("name", ""))
        if name.casefold() == want or (status.get("statusCategory") or {}).get("key") == "done":
            return  # already resolved
        offered = ", ".join(repr(t.get("name")) for t in transitions if isinstance(t, dict)) or "none"
        raise SinkError(f"Jira {ticket_id}: no transition '{self.cfg.resolve_transition}' from status "
                        f"{name!r} (offered: {offered}); set tickets.delivery.jira.resolve_transition")
