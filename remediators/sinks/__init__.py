"""Ticket sinks: each tracker API as pure functions from a ticket event to HTTP requests.

No I/O here: ``streams.delivery`` sends the requests, retries and keeps the ledger.
"""
from __future__ import annotations

from remediators.sink_config import DeliverySettings
from remediators.sinks.base import (HttpRequest, HttpResponse, MissingSecret, Prepared, Secret, Sink, SinkError,
                                    prepare)
from remediators.sinks.clickup import ClickUp
from remediators.sinks.jira import Jira
from remediators.sinks.pagerduty import PagerDuty
from remediators.sinks.webhook import Webhook

_SINKS = {"clickup": ClickUp, "jira": Jira, "pagerduty": PagerDuty, "webhook": Webhook}


def build_sinks(settings: DeliverySettings) -> dict[str, Sink]:
    """The configured sinks by name.

    >>> sorted(build_sinks(DeliverySettings.model_validate({"webhook": {"url": "https://h.test/t"}})))
    ['webhook']
    """
    return {name: cls(settings.sink(name)) for name, cls in _SINKS.items() if settings.sink(name) is not None}


__all__ = ["ClickUp", "HttpRequest", "HttpResponse", "Jira", "MissingSecret", "PagerDuty", "Prepared", "Secret",
           "Sink", "SinkError", "Webhook", "build_sinks", "prepare"]
