"""OTLP ``ExportLogsServiceRequest`` (OTLP/JSON or protobuf) to :class:`~detectors.records.LogRecord` objects.

The service is the resource attribute ``service.name``; resource and record attributes become
labels. The time is ``timeUnixNano``, else ``observedTimeUnixNano`` (the collector sets the
latter when a source gives no time). A record without a usable severity number takes it from
``severityText`` so that plain ``ERROR`` lines still count as errors. Bodies (cut to
``MAX_BODY`` characters) and attributes go through the redactor (:mod:`streams.ingest.redact`).

A protobuf request is read straight off the parsed upb message (:func:`_decode_proto`), giving
exactly what the JSON decoder gives for the request's OTLP/JSON object
(:func:`streams.ingest.otlp_proto.to_json`): records, reasons and errors. :func:`decode_via_json`
is that reference path, kept for the tests that hold the two together
(``tests/property/test_proto_logs.py``).
"""
from __future__ import annotations

from detectors.records import LogRecord
from streams.ingest import DEFAULT_REDACTOR, Context, PathError, Redactor, expect_list, type_name
from streams.ingest import otlp_proto
from streams.ingest.limits import check_proto, check_size
from streams.ingest.otlp import (
    _NS_MAX,
    _NS_MIN,
    SERVICE_ATTRIBUTE,
    any_to_str,
    attributes,
    decode_resources,
    parse_int,
    time_problem,
)

MAX_BODY = 2048
_TEXT_SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13, "ERROR": 17,
                  "ERR": 17, "CRITICAL": 21, "FATAL": 21, "PANIC": 21, "ALERT": 21, "EMERGENCY": 24}


def decode(payload: bytes, *, known_services: frozenset[str] | None,
           redactor: Redactor = DEFAULT_REDACTOR, limits=None) -> tuple[list[LogRecord], list[str]]:
    # The steps of streams.ingest.load_otlp for a protobuf request, in its order, then the
    # message read directly rather than as its OTLP/JSON object.
    check_size(payload, limits)
    if payload[:1] == b"\n" and otlp_proto.is_protobuf(payload):
        msg = otlp_proto.parse_or_json_error(payload, "logs")
        check_proto(msg, "logs", limits, len(payload))
        return _decode_proto(msg, known_services, redactor)
    return decode_via_json(payload, known_services=known_services, redactor=redactor, limits=limits)


def decode_via_json(payload: bytes, *, known_services: frozenset[str] | None,
                    redactor: Redactor = DEFAULT_REDACTOR, limits=None) -> tuple[list[LogRecord], list[str]]:
    """The JSON path for either encoding: a protobuf request is read as its OTLP/JSON object
    (the reference :func:`decode` is held to)."""
    return decode_resources(payload, "resourceLogs", "scopeLogs", "logs", _resource_logs,
                            known_services=known_services, redactor=redactor, limits=limits)


def _resource_logs(service: str, res_attrs: dict[str, str], scope_logs: list, ctx: Context,
                   out: list[LogRecord]) -> None:
    # The fields are read with paths relative to the record, and a PathError gets the record's
    # path on its way out (PathError.within gives the text the full path would have): no path
    # string is built for a record that has nothing wrong.
    labels, prefix, reject = ctx.labels, ctx.redactor.prefix, ctx.reject
    append = out.append
    for j, sl in enumerate(scope_logs):
        if type(sl) is not dict:
            raise PathError(f"scopeLogs[{j}]", f"expected an object (got {type_name(sl)})")
        recs = sl.get("logRecords")
        for k, rec in enumerate(recs if type(recs) is list else expect_list(recs, f"scopeLogs[{j}].logRecords")):
            if type(rec) is not dict:
                raise PathError(f"scopeLogs[{j}].logRecords[{k}]", f"expected an object (got {type_name(rec)})")
            try:
                raw_t = rec.get("timeUnixNano")
                ns = parse_int(raw_t, "timeUnixNano") if raw_t is not None else None
                if not ns:  # absent or 0: unknown, fall back to when the collector saw it
                    raw_t = rec.get("observedTimeUnixNano")
                    ns = parse_int(raw_t, "observedTimeUnixNano") if raw_t is not None else None
                # time_problem's test, without the call for a usable time
                if ns is None or not _NS_MIN <= ns <= _NS_MAX:
                    reject(f"log record: {time_problem(raw_t, ns)}")
                    continue
                sev = rec.get("severityNumber")
                if type(sev) is not int or not 1 <= sev <= 24:
                    text = rec.get("severityText")
                    sev = _TEXT_SEVERITY.get(text.upper(), 0) if type(text) is str else 0
                body = rec.get("body")
                if body is None:
                    text = ""
                elif type(body) is dict and type(s := body.get("stringValue")) is str:
                    text = s  # what any_to_str gives first
                else:
                    text = any_to_str(body, "body")
                attrs = _string_attributes(rec.get("attributes"), res_attrs)
                if attrs is None:
                    attrs = attributes(rec.get("attributes"), "attributes", dict(res_attrs))
            except PathError as exc:
                raise exc.within(f"scopeLogs[{j}].logRecords[{k}]") from None
            append(LogRecord(service, ns / 1e9, sev, prefix(text, MAX_BODY), labels(attrs)))


def _string_attributes(attrs: object, res_attrs: dict[str, str]) -> dict[str, str] | None:
    """``attributes(attrs, path, dict(res_attrs))`` for a list whose values are all strings
    (or absent); ``None`` for anything else, which :func:`attributes` is then given."""
    into = dict(res_attrs)
    if attrs is None:
        return into
    if type(attrs) is not list:
        return None
    for item in attrs:
        if type(item) is not dict:
            return None
        k = item.get("key")
        val = item.get("value")
        if type(k) is not str:
            return None
        if val is None:
            into[k] = ""
        elif type(val) is dict and type(s := val.get("stringValue")) is str:
            into[k] = s
        else:
            return None
    return into


# --- protobuf, read from the parsed message ------------------------------------------------
# Field for field what _resource_logs and decode_resources do with to_json of the message, on
# the only values to_json writes: a field at its default is left out there, and reads as "absent"
# here; a time is a decimal string of a uint64 there (so parse_int gives the int back), the int
# itself here; the severity number an int; and any AnyValue but a non-empty string goes through
# the JSON path's own rendering of its to_json object. No record object is built per record.

_heads: dict[bytes | None, tuple[str | None, dict[str, str]]] = {}
_HEADS_MAX = 8192  # resources in flight: one per process or pod; each keeps its bytes


def _decode_proto(msg, known: frozenset[str] | None, redactor: Redactor) -> tuple[list[LogRecord], list[str]]:
    """:func:`decode_via_json` of a parsed ``ExportLogsServiceRequest`` (after its caps)."""
    ctx = Context(known, frozenset(), redactor)
    out: list[LogRecord] = []
    for i, rl in enumerate(msg.resource_logs):
        try:
            _proto_resource(rl, ctx, out)
        except PathError as exc:
            raise exc.within(f"resourceLogs[{i}]") from None
    return out, ctx.reasons(bool(out))


def _proto_resource(rl, ctx: Context, out: list[LogRecord]) -> None:
    # A resource's service and attributes depend on its bytes alone: read once per distinct
    # resource (they give no reasons; service_ok's are given every time, below).
    key = rl.resource.SerializeToString() if rl.HasField("resource") else None
    head = _heads.get(key)
    if head is None:
        res_attrs: dict[str, str] = {}
        for a, kv in enumerate(rl.resource.attributes):
            v = kv.value
            res_attrs[kv.key] = v.string_value or _value_text(v, f"resource.attributes[{a}].value")
        head = (res_attrs.pop(SERVICE_ATTRIBUTE, None), res_attrs)
        if len(_heads) >= _HEADS_MAX:
            _heads.clear()
        _heads[key] = head
    service, res_attrs = head
    scope_logs = rl.scope_logs
    if service is None:
        if scope_logs:
            ctx.reject("resource without attribute 'service.name'")
        return
    if not ctx.service_ok(service):
        return
    labels, prefix, reject = ctx.labels, ctx.redactor.prefix, ctx.reject
    append = out.append
    # (the paths' f-strings are arguments of calls made only for a non-string value)
    for j, sl in enumerate(scope_logs):
        for k, r in enumerate(sl.log_records):
            ns = r.time_unix_nano or r.observed_time_unix_nano
            if not _NS_MIN <= ns <= _NS_MAX:
                # As time_problem reads to_json's field: absent (None) when 0, else its decimal text.
                reject(f"log record: {time_problem(str(ns), ns) if ns else time_problem(None, None)}")
                continue
            sev = r.severity_number
            if not 1 <= sev <= 24:
                sev = _TEXT_SEVERITY.get(r.severity_text.upper(), 0)  # "" (absent) gives 0
            body = r.body  # an unset body reads as the empty AnyValue, whose text is "" too
            text = body.string_value or _value_text(body, f"scopeLogs[{j}].logRecords[{k}].body")
            attrs = dict(res_attrs)
            for a, kv in enumerate(r.attributes):
                # kv.value unset reads as the empty AnyValue: "" as for JSON's absent value
                v = kv.value
                attrs[kv.key] = v.string_value or _value_text(
                    v, f"scopeLogs[{j}].logRecords[{k}].attributes[{a}].value")
            append(LogRecord(service, ns / 1e9, sev, prefix(text, MAX_BODY), labels(attrs)))


def _value_text(v, path: str) -> str:
    """The text of an AnyValue whose ``string_value`` is empty: "" for an empty string or an
    empty AnyValue, else any_to_str of its OTLP/JSON object, a PathError named with ``path``."""
    kind = v.WhichOneof("value")
    if kind is None or kind == "string_value":
        return ""
    try:
        return any_to_str(otlp_proto.any_value(v), "")
    except PathError as exc:
        raise exc.within(path) from None
