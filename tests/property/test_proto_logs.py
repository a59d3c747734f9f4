"""The log decoder's direct paths, held to the references they replace.

- A protobuf ``ExportLogsServiceRequest`` is read straight off the upb message
  (``streams.ingest.logs._decode_proto``); the reference is the request read as its OTLP/JSON
  object by the JSON decoder (``logs.decode_via_json``, what ``decode`` did before). Requests are
  drawn over odd attributes (every AnyValue kind, absent values, duplicate keys, long values),
  resources without ``service.name`` or with a non-string one, severities outside 1..24 with and
  without text, every body kind, trace and span ids and flags, times at 0, out of range and at
  the uint64 edge, caps, and truncated bytes.
- The JSON record loop (``logs._resource_logs``), which reads fields with paths relative to the
  record, is held to its former text, kept below, on JSON objects with junk anywhere.

Compared: each record's ``repr``, the reasons in order, and the text of a whole-message error.
Each path gets its own redactor (same rules): a redactor notes a cut label once per distinct
label set, so a shared one would let the first path's cache change the second's reasons.
"""
from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2

from detectors.records import LogRecord
from streams.ingest import DecodeError, Limits, PathError, _guard, expect_list, logs, otlp_proto, type_name
from streams.ingest.otlp import any_to_str, attributes, decode_resources, parse_int, time_problem
from streams.ingest.redact import Redactor
from tests.property.test_otlp_proto import KEYS, NOW_NS, PII, TEXT, TIMES, U64, any_value

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = st.sampled_from([None, frozenset({"checkout", "payments", "api"})])
RULES = st.sampled_from([None, [], ["email"], ["email", "pan", "token"]])
LIMITS = st.sampled_from([None, Limits(), Limits(max_series=2), Limits(max_message_bytes=64)])

# Times mostly usable, so that most records get past the time check to their other fields.
GOOD_NS = st.sampled_from([NOW_NS, NOW_NS + 10**9, 946_684_800 * 10**9, 4_102_444_800 * 10**9])
PROTO_TIMES = st.one_of(GOOD_NS, GOOD_NS, TIMES)
LONG = st.sampled_from(["x" * 1030, "ab " * 700 + PII[1] + " tail", "y" * 2040 + " " + PII[0]])
VALUES = st.one_of(
    any_value(),
    (TEXT | LONG).map(lambda s: common_pb2.AnyValue(string_value=s)),
    st.just(common_pb2.AnyValue()),
)
SERVICE_VALUES = st.one_of(
    st.sampled_from(["checkout", "payments", "api", "checkout", "shop", "", "jane@example.com"]).map(
        lambda s: common_pb2.AnyValue(string_value=s)),
    st.just(common_pb2.AnyValue(int_value=7)), st.just(common_pb2.AnyValue(bool_value=True)),
    st.just(common_pb2.AnyValue()), st.just(None))


def kv(key, value):
    return common_pb2.KeyValue(key=key) if value is None else common_pb2.KeyValue(key=key, value=value)


ATTRS = st.lists(st.builds(kv, KEYS | st.just("service.name"), VALUES | st.none()), max_size=4)


@st.composite
def request(draw) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rl = req.resource_logs.add()
        shape = draw(st.sampled_from([3, 3, 3, 3, 3, 3, 0, 1, 2]))  # mostly with a service.name
        if shape == 1:
            rl.resource.SetInParent()  # present, no attributes
        elif shape >= 2:
            services = draw(st.lists(SERVICE_VALUES, min_size=0 if shape == 2 else 1, max_size=2))
            rl.resource.attributes.extend([kv("service.name", v) for v in services] + draw(ATTRS))
        for _ in range(draw(st.sampled_from([1, 1, 2, 0]))):
            sl = rl.scope_logs.add()
            if draw(st.booleans()):
                sl.scope.name = "bench"
            for _ in range(draw(st.sampled_from([1, 2, 3, 0]))):
                r = sl.log_records.add(
                    time_unix_nano=draw(st.just(0) | PROTO_TIMES), observed_time_unix_nano=draw(PROTO_TIMES),
                    severity_number=draw(st.sampled_from([0, 1, 9, 17, 24, 25, -1, 2**31 - 1, -(2**31)])),
                    severity_text=draw(st.sampled_from(["", "ERROR", "warn", "x", "Fatal", "notice", "ß", "err "])),
                    flags=draw(st.sampled_from([0, 1, U64 >> 32])),
                    trace_id=draw(st.sampled_from([b"", bytes(range(16)), b"\xab" * 3])),
                    span_id=draw(st.sampled_from([b"", bytes(range(8))])),
                    dropped_attributes_count=draw(st.sampled_from([0, 3])),
                    event_name=draw(st.sampled_from(["", "login"])))
                if draw(st.integers(0, 4)):
                    r.body.CopyFrom(draw(VALUES))
                r.attributes.extend(draw(ATTRS))
    return req


def outcome(decode, payload: bytes, **kw):
    try:
        records, reasons = _guard(decode, payload, **kw)
    except DecodeError as exc:
        return ("error", type(exc).__name__, str(exc))
    return [repr(r) for r in records], reasons


def redactor(rules) -> Redactor:
    return Redactor() if rules is None else Redactor(rules)


@SETTINGS
@given(request(), KNOWN, RULES, LIMITS, st.integers(0, 5), st.integers(0, 10**6))
def test_protobuf_logs_read_directly_give_what_their_json_object_gives(req, known, rules, limits, cut, at):
    payload = req.SerializeToString()
    if cut == 0 and payload:  # truncated somewhere: what the parser refuses, both refuse alike
        payload = payload[: at % len(payload)]
    want = outcome(logs.decode_via_json, payload, known_services=known, redactor=redactor(rules), limits=limits)
    # Twice: with the resources' heads not yet read, and then read (the cache by resource bytes).
    for _ in range(2):
        got = outcome(logs.decode, payload, known_services=known, redactor=redactor(rules), limits=limits)
        assert got == want


def test_the_paths_of_errors_inside_values_are_the_json_paths(monkeypatch):
    """A value the JSON rendering refuses (unreachable from upb's nesting limit, forced here) is
    named with the JSON path's text, in the body, a record attribute and a resource attribute."""
    from streams.ingest import otlp

    def refuse_bools(v, path):
        if "boolValue" in v:
            raise PathError(f"{path}.boolValue" if path else "boolValue", "refused")
        return any_to_str(v, path)

    monkeypatch.setattr(otlp, "any_to_str", refuse_bools)
    monkeypatch.setattr(logs, "any_to_str", refuse_bools)
    yes = common_pb2.AnyValue(bool_value=True)
    svc = kv("service.name", common_pb2.AnyValue(string_value="api"))
    for place in ("body", "attribute", "resource"):
        req = ExportLogsServiceRequest()
        req.resource_logs.add()
        rl = req.resource_logs.add()
        rl.resource.attributes.extend([svc] + ([kv("k", yes)] if place == "resource" else []))
        rl.scope_logs.add()
        sl = rl.scope_logs.add()
        sl.log_records.add(time_unix_nano=NOW_NS)
        r = sl.log_records.add(time_unix_nano=NOW_NS)
        if place == "body":
            r.body.CopyFrom(yes)
        elif place == "attribute":
            r.attributes.extend([kv("a", common_pb2.AnyValue(string_value="s")), kv("b", yes)])
        payload = req.SerializeToString()
        got = outcome(logs.decode, payload, known_services=None, redactor=Redactor())
        want = outcome(logs.decode_via_json, payload, known_services=None, redactor=Redactor())
        assert got[0] == "error" and "refused" in got[2] and got == want, place


# --- the JSON record loop against its former text ---------------------------------------------

def former_resource_logs(service: str, res_attrs: dict[str, str], scope_logs: list, ctx, out: list) -> None:
    """streams/ingest/logs.py's _resource_logs as it was at commit f9ffacc."""
    for j, sl in enumerate(scope_logs):
        if type(sl) is not dict:
            raise PathError(f"scopeLogs[{j}]", f"expected an object (got {type_name(sl)})")
        for k, rec in enumerate(expect_list(sl.get("logRecords"), f"scopeLogs[{j}].logRecords")):
            path = f"scopeLogs[{j}].logRecords[{k}]"
            if type(rec) is not dict:
                raise PathError(path, f"expected an object (got {type_name(rec)})")
            raw_t = rec.get("timeUnixNano")
            ns = parse_int(raw_t, f"{path}.timeUnixNano") if raw_t is not None else None
            if not ns:
                raw_t = rec.get("observedTimeUnixNano")
                ns = parse_int(raw_t, f"{path}.observedTimeUnixNano") if raw_t is not None else None
            problem = time_problem(raw_t, ns)
            if problem is not None:
                ctx.reject(f"log record: {problem}")
                continue
            sev = rec.get("severityNumber")
            if type(sev) is not int or not 1 <= sev <= 24:
                text = rec.get("severityText")
                sev = logs._TEXT_SEVERITY.get(text.upper(), 0) if type(text) is str else 0
            body = rec.get("body")
            text = any_to_str(body, f"{path}.body") if body is not None else ""
            attrs = attributes(rec.get("attributes"), f"{path}.attributes", dict(res_attrs))
            out.append(LogRecord(service, ns / 1e9, sev, ctx.redactor.prefix(text, logs.MAX_BODY), ctx.labels(attrs)))


def former_decode(payload: bytes, *, known_services, redactor, limits=None):
    return decode_resources(payload, "resourceLogs", "scopeLogs", "logs", former_resource_logs,
                            known_services=known_services, redactor=redactor, limits=limits)


JUNK = st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.sampled_from(["", "x", "1e18"]) | \
    st.just([]) | st.just({})
# Junk (a wrong JSON type in the structure) fails the whole message and hides what follows it:
# it is drawn in a third of the examples only (the noisy ones), and rarely there.
NOISY = st.shared(st.integers(0, 2), key="json-noisy").map(lambda n: n == 0)


def noisy(bad, good):
    """``bad`` in a noisy example, ``good`` in a clean one."""
    return NOISY.flatmap(lambda yes: bad if yes else good)


JSON_TIMES = st.integers(0, 2).flatmap(lambda n: GOOD_NS.map(str) if n else JSON_ODD_TIMES)
JSON_ODD_TIMES = st.sampled_from(["1767225600000000000", "0", "1767225600e9", "abc", " 1767225600000000000 ",
                              "1_767_225_600_000_000_000", "nan", "1" * 400, "-5", "4111111111111111111"]) | \
    st.integers(0, U64).map(str) | st.sampled_from([1767225600000000000, 1.7672256e18, 0, 0.0, True]) | \
    noisy(JUNK, GOOD_NS.map(str))
JSON_VALUES = st.one_of(
    (TEXT | LONG).map(lambda s: {"stringValue": s}), TEXT.map(lambda s: {"stringValue": s}),
    st.sampled_from([{}, {"intValue": "12"}, {"intValue": 12}, {"intValue": "x"}, {"boolValue": True},
                     {"boolValue": "yes"}, {"doubleValue": "NaN"}, {"doubleValue": 1.5}, {"bytesValue": "AAE="},
                     {"arrayValue": {"values": [{"intValue": "1"}, {}]}}, {"arrayValue": {"values": [3]}},
                     {"kvlistValue": {"values": [{"key": "a"}, {"key": "b", "value": {"stringValue": "c"}}]}},
                     {"kvlistValue": {"values": [{"value": {}}]}}, {"stringValue": None, "intValue": "3"},
                     {"stringValue": 5}]),
    st.integers(0, 9).flatmap(lambda n: noisy(JUNK, TEXT.map(lambda s: {"stringValue": s})) if n == 0 else
                              TEXT.map(lambda s: {"stringValue": s})))
JSON_ATTR = st.integers(0, 4).flatmap(lambda n: noisy(st.sampled_from(
    [{"key": 3, "value": {}}, {"value": {"stringValue": "x"}}, "kv", {"key": "k", "value": "v"}]), st.just({"key": "k"}))
    if n == 0 else
    KEYS.map(lambda k: {"key": k}) if n == 1 else
    st.builds(lambda k, v: {"key": k, "value": v}, KEYS | st.just("service.name"), JSON_VALUES))
JSON_ATTRS = st.integers(0, 9).flatmap(lambda n: noisy(JUNK, st.just(None)) if n == 0 else
                                      st.lists(JSON_ATTR, max_size=4))


@st.composite
def json_record(draw):
    rec: dict = {}
    for key, values in (("timeUnixNano", JSON_TIMES), ("observedTimeUnixNano", JSON_TIMES),
                        ("severityNumber", st.sampled_from([0, 9, 17, 25, -1, "9", 9.0, True, None])),
                        ("severityText", st.sampled_from(["", "ERROR", "warn", "x", None, 3])),
                        ("body", JSON_VALUES), ("attributes", JSON_ATTRS),
                        ("traceId", st.sampled_from(["00ff", 3]))):
        if draw(st.integers(0, 3)):
            rec[key] = draw(values)
    return rec if draw(st.integers(0, 50)) else draw(noisy(JUNK, st.just({})))


@st.composite
def json_request(draw) -> dict:
    resources = []
    for _ in range(draw(st.integers(0, 3))):
        res: dict = {"resource": {"attributes": [{"key": "service.name", "value": draw(st.sampled_from(
            [{"stringValue": "checkout"}, {"stringValue": "api"}, {"intValue": "7"}, {}]))}] + draw(
            st.lists(JSON_ATTR, max_size=2))}}
        scopes = []
        for _ in range(draw(st.sampled_from([1, 1, 2, 0]))):
            clean = draw(st.integers(0, 30))
            scope = {"logRecords": draw(st.lists(json_record(), min_size=1, max_size=3))} if clean else \
                draw(noisy(st.sampled_from([{"logRecords": None}, {"logRecords": "x"}, {}, "scope"]),
                           st.sampled_from([{"logRecords": None}, {}])))
            scopes.append(scope)
        res["scopeLogs"] = scopes
        resources.append(res)
    return {"resourceLogs": resources}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # junk is rare
@given(json_request(), KNOWN, RULES)
def test_json_logs_decode_as_the_former_record_loop(obj, known, rules):
    payload = orjson.dumps(obj)
    want = outcome(former_decode, payload, known_services=known, redactor=redactor(rules))
    got = outcome(logs.decode, payload, known_services=known, redactor=redactor(rules))
    assert got == want


@SETTINGS
@given(request(), KNOWN)
def test_json_of_protobuf_requests_decode_as_the_former_record_loop(req, known):
    """The same, on the OTLP/JSON objects of the protobuf requests above (well-formed, odd values)."""
    payload = orjson.dumps(otlp_proto.to_json(req, "logs"))
    assert outcome(logs.decode, payload, known_services=known, redactor=Redactor()) == \
        outcome(former_decode, payload, known_services=known, redactor=Redactor())
