"""The dependency topology and the ``correlation:`` section of topology.yaml."""
from __future__ import annotations

import fnmatch
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import networkx as nx
from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from detectors.config import Duration, Frozen, parse_duration

ServiceKind = Literal["service", "datastore", "queue", "gateway", "external", "host"]


# An id that goes into keys, logs, URLs and table cells as it is: no spaces, no newlines, no markup.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_id(value: str) -> str:
    """An id as :data:`ID_PATTERN` wants it.

    >>> check_id("act-1f2e")
    'act-1f2e'
    >>> check_id("act-1\\nINFO approved")
    Traceback (most recent call last):
    ...
    ValueError: expected an id of letters, digits and . _ : @ - (at most 128, no spaces or newlines) (got 'act-1\\nINFO approved')
    """
    if not isinstance(value, str) or not re.fullmatch(ID_PATTERN, value):
        raise ValueError("expected an id of letters, digits and . _ : @ - (at most 128, no spaces or newlines) "
                         f"(got {value!r:.60})")
    return value


def check_text(value: str) -> str:
    """A one-line text (a name, a glob, a comment) that reaches logs and pages: no control
    characters, which could forge a log line or hide what follows them."""
    if _CONTROL.search(value):
        raise ValueError(f"control characters (newline, tab, escape...) are not allowed (got {value!r:.60})")
    return value


def _aware_time(value: Any) -> Any:
    """An RFC 3339 time with its UTC offset, from YAML (a timestamp or a string) or JSON (a string).
    Without an offset Python reads the host's local zone, and two hosts would disagree."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected an RFC 3339 time such as '2026-08-20T12:00:00Z' (got {value!r:.40})") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("expected a time with a UTC offset, such as '2026-08-20T12:00:00Z'")
    return value


Id = Annotated[str, AfterValidator(check_id)]
Text = Annotated[str, Field(max_length=1000), AfterValidator(check_text)]
AwareTime = Annotated[datetime, BeforeValidator(_aware_time)]


# Service and host names reach metric labels, incident titles, tickets, the board's HTML and runbook
# arguments: letters, digits and . _ - only, starting with a letter or digit, as Kubernetes and
# OpenTelemetry's service.name conventions write them. An empty name, a newline or markup in one is
# a mistake (or an injection), never a real service.
SERVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def check_service_name(value: str) -> str:
    """
    >>> check_service_name("orders-db")
    'orders-db'
    >>> check_service_name("<b>web</b>")
    Traceback (most recent call last):
    ...
    ValueError: expected a name of letters, digits, '.', '_' and '-' (at most 128, starting with a letter or digit) (got '<b>web</b>')
    """
    if not isinstance(value, str) or not re.fullmatch(SERVICE_NAME_PATTERN, value):
        raise ValueError("expected a name of letters, digits, '.', '_' and '-' (at most 128, starting with a letter "
                         f"or digit) (got {value!r:.60})")
    return value


ServiceName = Annotated[str, AfterValidator(check_service_name)]


class ServiceSpec(Frozen):
    depends_on: list[str] = Field(default_factory=list)  # the services this one calls
    owner: Text | None = None
    tier: int = Field(default=2, ge=1, le=4)  # 1 is the most critical
    kind: ServiceKind = "service"
    entrypoint: bool = False  # serves end users directly; failures here are user-visible
    # Nodes serving the service, by their `host.name`; each sends its own series (a load-balanced pool).
    instances: list[ServiceName] = Field(default_factory=list)
    description: Text = ""


class Silence(Frozen):
    """Alerts matching every given glob, between ``starts_at`` and ``ends_at``, open no incident
    and join none (a maintenance window). They are counted and stay on ``aiops.alerts``; an
    incident already open still updates and resolves."""

    id: Id
    service: Text = "*"
    metric: Text = "*"
    labels: dict[Text, Text] = Field(default_factory=dict)
    starts_at: AwareTime
    ends_at: AwareTime
    created_by: Annotated[Text, Field(min_length=1, max_length=256)]
    comment: Text = ""

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> "Silence":
        # A silence that ends before (or as) it starts silences nothing: it is a typo (a swapped
        # pair, a wrong year) that the operator believes is muting alerts.
        if self.ends_at <= self.starts_at:
            raise ValueError(f"ends_at ({self.ends_at.isoformat()}) must be after starts_at "
                             f"({self.starts_at.isoformat()})")
        return self

    def matches(self, service: str, metric: str, labels: dict[str, str], at: float) -> bool:
        return (self.starts_at.timestamp() <= at < self.ends_at.timestamp()
                and fnmatch.fnmatchcase(service, self.service) and fnmatch.fnmatchcase(metric, self.metric)
                and all(k in labels and fnmatch.fnmatchcase(labels[k], v) for k, v in self.labels.items()))


Renotify = Literal["priority_raised", "root_cause_changed", "services_added", "any_update"]
Priority = Literal["P1", "P2", "P3", "P4"]


class NotifySettings(Frozen):
    """Which incident records reach a receiver (``correlation.notify``).

    Every record is published on ``aiops.incidents``; its ``notification`` says whether it is a
    notification: ``page`` when the incident opens or reopens, ``resolve`` when it resolves,
    ``update`` when an open incident got worse in a way listed in ``renotify_on`` (compared with
    the last record that notified) or is repeated after ``repeat_interval``, else ``silent``.
    Ticket sinks (webhook, PagerDuty, Jira, ClickUp) follow it: a silent record updates no ticket,
    and a ticket is created by the record that pages.
    """

    # What re-notifies an open incident: its priority rose above the last notified one; its top
    # root cause is another service; at least `services_added` services joined since the last
    # notification. "any_update" makes every record a notification (Alertmanager's behaviour).
    renotify_on: list[Renotify] = Field(default_factory=lambda: ["priority_raised", "root_cause_changed",
                                                                  "services_added"])
    # How many newly affected services (since the last notification) make the blast radius
    # grow materially. Priority already counts an entry point and three or more services.
    services_added: int = Field(default=3, ge=1)
    # How long an incident of each priority is published without paging, counted from the record
    # that opened (or reopened) it. A failure often reaches the entry points a minute or two after
    # it starts, and its incident's priority rises with it: paging a P3 at once and the same
    # incident as P1 two minutes later is two pages for one failure. Holding the lower priorities
    # pages once, at the priority the failure reached; an incident that resolves within its hold
    # pages nobody (its records are `silent`). A P1 pages at once. A missing priority: no hold.
    hold: dict[Priority, Duration] = Field(default_factory=lambda: {
        "P1": parse_duration("0s"), "P2": parse_duration("2m"), "P3": parse_duration("3m"),
        "P4": parse_duration("10m")})

    @field_validator("hold")
    @classmethod
    def _non_negative(cls, v: dict[str, timedelta]) -> dict[str, timedelta]:
        bad = {p: d for p, d in v.items() if d.total_seconds() < 0}
        if bad:
            raise ValueError(f"holds must be durations of 0s or more (got {', '.join(f'{p}: {d}' for p, d in bad.items())})")
        return v

    def hold_for(self, priority: str) -> float:
        """Seconds an incident of ``priority`` waits, from its opening record, before it pages."""
        d = self.hold.get(priority)
        return d.total_seconds() if d is not None else 0.0


class SuspectEdgeSettings(Frozen):
    """Suspecting calls missing from the topology (``correlation.suspect_edges``).

    When an incident is about to open on a service ``A`` whose failure (errors, latency, nothing
    of its own running out) began shortly after another open incident's root cause ``B`` and no
    declared path links them, the call ``A -> B`` is suspected: both incidents name it
    (``suspected_edges``), and with ``merge`` the caller's alerts join ``B``'s incident instead,
    ranked as if the call were declared. Only one such ``B`` may exist: when several failing
    services could each explain ``A``, nothing singles one out and no call is suspected. The
    rules are in :func:`correlators.rca.suspect_missing_edge`.
    """

    enabled: bool = True
    # The longest onset lag, from the callee's first anomaly to the caller's, taken for propagation.
    window: Duration = parse_duration("5m")
    # The shortest onset lag that orders two anomalies: about one collection interval. Onsets
    # closer than that (or in the same instant) may be two faults that began together.
    min_lag: Duration = parse_duration("10s")
    # Join the caller's alerts to the callee's incident (only while the caller's group is still
    # pending, so no published incident vanishes), instead of opening a second incident.
    merge: bool = True

    @field_validator("window")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v.total_seconds() <= 0:
            raise ValueError("must be a positive duration such as '5m' (got 0)")
        return v

    @model_validator(mode="after")
    def _lags(self) -> "SuspectEdgeSettings":
        if self.min_lag >= self.window:
            raise ValueError(f"min_lag ({self.min_lag.total_seconds():g}s) must be shorter than window "
                             f"({self.window.total_seconds():g}s)")
        return self


class CorrelationSettings(Frozen):
    # Wait this long after an incident's first alert before the first notification, so the
    # alerts of one failure arrive together and the root cause is ranked on all of them.
    group_wait: Duration = parse_duration("30s")
    # When the two best root causes are within 10 % of each other at group_wait, wait up to this
    # much longer for the ranking to settle: a page that names the wrong service costs more than
    # half a minute. 0 disables.
    settle_wait: Duration = parse_duration("30s")
    # Minimum time between updates of one incident for added alerts.
    group_interval: Duration = parse_duration("1m")
    # An open incident is re-notified this long after its last notification (a reminder).
    repeat_interval: Duration = parse_duration("4h")
    # Which updates of an open incident notify (the rest are published as `silent`).
    notify: NotifySettings = Field(default_factory=NotifySettings)
    # Alerts on services within this many hops (either direction) join one incident.
    max_hops: int = Field(default=2, ge=0)
    # Alertmanager's group_by: alerts whose values for these labels differ never share an incident
    # (e.g. [env] keeps staging out of production's incidents). Empty: the topology alone decides.
    group_by: list[str] = Field(default_factory=list)
    # Maintenance windows; more arrive at run time on aiops.control (`aiops silence`).
    silences: list[Silence] = Field(default_factory=list)
    # A change (deploy, config, scaling) this long before a service's anomaly counts as a candidate cause.
    change_window: Duration = parse_duration("1h")
    # An alert joins an open incident only if it starts within this window of the incident's last alert.
    window: Duration = parse_duration("15m")
    # The longest time from a root cause's latest onset to a symptom's onset taken for the failure
    # spreading up the calls. A failure that begins later is a new one and opens its own
    # incident, even on a caller of an open incident's root cause that still fails.
    propagation_window: Duration = parse_duration("5m")
    # Quiet period: an incident resolves this long after its last alert resolved.
    resolve_after: Duration = parse_duration("5m")
    # The same root cause failing again within this time of its incident's resolution reopens
    # the incident (and pages again) instead of opening a new one. 0s: never; every failure that
    # begins after its incident resolved is an incident of its own (a fault injected again on the
    # same service minutes later is a new fault to page about, not a flap: the detector already
    # opens an alert only at an onset larger than anything the series did lately).
    reopen_within: Duration = parse_duration("0s")
    max_fingerprints: int = Field(default=50, ge=1, le=1000)
    max_root_causes: int = Field(default=5, ge=1, le=20)
    # Suspect calls missing from the topology from onset order and co-anomaly.
    suspect_edges: SuspectEdgeSettings = Field(default_factory=SuspectEdgeSettings)


def dependency_graph(services: dict[str, ServiceSpec]) -> nx.DiGraph:
    """Build the call graph: an edge ``u -> v`` means ``u`` calls (depends on) ``v``.

    >>> g = dependency_graph({"web": ServiceSpec(depends_on=["db"]), "db": ServiceSpec(kind="datastore")})
    >>> list(g.edges)
    [('web', 'db')]
    """
    g = nx.DiGraph()
    for name, spec in services.items():
        g.add_node(name, owner=spec.owner, tier=spec.tier, kind=spec.kind, entrypoint=spec.entrypoint)
    for name, spec in services.items():
        for dep in spec.depends_on:
            g.add_edge(name, dep)
    return g
