"""The wire codec: every record aiops writes to Kafka, and the alert record it reads back.

One record type per topic, JSON (orjson), each with a ``schema_version``. The JSON Schemas in
``streams/schemas/`` describe exactly what these functions write; ``tests/contract`` checks it.
Times go on the wire as RFC 3339 UTC strings with millisecond precision, so a record read back
carries ms-rounded floats; replay round-trips alerts through this codec too, which keeps replay
and the worker identical.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime

import orjson

from correlators.records import (CHANGE_SCHEMA_VERSION, INCIDENT_SCHEMA_VERSION, Change, Evidence, Incident, RootCause,
                                 SuspectedEdge)
from detectors.records import ALERT_SCHEMA_VERSION, Alert, AlertEvent, Heartbeat, parse_rfc3339, rfc3339
from remediators.records import ACTION_SCHEMA_VERSION, TICKET_SCHEMA_VERSION, Action, TicketEvent

DEADLETTER_SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A record on an internal topic does not match its schema."""


def _num(x: float) -> float | None:
    """JSON has no NaN or infinity; an unknown number is ``null``."""
    return x if math.isfinite(x) else None


def _ms(t: float) -> float:
    return parse_rfc3339(rfc3339(t))


# --- aiops.alerts ----------------------------------------------------------------------------

def encode_alert_event(ev: AlertEvent) -> bytes:
    if isinstance(ev, Heartbeat):
        return orjson.dumps({"schema_version": ALERT_SCHEMA_VERSION, "type": "heartbeat",
                             "at": rfc3339(ev.at), "source": ev.source, "lane": ev.lane,
                             "calls": [{"caller": a, "callee": b, "count": n, "last_seen": rfc3339(t)}
                                       for a, b, n, t in ev.calls]})
    return orjson.dumps({
        "schema_version": ALERT_SCHEMA_VERSION, "type": "alert",
        "fingerprint": ev.fingerprint, "status": ev.status, "service": ev.service, "metric": ev.metric,
        "series": ev.series, "labels": dict(ev.labels), "score": _num(ev.score), "value": _num(ev.value),
        "expected": _num(ev.expected), "starts_at": rfc3339(ev.starts_at), "at": rfc3339(ev.at),
        "severity": ev.severity, "source": ev.source, "summary": ev.summary,
        "evidence": dict(ev.evidence),
    })


def _time(d: dict, key: str) -> float:
    v = d.get(key)
    if type(v) is not str:
        raise RecordError(f"{key}: expected an RFC 3339 string (got {type(v).__name__})")
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"{key}: invalid RFC 3339 time {v[:40]!r}") from None
    if dt.tzinfo is None:
        # Without an offset Python reads the host's local zone: replay and the worker could disagree.
        raise RecordError(f"{key}: RFC 3339 time without a UTC offset {v[:40]!r}")
    return dt.timestamp()


def _str(d: dict, key: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if type(v) is not str:
        raise RecordError(f"{key}: expected a string (got {type(v).__name__})")
    return v


def _float(d: dict, key: str) -> float:
    v = d.get(key)
    if v is None:
        return math.nan
    if type(v) not in (int, float):
        raise RecordError(f"{key}: expected a number (got {type(v).__name__})")
    return float(v)


def _pairs(d: dict, key: str) -> tuple[tuple[str, str], ...]:
    v = d.get(key)
    if v is None:
        v = {}
    if type(v) is not dict or any(type(x) is not str for x in v.values()):
        raise RecordError(f"{key}: expected an object of strings")
    return tuple(sorted(v.items()))


def _calls(d: dict) -> tuple[tuple[str, str, int, float], ...]:
    v = d.get("calls", [])  # absent from heartbeats of releases before spans
    if type(v) is not list:
        raise RecordError(f"calls: expected a list (got {type(v).__name__})")
    out = []
    for i, c in enumerate(v):
        if type(c) is not dict:
            raise RecordError(f"calls[{i}]: expected an object")
        n = c.get("count")
        if type(n) is not int or n < 1:
            raise RecordError(f"calls[{i}].count: expected a positive integer")
        try:
            out.append((_str(c, "caller"), _str(c, "callee"), n, _time(c, "last_seen")))
        except RecordError as exc:
            raise RecordError(f"calls[{i}].{exc}") from None
    return tuple(out)


def decode_alert_event(payload: bytes) -> AlertEvent:
    """Raises :class:`RecordError` for anything that is not a valid alert record."""
    d = _object(payload)
    if type(d.get("schema_version")) is not int or d["schema_version"] != ALERT_SCHEMA_VERSION:  # true == 1
        raise RecordError(f"schema_version: expected {ALERT_SCHEMA_VERSION} (got {d.get('schema_version')!r})")
    kind = d.get("type")
    if kind == "heartbeat":
        return Heartbeat(at=_time(d, "at"), source=_str(d, "source", "detector"), lane=_str(d, "lane", ""),
                         calls=_calls(d))
    if kind != "alert":
        raise RecordError(f"type: expected 'alert' or 'heartbeat' (got {kind!r})")
    status = _str(d, "status")
    if status not in ("firing", "resolved"):
        raise RecordError(f"status: expected 'firing' or 'resolved' (got {status!r})")
    return Alert(
        fingerprint=_str(d, "fingerprint"), status=status, service=_str(d, "service"), metric=_str(d, "metric"),
        series=_str(d, "series"), labels=_pairs(d, "labels"), score=_float(d, "score"), value=_float(d, "value"),
        expected=_float(d, "expected"), starts_at=_time(d, "starts_at"), at=_time(d, "at"),
        severity=_str(d, "severity", "warning"), source=_str(d, "source", "detector"), summary=_str(d, "summary", ""),
        evidence=_pairs(d, "evidence"),
    )


# --- aiops.incidents -------------------------------------------------------------------------

def _evidence(e: Evidence) -> dict:
    return {"series": e.series, "metric": e.metric, "score": _num(e.score), "value": _num(e.value),
            "expected": _num(e.expected), "at": rfc3339(e.at), "detail": e.detail, "labels": dict(e.labels)}


def _root_cause(rc: RootCause) -> dict:
    return {"service": rc.service, "score": round(rc.score, 6), "kind": rc.kind, "path": list(rc.path),
            "reason": rc.reason, "evidence": [_evidence(e) for e in rc.evidence]}


def _suspected_edge(e: SuspectedEdge) -> dict:
    return {"caller": e.caller, "callee": e.callee, "lag_s": round(e.lag_s, 3), "reason": e.reason,
            "related_incident": e.related_incident, "merged": e.merged}


def incident_dict(inc: Incident) -> dict:
    return {
        "schema_version": INCIDENT_SCHEMA_VERSION,
        "id": inc.id, "version": inc.version, "status": inc.status, "reason": inc.reason,
        "opened_at": rfc3339(inc.opened_at), "updated_at": rfc3339(inc.updated_at),
        "resolved_at": rfc3339(inc.resolved_at) if inc.resolved_at is not None else None,
        "title": inc.title, "priority": inc.priority, "severity": inc.severity,
        "services": list(inc.services),
        "alerts": {"count": inc.alert_count, "firing": inc.firing_count, "fingerprints": list(inc.fingerprints)},
        "root_causes": [_root_cause(rc) for rc in inc.root_causes],
        "owner": inc.owner, "labels": dict(inc.labels), "notification": inc.notification,
        "suspected_edges": [_suspected_edge(e) for e in inc.suspected_edges],
    }


def encode_incident(inc: Incident) -> bytes:
    return orjson.dumps(incident_dict(inc))


# --- aiops.actions and aiops.tickets ---------------------------------------------------------

def encode_action(a: Action) -> bytes:
    return orjson.dumps({
        "schema_version": ACTION_SCHEMA_VERSION, "id": a.id, "incident_id": a.incident_id,
        "incident_version": a.incident_version, "policy": a.policy, "step": a.step, "kind": a.kind,
        "target": a.target, "params": dict(a.params), "mode": a.mode, "decision": a.decision, "reason": a.reason,
        "at": rfc3339(a.at), "approved_by": a.approved_by, "result": a.result,
    })


def encode_ticket(t: TicketEvent) -> bytes:
    return orjson.dumps({
        "schema_version": TICKET_SCHEMA_VERSION, "ticket_key": t.ticket_key, "event": t.event,
        "incident_id": t.incident_id, "incident_version": t.incident_version, "sink": t.sink, "team": t.team,
        "assignee": t.assignee, "priority": t.priority, "title": t.title, "description": t.description,
        "tags": list(t.tags), "at": rfc3339(t.at), "runbooks": list(t.runbooks),
    })


def decode_action(payload: bytes) -> Action:
    """An ``aiops.actions`` record back into an :class:`Action` (the executor reads decisions,
    the worker reads results). Raises :class:`RecordError`."""
    d = _object(payload)
    if type(d.get("schema_version")) is not int or d["schema_version"] != ACTION_SCHEMA_VERSION:
        raise RecordError(f"schema_version: expected {ACTION_SCHEMA_VERSION} (got {d.get('schema_version')!r})")
    for key in ("incident_version", "step"):
        if type(d.get(key)) is not int:
            raise RecordError(f"{key}: expected an integer")
    for key in ("approved_by", "result"):
        if d.get(key) is not None and type(d[key]) is not str:
            raise RecordError(f"{key}: expected a string or null")
    return Action(id=_str(d, "id"), incident_id=_str(d, "incident_id"), incident_version=d["incident_version"],
                  policy=_str(d, "policy"), step=d["step"], kind=_str(d, "kind"), target=_str(d, "target"),
                  params=_pairs(d, "params"), mode=_str(d, "mode"), decision=_str(d, "decision"),
                  reason=_str(d, "reason", ""), at=_time(d, "at"), approved_by=d.get("approved_by"),
                  result=d.get("result"))


# --- telemetry.changes -----------------------------------------------------------------------

CHANGE_KINDS = ("deploy", "config", "scale", "rollback", "restart", "other")


def encode_change(ch: Change) -> bytes:
    return orjson.dumps({"schema_version": CHANGE_SCHEMA_VERSION, "id": ch.id, "service": ch.service,
                         "kind": ch.kind, "at": rfc3339(ch.at), "description": ch.description})


def decode_change(payload: bytes, redactor=None) -> Change:
    """A change event (deploy, config change, scaling...). Raises :class:`RecordError`.

    Its id and description reach incidents, tickets and reports, so they go through
    ``redactor`` (the topology's ``ingest.redaction``; ``None``: its defaults) like every other
    record that leaves ingest, the description before it is cut to 500 characters.

    >>> decode_change(b'{"schema_version":1,"id":"d-1","service":"api","kind":"deploy","at":"2026-01-01T00:00:00Z"}').kind
    'deploy'
    >>> decode_change(b'{"schema_version":1,"id":"d-1","service":"api","kind":"deploy","at":"2026-01-01T00:00:00Z",'
    ...               b'"description":"by ops@example.com token=abc"}').description
    'by <email> token=<token>'
    """
    from streams.ingest.redact import DEFAULT

    r = DEFAULT if redactor is None else redactor
    d = _object(payload)
    if type(d.get("schema_version")) is not int or d["schema_version"] != CHANGE_SCHEMA_VERSION:
        raise RecordError(f"schema_version: expected {CHANGE_SCHEMA_VERSION} (got {d.get('schema_version')!r})")
    kind = _str(d, "kind")
    if kind not in CHANGE_KINDS:
        raise RecordError(f"kind: expected one of {', '.join(CHANGE_KINDS)} (got {kind[:40]!r})")
    ident, service = _str(d, "id"), _str(d, "service")
    if not ident or not service:
        raise RecordError("id and service: expected non-empty strings")
    return Change(id=r.text(ident), service=service, kind=kind, at=_time(d, "at"),
                  description=r.prefix(_str(d, "description", ""), 500))


# --- aiops.control ---------------------------------------------------------------------------

CONTROL_SCHEMA_VERSION = 1


def encode_approval(action_id: str, by: str, at: float) -> bytes:
    return orjson.dumps({"schema_version": CONTROL_SCHEMA_VERSION, "type": "approve", "action_id": action_id,
                         "by": by, "at": rfc3339(at)})


def decode_control(payload: bytes) -> dict:
    """A control message as a dict with parsed times. Raises :class:`RecordError`.

    Ids (``action_id``, a silence's ``id``) and who sent it (``by``) reach keys, logs and pages as
    they are, so they are checked here, for the worker and ``POST /control`` alike: ids as
    :data:`correlators.config.ID_PATTERN`, ``by`` without control characters (a newline in it
    could forge a log line)."""
    from pydantic import ValidationError

    from correlators.config import Silence, check_id, check_text

    d = _object(payload)
    if d.get("schema_version") != CONTROL_SCHEMA_VERSION or type(d.get("schema_version")) is not int:
        raise RecordError(f"schema_version: expected {CONTROL_SCHEMA_VERSION}")
    kind = d.get("type")
    by = _str(d, "by")
    if not by.strip():
        raise RecordError("by: a control message must name who sent it")
    try:
        check_text(by)
    except ValueError as exc:
        raise RecordError(f"by: {exc}") from None
    if len(by) > 256:
        raise RecordError(f"by: at most 256 characters (got {len(by)})")
    if kind == "approve":
        return {"type": "approve", "action_id": _id(d, "action_id"), "by": by, "at": _time(d, "at")}
    if kind == "silence":
        try:
            silence = Silence.model_validate({k: d.get(k) for k in ("id", "service", "metric", "labels", "starts_at",
                                                                    "ends_at", "comment") if d.get(k) is not None}
                                             | {"created_by": by}, strict=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "silence"
            msg = err["msg"].removeprefix("Value error, ")
            raise RecordError(f"{where}: {msg}") from None
        return {"type": "silence", "silence": silence, "by": by, "at": _time(d, "at")}
    if kind == "expire_silence":
        return {"type": "expire_silence", "id": _id(d, "id"), "by": by, "at": _time(d, "at")}
    raise RecordError(f"type: expected 'approve', 'silence' or 'expire_silence' (got {str(kind)[:40]!r})")


def _id(d: dict, key: str) -> str:
    from correlators.config import check_id

    value = _str(d, key)
    try:
        return check_id(value)
    except ValueError as exc:
        raise RecordError(f"{key}: {exc}") from None


def encode_expire_silence(silence_id: str, by: str, at: float) -> bytes:
    return orjson.dumps({"schema_version": CONTROL_SCHEMA_VERSION, "type": "expire_silence", "id": silence_id,
                         "by": by, "at": rfc3339(at)})


def encode_silence(silence_id: str, by: str, at: float, *, starts_at: float, ends_at: float, service: str = "*",
                   metric: str = "*", labels: dict[str, str] | None = None, comment: str = "") -> bytes:
    return orjson.dumps({"schema_version": CONTROL_SCHEMA_VERSION, "type": "silence", "id": silence_id, "by": by,
                         "at": rfc3339(at), "service": service, "metric": metric, "labels": labels or {},
                         "starts_at": rfc3339(starts_at), "ends_at": rfc3339(ends_at), "comment": comment})


def _object(payload: bytes) -> dict:
    try:
        d = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc}") from None
    if type(d) is not dict:
        raise RecordError("expected a JSON object")
    return d


# --- aiops.config ----------------------------------------------------------------------------

CONFIG_SCHEMA_VERSION = 1
CONFIG_KEY = "topology"  # one key: the compacted topic keeps the latest topology.yaml


@dataclass(frozen=True)
class ConfigRecord:
    """A topology.yaml pushed to ``aiops.config``: the file's text as written, its SHA-256
    (hex, of the UTF-8 text), who pushed it and when (wall clock, not event time)."""

    yaml: str
    sha256: str
    by: str
    at: float


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode_config(text: str, by: str, at: float) -> bytes:
    """
    >>> rec = decode_config(encode_config("services: {a: {}}\\n", "alice", 1.7e9))
    >>> rec.by, rec.sha256[:12], rec.yaml
    ('alice', 'de3bf9b9ed3d', 'services: {a: {}}\\n')
    """
    return orjson.dumps({"schema_version": CONFIG_SCHEMA_VERSION, "yaml": text, "sha256": config_sha256(text),
                         "by": by, "at": rfc3339(at)})


def decode_config(payload: bytes) -> ConfigRecord:
    """An ``aiops.config`` record. Raises :class:`RecordError`, also when ``sha256`` is not the
    digest of ``yaml`` (a record edited on the way is refused, not applied)."""
    d = _object(payload)
    if d.get("schema_version") != CONFIG_SCHEMA_VERSION or type(d.get("schema_version")) is not int:
        raise RecordError(f"schema_version: expected {CONFIG_SCHEMA_VERSION}")
    text = _str(d, "yaml")
    sha = _str(d, "sha256")
    by = _str(d, "by")
    if not by.strip():
        raise RecordError("by: a config record must name who pushed it")
    if sha != config_sha256(text):
        raise RecordError(f"sha256: {sha[:64]!r} is not the SHA-256 of yaml ({config_sha256(text)})")
    return ConfigRecord(yaml=text, sha256=sha, by=by, at=_time(d, "at"))


# --- aiops.deadletter ------------------------------------------------------------------------

def dead_letter(reason: str, topic: str, partition: int, offset: int, payload: bytes,
                max_excerpt: int = 1024, *, at: float | None = None, redactor=None) -> bytes:
    """A dead-letter record: why, where from (topic, partition, offset) and a bounded excerpt.

    The excerpt is cut to ``max_excerpt`` bytes (an ellipsis marks the cut) so a hostile
    megabyte message cannot become a megabyte dead-letter record. The reason and the excerpt
    quote the bad input, so both go through ``redactor`` (a
    :class:`~streams.ingest.redact.Redactor`; ``None``: the defaults of ``ingest.redaction``).
    The excerpt is redacted over a window wider than the cut, so a card number or address
    straddling it is replaced whole, not left half visible; the reason is redacted whole, then
    cut. The rules run on decoded text: JSON string escapes (``\\/``, ``\\t``, ``\\u0040``) are
    decoded first, so the excerpt shows the text an escape would have hidden, redacted.

    >>> import orjson
    >>> rec = orjson.loads(dead_letter("invalid JSON", "telemetry.metrics", 0, 7, b"x" * 5000, 16))
    >>> rec["offset"], rec["excerpt"], rec["size"]
    (7, 'xxxxxxxxxxxxxxxx…', 5000)
    >>> orjson.loads(dead_letter("unknown service 'a@b.io'", "t", 0, 0, b'{"to": "ops@example.com"', 64))["excerpt"]
    '{"to": "<email>"'
    """
    from streams.ingest.redact import DEFAULT, PREFIX_MARGIN  # only dead letters quote raw input

    from streams.ingest.redact import json_unescaped

    r = DEFAULT if redactor is None else redactor
    head = json_unescaped(bytes(payload[:max_excerpt]).decode("utf-8", errors="replace"))
    window = json_unescaped(bytes(payload[:max_excerpt + PREFIX_MARGIN]).decode("utf-8", errors="replace"))
    redacted = r.redact(window)
    excerpt = redacted[:len(head)]
    if len(payload) > max_excerpt or len(redacted) > len(head):
        excerpt += "…"
    reason = r.prefix(json_unescaped(reason[:20000]), 2000)
    return orjson.dumps({
        "schema_version": DEADLETTER_SCHEMA_VERSION, "reason": reason, "topic": topic,
        "partition": partition, "offset": offset, "at": rfc3339(at) if at is not None else None,
        "size": len(payload), "excerpt": excerpt,
    })


__all__ = ["RecordError", "decode_alert_event", "dead_letter", "encode_action", "encode_alert_event",
           "encode_incident", "encode_ticket", "incident_dict"]
