"""The external alert decoders never crash: on any bytes, any JSON, and well-formed webhook payloads
with wrong types at random places, they return usable alerts or raise DecodeError, never anything
else and never an "internal decoder error" (a bug must fail here, not hide in the dead-letter
topic). Whatever they return is usable: known services, sane times, a status, the same alerts
for the same bytes."""
from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from detectors.records import rfc3339
from streams import codec
from streams.ingest import T_MAX, T_MIN, DecodeError
from streams.ingest.external import DATADOG_TEMPLATE, SOURCES, decode_external
from tests.property.test_decoders_never_crash import JSON, SETTINGS, WEIRD_STRINGS, enc, mutated

KNOWN = frozenset({"checkout", "orders", "orders-db", "log-host"})
SERVICE = st.sampled_from(sorted(KNOWN) + ["chekout", "", "node"]) | st.text(max_size=6)
TIME_S = st.integers(int(T_MIN), int(T_MAX))
# Valid values most of the time, so the properties also check what the decoders return.
VALID_RFC3339 = TIME_S.map(rfc3339)
RFC3339 = st.one_of(VALID_RFC3339, VALID_RFC3339, VALID_RFC3339, WEIRD_STRINGS, st.sampled_from([
    "0001-01-01T00:00:00Z", "2026-08-20T12:00:00.123456789Z", "2026-08-20T12:00:00+02:00", "2026-08-20T12:00:00"]))
VALID_MS = TIME_S.map(lambda s: s * 1000)
EPOCH_MS = st.one_of(VALID_MS, VALID_MS, VALID_MS, st.integers(-(2**70), 2**70), WEIRD_STRINGS)
LABELS = st.dictionaries(st.sampled_from(["service", "job", "app", "host", "instance", "severity", "env"]),
                         SERVICE | st.sampled_from(["critical", "warning", "log-host:9100", "info"]), max_size=5)

AM_ALERT = st.fixed_dictionaries({
    "status": st.sampled_from(["firing", "firing", "resolved", "pending"]),
    "labels": st.builds(lambda name, rest: {"alertname": name, **rest},
                        st.sampled_from(["HighCPU", "DiskFull", "HighCPU", ""]), LABELS),
    "annotations": st.dictionaries(st.sampled_from(["summary", "description", "runbook_url"]), st.text(max_size=8),
                                   max_size=2),
    "startsAt": RFC3339, "endsAt": RFC3339 | st.just("0001-01-01T00:00:00Z"),
    "fingerprint": st.text(max_size=16), "generatorURL": st.text(max_size=8)})
ALERTMANAGER = st.fixed_dictionaries({
    "version": st.sampled_from(["4", "4", "4", "4", 4, "3"]), "status": st.sampled_from(["firing", "resolved"]),
    "receiver": st.just("aiops"), "groupKey": st.text(max_size=8), "truncatedAlerts": st.integers(0, 3),
    "groupLabels": LABELS, "commonLabels": LABELS, "commonAnnotations": st.builds(dict),
    "externalURL": st.just("http://am:9093"), "alerts": st.lists(AM_ALERT, max_size=3)})

DD_VALUE = st.text(max_size=10) | WEIRD_STRINGS
DATADOG = st.fixed_dictionaries({
    "alert_id": st.sampled_from(["1234", "", "$ALERT_ID"]) | DD_VALUE,
    "alert_cycle_key": DD_VALUE,
    "alert_transition": st.sampled_from(["Triggered", "Re-Triggered", "Warn", "No Data", "Renotify", "Recovered",
                                         "Null", "$ALERT_TRANSITION"]),
    "alert_type": st.sampled_from(["error", "warning", "success", "info"]),
    "alert_priority": st.sampled_from(["P1", "P5", ""]),
    "alert_title": DD_VALUE, "alert_metric": DD_VALUE,
    "alert_scope": st.lists(st.builds(lambda k, v: f"{k}:{v}", st.sampled_from(["service", "host", "env"]), SERVICE),
                            max_size=3).map(",".join) | DD_VALUE,
    "hostname": SERVICE, "tags": st.lists(st.builds(lambda k, v: f"{k}:{v}", st.sampled_from(["service", "team"]),
                                                    SERVICE), max_size=3).map(", ".join),
    "date": EPOCH_MS.map(str) | EPOCH_MS, "link": DD_VALUE})

NEWRELIC = st.fixed_dictionaries({
    "id": st.text(min_size=1, max_size=12) | st.text(max_size=12) | st.none(), "issueUrl": st.text(max_size=8),
    "title": st.text(max_size=8),
    "priority": st.sampled_from(["CRITICAL", "HIGH", "MEDIUM", "LOW", "x"]),
    "impactedEntities": st.lists(SERVICE, min_size=1, max_size=3) | st.lists(SERVICE, max_size=3),
    "totalIncidents": st.integers(0, 3),
    "state": st.sampled_from(["CREATED", "ACTIVATED", "ACKNOWLEDGED", "CLOSED", "CLOSED", "OPEN"]),
    "trigger": st.just("STATE_CHANGE"), "isCorrelated": st.booleans(), "createdAt": EPOCH_MS, "updatedAt": EPOCH_MS,
    "sources": st.builds(lambda: ["newrelic"]), "alertPolicyNames": st.lists(st.text(max_size=5), max_size=2),
    "alertConditionNames": st.lists(st.text(max_size=5), max_size=2), "workflowName": st.just("aiops")},
    optional={"closedAt": EPOCH_MS})


# `mutated` changes the drawn document in place: no strategy here may hand out a shared mutable
# constant (st.just of a list or dict), or hypothesis would see its own data change.


def check(source: str, payload: bytes, known=KNOWN) -> None:
    try:
        res = decode_external(source, payload, known_services=known)
    except DecodeError as exc:
        assert "internal decoder error" not in str(exc), str(exc)
        return
    assert res.alerts and res.source == source
    assert res == decode_external(source, payload, known_services=known)  # same bytes, same alerts
    for a in res.alerts:
        assert known is None or a.service in known, a
        assert a.status in ("firing", "resolved") and a.severity in ("critical", "warning", "info"), a
        assert T_MIN <= a.starts_at <= a.at <= T_MAX, a
        assert math.isfinite(a.score) and a.source == source and a.metric, a
        # Every alert crosses aiops.alerts: it must survive the wire codec.
        assert codec.decode_alert_event(codec.encode_alert_event(a)).fingerprint == a.fingerprint


@SETTINGS
@given(st.sampled_from(SOURCES), st.binary(max_size=200))
def test_arbitrary_bytes(source, payload):
    check(source, payload)


@SETTINGS
@given(st.sampled_from(SOURCES), JSON)
def test_arbitrary_json(source, doc):
    check(source, enc(doc))


@SETTINGS
@given(ALERTMANAGER | mutated(ALERTMANAGER), st.booleans())
def test_alertmanager_payloads(doc, known):
    check("alertmanager", enc(doc), KNOWN if known else None)


@SETTINGS
@given(DATADOG | mutated(DATADOG), st.booleans())
def test_datadog_payloads(doc, known):
    check("datadog", enc(doc), KNOWN if known else None)


@SETTINGS
@given(NEWRELIC | mutated(NEWRELIC), st.booleans())
def test_newrelic_payloads(doc, known):
    check("newrelic", enc(doc), KNOWN if known else None)


@SETTINGS
@given(st.dictionaries(st.sampled_from([v for v in DATADOG_TEMPLATE.split('"') if v.startswith("$")]), DD_VALUE))
def test_datadog_template_rendered_with_any_strings(values):
    """Datadog substitutes strings into the template: whatever they are, the decoder copes."""
    text = DATADOG_TEMPLATE
    for var in sorted(values, key=len, reverse=True):
        text = text.replace(var, orjson.dumps(values[var]).decode()[1:-1])
    check("datadog", text.encode("utf-8", "surrogatepass"))
