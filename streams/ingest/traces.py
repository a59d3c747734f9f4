"""OTLP/JSON ``ExportTraceServiceRequest`` to :class:`~detectors.records.Span` tuples.

As the OpenTelemetry Collector's ``kafka`` exporter writes spans with ``encoding: otlp_json``:
``resourceSpans[].resource.attributes`` names the service (``service.name``);
``scopeSpans[].spans[]`` carry ``traceId``, ``spanId``, ``parentSpanId`` (hex strings, kept
as they are: ids are only compared), ``name``, ``kind`` (an integer, or the enum's name from
lenient writers), ``startTimeUnixNano``, ``endTimeUnixNano`` (int64 as a decimal string or a
number) and ``status.code``. ``kind`` and ``status`` may be absent (Nezha's spans have
neither): a span is then a request when its parent is another service's span, or it has none
(:mod:`detectors.spans`). Span and resource attributes are not used, so none are kept; the
span name (the operation) goes through the redactor (:mod:`streams.ingest.redact`) and is cut
to ``MAX_NAME`` characters.

Errors, as for metrics: a value of the wrong JSON type in the document's structure raises a
:class:`~streams.ingest.DecodeError` naming its path; a span that has the right types but cannot
be used (no span id, an absurd time, an end before its start, an unknown kind, an undeclared
service) is dropped with a reason, and a message of nothing but dropped spans raises.
"""
from __future__ import annotations

from detectors.records import Span
from streams.ingest import (DEFAULT_REDACTOR, T_MAX, T_MIN, Context, PathError, Redactor, expect_list, expect_object,
                            short, type_name)
from streams.ingest.otlp import decode_resources, parse_int

MAX_NAME = 256
MAX_ID = 64  # hex characters; OTLP's are 32 (trace) and 16 (span)
_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
          "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
_STATUS = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_NS_MIN, _NS_MAX = T_MIN * 1e9, T_MAX * 1e9


def decode(payload: bytes, *, known_services: frozenset[str] | None,
           redactor: Redactor = DEFAULT_REDACTOR, limits=None) -> tuple[list[Span], list[str]]:
    """Spans and the reasons of those dropped. Raises :class:`DecodeError` (see the module)."""
    return decode_resources(payload, "resourceSpans", "scopeSpans", "traces", _resource_spans,
                            known_services=known_services, redactor=redactor, limits=limits)


def _resource_spans(service: str, _attrs: dict[str, str], scope_spans: list, ctx: Context, out: list[Span]) -> None:
    append = out.append
    for j, ss in enumerate(scope_spans):
        if type(ss) is not dict:
            raise PathError(f"scopeSpans[{j}]", f"expected an object (got {type_name(ss)})")
        spans = ss.get("spans")
        if type(spans) is not list:
            spans = expect_list(spans, f"scopeSpans[{j}].spans")
        for k, sp in enumerate(spans):
            if type(sp) is not dict:
                raise PathError(f"scopeSpans[{j}].spans[{k}]", f"expected an object (got {type_name(sp)})")
            span_id, trace_id, parent = sp.get("spanId"), sp.get("traceId", ""), sp.get("parentSpanId")
            raw_s, raw_e = sp.get("startTimeUnixNano"), sp.get("endTimeUnixNano")
            kind, status, name = sp.get("kind"), sp.get("status"), sp.get("name", "")
            # The common case in one test: ids and name strings, times decimal strings, kind an
            # int or absent, status absent or {code: int}. Anything else takes the checked path.
            if (type(span_id) is str and 0 < len(span_id) <= MAX_ID and type(trace_id) is str
                    and len(trace_id) <= MAX_ID and (parent is None or (type(parent) is str and len(parent) <= MAX_ID))
                    and type(raw_s) is str and type(raw_e) is str and raw_s.isdecimal() and raw_e.isdecimal()
                    and (kind is None or (type(kind) is int and 0 <= kind <= 5)) and type(name) is str
                    and (status is None or (type(status) is dict and type(status.get("code", 0)) is int))):
                s_ns, e_ns = int(raw_s), int(raw_e)
                if _NS_MIN <= s_ns <= e_ns <= _NS_MAX:
                    code = status.get("code", 0) if status else 0
                    append(Span(service, trace_id, span_id, parent or "", _span_name(ctx.redactor, name), kind or 0,
                                code == 2, s_ns / 1e9, e_ns / 1e9, (e_ns - s_ns) / 1e9))
                    continue
            span = _checked_span(sp, f"scopeSpans[{j}].spans[{k}]", service, ctx)
            if span is not None:
                append(span)


def _id(v: object, path: str, required: bool) -> str | None:
    """An id string, ``""`` when absent and allowed, ``None`` when unusable (a reason is due)."""
    if v is None or v == "":
        return None if required else ""
    if type(v) is not str:
        raise PathError(path, f"expected a hex string (got {type_name(v)})")
    return v if len(v) <= MAX_ID else None


def _enum(value: object, names: dict[str, int], path: str, what: str, type_: str, ctx: Context,
          bounded: bool = True) -> int | None:
    """An OTLP enum given as its number or its name (0 when absent); ``None``, with the reason
    rejected, for a name it does not define or (``bounded``) a number. A value of another JSON type
    is a :class:`PathError`."""
    if value is None:
        return 0
    if type(value) is str:
        if value not in names:
            ctx.reject(f"unknown {what} {short(value)}")
            return None
        return names[value]
    if type(value) is not int:
        raise PathError(path, f"expected an integer or a {type_} name (got {type_name(value)})")
    if bounded and not 0 <= value <= max(names.values()):
        ctx.reject(f"unknown {what} {short(value)}")
        return None
    return value


def _checked_span(sp: dict, path: str, service: str, ctx: Context) -> Span | None:
    """One span through every check: ``None`` (and a reason) when it cannot be used; raises
    :class:`PathError` for a value of the wrong JSON type."""
    span_id = _id(sp.get("spanId"), f"{path}.spanId", True)
    trace_id = _id(sp.get("traceId"), f"{path}.traceId", False)
    parent = _id(sp.get("parentSpanId"), f"{path}.parentSpanId", False)
    if span_id is None or trace_id is None or parent is None:
        ctx.reject(f"span without a usable spanId (at most {MAX_ID} characters)" if span_id is None
                   else f"span id longer than {MAX_ID} characters")
        return None
    name = sp.get("name")
    if name is None:
        name = ""
    elif type(name) is not str:
        raise PathError(f"{path}.name", f"expected a string (got {type_name(name)})")
    kind = _enum(sp.get("kind"), _KINDS, f"{path}.kind", "span kind", "SpanKind", ctx)
    status = expect_object(sp.get("status"), f"{path}.status")
    # Any status number is taken (only ERROR, 2, counts), as on the fast path above.
    code = _enum(status.get("code"), _STATUS, f"{path}.status.code", "status code", "StatusCode", ctx, bounded=False)
    if kind is None or code is None:
        return None
    raw_s, raw_e = sp.get("startTimeUnixNano"), sp.get("endTimeUnixNano")
    s_ns = parse_int(raw_s, f"{path}.startTimeUnixNano") if raw_s is not None else None
    e_ns = parse_int(raw_e, f"{path}.endTimeUnixNano") if raw_e is not None else None
    for raw, ns, what in ((raw_s, s_ns, "start"), (raw_e, e_ns, "end")):
        if ns is None:
            ctx.reject(f"span without a usable {what} time ({short(raw)})")
            return None
        if not (_NS_MIN <= ns <= _NS_MAX):  # also false for NaN
            ctx.reject(f"span {what} time {short(raw)} outside 2000..2100")
            return None
    if e_ns < s_ns:
        ctx.reject("span ends before it starts")
        return None
    return Span(service, trace_id, span_id, parent, _span_name(ctx.redactor, name), kind, code == 2,
                s_ns / 1e9, e_ns / 1e9, (e_ns - s_ns) / 1e9)


def _span_name(redactor: Redactor, name: str) -> str:
    """Redacted, then cut to MAX_NAME: a cut never leaves part of a match."""
    return redactor.text(name) if len(name) <= MAX_NAME else redactor.prefix(name, MAX_NAME)
