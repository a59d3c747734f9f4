"""The span decoder never crashes: on any bytes, any JSON and any mutation of a well-formed
``ExportTraceServiceRequest`` it returns spans or raises DecodeError with a reason (never the
"internal decoder error" that hides a bug). What it returns is usable: known services only, ids
within bounds, times within 2000..2100 with the end not before the start; and the span signals
take whatever it returns."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.spans import SpanSettings, SpanSignals
from streams.ingest import T_MAX, T_MIN, DecodeError, decode_traces
from streams.ingest.traces import MAX_ID, MAX_NAME
from tests.property.test_decoders_never_crash import (JSON, KNOWN, TIME_NS, WEIRD_STRINGS, attributes, enc,
                                                     mutated)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEX = st.text(alphabet="0123456789abcdef", min_size=0, max_size=40)
KIND = st.integers(-1, 7) | st.sampled_from(["SPAN_KIND_SERVER", "SPAN_KIND_CLIENT", "SERVER"]) | st.none()
STATUS = (st.none() | st.fixed_dictionaries({}, optional={
    "code": st.integers(-1, 3) | st.sampled_from(["STATUS_CODE_ERROR", "STATUS_CODE_OK", "ERROR"]),
    "message": st.text(max_size=5)}))


@st.composite
def otlp_traces(draw):
    span = st.fixed_dictionaries({"spanId": HEX, "startTimeUnixNano": TIME_NS, "endTimeUnixNano": TIME_NS}, optional={
        "traceId": HEX, "parentSpanId": HEX, "name": st.text(max_size=10) | WEIRD_STRINGS, "kind": KIND,
        "status": STATUS, "attributes": attributes(False)})
    return {"resourceSpans": draw(st.lists(st.fixed_dictionaries({
        "resource": st.fixed_dictionaries({"attributes": attributes(True)}),
        "scopeSpans": st.lists(st.fixed_dictionaries({"scope": st.just({"name": "lib"}),
                                                      "spans": st.lists(span, max_size=4)}), max_size=2)}),
        min_size=1, max_size=2))}


def check(payload: bytes) -> None:
    try:
        spans, rejects = decode_traces(payload, known_services=KNOWN)
    except DecodeError as exc:
        assert str(exc) and "internal decoder error" not in str(exc), str(exc)
        return
    assert spans or not rejects
    for s in spans:
        assert s.service in KNOWN
        assert 0 < len(s.span_id) <= MAX_ID and len(s.trace_id) <= MAX_ID and len(s.parent_id) <= MAX_ID
        assert T_MIN <= s.start <= s.end <= T_MAX and s.duration >= 0
        assert 0 <= s.kind <= 5 and isinstance(s.error, bool) and len(s.name) <= MAX_NAME + 40  # + placeholders
    SpanSignals(SpanSettings(lateness_seconds=0)).add(spans)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes(payload):
    check(payload)


@SETTINGS
@given(JSON)
def test_any_json(doc):
    check(enc(doc))


@SETTINGS
@given(otlp_traces())
def test_well_formed_requests(doc):
    check(enc(doc))


@SETTINGS
@given(mutated(otlp_traces()))
def test_mutated_requests(doc):
    check(enc(doc))


@SETTINGS
@given(otlp_traces())
def test_a_bad_span_costs_only_itself_and_says_why(doc):
    """Every span is taken or rejected with a reason: the spans taken plus one per distinct
    reason cover the request's spans, and a request with a usable span is never dead-lettered."""
    try:
        spans, rejects = decode_traces(enc(doc), known_services=KNOWN)
    except DecodeError as exc:
        assert str(exc)
        return
    total = sum(len(ss["spans"]) for rs in doc["resourceSpans"] for ss in rs["scopeSpans"])
    assert len(spans) <= total
    if len(spans) < total:
        assert rejects
