"""The caps on OTLP/JSON metrics, counted on the decoder's walk (issue 16), decide as the walk of
their own before decoding did (issue 18): the same messages refused, with the same reasons, and
the same samples and rejects from the others.

The reference is that earlier check, kept here as it was, run before the frozen reference decoder
(tests/property/_otlp_reference.py). Caps are drawn small, around the points and buckets the
requests hold, on the requests of tests/property/test_otlp_fast_path.py (wrong types at every
level, unknown services, resources without a service, bad values: what the decoder rejects or
gives up on before it reaches a cap), to which metrics are added more kinds than one, points
flagged as holding no value, exponential histograms, summaries, and histogram points with
quantiles or exponential buckets beside their own: what the cap counts but the decoder skips.
"""
from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.ingest import DecodeError, Limits, decode_metrics
from streams.ingest.limits import _buckets, _series
from tests.property import _otlp_reference as reference
from tests.property.test_otlp_fast_path import KEEPS, KNOWN, NOW_NS, REDACTORS, request

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the reference: streams.ingest.limits.check_json for metrics as it was before issue 16 -------

def _lists(obj: object, key: str):
    v = obj.get(key) if type(obj) is dict else None
    return v if type(v) is list else ()


def _point_buckets(dp: object, lim: Limits) -> None:
    if type(dp) is not dict:
        return
    for key in ("bucketCounts", "explicitBounds", "quantileValues"):
        v = dp.get(key)
        if type(v) is list and len(v) > lim.max_buckets:
            _buckets(len(v), lim)
    for side in ("positive", "negative"):
        v = dp.get(side)
        if type(v) is dict and type(v.get("bucketCounts")) is list and len(v["bucketCounts"]) > lim.max_buckets:
            _buckets(len(v["bucketCounts"]), lim)


def reference_check_json(obj: object, lim: Limits) -> None:
    if type(obj) is not dict:
        return
    if "resourceMetrics" not in obj:
        points = obj.get("points")
        if type(points) is list and len(points) > lim.max_series:
            _series(len(points), "metrics", lim)
        return
    n = 0
    for r in _lists(obj, "resourceMetrics"):
        for s in _lists(r, "scopeMetrics"):
            for item in _lists(s, "metrics"):
                for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
                    data = item.get(kind) if type(item) is dict else None
                    dps = data.get("dataPoints") if type(data) is dict else None
                    if type(dps) is not list:
                        continue
                    n += len(dps)
                    if n > lim.max_series:
                        _series(n, "metrics", lim)
                    if kind != "gauge" and kind != "sum":
                        for dp in dps:
                            _point_buckets(dp, lim)
            if n > lim.max_series:
                _series(n, "metrics", lim)


def reference_decode(payload: bytes, lim: Limits, **kw):
    """streams.ingest._decode_metrics's JSON branch as it was: load, check_json, then decode (by
    the frozen reference for OTLP/JSON; other formats, whose decoders are not in question here, by
    today's decoder without caps)."""
    try:
        obj = reference.load(payload)
        if type(obj) is dict:
            reference_check_json(obj, lim)
    except DecodeError as exc:
        return ("error", type(exc).__name__, str(exc))
    otlp = type(obj) is dict and "resourceMetrics" in obj
    return outcome(reference.decode_metrics if otlp else decode_metrics, payload, None, **kw)


def outcome(decode, payload: bytes, lim: Limits | None, **kw):
    try:
        d = decode(payload, **kw) if lim is None else decode(payload, limits=lim, **kw)
    except DecodeError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", d.fmt, [repr(s) for s in d.samples], d.rejects)


# --- what the cap counts and the decoder skips -------------------------------------------------

LONG = st.integers(0, 7)  # list lengths around the caps drawn below


@st.composite
def bucket_lists(draw) -> dict:
    """Bucket-like lists a point may carry, of the kinds check_json looks at."""
    out = {}
    for key in draw(st.lists(st.sampled_from(["bucketCounts", "explicitBounds", "quantileValues",
                                              "positive", "negative"]), max_size=3, unique=True)):
        items = ["0"] * draw(LONG)
        if key in ("positive", "negative"):
            out[key] = draw(st.sampled_from([{"bucketCounts": items}, {"bucketCounts": None}, items, None]))
        else:
            out[key] = draw(st.sampled_from([items, {"x": items}, None]))
    return out


@st.composite
def other_kind(draw) -> tuple[str, object]:
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponentialHistogram", "summary"]))
    dps = draw(st.lists(st.one_of(bucket_lists(), st.just({}), st.sampled_from([None, 1, "x", []])), max_size=3))
    data = draw(st.sampled_from(["dict", "dict", "dict", "null", "junk", "points-junk"]))
    if data == "null":
        return kind, None
    if data == "junk":
        return kind, [dps]
    return kind, {"dataPoints": {"0": dps} if data == "points-junk" else dps}


@st.composite
def rare_lists(draw) -> dict:
    """What check_json reads of a histogram point beside its bucketCounts and explicitBounds."""
    items = ["0"] * draw(LONG)
    key = draw(st.sampled_from(["quantileValues", "positive", "negative"]))
    return {key: items if key == "quantileValues" else {"bucketCounts": items}}


@st.composite
def plain_histogram(draw) -> dict:
    """A histogram the fast path takes, its lists around the caps, perhaps with a second kind."""
    points = []
    for _ in range(draw(st.integers(1, 3))):
        k = draw(LONG)
        dp = {"timeUnixNano": str(NOW_NS), "count": "1", "sum": 1.0, "explicitBounds": [float(i) for i in range(k)]}
        if draw(st.booleans()):
            dp["bucketCounts"] = ["0"] * (k + 1)
        if draw(st.integers(0, 2)) == 0:
            dp.update(draw(rare_lists()))
        if draw(st.integers(0, 3)) == 0:
            dp["flags"] = 1
        points.append(dp)
    m = {"name": "h", "histogram": {"aggregationTemporality": 2, "dataPoints": points}}
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["exponentialHistogram", "summary"]))
        m[kind] = {"dataPoints": [{}] * draw(LONG)}
    return m


@st.composite
def capped_request(draw) -> dict:
    req = draw(request())
    resources = req.get("resourceMetrics")
    if type(resources) is not list:
        return req
    for rm in resources:
        for sm in _lists(rm, "scopeMetrics"):
            metrics = _lists(sm, "metrics")
            for m in metrics:
                if type(m) is not dict:
                    continue
                for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0):
                    kind, data = draw(other_kind())
                    m[kind] = data  # a kind the metric already held is replaced: the first one wins
                h = m.get("histogram")
                if type(h) is dict and type(h.get("dataPoints")) is list:
                    for dp in h["dataPoints"]:
                        if type(dp) is dict and draw(st.integers(0, 3)) == 0:
                            dp.update(draw(bucket_lists()))
                            if draw(st.booleans()):
                                dp["flags"] = 1
            if type(metrics) is not list:
                continue
            if draw(st.integers(0, 2)) == 0:
                metrics.append(draw(plain_histogram()))
            if draw(st.integers(0, 5)) == 0:
                metrics.append({"name": "big", "gauge": {"dataPoints": [
                    {"timeUnixNano": str(NOW_NS), "asDouble": float(i)} for i in range(draw(st.integers(0, 9)))]}})
    return req


LIMITS = st.builds(Limits, max_series=st.integers(0, 30), max_buckets=st.integers(0, 6))


@SETTINGS
@given(req=capped_request(), lim=LIMITS, known=st.sampled_from([KNOWN, None]), keep=st.sampled_from(KEEPS),
       redactor=st.integers(0, len(REDACTORS) - 1))
def test_json_caps_decide_as_the_check_before_decoding(req, lim, known, keep, redactor):
    payload = orjson.dumps(req)
    kw = dict(known_services=known, keep_labels=keep, redactor=REDACTORS[redactor])
    want = reference_decode(payload, lim, **kw)
    assert outcome(decode_metrics, payload, lim, **kw) == want
    assert outcome(decode_metrics, payload, lim, **kw) == want  # what the decoders cache changes nothing


def least_passing(obj: dict, make) -> int:
    """The lowest cap ``make(cap)`` that the reference check passes ``obj`` with."""
    cap = 0
    while True:
        try:
            reference_check_json(obj, make(cap))
            return cap
        except DecodeError:
            cap += 1


@SETTINGS
@given(req=capped_request(), known=st.sampled_from([KNOWN, None]))
def test_json_caps_at_the_counts(req, known):
    """Caps exactly at, and one under, what the request holds: where a miscount shows."""
    payload = orjson.dumps(req)
    points = least_passing(req, lambda cap: Limits(max_series=cap))
    buckets = least_passing(req, lambda cap: Limits(max_buckets=cap))
    for lim in (Limits(max_series=points, max_buckets=buckets), Limits(max_series=max(points - 1, 0)),
                Limits(max_buckets=max(buckets - 1, 0))):
        want = reference_decode(payload, lim, known_services=known)
        assert outcome(decode_metrics, payload, lim, known_services=known) == want


@SETTINGS
@given(obj=st.one_of(
    st.fixed_dictionaries({"schema_version": st.just(1), "service": st.just("api"),
                           "points": st.lists(st.just(["cpu", 1.7e9, 0.5]), max_size=5)}),
    st.fixed_dictionaries({"labels": st.just({"__name__": "up", "service": "api"}), "value": st.just("1"),
                           "timestamp": st.just("1700000000000")}),
    st.sampled_from([[], "x", 1, None, {}, {"resourceMetrics": None}, {"resourceMetrics": {}},
                     {"points": [1, 2, 3]}])),
       lim=LIMITS)
def test_other_messages_are_capped_as_before(obj, lim):
    payload = orjson.dumps(obj)
    assert outcome(decode_metrics, payload, lim, known_services=None) == reference_decode(payload, lim,
                                                                                          known_services=None)
