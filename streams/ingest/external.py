"""Alerts from other tools: webhook payloads to :class:`~detectors.records.Alert` records.

Three sources, one decoder each, all pure (bytes in, alerts out, no clock, no I/O):

- **Alertmanager** webhook, payload ``version: "4"``: one alert per entry of ``alerts[]``.
- **Datadog** Webhooks integration with the aiops payload template (:data:`DATADOG_TEMPLATE`):
  Datadog's payload is whatever template the user pastes, so we expect exactly that one.
- **New Relic** workflow webhook with its default payload template: one alert per impacted
  entity of the issue.

The alerts join the same correlation as the detectors' (``aiops.alerts``). Mapping:

- **service**: the first candidate that names a service of topology.yaml (Alertmanager: the
  label ``service_label`` (``ingest.prometheus_service_label``), then ``service``, ``job``,
  ``app``, ``host``, and ``instance`` without its port; Datadog: those tags in ``alert_scope``
  then ``tags``, then ``hostname``; New Relic: the impacted entity's name). An alert none of
  whose candidates is a known service is rejected with the reason (and, when every alert of a
  payload is, the payload raises :class:`DecodeError`), exactly like telemetry from an unknown
  service: the correlator could only make it an incident of its own, with no owner to page
  and no place in the graph. Declare the service (``kind: host`` or ``external`` will do).
- **identity**: the fingerprint hashes the source's own identity (Alertmanager's label
  fingerprint; Datadog's monitor id and scope; New Relic's issue id and entity), and every
  field derives from the payload alone, so a re-sent or redelivered webhook gives byte-identical
  alerts, which the correlator counts as duplicates.
- **time**: ``starts_at`` is when the source says the alert began; ``at`` is that time for a
  firing alert and its end for a resolved one (Datadog: ``$DATE``; New Relic: ``updatedAt``).
- **severity**: Alertmanager's ``severity`` label, Datadog's transition and alert type, New
  Relic's priority, mapped to ``critical | warning | info``. An external alert has no anomaly
  score of its own; it gets :data:`SEVERITY_SCORE` (at or above the detectors' default
  threshold: the source already decided it is an alert), and ``value``/``expected`` are unknown
  (NaN, ``null`` on the wire).

Errors follow :mod:`streams.ingest`: a payload that is unusable as a whole raises
:class:`DecodeError` with a reason (it goes to the dead-letter topic, or back to the HTTP
client as 400); an alert that cannot be used is dropped and its reason kept in ``rejects``.
Nothing else is ever raised, whatever the bytes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from detectors.records import Alert, parse_rfc3339, stable_hash
from streams.ingest.redact import DEFAULT as DEFAULT_REDACTOR
from streams.ingest.redact import Redactor
from streams.ingest import (  # noqa: I001
    _REDACTOR,
    MAX_REASON_CHARS,
    T_MAX,
    T_MIN,
    DecodeError,
    PathError,
    expect_list,
    expect_object,
    load,
    short,
    type_name,
    unknown_service,
)

SOURCES = ("alertmanager", "datadog", "newrelic")
SEVERITY_SCORE = {"critical": 1.0, "warning": 0.95, "info": 0.9}
MAX_ALERTS = 1000  # per payload; Alertmanager's max_alerts is unbounded by default
MAX_REJECTS = 20
MAX_LABELS = 32
MAX_TEXT = 500

# The Datadog payload template users paste into the Webhooks integration (README, "Alerts from
# other tools"). Every value is a string: that is how Datadog substitutes variables.
DATADOG_TEMPLATE = """{
  "alert_id": "$ALERT_ID",
  "alert_cycle_key": "$ALERT_CYCLE_KEY",
  "alert_transition": "$ALERT_TRANSITION",
  "alert_type": "$ALERT_TYPE",
  "alert_priority": "$ALERT_PRIORITY",
  "alert_title": "$ALERT_TITLE",
  "alert_metric": "$ALERT_METRIC",
  "alert_scope": "$ALERT_SCOPE",
  "hostname": "$HOSTNAME",
  "tags": "$TAGS",
  "date": "$DATE",
  "link": "$LINK"
}"""


@dataclass(frozen=True, slots=True)
class ExternalAlerts:
    """The usable alerts of one payload and why the others were dropped."""

    source: str
    alerts: tuple[Alert, ...]
    rejects: tuple[str, ...]


def decode_external(source: str, payload: bytes, *, known_services: frozenset[str] | None,
                    service_label: str = "service", redactor: Redactor = DEFAULT_REDACTOR) -> ExternalAlerts:
    """Decode one webhook payload of ``source`` (one of :data:`SOURCES`).

    Parameters
    ----------
    source
        ``alertmanager``, ``datadog`` or ``newrelic``.
    payload
        The HTTP body exactly as the tool sent it (the Kafka message value).
    known_services
        The services of topology.yaml; alerts naming none of them are rejected. ``None``
        accepts any.
    service_label
        The label (Alertmanager) or tag (Datadog) naming the service, tried first.
    redactor
        PII rules (``ingest.redaction``) applied to every label, the alert name, the summary and
        the evidence, as for telemetry: a webhook is ingest too. The service name is not
        redacted, since it must name a service of topology.yaml.

    Raises
    ------
    DecodeError
        When the payload as a whole is unusable; never anything else.

    Examples
    --------
    >>> body = (b'{"version":"4","status":"firing","alerts":[{"status":"firing","labels":'
    ...         b'{"alertname":"HighCPU","service":"api","severity":"critical"},"startsAt":'
    ...         b'"2026-08-20T12:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"3fff2c2d7595e046"}]}')
    >>> [(a.service, a.metric, a.status, a.severity, a.source) for a in
    ...  decode_external("alertmanager", body, known_services=frozenset({"api"})).alerts]
    [('api', 'HighCPU', 'firing', 'critical', 'alertmanager')]
    >>> decode_external("alertmanager", body, known_services=frozenset({"apii"}))
    Traceback (most recent call last):
    ...
    streams.ingest.DecodeError: alerts[0]: unknown service 'api' (did you mean 'apii'?)
    """
    decode = _DECODERS.get(source)
    if decode is None:
        raise DecodeError(f"unknown alert source {short(source)} (expected one of {', '.join(SOURCES)})")
    token = _REDACTOR.set(redactor)
    try:
        out = _Out(known_services)
        decode(load(payload), out, service_label)
        return _redacted(out.finish(source), redactor)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("document nested too deeply") from None
    except Exception as exc:  # noqa: BLE001
        # A bug must dead-letter the payload, not crash the agent and loop on redelivery.
        raise DecodeError(f"internal decoder error: {type(exc).__name__}: {short(str(exc), 120)}") from None
    finally:
        _REDACTOR.reset(token)


def _redacted(res: ExternalAlerts, r: Redactor) -> ExternalAlerts:
    if not r.active:
        return res
    alerts = []
    for a in res.alerts:
        labels, metric = r.labels(a.labels), r.text(a.metric)
        alerts.append(replace(a, metric=metric, labels=labels, series=_series(a.service, metric, labels),
                              summary=r.text(a.summary),
                              evidence=tuple(sorted((r.text(k), r.text(v)) for k, v in a.evidence))))
    return ExternalAlerts(res.source, tuple(alerts), res.rejects)


class _Out:
    __slots__ = ("alerts", "known", "_reasons")

    def __init__(self, known: frozenset[str] | None):
        self.alerts: list[Alert] = []
        self.known = known
        self._reasons: dict[str, None] = {}

    def reject(self, reason: str) -> None:
        # Redacted where it enters, as streams.ingest.Context.reject does: a reason quotes the
        # payload, and a webhook's HTTP answer lists the reasons.
        if len(self._reasons) < MAX_REJECTS:
            self._reasons[_REDACTOR.get().prefix(reason, MAX_REASON_CHARS)] = None

    def service(self, where: str, candidates: list[str | None]) -> str | None:
        """The first candidate naming a known service; else reject naming the first one."""
        present = [c for c in candidates if c]
        if not present:
            self.reject(f"{where}: nothing names the service")
            return None
        if self.known is None:
            return present[0]
        for c in present:
            if c in self.known:
                return c
        self.reject(f"{where}: {unknown_service(present[0], self.known)}")
        return None

    def finish(self, source: str) -> ExternalAlerts:
        reasons = tuple(self._reasons)
        if not self.alerts:
            if not reasons:
                raise DecodeError("no alerts in the payload")
            more = "; ..." if len(reasons) > 3 else ""
            raise DecodeError("; ".join(reasons[:3]) + more)
        return ExternalAlerts(source, tuple(self.alerts), reasons)


# --- shared helpers ---------------------------------------------------------------------------

def _text(v: object, path: str, *, required: bool = False) -> str:
    if v is None and not required:
        return ""
    if type(v) is not str:
        raise PathError(path, f"expected a string (got {type_name(v)})")
    if required and not v:
        raise PathError(path, "expected a non-empty string")
    return v


def _cut(s: str, limit: int = MAX_TEXT) -> str:
    """``s`` cut to ``limit`` characters; redacted first (the payload's redactor), so the cut
    never leaves part of a card number or a token."""
    return s if len(s) <= limit else _REDACTOR.get().prefix(s, limit - 1) + "…"


def _in_range(t: float) -> bool:
    return T_MIN <= t <= T_MAX


def _rfc3339(v: object, path: str) -> float | None:
    """A time in 2000..2100, ``None`` when absent or Go's zero time; raises on garbage."""
    if v is None or v == "" or (type(v) is str and v.startswith("0001-01-01")):
        return None
    if type(v) is not str:
        raise PathError(path, f"expected an RFC 3339 string (got {type_name(v)})")
    try:
        t = parse_rfc3339(v)
    except (ValueError, OverflowError):
        raise PathError(path, f"invalid RFC 3339 time {short(v)}") from None
    if not re.search(r"(Z|[+-]\d\d:\d\d)$", v):
        raise PathError(path, f"RFC 3339 time without a UTC offset {short(v)}")
    if not _in_range(t):
        raise PathError(path, f"time {short(v)} outside 2000..2100")
    return t


def _epoch_ms(v: object, path: str) -> float | None:
    """Milliseconds since the epoch, as a number or a decimal string; ``None`` when absent."""
    if v is None or v == "":
        return None
    if type(v) is str:
        try:
            v = int(v.strip())
        except ValueError:
            raise PathError(path, f"expected epoch milliseconds (got {short(v)})") from None
    if type(v) not in (int, float) or (type(v) is float and not math.isfinite(v)):
        raise PathError(path, f"expected epoch milliseconds (got {type_name(v)})")
    if abs(v) > 1e16:  # beyond any plausible time, and too large for a float division
        raise PathError(path, f"time {short(v)} is not epoch milliseconds in 2000..2100")
    t = v / 1000.0
    if not _in_range(t):
        raise PathError(path, f"time {short(v)} is not epoch milliseconds in 2000..2100")
    return float(t)


def _labels(d: dict[str, str], drop: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    items = sorted((k, _cut(v, 200)) for k, v in d.items() if k not in drop)
    return tuple(items[:MAX_LABELS])


def _series(service: str, metric: str, labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return f"{service}/{metric}"
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{service}/{metric}{{{inner}}}"


def _alert(*, source: str, identity: tuple[str, ...], status: str, service: str, metric: str,
           labels: tuple[tuple[str, str], ...], severity: str, starts_at: float, at: float, summary: str,
           evidence: dict[str, str]) -> Alert:
    return Alert(
        fingerprint=stable_hash(source, *identity), status=status, service=service, metric=metric,
        series=_series(service, metric, labels), labels=labels, score=SEVERITY_SCORE[severity], value=math.nan,
        expected=math.nan, starts_at=starts_at, at=max(at, starts_at), severity=severity, source=source,
        summary=_cut(summary), evidence=tuple(sorted((k, _cut(v)) for k, v in evidence.items() if v)),
    )


_SEVERITIES = {
    "critical": "critical", "crit": "critical", "page": "critical", "error": "critical", "high": "critical",
    "fatal": "critical", "emergency": "critical", "alert": "critical", "p1": "critical", "p2": "critical",
    "warning": "warning", "warn": "warning", "medium": "warning", "p3": "warning",
    "info": "info", "informational": "info", "notice": "info", "low": "info", "none": "info", "p4": "info",
    "p5": "info",
}


def _severity(v: str, default: str = "warning") -> str:
    return _SEVERITIES.get(v.strip().lower(), default)


# --- Alertmanager ---------------------------------------------------------------------------

def _alertmanager(obj: object, out: _Out, service_label: str) -> None:
    if type(obj) is not dict:
        raise DecodeError(f"expected an Alertmanager webhook object (got {type_name(obj)})")
    version = obj.get("version")
    if version != "4":
        raise PathError("version", f"expected \"4\", the Alertmanager webhook payload (got {short(version)})")
    alerts = expect_list(obj.get("alerts"), "alerts")
    if len(alerts) > MAX_ALERTS:
        raise PathError("alerts", f"{len(alerts)} alerts in one payload (at most {MAX_ALERTS})")
    for i, raw in enumerate(alerts):
        where = f"alerts[{i}]"
        try:
            _am_alert(raw, out, service_label, where)
        except PathError as exc:
            out.reject(str(exc.within(where)))


def _am_alert(raw: object, out: _Out, service_label: str, where: str) -> None:
    a = expect_object(raw, "")
    if not a:
        raise PathError("", "expected an alert object")
    labels = expect_object(a.get("labels"), "labels")
    annotations = expect_object(a.get("annotations"), "annotations")
    for name, d in (("labels", labels), ("annotations", annotations)):
        for k, v in d.items():
            if type(v) is not str:
                raise PathError(f"{name}.{k}", f"expected a string (got {type_name(v)})")
    status = a.get("status")
    if status not in ("firing", "resolved"):
        raise PathError("status", f"expected 'firing' or 'resolved' (got {short(status)})")
    metric = labels.get("alertname")
    if not metric:
        raise PathError("labels.alertname", "required (the alert's name)")
    starts_at = _rfc3339(a.get("startsAt"), "startsAt")
    if starts_at is None:
        raise PathError("startsAt", "required")
    ends_at = _rfc3339(a.get("endsAt"), "endsAt")
    if status == "resolved":
        if ends_at is None:
            raise PathError("endsAt", "a resolved alert needs its end time")
        at = ends_at
    else:
        at = starts_at
    fp = _text(a.get("fingerprint"), "fingerprint")
    if not fp:  # older Alertmanagers: the fingerprint is the labels' hash anyway
        fp = stable_hash(*(f"{k}={v}" for k, v in sorted(labels.items())))
    instance = labels.get("instance", "")
    host = instance.rsplit(":", 1)[0] if instance and not instance.startswith("[") else instance
    service = out.service(where, [labels.get(service_label), labels.get("service"), labels.get("job"),
                                  labels.get("app"), labels.get("host"), host])
    if service is None:
        return
    out.alerts.append(_alert(
        source="alertmanager", identity=(fp,), status=status, service=service, metric=metric,
        labels=_labels(labels, drop=("alertname",)), severity=_severity(labels.get("severity", "")),
        starts_at=starts_at, at=at,
        summary=annotations.get("summary") or annotations.get("description") or metric,
        evidence={"generator_url": _text(a.get("generatorURL"), "generatorURL"),
                  "runbook_url": annotations.get("runbook_url", ""), "fingerprint": fp}))


# --- Datadog --------------------------------------------------------------------------------

_UNSUBSTITUTED = re.compile(r"^\$[A-Z_]+(\[[^\]]*\])?$")
_DD_FIRING = {"triggered": "critical", "re-triggered": "critical", "warn": "warning", "re-warn": "warning",
              "no data": "warning", "re-no data": "warning", "renotify": ""}


def _dd(obj: dict, key: str, *, required: bool = False) -> str:
    """A template field; a variable Datadog left unsubstituted (``$HOSTNAME``) counts as absent."""
    v = obj.get(key)
    if type(v) in (int, float) and not isinstance(v, bool):
        v = str(v)
    s = _text(v, key).strip()
    if _UNSUBSTITUTED.match(s):
        s = ""
    if required and not s:
        raise PathError(key, "required: is this the aiops Datadog payload template? (see README)")
    return s


def _dd_tags(s: str) -> dict[str, str]:
    """``"env:prod, service:checkout, role"`` as a mapping (a bare tag maps to "")."""
    out: dict[str, str] = {}
    for tag in s.split(","):
        tag = tag.strip()
        if tag:
            k, _, v = tag.partition(":")
            out.setdefault(k.strip(), v.strip())
    return out


def _datadog(obj: object, out: _Out, service_label: str) -> None:
    if type(obj) is not dict:
        raise DecodeError(f"expected the aiops Datadog payload template, a JSON object (got {type_name(obj)})")
    if "alert_id" not in obj and "event_type" in obj:
        raise DecodeError("this is Datadog's default webhook payload; paste the aiops payload template "
                          "(README, 'Alerts from other tools') into the webhook's Payload field")
    alert_id = _dd(obj, "alert_id", required=True)
    transition = _dd(obj, "alert_transition", required=True)
    kind = transition.lower()
    if kind == "recovered":
        # A recovery does not say how bad the alert was; "warning" keeps the incident's severity
        # from dropping to "info" on its way out.
        status, severity = "resolved", "warning"
    elif kind in _DD_FIRING:
        status = "firing"
        severity = _DD_FIRING[kind] or _severity(_dd(obj, "alert_type"), default="warning")
    else:
        raise PathError("alert_transition", f"expected Triggered, Re-Triggered, Warn, Re-Warn, No Data, Re-No Data, "
                                            f"Renotify or Recovered (got {short(transition)})")
    at = _epoch_ms(_dd(obj, "date", required=True), "date")
    scope_raw = _dd(obj, "alert_scope")
    scope, tags = _dd_tags(scope_raw), _dd_tags(_dd(obj, "tags"))
    hostname = _dd(obj, "hostname")
    service = out.service("payload", [scope.get(service_label), tags.get(service_label), scope.get("service"),
                                      tags.get("service"), hostname, scope.get("host"), tags.get("host")])
    if service is None:
        return
    title = _dd(obj, "alert_title")
    metric = _dd(obj, "alert_metric") or title or f"datadog.monitor.{alert_id}"
    labels = {**tags, **scope, "monitor_id": alert_id}
    priority = _dd(obj, "alert_priority")
    if priority:
        labels["priority"] = priority
    if hostname:
        labels.setdefault("host", hostname)
    # A new cycle of the same monitor and scope is the same series firing again (as
    # Alertmanager's label fingerprint is), so the cycle key is evidence, not identity.
    out.alerts.append(_alert(
        source="datadog", identity=(alert_id, scope_raw), status=status, service=service, metric=metric,
        labels=_labels(labels), severity=severity, starts_at=at, at=at, summary=title or metric,
        evidence={"link": _dd(obj, "link"), "alert_cycle_key": _dd(obj, "alert_cycle_key"),
                  "transition": transition}))


# --- New Relic ------------------------------------------------------------------------------

_NR_STATES = {"CREATED": "firing", "ACTIVATED": "firing", "ACKNOWLEDGED": "firing", "CLOSED": "resolved"}
_NR_PRIORITY = {"CRITICAL": "critical", "HIGH": "critical", "MEDIUM": "warning", "LOW": "info"}


def _first_text(v: object, path: str) -> str:
    items = expect_list(v, path)
    first = items[0] if items else ""
    return _text(first, f"{path}[0]") if first is not None else ""


def _newrelic(obj: object, out: _Out, service_label: str) -> None:
    if type(obj) is not dict:
        raise DecodeError(f"expected New Relic's workflow webhook payload, a JSON object (got {type_name(obj)})")
    issue = obj.get("id")
    if type(issue) is not str or not issue:
        raise PathError("id", f"expected the issue id, a non-empty string (got {type_name(issue)})")
    state = obj.get("state")
    if type(state) is not str or state not in _NR_STATES:
        raise PathError("state", f"expected CREATED, ACTIVATED, ACKNOWLEDGED or CLOSED (got {short(state)})")
    status = _NR_STATES[state]
    created = _epoch_ms(obj.get("createdAt"), "createdAt")
    if created is None:
        raise PathError("createdAt", "required")
    updated = _epoch_ms(obj.get("updatedAt"), "updatedAt") or created
    closed = _epoch_ms(obj.get("closedAt"), "closedAt")
    at = (closed or updated) if status == "resolved" else updated
    priority = _text(obj.get("priority"), "priority")
    severity = _NR_PRIORITY.get(priority.upper(), "warning")
    title = _text(obj.get("title"), "title")
    condition = _first_text(obj.get("alertConditionNames"), "alertConditionNames")
    policy = _first_text(obj.get("alertPolicyNames"), "alertPolicyNames")
    entities = expect_list(obj.get("impactedEntities"), "impactedEntities")
    if not entities:
        raise PathError("impactedEntities", "no impacted entity to name the service")
    if len(entities) > MAX_ALERTS:
        raise PathError("impactedEntities", f"{len(entities)} entities in one payload (at most {MAX_ALERTS})")
    labels = {"issue_id": issue}
    if policy:
        labels["policy"] = policy
    if priority:
        labels["priority"] = priority
    metric = condition or title or "newrelic.issue"
    for i, entity in enumerate(entities):
        where = f"impactedEntities[{i}]"
        if type(entity) is not str or not entity:
            out.reject(f"{where}: expected an entity name (got {type_name(entity)})")
            continue
        service = out.service(where, [entity])
        if service is None:
            continue
        out.alerts.append(_alert(
            source="newrelic", identity=(issue, entity), status=status, service=service, metric=metric,
            labels=_labels(labels), severity=severity, starts_at=created, at=at, summary=title or metric,
            evidence={"issue_url": _text(obj.get("issueUrl"), "issueUrl"), "state": state}))


_DECODERS = {"alertmanager": _alertmanager, "datadog": _datadog, "newrelic": _newrelic}

__all__ = ["DATADOG_TEMPLATE", "SOURCES", "ExternalAlerts", "decode_external"]
