"""Alerts from other tools: Alertmanager, Datadog and New Relic webhook payloads to alerts.

The payloads are the wire formats of each tool (Alertmanager's v4 webhook, the aiops Datadog
template as Datadog renders it, New Relic's default workflow template); the tests follow one
alert from the payload through the correlator to an incident, and assert exact error strings.
"""
from __future__ import annotations

import math

import orjson
import pytest

from correlators.correlate import Correlator
from detectors.records import Heartbeat, parse_rfc3339
from streams import codec
from streams.config import load_topology
from streams.ingest import DecodeError
from streams.ingest.external import DATADOG_TEMPLATE, SEVERITY_SCORE, decode_external
from tests.integration.harness import REPO

TOPOLOGY = load_topology(REPO / "topology.yaml")
KNOWN = frozenset(TOPOLOGY.services)
T0 = "2026-08-20T12:00:00Z"


def am_payload(*alerts, status="firing"):
    return {"version": "4", "groupKey": '{}:{alertname="HighCPU"}', "truncatedAlerts": 0, "status": status,
            "receiver": "aiops", "groupLabels": {"alertname": "HighCPU"},
            "commonLabels": {"alertname": "HighCPU", "severity": "critical"},
            "commonAnnotations": {"summary": "CPU > 90%"}, "externalURL": "http://am:9093",
            "notification_reason": "first notification", "alerts": list(alerts)}


def am_alert(status="firing", ends="0001-01-01T00:00:00Z", fingerprint="3fff2c2d7595e046", **labels):
    return {"status": status, "labels": {"alertname": "HighCPU", "instance": "node-1", **labels},
            "annotations": {"runbook_url": "https://runbooks/cpu", "summary": "CPU > 90%"},
            "startsAt": T0, "endsAt": ends, "generatorURL": "http://prom:9090/graph?g0.expr=cpu",
            "fingerprint": fingerprint}


def dd_payload(**overrides):
    """The aiops template as Datadog renders it: every variable substituted by a string."""
    values = {"$ALERT_ID": "1234", "$ALERT_CYCLE_KEY": "7061395284219318419", "$ALERT_TRANSITION": "Triggered",
              "$ALERT_TYPE": "error", "$ALERT_PRIORITY": "P1", "$ALERT_TITLE": "[Triggered on {service:orders-db}] Pool",
              "$ALERT_METRIC": "postgresql.percent_usage_connections", "$ALERT_SCOPE": "service:orders-db,env:prod",
              "$HOSTNAME": "db-1", "$TAGS": "env:prod,service:orders-db,team:db", "$DATE": "1787227200000",
              "$LINK": "https://app.datadoghq.com/monitors/1234"}
    values.update(overrides)
    text = DATADOG_TEMPLATE
    for var in sorted(values, key=len, reverse=True):
        text = text.replace(var, values[var])
    return text.encode()


def nr_payload(**overrides):
    """New Relic's default workflow template, rendered."""
    doc = {"id": "0e4a7d1c-2f0b-4c8a-9a55-3c3e8e2a1f10", "issueUrl": "https://radar-api.service.newrelic.com/x",
           "title": "checkout error rate > 5%", "priority": "CRITICAL", "impactedEntities": ["checkout"],
           "totalIncidents": 1, "state": "ACTIVATED", "trigger": "STATE_CHANGE", "isCorrelated": False,
           "createdAt": 1787227200000, "updatedAt": 1787227260000, "sources": ["newrelic"],
           "alertPolicyNames": ["Shop"], "alertConditionNames": ["checkout error rate"], "workflowName": "aiops"}
    doc.update(overrides)
    return orjson.dumps(doc)


def decode(source, payload, known=KNOWN, **kw):
    return decode_external(source, payload if isinstance(payload, bytes) else orjson.dumps(payload),
                           known_services=known, **kw)


# --- Alertmanager ---------------------------------------------------------------------------

def test_alertmanager_firing_alert():
    res = decode("alertmanager", am_payload(am_alert(service="orders-db", severity="critical")))
    assert res.rejects == ()
    [a] = res.alerts
    assert (a.source, a.status, a.service, a.metric, a.severity) == ("alertmanager", "firing", "orders-db", "HighCPU",
                                                                    "critical")
    assert a.starts_at == a.at == parse_rfc3339(T0)  # endsAt 0001-01-01 is Go's zero time: still firing
    assert a.score == SEVERITY_SCORE["critical"] and math.isnan(a.value) and math.isnan(a.expected)
    assert dict(a.labels) == {"instance": "node-1", "service": "orders-db", "severity": "critical"}
    assert a.summary == "CPU > 90%"
    assert dict(a.evidence)["runbook_url"] == "https://runbooks/cpu"


def test_webhook_alerts_are_redacted_like_telemetry():
    from streams.ingest.redact import Redactor

    alert = am_alert(service="orders-db", user="jane@example.com", card="4111 1111 1111 1111")
    alert["annotations"]["summary"] = "login failures for jane@example.com, Authorization: Bearer abc.def"
    [a] = decode("alertmanager", am_payload(alert)).alerts  # the default rules
    assert dict(a.labels)["user"] == "<email>" and dict(a.labels)["card"] == "<pan>"
    assert "jane@" not in a.summary and "abc.def" not in a.summary and "jane@" not in a.series
    assert a.service == "orders-db"
    [kept] = decode("alertmanager", am_payload(alert), redactor=Redactor([])).alerts
    assert dict(kept.labels)["user"] == "jane@example.com"


def test_alertmanager_resolution_has_the_same_identity_and_ends_at_endsAt():
    firing = decode("alertmanager", am_payload(am_alert(service="orders-db"))).alerts[0]
    resolved = decode("alertmanager", am_payload(am_alert("resolved", "2026-08-20T12:10:00.123456789Z",
                                                          service="orders-db"), status="resolved")).alerts[0]
    assert resolved.status == "resolved" and resolved.fingerprint == firing.fingerprint
    assert resolved.at == parse_rfc3339("2026-08-20T12:10:00.123456Z") and resolved.starts_at == firing.starts_at


@pytest.mark.parametrize("labels, service", [
    ({"service": "orders", "job": "checkout"}, "orders"),        # the service label first
    ({"job": "node", "instance": "log-host:9100"}, "log-host"),  # job names no service: the host does
    ({"job": "payments"}, "payments"),
    ({"app": "catalog"}, "catalog"),
])
def test_alertmanager_service_candidates(labels, service):
    alert = am_alert()
    alert["labels"] = {"alertname": "DiskFull", **labels}
    assert decode("alertmanager", am_payload(alert)).alerts[0].service == service


def test_alertmanager_service_label_is_configurable():
    alert = am_alert(app_name="checkout", service="orders")
    assert decode("alertmanager", am_payload(alert), service_label="app_name").alerts[0].service == "checkout"


def test_a_resent_webhook_gives_identical_alerts_and_no_second_incident():
    body = orjson.dumps(am_payload(am_alert(service="orders-db")))
    first, again = decode("alertmanager", body), decode("alertmanager", body)
    assert first == again
    wire = [codec.decode_alert_event(codec.encode_alert_event(a)) for a in first.alerts + again.alerts]
    assert codec.encode_alert_event(wire[0]) == codec.encode_alert_event(wire[1])
    c = Correlator(TOPOLOGY.graph(), TOPOLOGY.correlation)
    out = c.ingest(wire[:1]) + c.ingest(wire[1:]) + c.ingest([Heartbeat(at=parse_rfc3339(T0) + 600)])
    assert [(i.version, i.status, i.services) for i in out] == [(1, "open", ("orders-db",))]
    assert c.stats["duplicates"] == 1
    assert out[0].root_causes[0].service == "orders-db"
    assert out[0].severity == "warning"  # no severity label: the default


def test_alertmanager_unknown_service_is_rejected_with_a_hint():
    with pytest.raises(DecodeError) as exc:
        decode("alertmanager", am_payload(am_alert(service="orders-dbb", job="node")))
    assert str(exc.value) == "alerts[0]: unknown service 'orders-dbb' (did you mean 'orders-db'?)"


def test_alertmanager_partial_payload_keeps_the_good_alerts():
    res = decode("alertmanager", am_payload(am_alert(service="orders"), am_alert(service="nope", fingerprint="b"),
                                            {"status": "firing", "labels": {"service": "orders"}}))
    assert [a.service for a in res.alerts] == ["orders"]
    assert res.rejects == ("alerts[1]: unknown service 'nope'", "alerts[2].labels.alertname: required (the alert's name)")


@pytest.mark.parametrize("payload, reason", [
    (b"\x00not json", "invalid JSON: unexpected character, expected a JSON value: line 1 column 1 (char 0)"),
    (b"[]", "expected an Alertmanager webhook object (got list)"),
    ({"version": "3", "alerts": []}, 'version: expected "4", the Alertmanager webhook payload (got \'3\')'),
    ({"version": "4", "alerts": "x"}, "alerts: expected a list (got str)"),
    ({"version": "4", "alerts": []}, "no alerts in the payload"),
    (am_payload({**am_alert(service="orders"), "startsAt": "yesterday"}),
     "alerts[0].startsAt: invalid RFC 3339 time 'yesterday'"),
    (am_payload({**am_alert(service="orders"), "startsAt": "2026-08-20T12:00:00"}),
     "alerts[0].startsAt: RFC 3339 time without a UTC offset '2026-08-20T12:00:00'"),
    (am_payload({**am_alert(service="orders"), "startsAt": "1970-01-01T00:00:00Z"}),
     "alerts[0].startsAt: time '1970-01-01T00:00:00Z' outside 2000..2100"),
    (am_payload(am_alert("resolved", service="orders")), "alerts[0].endsAt: a resolved alert needs its end time"),
    (am_payload({**am_alert(service="orders"), "status": "pending"}),
     "alerts[0].status: expected 'firing' or 'resolved' (got 'pending')"),
    (am_payload({**am_alert(), "labels": {"alertname": "X", "service": 3}}),
     "alerts[0].labels.service: expected a string (got int)"),
    (am_payload(am_alert(instance="")), "alerts[0]: nothing names the service"),
])
def test_alertmanager_bad_payloads(payload, reason):
    with pytest.raises(DecodeError) as exc:
        decode("alertmanager", payload)
    assert str(exc.value) == reason


# --- Datadog --------------------------------------------------------------------------------

def test_datadog_trigger_and_recovery():
    fired = decode("datadog", dd_payload()).alerts[0]
    assert (fired.source, fired.status, fired.service, fired.severity) == ("datadog", "firing", "orders-db", "critical")
    assert fired.metric == "postgresql.percent_usage_connections"
    assert fired.at == fired.starts_at == 1787227200.0
    assert dict(fired.labels) == {"env": "prod", "host": "db-1", "monitor_id": "1234", "priority": "P1",
                                  "service": "orders-db", "team": "db"}
    recovered = decode("datadog", dd_payload(**{"$ALERT_TRANSITION": "Recovered", "$ALERT_TYPE": "success",
                                                "$DATE": "1787227800000"})).alerts[0]
    assert recovered.status == "resolved" and recovered.fingerprint == fired.fingerprint
    assert recovered.at == 1787227800.0


@pytest.mark.parametrize("transition, alert_type, severity", [
    ("Warn", "warning", "warning"), ("Re-Triggered", "error", "critical"), ("No Data", "warning", "warning"),
    ("Renotify", "error", "critical"), ("Renotify", "warning", "warning"),
])
def test_datadog_severity(transition, alert_type, severity):
    a = decode("datadog", dd_payload(**{"$ALERT_TRANSITION": transition, "$ALERT_TYPE": alert_type})).alerts[0]
    assert (a.status, a.severity) == ("firing", severity)


def test_datadog_service_falls_back_to_the_host_and_ignores_unsubstituted_variables():
    body = dd_payload(**{"$ALERT_SCOPE": "host:log-host", "$TAGS": "env:prod", "$HOSTNAME": "log-host",
                         "$ALERT_METRIC": "$ALERT_METRIC"})
    a = decode("datadog", body).alerts[0]
    assert a.service == "log-host"
    assert a.metric == "[Triggered on {service:orders-db}] Pool"  # no metric: the title


def test_datadog_a_different_scope_is_a_different_alert():
    a = decode("datadog", dd_payload()).alerts[0]
    b = decode("datadog", dd_payload(**{"$ALERT_SCOPE": "service:orders,env:prod"})).alerts[0]
    assert b.service == "orders" and a.fingerprint != b.fingerprint


@pytest.mark.parametrize("payload, reason", [
    (b'{"body":"x","last_updated":"1","event_type":"query_alert_monitor","title":"t","date":"1","org":{},"id":"1"}',
     "this is Datadog's default webhook payload; paste the aiops payload template (README, 'Alerts from other tools') "
     "into the webhook's Payload field"),
    (dd_payload(**{"$ALERT_TRANSITION": "Null"}),
     "alert_transition: expected Triggered, Re-Triggered, Warn, Re-Warn, No Data, Re-No Data, Renotify or Recovered "
     "(got 'Null')"),
    (dd_payload(**{"$DATE": "yesterday"}), "date: expected epoch milliseconds (got 'yesterday')"),
    (dd_payload(**{"$DATE": "1787227200"}), "date: time 1787227200 is not epoch milliseconds in 2000..2100"),
    (dd_payload(**{"$ALERT_ID": "$ALERT_ID"}),
     "alert_id: required: is this the aiops Datadog payload template? (see README)"),
    (dd_payload(**{"$ALERT_SCOPE": "service:nope", "$TAGS": "", "$HOSTNAME": ""}), "payload: unknown service 'nope'"),
])
def test_datadog_bad_payloads(payload, reason):
    with pytest.raises(DecodeError) as exc:
        decode("datadog", payload)
    assert str(exc.value) == reason


# --- New Relic ------------------------------------------------------------------------------

def test_newrelic_issue_activated_then_closed():
    fired = decode("newrelic", nr_payload()).alerts[0]
    assert (fired.source, fired.status, fired.service, fired.severity, fired.metric) == (
        "newrelic", "firing", "checkout", "critical", "checkout error rate")
    assert (fired.starts_at, fired.at) == (1787227200.0, 1787227260.0)
    assert dict(fired.labels) == {"issue_id": "0e4a7d1c-2f0b-4c8a-9a55-3c3e8e2a1f10", "policy": "Shop",
                                  "priority": "CRITICAL"}
    closed = decode("newrelic", nr_payload(state="CLOSED", updatedAt=1787227900000)).alerts[0]
    assert closed.status == "resolved" and closed.fingerprint == fired.fingerprint and closed.at == 1787227900.0


def test_newrelic_one_alert_per_impacted_entity_unknown_ones_rejected():
    res = decode("newrelic", nr_payload(impactedEntities=["checkout", "payments", "legacy-erp"], priority="MEDIUM"))
    assert [(a.service, a.severity) for a in res.alerts] == [("checkout", "warning"), ("payments", "warning")]
    assert res.rejects == ("impactedEntities[2]: unknown service 'legacy-erp'",)


@pytest.mark.parametrize("overrides, reason", [
    ({"state": "OPEN"}, "state: expected CREATED, ACTIVATED, ACKNOWLEDGED or CLOSED (got 'OPEN')"),
    ({"id": None}, "id: expected the issue id, a non-empty string (got null)"),
    ({"createdAt": "soon"}, "createdAt: expected epoch milliseconds (got 'soon')"),
    ({"impactedEntities": []}, "impactedEntities: no impacted entity to name the service"),
    ({"alertConditionNames": "x"}, "alertConditionNames: expected a list (got str)"),
])
def test_newrelic_bad_payloads(overrides, reason):
    with pytest.raises(DecodeError) as exc:
        decode("newrelic", nr_payload(**overrides))
    assert str(exc.value) == reason


def test_unknown_source():
    with pytest.raises(DecodeError) as exc:
        decode("pagerduty", b"{}")
    assert str(exc.value) == "unknown alert source 'pagerduty' (expected one of alertmanager, datadog, newrelic)"


# --- replay ---------------------------------------------------------------------------------

def test_replay_with_external_alerts_is_deterministic_and_names_the_service(tmp_path):
    from streams.replay import replay

    t = parse_rfc3339(T0)
    telemetry = tmp_path / "telemetry.jsonl"
    # A little telemetry after the alert: it moves event time past group_wait.
    telemetry.write_bytes(b"".join(orjson.dumps({"schema_version": 1, "service": "checkout",
                                                 "points": [["process.cpu.utilization", t + s, 0.4]]}) + b"\n"
                                   for s in (-60, 120, 300)))
    external = tmp_path / "external.jsonl"
    body = am_payload(am_alert(service="orders-db"))
    external.write_bytes(b"\n".join([
        orjson.dumps({"source": "alertmanager", "payload": body}),
        orjson.dumps({"source": "alertmanager", "payload": orjson.dumps(body).decode()}),  # the raw body, re-sent
        orjson.dumps({"source": "datadog", "payload": {"nonsense": True}}),
        orjson.dumps({"source": "pagerduty", "payload": {}}),
    ]) + b"\n")
    outputs = []
    for run in ("a", "b"):
        out, dead = tmp_path / f"incidents-{run}.jsonl", tmp_path / f"dead-{run}.jsonl"
        summary = replay(TOPOLOGY, telemetry, out, deadletter=dead, progress=None, external=external)
        outputs.append((out.read_bytes(), dead.read_bytes()))
    assert outputs[0] == outputs[1]
    incidents = [orjson.loads(line) for line in outputs[0][0].splitlines()]
    # Opened below P1, it is held (correlation.notify.hold) and pages when the hold elapses.
    assert [(i["version"], i["status"], i["services"], i["notification"]) for i in incidents] == [
        (1, "open", ["orders-db"], "silent"), (2, "open", ["orders-db"], "page")]
    assert summary.external_alerts == 2 and summary.dead_lettered == 2
    dead = [orjson.loads(line) for line in outputs[0][1].splitlines()]
    assert [(d["topic"], d["reason"]) for d in dead] == [
        ("alerts.datadog", "alert_id: required: is this the aiops Datadog payload template? (see README)"),
        ("external", 'expected {"source": one of alertmanager, datadog, newrelic, "payload": the webhook body}'),
    ]


def test_external_alerts_on_the_wire_match_the_alert_schema():
    from jsonschema import Draft202012Validator

    schema = orjson.loads((REPO / "streams/schemas/alert.schema.json").read_bytes())
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    alerts = (decode("alertmanager", am_payload(am_alert(service="orders-db"))).alerts
              + decode("datadog", dd_payload()).alerts + decode("newrelic", nr_payload()).alerts)
    for a in alerts:
        record = orjson.loads(codec.encode_alert_event(a))
        assert list(validator.iter_errors(record)) == [], record
        assert record["value"] is None and record["expected"] is None and record["source"] == a.source
