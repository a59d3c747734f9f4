"""Settings of the ticket sinks: ``tickets.delivery`` in topology.yaml.

Secrets are never written here: every token is an ``env:VARIABLE_NAME`` reference that the
delivery process reads from its environment when it sends a request.

>>> s = DeliverySettings.model_validate({"clickup": {"list_id": "901", "token": "env:CLICKUP_TOKEN"}})
>>> s.clickup.token_env, s.clickup.priorities["P1"]
('CLICKUP_TOKEN', 1)
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from detectors.config import Duration, Frozen, TopicName, parse_duration
Priority = Literal["P1", "P2", "P3", "P4"]  # as in remediators.config, which imports this module

_ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
_CREDENTIAL_HEADER = re.compile(r"authorization|cookie|token|secret|api[_-]?key|password|passwd|auth$|session", re.I)
_URL = re.compile(r"^https?://[^\s/]+(/[^\s]*)?$")


def _env_ref(value: str) -> str:
    if not _ENV_REF.match(value):
        raise ValueError("must be 'env:VARIABLE_NAME': secrets never go in topology.yaml")
    return value


def _url(value: str) -> str:
    if not _URL.match(value):
        raise ValueError(f"expected an http:// or https:// URL (got {value!r})")
    return value.rstrip("/")


EnvRef = Annotated[str, AfterValidator(_env_ref)]
Url = Annotated[str, AfterValidator(_url)]


def env_name(ref: str) -> str:
    """The variable name of an ``env:`` reference.

    >>> env_name("env:JIRA_API_TOKEN")
    'JIRA_API_TOKEN'
    """
    m = _ENV_REF.match(ref)
    if not m:
        raise ValueError(f"not an env: reference: {ref!r}")
    return m.group(1)


class RetrySettings(Frozen):
    """How hard delivery tries before an event goes to the dead-letter topic."""

    max_attempts: int = Field(default=8, ge=1, le=100)  # per request; then the event is dead-lettered
    backoff_initial: Duration = parse_duration("1s")  # first wait after a failure; doubles each attempt ...
    backoff_max: Duration = parse_duration("1m")  # ... up to this (each wait is jittered into [half, full])
    retry_after_max: Duration = parse_duration("5m")  # a longer Retry-After is cut to this
    timeout: Duration = parse_duration("10s")  # one HTTP request


class ClickUpSink(Frozen):
    """ClickUp API v2: one task per incident in one List."""

    base_url: Url = "https://api.clickup.com"
    list_id: str = Field(min_length=1)
    token: EnvRef = "env:CLICKUP_TOKEN"  # personal token (pk_...) or OAuth access token
    # Text Custom Field (its uuid) that carries the incident id; delivery searches it before
    # creating. Without it the incident id goes in a tag `aiops-<incident id>` and the search uses that.
    incident_field_id: str | None = None
    resolved_status: str = "complete"  # must exist in the List
    priorities: dict[Priority, int] = Field(default_factory=lambda: {"P1": 1, "P2": 2, "P3": 3, "P4": 4})
    assignees: dict[str, int] = Field(default_factory=dict)  # team assignee name -> ClickUp user id

    @property
    def token_env(self) -> str:
        return env_name(self.token)


class JiraSink(Frozen):
    """Jira Cloud REST v3: one issue per incident in one project."""

    base_url: Url  # https://<site>.atlassian.net
    project_key: str = Field(min_length=1)
    issue_type: str = "Task"
    email: str = Field(min_length=3)  # the API token's account (Basic auth user)
    api_token: EnvRef = "env:JIRA_API_TOKEN"
    priorities: dict[Priority, str] = Field(
        default_factory=lambda: {"P1": "Highest", "P2": "High", "P3": "Medium", "P4": "Low"})
    resolve_transition: str = "Done"  # transition name, or the name of the status it leads to
    incident_field: str | None = None  # e.g. customfield_10001: also store the incident id there
    assignees: dict[str, str] = Field(default_factory=dict)  # team assignee name -> Atlassian accountId

    @property
    def token_env(self) -> str:
        return env_name(self.api_token)


class PagerDutySink(Frozen):
    """PagerDuty Events API v2: one alert per incident (dedup_key = incident id)."""

    url: Url = "https://events.pagerduty.com/v2/enqueue"
    routing_key: EnvRef = "env:PAGERDUTY_ROUTING_KEY"
    source: str = "aiops"
    severities: dict[Priority, Literal["critical", "error", "warning", "info"]] = Field(
        default_factory=lambda: {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"})

    @property
    def token_env(self) -> str:
        return env_name(self.routing_key)


class WebhookSink(Frozen):
    """Any HTTP endpoint: POST of the ticket record, with an Idempotency-Key header."""

    url: Url
    token: EnvRef | None = None  # sent as `Authorization: Bearer <token>` when set
    headers: dict[str, str] = Field(default_factory=dict)  # extra static headers (no secrets)

    @property
    def token_env(self) -> str | None:
        return env_name(self.token) if self.token else None

    @model_validator(mode="after")
    def _no_auth_header(self) -> WebhookSink:
        if any(k.lower() in ("authorization", "idempotency-key", "content-type") for k in self.headers):
            raise ValueError("headers: Authorization, Idempotency-Key and Content-Type are set by aiops "
                             "(use `token: env:VAR` for authorization)")
        # Static headers are sent as written, so a credential among them would sit in the file.
        secret = [k for k in self.headers if _CREDENTIAL_HEADER.search(k)]
        if secret:
            raise ValueError(f"headers: {secret[0]!r:.40} carries a credential; static headers are sent as written, "
                             "so only `token: env:VAR` (sent as Authorization) may authenticate")
        return self


class DeliverySettings(Frozen):
    """``tickets.delivery``: where ``aiops tickets deliver`` sends ticket events."""

    clickup: ClickUpSink | None = None
    jira: JiraSink | None = None
    pagerduty: PagerDutySink | None = None
    webhook: WebhookSink | None = None
    retry: RetrySettings = Field(default_factory=RetrySettings)
    ledger_topic: TopicName = "aiops.ticket-ledger"  # compacted; incident id -> tracker ticket id
    group_id: str = "aiops-tickets"

    def sink(self, name: str):
        """The settings of sink ``name``, or None when it is not configured."""
        return getattr(self, name, None) if name in ("clickup", "jira", "pagerduty", "webhook") else None


def ticket_url(delivery: DeliverySettings, sink: str, ticket_id: str) -> str | None:
    """Where a person opens ticket ``ticket_id`` of ``sink`` (the id the ticket ledger records),
    when the tracker has such a page; ``None`` otherwise.

    >>> jira = DeliverySettings.model_validate({"jira": {"base_url": "https://acme.atlassian.net",
    ...                                                  "project_key": "OPS", "email": "ops@acme.test"}})
    >>> ticket_url(jira, "jira", "OPS-7"), ticket_url(jira, "pagerduty", "inc-1")
    ('https://acme.atlassian.net/browse/OPS-7', None)
    """
    from urllib.parse import quote

    if sink == "jira" and delivery.jira is not None:
        return f"{delivery.jira.base_url.rstrip('/')}/browse/{quote(ticket_id, safe='')}"
    if sink == "clickup" and delivery.clickup is not None:
        return f"https://app.clickup.com/t/{quote(ticket_id, safe='')}"  # the task's page, whatever the API's host
    return None  # PagerDuty's Events API keeps a dedup key, not a page; a webhook returns nothing to link


def sink_problems(tickets, delivery: DeliverySettings | None = None) -> list[tuple[str, str]]:
    """Sinks named in ``tickets`` (``sink`` and ``teams.*.sink``) that ``tickets.delivery`` does not configure.

    ``tickets`` is a :class:`remediators.config.TicketSettings`; ``delivery`` defaults to its
    ``delivery`` field. Returns ``(path, message)`` pairs in the style of ``ConfigError``.
    """
    if delivery is None:
        delivery = getattr(tickets, "delivery", None) or DeliverySettings()
    known = ("topic", "clickup", "jira", "pagerduty", "webhook")
    used = [("tickets.sink", tickets.sink)]
    used += [(f"tickets.teams.{team}.sink", spec.sink) for team, spec in tickets.teams.items() if spec.sink]
    problems = []
    for path, name in used:
        if name not in known:
            problems.append((path, f"unknown sink '{name}' (expected one of {', '.join(known)})"))
        elif name != "topic" and delivery.sink(name) is None:
            problems.append((path, f"sink '{name}' has no settings: add tickets.delivery.{name}"))
    return problems
