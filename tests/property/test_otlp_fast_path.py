"""The fast decoders give exactly what the simple ones gave: same samples, same rejects, same errors.

``tests/property/_otlp_reference.py`` is a frozen copy of the OTLP/JSON and native decoders as
they were before their fast paths were written. Every property here decodes the same bytes with
both and compares everything: each sample's ``repr`` (so ``-0.0`` against ``0.0``, an ``int``
against a ``float`` or a NaN histogram sum would show), the reject reasons in order, the format,
and for a message that fails as a whole, the exception's type and text (the dead-letter reason).

The requests are mostly well-formed (the shapes the fast path takes) with, at every level, a
chance of something odd: wrong JSON types, missing fields, bad or out-of-range timestamps,
``"NaN"`` strings, unknown services, odd attribute values (kvlist, arrays, bool, double, bytes)
and PII in attributes and metric names, which the redaction must catch on both paths.
"""
from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.ingest import DecodeError, decode_metrics
from streams.ingest.redact import Redactor
from tests.property import _otlp_reference as reference

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = frozenset({"checkout", "payments", "api"})
NOW_NS = 1_767_225_600_000_000_000

REDACTORS = [Redactor(), Redactor(["ip"]), Redactor([]),
             Redactor(["email", "token"], [("employee", r"EMP-[0-9]{6}", None)])]
KEEPS = [frozenset(), frozenset({"host.name", "route", "user", "api_key"})]


def odd(good, bad=()):
    """One of ``good`` (values the careful path accepts, edge cases included) or, as often as the
    example's noise level says, one of ``bad`` (values it rejects or reads its own way) or junk."""
    good = st.sampled_from(good)
    bad = st.sampled_from(bad) | JUNK if bad else JUNK
    return st.shared(NOISE, key="noise").flatmap(
        lambda noise: st.integers(0, 99).flatmap(lambda r: bad if r < noise else good))


def rarely(n: int):
    """True now and then: about once in ``n`` draws at the highest noise level, never in a clean example."""
    return st.shared(NOISE, key="noise").flatmap(
        lambda noise: st.just(False) if not noise else st.integers(0, 99).map(lambda r: r < 3 * noise // n))


# Per example, in percent: how often a field is odd. Clean examples run the fast paths end to end;
# a little noise puts one odd field in an otherwise plain message, which is what finds a fast
# path accepting what the careful path rejects; much noise checks that errors stay the same.
NOISE = st.sampled_from([0, 0, 2, 5, 30])


JUNK = st.sampled_from([
    None, True, False, 0, 1, -1, 2, 1.5, -0.0, "", "x", "NaN", "Infinity", "-Infinity", "1e3", " 12 ", "1_000",
    "9" * 30, "-5", [], [1], {}, {"a": 1}, 2**63, -(2**63), "1767225600000000000", 1767225600000000000,
    "1.7672256e18", 17672256e11,
])
PII = ["jane.doe@example.com", "4111 1111 1111 1111", "Bearer abc.def-123", "EMP-123456", "10.0.0.7", "fe80::1"]
TEXT = st.sampled_from(["a1", "/pay", "GET", "ok", ""] + PII) | st.text(max_size=6)
KEYS = st.sampled_from(["host.name", "route", "user", "api_key", "http.request.header.authorization", "service.name",
                        "k", "user.email"]) | st.text(max_size=4)


@st.composite
def any_value(draw, depth=0):
    kind = draw(st.sampled_from(["stringValue"] * 4 + ["intValue", "doubleValue", "boolValue", "bytesValue",
                                                       "empty", "odd"] + (["arrayValue", "kvlistValue"] if depth < 2 else [])))
    if kind == "stringValue":
        return {kind: draw(TEXT)}
    if kind == "intValue":
        return {kind: draw(odd(["42", 42, "-7", "x", str(2**64), "1e3"]))}
    if kind == "doubleValue":
        return {kind: draw(odd([1.5, 2, "NaN", "Infinity", "0.25", "y", -0.0]))}
    if kind == "boolValue":
        return {kind: draw(odd([True, False]))}
    if kind == "bytesValue":
        return {kind: draw(odd(["aGk=", ""]))}
    if kind == "empty":
        return draw(st.sampled_from([{}, {"stringValue": None}, {"stringValue": None, "intValue": "5"}]))
    if kind == "odd":
        return draw(JUNK) if draw(rarely(2)) else {"stringValue": 5} if draw(rarely(3)) else {}
    values = draw(st.lists(any_value(depth + 1), max_size=3))
    if kind == "arrayValue":
        return {kind: {"values": values}}
    return {kind: {"values": [{"key": draw(KEYS), "value": v} for v in values]}}


@st.composite
def attributes(draw, service=None):
    items = []
    if service is not None:
        items.append({"key": "service.name", "value": {"stringValue": service}})
    for _ in range(draw(st.integers(0, 3))):
        item = {"key": draw(KEYS), "value": draw(any_value())}
        if draw(rarely(4)):
            shape = draw(st.integers(0, 2))
            if shape == 0:
                item = draw(JUNK)
            elif shape == 1:
                item["key"] = draw(JUNK)
            else:
                del item["value"]
        items.append(item)
    draw(st.randoms()).shuffle(items)
    return draw(JUNK) if draw(rarely(8)) else items


NS_MIN, NS_MAX = 946_684_800 * 10**9, 4_102_444_800 * 10**9  # 2000..2100, inclusive
TIME = odd([str(NOW_NS), str(NOW_NS + 10**9), NOW_NS, str(NS_MIN), str(NS_MAX), NS_MAX, "+" + str(NOW_NS),
            f" {NOW_NS} ", "0" + str(NOW_NS)],
           [str(NOW_NS // 10**6), "-1", "abc", str(10**400)[:500], str(NS_MIN - 1), str(NS_MAX + 1), NS_MAX + 1,
            "1.7672256e18", 1.7672256e18, "", True])


@st.composite
def number_point(draw, kind):
    dp = {"timeUnixNano": draw(TIME)}
    value = draw(st.sampled_from(["asDouble", "asInt", "both"] + (["none"] if draw(rarely(4)) else [])))
    if value in ("asDouble", "both"):
        dp["asDouble"] = draw(odd([0.229859, 12.0, -3.5, 0, -0.0, 7, 1e300, -1e300], [1e301, "NaN", "Infinity", "0.5", True, "x"]))
    if value in ("asInt", "both"):
        dp["asInt"] = draw(odd(["31425989", 31425989, "0", "-12", str(10**300), "-" + str(10**300), "007", " 5"],
                                  [str(10**301), str(10**300 + 1), "1e3", "z", 1.5, True]))
    if draw(st.booleans()):
        dp["startTimeUnixNano"] = draw(odd(["1766743034916252103", "0", 1766743034916252103, str(NS_MIN - 1), str(NS_MAX + 1), "-5",
                                               str(10**301)], ["1e18", "q", 1.5, True]))
    if draw(st.integers(0, 3)) == 0:
        dp["attributes"] = draw(attributes())
    if draw(st.integers(0, 6)) == 0:
        dp["flags"] = draw(odd([0, 1, 2, 3], ["1", True, 1.0]))
    if draw(rarely(4)):
        del dp["timeUnixNano"]
    return draw(JUNK) if draw(rarely(8)) else dp


BUCKETS = ["2614", "307859", "10157247", "0"]
BOUNDS = [0.005, 0.01, 0.025]


@st.composite
def histogram_point(draw):
    dp = {"timeUnixNano": draw(TIME), "startTimeUnixNano": draw(odd(["1766743034916252103", "0", str(NS_MAX + 1)], ["x", 1.5]))}
    if not draw(rarely(3)):
        dp["count"] = draw(odd(["31425989", 31425989, "0", str(10**300), "007"], ["-1", str(10**301), str(10**300 + 1), "1.5e3", "c"]))
    if not draw(rarely(3)):
        dp["sum"] = draw(odd([1086616.810462, 0, -0.0, 1e300], ["NaN", "12.5", 1e301]))
    shape = draw(st.integers(1, 8)) if draw(rarely(2)) else 0
    buckets, bounds = list(BUCKETS), list(BOUNDS)
    if shape == 1:
        buckets, bounds = [], []
    elif shape == 2:
        buckets[draw(st.integers(0, 3))] = draw(JUNK)
    elif shape == 3:
        bounds[draw(st.integers(0, 2))] = draw(odd([0.01, 0.0, -0.0, 0.004, 0.026], ["0.02", 0, 5, "Infinity", "NaN"]))
    elif shape == 4:
        buckets = buckets[:-1]
    elif shape == 5:
        buckets = [int(b) for b in buckets]
    elif shape == 8:  # strings int() reads but that are not plain digits, and floats near 2**53
        buckets[draw(st.integers(0, 3))] = draw(st.sampled_from(
            ["9007199254740993", "12345678901234567890123", "007", "+5", " 5", "1_0", "\u0663", "", "-0",
             "9" * 301, "1" + "0" * 300, "1" + "0" * 299]))
    elif shape == 6:
        buckets = draw(JUNK)
    elif shape == 7:
        bounds = draw(JUNK)
    if not draw(rarely(4)):
        dp["bucketCounts"] = buckets
    if not draw(rarely(4)):
        dp["explicitBounds"] = bounds
    if draw(st.integers(0, 3)) == 0:
        dp["attributes"] = draw(attributes())
    if draw(st.integers(0, 8)) == 0:
        dp["flags"] = draw(odd([0, 1]))
    return draw(JUNK) if draw(rarely(8)) else dp


NAMES = st.sampled_from(["http.server.requests", "process.cpu.utilization", "db.client.connections.utilization",
                         "user.jane.doe@example.com.logins"]) | odd(["m", "x" * 3], ["", 5])


@st.composite
def metric(draw):
    m = {"name": draw(NAMES), "unit": "1"}
    kinds = ["gauge", "sum", "sum", "histogram"] + (["exponentialHistogram", "summary", "none"] if draw(rarely(3)) else [])
    kind = draw(st.sampled_from(kinds))
    if kind in ("gauge", "sum"):
        data = {"dataPoints": draw(st.lists(number_point(kind), min_size=1, max_size=3))}
        if kind == "sum":
            if not draw(rarely(3)):
                data["aggregationTemporality"] = draw(odd([2, 1, "AGGREGATION_TEMPORALITY_DELTA",
                                                           "AGGREGATION_TEMPORALITY_CUMULATIVE"], [0, 3, True]))
            if not draw(rarely(3)):
                data["isMonotonic"] = draw(odd([True, False], ["true", 1]))
    elif kind == "histogram":
        data = {"aggregationTemporality": draw(odd([2, 1], [0, "2", 2.0])), "dataPoints": draw(st.lists(histogram_point(), min_size=1, max_size=3))}
    elif kind == "none":
        return m
    else:
        data = {"dataPoints": []}
    if draw(rarely(10)):
        data["dataPoints"] = draw(JUNK)
    m[kind] = draw(JUNK) if draw(rarely(10)) else data
    if draw(st.integers(0, 20)) == 0:  # a second kind: the first one present wins
        m["gauge"] = {"dataPoints": [{"timeUnixNano": str(NOW_NS), "asDouble": 1.0}]}
    return draw(JUNK) if draw(rarely(10)) else m


@st.composite
def request(draw):
    resources = []
    for _ in range(draw(st.integers(1, 3))):
        service = draw(st.sampled_from(["checkout", "checkout", "payments", "api", "shop", "jane@example.com", None]))
        rm = {"resource": {"attributes": draw(attributes(service))},
              "scopeMetrics": [{"scope": {"name": "s"}, "metrics": draw(st.lists(metric(), min_size=1, max_size=4))}
                               for _ in range(draw(st.integers(1, 2)))]}
        shape = draw(st.integers(0, 5)) if draw(rarely(4)) else -1
        if shape == 0:
            rm = draw(JUNK)
        elif shape == 1:
            rm["resource"] = draw(JUNK)
        elif shape == 2:
            rm["scopeMetrics"] = draw(JUNK)
        elif shape == 3:
            rm["scopeMetrics"][0] = draw(JUNK)
        elif shape == 4:
            rm["scopeMetrics"][0]["metrics"] = draw(JUNK)
        elif shape == 5:
            rm["scopeMetrics"] = []
        resources.append(rm)
    return {"resourceMetrics": draw(JUNK) if draw(rarely(10)) else resources}


def outcome(decode, payload: bytes, known, keep, redactor):
    try:
        d = decode(payload, known_services=known, keep_labels=keep, redactor=redactor)
    except DecodeError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", d.fmt, [repr(s) for s in d.samples], d.rejects)


def assert_same(payload: bytes, known, keep, redactor_index: int) -> None:
    redactor = REDACTORS[redactor_index]
    want = outcome(reference.decode_metrics, payload, known, keep, redactor)
    got = outcome(decode_metrics, payload, known, keep, redactor)
    assert got == want
    assert "internal decoder error" not in str(got)


CONFIG = dict(known=st.sampled_from([KNOWN, None]), keep=st.sampled_from(KEEPS),
              redactor=st.integers(0, len(REDACTORS) - 1))


@SETTINGS
@given(req=request(), **CONFIG)
def test_otlp_decoder_matches_reference(req, known, keep, redactor):
    assert_same(orjson.dumps(req), known, keep, redactor)


@SETTINGS
@given(req=request(), **CONFIG)
def test_otlp_decoder_matches_reference_twice(req, known, keep, redactor):
    """The same message again: whatever the decoders cache must not change the second answer."""
    payload = orjson.dumps(req)
    assert_same(payload, known, keep, redactor)
    assert_same(payload, known, keep, redactor)


# --- the native batch --------------------------------------------------------------------------

LABELS = st.dictionaries(KEYS, TEXT | st.sampled_from([1, 2.5, True, None, [], {}]), max_size=3)


@st.composite
def native_point(draw):
    metric_name = draw(NAMES)
    t = draw(odd([1_767_225_600.0, 1_767_225_601, "1767225600"], [1_767_225_600_000, "x"]))
    value = draw(odd([0.5, 3, "2.5", -0.0], ["NaN", 1e301, None]))
    shape = draw(st.integers(0, 6))
    if shape <= 2:
        return [metric_name, t, value]
    if shape == 3:
        return [metric_name, t, value, draw(LABELS | JUNK)]
    if shape == 4:
        return draw(JUNK) if draw(st.booleans()) else [metric_name, t]
    p = {"metric": metric_name, "t": t, "value": value}
    if draw(st.booleans()):
        p["kind"] = draw(odd(["gauge", "counter"], ["histogram"]))
    if draw(st.booleans()):
        p["labels"] = draw(LABELS | JUNK)
    return p


@st.composite
def native_batch(draw):
    batch = {"schema_version": draw(odd([1], [2])), "service": draw(odd(["checkout", "api", "shop"], [""])),
             "points": draw(st.lists(native_point(), max_size=6))}
    if draw(st.booleans()):
        batch["labels"] = draw(LABELS | JUNK)
    return batch


@SETTINGS
@given(batch=native_batch(), **CONFIG)
def test_native_decoder_matches_reference(batch, known, keep, redactor):
    assert_same(orjson.dumps(batch), known, keep, redactor)


# --- the benchmark's messages ------------------------------------------------------------------

@pytest.fixture(scope="module")
def shop_messages() -> list[bytes]:
    from tests.bench.kafka_bench import batched
    from tests.bench.pipeline_bench import REPO
    from streams import simulate as sim
    from streams.config import load_topology

    shop = load_topology(REPO / "topology.yaml")
    return batched(sim.simulate(shop, sim.load_scenarios(None)).requests)[0][::4]


@pytest.mark.parametrize("keep", KEEPS)
def test_shop_messages_decode_as_before(shop_messages, keep):
    """The simulator's batched messages (what ``make bench`` measures), every sample compared."""
    known = frozenset({"frontend", "checkout", "orders", "orders-db", "payments", "payment-gateway", "catalog"})
    for payload in shop_messages:
        assert_same(payload, known, keep, 0)


@SETTINGS
@given(counts=st.lists(st.integers(0, 2**64) | st.integers(2**53 - 5, 2**53 + 5) | st.integers(0, 10**300),
                       min_size=1, max_size=4),
       as_str=st.booleans())
def test_bucket_counts_parse_as_before(counts, as_str):
    """Plain digit strings are read with float() on the fast path: the same float as float(int())."""
    bounds = [float(i) for i in range(len(counts) - 1)]
    dp = {"timeUnixNano": str(NOW_NS), "count": "1", "sum": 1.0, "explicitBounds": bounds,
          "bucketCounts": [str(c) if as_str or c >= 2**63 else c for c in counts]}
    req = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
                                "scopeMetrics": [{"metrics": [{"name": "h", "histogram": {
                                    "aggregationTemporality": 2, "dataPoints": [dp]}}]}]}]}
    assert_same(orjson.dumps(req), None, frozenset(), 0)


def test_the_shop_messages_take_the_fast_path(shop_messages, monkeypatch):
    """The careful path is the fallback, not the norm: the simulator's messages never need it."""
    from streams.ingest import otlp

    def fail(*args):
        raise AssertionError(f"fell back to the careful path for {str(args[0])[:200]}")

    monkeypatch.setattr(otlp, "_metric", fail)
    for payload in shop_messages:
        decode_metrics(payload, known_services=None)


# --- one odd field in a plain message, every field, every odd value -----------------------------
# Hypothesis rarely puts one specific edge value into an otherwise plain metric, and only then
# does a fast path that accepts too much show. So: each field of each plain point, set in turn
# to each of these values (and removed), decoded by both.

EDGES = [
    None, True, False, 0, 1, 2, 3, -1, 1.5, 0.0, -0.0, 0.1, 0.5, 7.0, 1e300, -1e300, 1e301, -1e301, 2**63, -(2**63),
    "", "x", "NaN", "nan", "Infinity", "-Infinity", "1e3", "1.5", " 12 ", "+5", "007", "1_000", "-0", "-5", "\u0663",
    "9007199254740993", "12345678901234567890123", str(10**300), str(10**300 + 1), "-" + str(10**300 + 1),
    str(10**301), "9" * 400, str(NS_MIN), str(NS_MIN - 1), str(NS_MAX), str(NS_MAX + 1), NS_MIN - 1, NS_MAX + 1,
    NS_MAX, str(NOW_NS), NOW_NS, "1.7672256e18", 1.7672256e18, "AGGREGATION_TEMPORALITY_DELTA", "true",
    [], [1], ["1"], [1.0], {}, {"a": 1}, {"stringValue": "x"}, {"intValue": "1"}, {"stringValue": 5},
    [{"key": "host.name", "value": {"stringValue": "a1"}}], [{"key": "k"}], [{"key": "k", "value": None}],
    [{"key": "user", "value": {"stringValue": "jane@example.com"}}], [{"key": "api_key", "value": {"intValue": 7}}],
    [{"key": 5, "value": {"stringValue": "a"}}], [{"key": "k", "value": "a"}], ["a"],
    [{"key": "k", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": True}}]}}}],
    [{"key": "k", "value": {"arrayValue": {"values": [{"doubleValue": "NaN"}, {"bytesValue": "aGk="}]}}}],
    [{"key": "k", "value": {"arrayValue": {"values": "x"}}}],
]
PLAIN_POINTS = {
    "gauge": {"timeUnixNano": str(NOW_NS), "asDouble": 0.25, "attributes": [
        {"key": "host.name", "value": {"stringValue": "a1"}}]},
    "sum": {"timeUnixNano": str(NOW_NS), "startTimeUnixNano": "1766743034916252103", "asInt": "31425989"},
    "histogram": {"timeUnixNano": str(NOW_NS), "startTimeUnixNano": "1766743034916252103", "count": "10",
                  "sum": 12.5, "bucketCounts": ["1", "2", "7"], "explicitBounds": [0.1, 0.5]},
}
FIELDS = {"gauge": ["timeUnixNano", "asDouble", "asInt", "flags", "attributes"],
          "sum": ["timeUnixNano", "startTimeUnixNano", "asInt", "asDouble", "flags", "attributes"],
          "histogram": ["timeUnixNano", "startTimeUnixNano", "count", "sum", "bucketCounts", "explicitBounds",
                        ("bucketCounts", 0), ("bucketCounts", 2), ("explicitBounds", 0), ("explicitBounds", 1),
                        "flags", "attributes"]}
DATA_FIELDS = {"gauge": [], "sum": ["aggregationTemporality", "isMonotonic", "dataPoints"],
               "histogram": ["aggregationTemporality", "dataPoints"]}
_GONE = object()


def plain_request(kind: str) -> dict:
    data = {"dataPoints": [orjson.loads(orjson.dumps(PLAIN_POINTS[kind])),  # a deep copy
                           {"timeUnixNano": str(NOW_NS + 10**9), "asDouble": 1.0, "count": "0"}]}
    if kind != "gauge":
        data["aggregationTemporality"] = 2
    if kind == "sum":
        data["isMonotonic"] = True
    return {"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}},
                                    {"key": "host.name", "value": {"stringValue": "r1"}}]},
        "scopeMetrics": [{"metrics": [{"name": "m.jane@example.com", kind: data},
                                      {"name": "other", "gauge": {"dataPoints": [
                                          {"timeUnixNano": str(NOW_NS), "asDouble": 2.0}]}}]}]}]}


def edits():
    for kind in PLAIN_POINTS:
        for field in FIELDS[kind]:
            for value in EDGES + [_GONE]:
                yield kind, "point", field, value
        for field in DATA_FIELDS[kind] + ["name"]:
            for value in EDGES + [_GONE]:
                yield kind, "metric", field, value


def test_the_plain_requests_take_the_fast_path(monkeypatch):
    from streams.ingest import otlp

    monkeypatch.setattr(otlp, "_metric", None)  # calling it would fail
    for kind in PLAIN_POINTS:
        assert len(decode_metrics(orjson.dumps(plain_request(kind)), known_services=None).samples) == 3


@pytest.mark.parametrize("keep", KEEPS)
def test_every_single_field_edit_decodes_as_before(keep):
    checked = 0
    for kind, level, field, value in edits():
        req = plain_request(kind)
        metric = req["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
        target = metric[kind]["dataPoints"][0] if level == "point" else (metric if field == "name" else metric[kind])
        if isinstance(field, tuple):
            target, field = target[field[0]], field[1]
        if value is _GONE:
            if isinstance(target, dict):
                target.pop(field, None)
            else:
                del target[field]
        else:
            target[field] = value
        for known in (None, KNOWN):
            try:
                assert_same(orjson.dumps(req), known, keep, 0)
            except AssertionError as exc:
                raise AssertionError(f"{kind} {level} {field!r} = {value!r}: {exc}") from None
        checked += 1
    assert checked > 1500
