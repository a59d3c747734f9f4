"""Every record kind that leaves ingest, and every encoded form, is redacted (issue 18).

A secret (an e-mail, a card number, a credential) is written in one of the forms that used to
get through (URL-encoded, a quoted password of several words, AWS's SecretAccessKey field, a
DSN password, a card grouped by dots, JSON-escaped) or a plain one, embedded in random text, and
put in each kind of input: metrics (OTLP/JSON, native, Prometheus), logs, spans, change events,
external alerts (each webhook), and dead letters (reason and excerpt, cut anywhere). What comes
out is checked for the secret itself and for the detectors of tests/property/test_redaction.py,
on the text and on its URL- and JSON-decoded forms.
"""
from __future__ import annotations

import urllib.parse

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streams import codec
from streams.ingest import DecodeError, decode_logs, decode_metrics, decode_traces
from streams.ingest.external import DATADOG_TEMPLATE, decode_external
from streams.ingest.redact import DEFAULT, json_unescaped
from tests.property.test_redaction import ALNUM, EMAIL, SURROUNDING, card_numbers, luhn, pans, tokens

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T_NS = "1700000000000000000"
WORDS = st.text(alphabet=ALNUM, min_size=3, max_size=10)


@st.composite
def encoded(draw):
    """(text, secret): a secret in one of the forms that got through before, or a plain one."""
    form = draw(st.sampled_from(["url_email", "url_bearer", "quoted_password", "aws_secret", "dsn", "dotted_pan",
                                 "plain_email", "plain_pan", "plain_token"]))
    if form == "url_email":
        email = draw(st.emails())
        assume(EMAIL.search(email))
        return urllib.parse.quote(email, safe=draw(st.sampled_from(["", "."]))), email
    if form == "url_bearer":
        secret = draw(st.text(alphabet=ALNUM, min_size=12, max_size=30))
        head = draw(st.sampled_from(["Bearer ", "Authorization: Bearer ", "authorization=Basic "]))
        return urllib.parse.quote(head + secret, safe=""), secret
    if form == "quoted_password":
        secret = " ".join(draw(st.lists(WORDS, min_size=2, max_size=5)))
        key = draw(st.sampled_from(["password", "passwd", "pwd", "secret", "client_secret", "api_key"]))
        q = draw(st.sampled_from(['"', "'"]))
        sep = draw(st.sampled_from(["=", ": ", ":", " = "]))
        return f"{key}{sep}{q}{secret}{q}", secret
    if form == "aws_secret":
        secret = draw(st.text(alphabet=ALNUM + "/+", min_size=40, max_size=40))
        key = draw(st.sampled_from(["SecretAccessKey", "aws_secret_access_key", "secretAccessKey", "SessionToken"]))
        return f'"{key}": "{secret}"', secret
    if form == "dsn":
        secret = draw(st.text(alphabet=ALNUM + "!$*-_~", min_size=6, max_size=24))
        scheme = draw(st.sampled_from(["postgres", "postgresql", "mysql+pymysql", "redis", "amqp", "https", "mongodb+srv"]))
        host = draw(st.sampled_from(["db", "db.internal", "10.0.0.5:5432", "cache-1"]))
        return f"{scheme}://{draw(WORDS)}:{secret}@{host}/{draw(WORDS)}", secret
    if form == "dotted_pan":
        _, digits = draw(pans())
        size = draw(st.sampled_from([4, 4, 5, 6]))
        groups = [digits[i:i + size] for i in range(0, len(digits), size)]
        assume(all(3 <= len(g) <= 6 for g in groups) and len(groups) >= 3)
        return ".".join(groups), digits
    if form == "plain_email":
        email = draw(st.emails())
        assume(EMAIL.search(email) and not email.startswith((".", "'", "`")))
        return email, email
    if form == "plain_pan":
        return draw(pans())
    return draw(tokens())


SEP = st.sampled_from([" ", "\n", ", ", "; ", "\t", " (", ") "])


@st.composite
def embedded(draw):
    text, secret = draw(encoded())
    before, after = draw(SURROUNDING), draw(SURROUNDING)
    out = before + draw(SEP) + text + draw(SEP) + after
    assume(secret not in before + after and secret not in text.replace(secret, "", 1))
    return out, secret


def views(s: str) -> list[str]:
    """The text, and what a reader would decode it to."""
    return [s, urllib.parse.unquote(s), urllib.parse.unquote(urllib.parse.unquote(s)), json_unescaped(s)]


def assert_clean(strings, secret: str) -> None:
    digits = "".join(c for c in secret if c.isdigit())
    for s in strings:
        for v in views(s):
            assert secret not in v, (secret, s)
            if len(digits) >= 13 and luhn(digits) and digits == secret:
                assert digits not in card_numbers(v), (secret, s)
            assert not (EMAIL.fullmatch(secret) and EMAIL.search(v) and secret in v), (secret, s)


def _kv(d: dict) -> list[dict]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]


def _res(**attrs) -> dict:
    return {"attributes": _kv({"service.name": "checkout", **attrs})}


# --- every input kind ------------------------------------------------------------------------------

@SETTINGS
@given(case=embedded(), place=st.sampled_from(["otlp_point", "otlp_resource", "otlp_name", "native", "native_name",
                                                 "prometheus", "prometheus_name"]))
def test_metrics(case, place):
    text, secret = case
    if place.startswith("otlp"):
        attrs = {"user": text} if place == "otlp_point" else {}
        doc = {"resourceMetrics": [{"resource": _res(**({"owner": text} if place == "otlp_resource" else {})),
                                    "scopeMetrics": [{"metrics": [{"name": text if place == "otlp_name" else "m",
                                                                   "gauge": {"dataPoints": [{"timeUnixNano": T_NS,
                                                                                             "asDouble": 1.0,
                                                                                             "attributes": _kv(attrs)}]}}]}]}]}
    elif place.startswith("native"):
        doc = {"schema_version": 1, "service": "api", "labels": {} if place == "native_name" else {"user": text},
               "points": [[text if place == "native_name" else "cpu", 1.7e9, 0.5]]}
    else:
        labels = {"service": "api", "__name__": text if place == "prometheus_name" else "up"}
        if place == "prometheus":
            labels["user"] = text
        doc = {"timestamp": "2026-08-20T12:00:00Z", "value": "1", "labels": labels}
    d = decode_metrics(orjson.dumps(doc), known_services=None)
    assert d.samples
    assert_clean([x for s in d.samples for x in (s.series.metric, *[y for kv in s.series.labels for y in kv])], secret)


@SETTINGS
@given(case=embedded(), place=st.sampled_from(["body", "attribute"]))
def test_logs(case, place):
    text, secret = case
    rec = {"timeUnixNano": T_NS, "severityNumber": 17, "body": {"stringValue": text if place == "body" else "x"},
           "attributes": _kv({"user": text} if place == "attribute" else {})}
    doc = {"resourceLogs": [{"resource": _res(), "scopeLogs": [{"logRecords": [rec]}]}]}
    [out], _ = decode_logs(orjson.dumps(doc), known_services=None)
    assert_clean([out.body, *[y for kv in out.labels for y in kv]], secret)


@SETTINGS
@given(case=embedded(), pad=st.integers(0, 300))
def test_span_names(case, pad):
    text, secret = case
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "x" * pad + text,
            "kind": 2, "startTimeUnixNano": T_NS, "endTimeUnixNano": T_NS}
    doc = {"resourceSpans": [{"resource": _res(), "scopeSpans": [{"spans": [span]}]}]}
    [out], _ = decode_traces(orjson.dumps(doc), known_services=None)
    assert_clean([out.name], secret)


@SETTINGS
@given(case=embedded(), place=st.sampled_from(["id", "description"]), pad=st.integers(0, 520))
def test_change_events(case, place, pad):
    text, secret = case
    change = {"schema_version": 1, "id": "d-1", "service": "api", "kind": "deploy", "at": "2026-01-01T00:00:00Z",
              place: ("x" * pad if place == "description" else "") + text}
    ch = codec.decode_change(orjson.dumps(change))
    assert_clean([ch.id, ch.description], secret)


@SETTINGS
@given(case=embedded(), source=st.sampled_from(["alertmanager", "datadog", "newrelic"]), pad=st.integers(0, 1100))
def test_external_alerts(case, source, pad):
    text, secret = case
    long = "x" * pad + text
    if source == "alertmanager":
        body = {"version": "4", "status": "firing", "alerts": [{
            "status": "firing", "labels": {"alertname": "HighCPU", "service": "api", "user": long},
            "annotations": {"summary": long}, "startsAt": "2026-08-20T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]}
    elif source == "datadog":
        values = {"$ALERT_ID": "1234", "$ALERT_CYCLE_KEY": "7061395284219318419", "$ALERT_TRANSITION": "Triggered",
                  "$ALERT_TYPE": "error", "$ALERT_PRIORITY": "P1", "$ALERT_TITLE": long,
                  "$ALERT_METRIC": "postgresql.percent_usage_connections", "$ALERT_SCOPE": "service:api",
                  "$HOSTNAME": "db-1", "$TAGS": "env:prod,service:api,user:" + text.replace(",", " "),
                  "$DATE": "1787227200000", "$LINK": "https://app.datadoghq.com/monitors/1234"}
        body = DATADOG_TEMPLATE
        for var in sorted(values, key=len, reverse=True):
            body = body.replace(var, orjson.dumps(values[var]).decode()[1:-1])
        body = orjson.loads(body)
    else:
        body = {"id": "0e4a7d1c-2f0b-4c8a-9a55-3c3e8e2a1f10", "issueUrl": "https://radar-api.service.newrelic.com/x",
                "title": long, "priority": "CRITICAL", "impactedEntities": ["api"], "totalIncidents": 1,
                "state": "ACTIVATED", "trigger": "STATE_CHANGE", "isCorrelated": False, "createdAt": 1787227200000,
                "updatedAt": 1787227260000, "sources": ["newrelic"], "alertPolicyNames": ["Shop"],
                "alertConditionNames": [text], "workflowName": "aiops"}
    res = decode_external(source, orjson.dumps(body), known_services=None)  # well-formed: alerts come out
    assert res.alerts
    for a in res.alerts:
        assert_clean([a.metric, a.summary, a.series, *[y for kv in a.labels for y in kv],
                      *[y for kv in a.evidence for y in kv]], secret)
    assert_clean(list(res.rejects), secret)


@SETTINGS
@given(case=embedded(), pad=st.integers(0, 1200), excerpt=st.integers(64, 1024),
       escape=st.sampled_from(["none", "json", "unicode"]))
def test_dead_letters(case, pad, excerpt, escape):
    text, secret = case
    if escape == "json":
        inner = orjson.dumps(text).decode()[1:-1].replace("/", "\\/")
    elif escape == "unicode":
        inner = "".join(f"\\u{ord(c):04x}" if c in "@:/ .=" else c for c in orjson.dumps(text).decode()[1:-1])
    else:
        inner = text
    payload = ('{"pad": "' + "y" * pad + '", "v": "' + inner + '"').encode()
    reason = "unknown service " + repr("z" * (pad % 90) + text)
    rec = orjson.loads(codec.dead_letter(reason, "telemetry.metrics", 0, 1, payload, excerpt))
    assert_clean([rec["excerpt"], rec["reason"]], secret)


@SETTINGS
@given(case=embedded(), pad=st.integers(0, 120))
def test_decoder_reasons_are_redacted_before_they_are_cut(case, pad):
    text, secret = case
    doc = {"schema_version": 1, "service": "q" * pad + text, "points": [["cpu", 1.7e9, 0.5]]}
    try:
        decode_metrics(orjson.dumps(doc), known_services=frozenset({"api"}))
    except DecodeError as exc:
        assert_clean([str(exc)], secret)
        # a cut may leave a tail of a secret, never enough of it to be one
        digits = "".join(c for c in secret if c.isdigit())
        if digits == secret:
            assert digits[:12] not in str(exc).replace(" ", "").replace("-", "").replace(".", "")
    assert DEFAULT.text(text) != text or secret not in text
