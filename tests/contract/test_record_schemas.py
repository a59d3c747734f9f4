"""The wire contract: what ``streams.codec`` writes matches ``streams/schemas/*.schema.json``.

Records are built by hypothesis across the whole domain of each field (any unicode text, NaN and
infinite floats, empty tuples, ``None`` where a field is optional, many root causes), encoded
with the real codec and validated with Draft 2020-12. Each schema is also checked to reject
what it must, so that a schema loosened to ``{}`` would fail here.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import astuple, replace
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from correlators.records import Evidence, Incident, RootCause
from detectors.records import Alert, Heartbeat, parse_rfc3339, rfc3339
from remediators.records import Action, TicketEvent
from streams import codec
from streams.ingest import T_MAX, T_MIN, DecodeError, decode_metrics

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "streams" / "schemas"
SCHEMA_FILES = ["alert", "incident", "action", "ticket", "deadletter", "native-batch"]
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def _validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


V = {name: _validator(name) for name in SCHEMA_FILES}


def errors(name: str, record: object) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in V[name].iter_errors(record)]


def assert_valid(name: str, payload: bytes) -> dict:
    record = orjson.loads(payload)
    problems = errors(name, record)
    assert not problems, f"{name} record does not match its schema: {problems}\n{payload[:2000]!r}"
    return record


# --- strategies ------------------------------------------------------------------------------

text = st.text(max_size=40)
ids = st.text(min_size=1, max_size=24)
# Any float the codec may meet: NaN and infinities go on the wire as null.
floats = st.floats(allow_nan=True, allow_infinity=True)
# 1900 .. 2100 in unix seconds, with sub-millisecond fractions that the wire rounds away.
times = st.floats(min_value=-2208988800.0, max_value=T_MAX, allow_nan=False)
pairs = st.dictionaries(text, text, max_size=6).map(lambda d: tuple(sorted(d.items())))
versions = st.integers(min_value=1, max_value=2**63 - 1)
priorities = st.sampled_from(["P1", "P2", "P3", "P4"])

alerts = st.builds(
    Alert, fingerprint=ids, status=st.sampled_from(["firing", "resolved"]), service=ids, metric=ids, series=text,
    labels=pairs, score=floats, value=floats, expected=floats, starts_at=times, at=times,
    severity=st.sampled_from(["info", "warning", "critical"]) | text, source=text, summary=text, evidence=pairs)
heartbeats = st.builds(Heartbeat, at=times, source=text, lane=text, calls=st.lists(
    st.tuples(ids, ids, st.integers(1, 2**53), times), max_size=4).map(tuple))
evidences = st.builds(Evidence, series=text, metric=text, score=floats, value=floats, expected=floats, at=times,
                      detail=text, labels=pairs)
root_causes = st.builds(
    RootCause, service=ids, score=floats,
    kind=st.sampled_from(["saturation", "errors", "latency", "traffic", "resource", "unobserved", "anomaly"]),
    path=st.lists(ids, max_size=6).map(tuple), evidence=st.lists(evidences, max_size=4).map(tuple), reason=text)
incidents = st.builds(
    Incident, id=ids, version=versions, status=st.sampled_from(["open", "resolved"]),
    reason=st.sampled_from(["opened", "alerts_added", "alerts_changed", "alerts_resolved", "repeat", "resolved",
                            "reopened", "edge_suspected", "hold_elapsed"]),
    opened_at=times, updated_at=times, resolved_at=st.none() | times, title=text, priority=priorities,
    severity=text, services=st.lists(ids, max_size=8).map(tuple), alert_count=st.integers(0, 10**6),
    firing_count=st.integers(0, 10**6), fingerprints=st.lists(ids, max_size=60).map(tuple),
    root_causes=st.lists(root_causes, max_size=12).map(tuple), owner=st.none() | text, labels=pairs)
actions = st.builds(
    Action, id=ids, incident_id=ids, incident_version=versions, policy=text, step=st.integers(0, 1000),
    kind=st.sampled_from(["exec", "http", "kubernetes", "kafka"]), target=text, params=pairs,
    mode=st.sampled_from(["dry_run", "execute"]), decision=st.sampled_from(["planned", "awaiting_approval", "approved", "expired", "skipped", "executed", "failed", "unknown"]),
    reason=text, at=times, approved_by=st.none() | text, result=st.none() | text)
tickets = st.builds(
    TicketEvent, ticket_key=ids, event=st.sampled_from(["create", "update", "escalate", "resolve"]), incident_id=ids,
    incident_version=versions, sink=text, team=text, assignee=st.none() | text, priority=priorities, title=text,
    description=st.text(max_size=400), tags=st.lists(text, max_size=8).map(tuple), at=times,
    runbooks=st.lists(text, max_size=3).map(tuple))


# --- every record the codec writes matches its schema ----------------------------------------

@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12_and_self_describing(name):
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://aiops.dev/schemas/{name}-1.json"
    assert schema["title"] and schema["description"]

    def walk(node, where):
        if isinstance(node, dict):
            for prop, sub in node.get("properties", {}).items():
                assert sub.get("description"), f"{name}: {where}.{prop} has no description"
            for key, sub in node.items():
                walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(schema, "")


@SETTINGS
@given(alerts | heartbeats)
def test_alert_events_match_schema(ev):
    rec = assert_valid("alert", codec.encode_alert_event(ev))
    assert rec["type"] == ("heartbeat" if isinstance(ev, Heartbeat) else "alert")


@SETTINGS
@given(incidents)
def test_incidents_match_schema(inc):
    rec = assert_valid("incident", codec.encode_incident(inc))
    assert len(rec["root_causes"]) == len(inc.root_causes)
    assert (rec["resolved_at"] is None) == (inc.resolved_at is None)


@SETTINGS
@given(actions)
def test_actions_match_schema(a):
    assert_valid("action", codec.encode_action(a))


@SETTINGS
@given(tickets)
def test_tickets_match_schema(t):
    assert_valid("ticket", codec.encode_ticket(t))


@SETTINGS
@given(reason=st.text(max_size=3000), topic=text, partition=st.integers(0, 2**31 - 1),
       offset=st.integers(0, 2**63 - 1), payload=st.binary(max_size=300), max_excerpt=st.integers(1, 200),
       at=st.none() | times)
def test_dead_letters_match_schema(reason, topic, partition, offset, payload, max_excerpt, at):
    rec = assert_valid("deadletter", codec.dead_letter(reason, topic, partition, offset, payload, max_excerpt, at=at))
    assert rec["size"] == len(payload)
    assert rec["excerpt"].endswith("…") == (len(payload) > max_excerpt)


def test_non_finite_numbers_are_written_as_null():
    a = Alert(fingerprint="f", status="firing", service="s", metric="m", series="s/m", labels=(), score=math.nan,
              value=math.inf, expected=-math.inf, starts_at=1.7e9, at=1.7e9)
    rec = assert_valid("alert", codec.encode_alert_event(a))
    assert (rec["score"], rec["value"], rec["expected"]) == (None, None, None)
    rc = RootCause(service="db", score=math.nan, kind="anomaly", path=("db",),
                   evidence=(Evidence("db/x", "x", math.inf, math.nan, 1.0, 1.7e9),))
    inc = Incident(id="inc-1", version=1, status="open", reason="opened", opened_at=1.7e9, updated_at=1.7e9,
                   resolved_at=None, title="t", priority="P4", severity="warning", services=("db",), alert_count=1,
                   firing_count=1, fingerprints=("f",), root_causes=(rc,))
    rec = assert_valid("incident", codec.encode_incident(inc))
    assert rec["root_causes"][0]["score"] is None
    assert rec["root_causes"][0]["evidence"][0]["score"] is None


# --- the schemas reject what they must -------------------------------------------------------

T0 = 1714641240.0
ALERT = Alert(fingerprint="8e8f013a92ab55a2", status="firing", service="orders-db",
              metric="db.client.connections.utilization", series="orders-db/db.client.connections.utilization",
              labels=(), score=0.998, value=0.99, expected=0.41, starts_at=T0, at=T0 + 30)
INCIDENT = Incident(id="inc-50ddd7bba261", version=2, status="resolved", reason="resolved", opened_at=T0,
                    updated_at=T0 + 600, resolved_at=T0 + 600, title="orders-db saturated", priority="P1",
                    severity="critical", services=("orders", "orders-db"), alert_count=2, firing_count=0,
                    fingerprints=("8e8f013a92ab55a2",),
                    root_causes=(RootCause("orders-db", 0.41, "saturation", ("orders-db", "orders")),))
ACTION = Action(id="act-d615fa369770f1d7", incident_id="inc-50ddd7bba261", incident_version=1,
                policy="db-pool-saturated", step=0, kind="kubernetes", target="deployment/orders", params=(),
                mode="dry_run", decision="planned", reason="dry run", at=T0 + 60)
TICKET = TicketEvent(ticket_key="inc-50ddd7bba261", event="create", incident_id="inc-50ddd7bba261",
                     incident_version=1, sink="topic", team="team-db", assignee=None, priority="P1",
                     title="[P1] orders-db saturated", description="**orders-db saturated**", tags=("aiops",),
                     at=T0 + 60)
GOOD = {
    "alert": codec.encode_alert_event(ALERT),
    "incident": codec.encode_incident(INCIDENT),
    "action": codec.encode_action(ACTION),
    "ticket": codec.encode_ticket(TICKET),
    "deadletter": codec.dead_letter("invalid JSON", "telemetry.metrics", 0, 7, b"{", at=T0),
}
BAD = [  # (schema, JSON pointer-ish path as keys, new value or DELETE)
    ("alert", ("status",), "pending"),
    ("alert", ("type",), "alarm"),
    ("alert", ("at",), "2024-05-02T09:14:30Z"),  # the codec always writes milliseconds
    ("alert", ("at",), "2024-05-02T09:14:30.000+02:00"),  # and always UTC
    ("alert", ("score",), "0.9"),
    ("alert", ("labels",), {"host": 1}),
    ("alert", ("schema_version",), 2),
    ("alert", ("fingerprint",), "DELETE"),
    ("alert", ("unknown_field",), 1),
    ("incident", ("status",), "closed"),
    ("incident", ("priority",), "P0"),
    ("incident", ("version",), 0),
    ("incident", ("resolved_at",), "DELETE"),
    ("incident", ("resolved_at",), 1714641840),
    ("incident", ("alerts", "firing"), -1),
    ("incident", ("alerts", "extra"), 1),
    ("incident", ("root_causes", 0, "path"), "orders-db -> orders"),
    ("incident", ("root_causes", 0, "extra"), True),
    ("action", ("mode",), "live"),
    ("action", ("decision",), "done"),
    ("action", ("step",), 1.5),
    ("action", ("params",), {"replicas": 3}),
    ("action", ("approved_by",), "DELETE"),
    ("ticket", ("event",), "close"),
    ("ticket", ("priority",), "p1"),
    ("ticket", ("tags",), "aiops"),
    ("ticket", ("extra",), None),
    ("deadletter", ("size",), -1),
    ("deadletter", ("reason",), "x" * 2001),
    ("deadletter", ("partition",), "0"),
    ("deadletter", ("excerpt",), "DELETE"),
]


def test_good_examples_are_valid():
    for name, payload in GOOD.items():
        assert_valid(name, payload)
    assert_valid("alert", codec.encode_alert_event(Heartbeat(at=T0)))


@pytest.mark.parametrize("name,path,value", BAD, ids=[f"{n}:{'.'.join(map(str, p))}={v!r:.20}" for n, p, v in BAD])
def test_schema_rejects_invalid_record(name, path, value):
    rec = orjson.loads(GOOD[name])
    node = rec
    for key in path[:-1]:
        node = node[key]
    if value == "DELETE":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    assert errors(name, rec), f"{name} schema accepted {path} = {value!r}"


def test_heartbeat_must_not_carry_alert_fields():
    rec = orjson.loads(codec.encode_alert_event(Heartbeat(at=T0)))
    assert errors("alert", {**rec, "status": "firing"})
    assert errors("alert", {**rec, "type": "alert"})


# --- alerts read back ------------------------------------------------------------------------

def _ms(t: float) -> float:
    return parse_rfc3339(rfc3339(t))


def _known(x: float) -> float:
    return x if math.isfinite(x) else math.nan


def _comparable(ev) -> tuple:
    """A dataclass as a tuple in which NaN equals NaN."""
    return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in astuple(ev))


@SETTINGS
@given(alerts | heartbeats)
def test_decoded_alert_equals_original_modulo_ms_times(ev):
    back = codec.decode_alert_event(codec.encode_alert_event(ev))
    if isinstance(ev, Heartbeat):
        want = replace(ev, at=_ms(ev.at), calls=tuple((a, b, n, _ms(t)) for a, b, n, t in ev.calls))
    else:
        want = replace(ev, starts_at=_ms(ev.starts_at), at=_ms(ev.at), score=_known(ev.score),
                       value=_known(ev.value), expected=_known(ev.expected))
    assert type(back) is type(ev)
    assert _comparable(back) == _comparable(want)
    # Decoding is a fixed point: replay re-encodes what it read, byte for byte.
    assert codec.encode_alert_event(back) == codec.encode_alert_event(ev)


@given(times)
def test_wire_times_round_to_the_millisecond(t):
    s = rfc3339(t)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s)
    assert abs(_ms(t) - t) < 1e-3 + 1e-6
    assert rfc3339(_ms(t)) == s


@SETTINGS
@given(st.binary(max_size=200))
def test_decode_alert_event_raises_only_record_error_on_bytes(payload):
    try:
        codec.decode_alert_event(payload)
    except codec.RecordError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.sampled_from(["alert", "heartbeat", "firing", "2024-05-02T09:14:30.000Z", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@SETTINGS
@given(ev=alerts | heartbeats, key=st.sampled_from(
    ["schema_version", "type", "fingerprint", "status", "service", "metric", "series", "labels", "score", "value",
     "expected", "starts_at", "at", "severity", "source", "summary", "evidence", "calls"]),
    value=json_values | st.just("DELETE"))
def test_decode_alert_event_raises_only_record_error_on_mutated_records(ev, key, value):
    rec = orjson.loads(codec.encode_alert_event(ev))
    if value == "DELETE":
        rec.pop(key, None)
    else:
        rec[key] = value
    try:
        back = codec.decode_alert_event(orjson.dumps(rec))
    except codec.RecordError:
        return
    assert isinstance(back, (Alert, Heartbeat))


@pytest.mark.parametrize("payload,message", [
    (b"", "invalid JSON"),
    (b"[]", "expected a JSON object"),
    (b'{"schema_version": 2, "type": "heartbeat", "at": "2024-05-02T09:14:30.000Z"}', "schema_version: expected 1"),
    (b'{"schema_version": 1, "type": "alarm"}', "type: expected 'alert' or 'heartbeat'"),
    (b'{"schema_version": 1, "type": "heartbeat", "at": "2024-05-02T09:14:30.000Z", "calls": [{"caller": "a"}]}',
     "calls[0].count: expected a positive integer"),
    (b'{"schema_version": 1, "type": "heartbeat", "at": "2024-05-02T09:14:30.000Z", "calls": [{"caller": "a", '
     b'"count": 1}]}', "calls[0].callee: expected a string (got NoneType)"),
    (b'{"schema_version": 1, "type": "heartbeat", "at": "2024-05-02T09:14:30.000Z", "calls": {}}',
     "calls: expected a list (got dict)"),
    (b'{"schema_version": 1, "type": "heartbeat", "at": 1714641270}', "at: expected an RFC 3339 string (got int)"),
    (b'{"schema_version": 1, "type": "heartbeat", "at": "yesterday"}', "at: invalid RFC 3339 time 'yesterday'"),
    # Read in the host's zone, these would make replay and the worker disagree.
    (b'{"schema_version": 1, "type": "heartbeat", "at": "2024-05-02T09:14:30.000"}',
     "at: RFC 3339 time without a UTC offset '2024-05-02T09:14:30.000'"),
    (b'{"schema_version": 1, "type": "heartbeat", "at": "2024-05-02"}', "at: RFC 3339 time without a UTC offset"),
    (b'{"schema_version": true, "type": "heartbeat", "at": "2024-05-02T09:14:30.000Z"}',
     "schema_version: expected 1 (got True)"),
    (b'{"schema_version": 1, "type": "alert", "fingerprint": "f", "status": "firing", "service": "s", "metric": "m",'
     b' "series": "s/m", "labels": [], "starts_at": "2024-05-02T09:14:30.000Z", "at": "2024-05-02T09:14:30.000Z"}',
     "labels: expected an object of strings"),
])
def test_decode_alert_event_error_messages(payload, message):
    with pytest.raises(codec.RecordError, match=re.escape(message)):
        codec.decode_alert_event(payload)


# --- the native batch ------------------------------------------------------------------------

ACCEPTED = [
    # the decode_metrics doctest
    {"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9, 0.5]]},
    # the streams/ingest/native.py docstring
    {"schema_version": 1, "service": "api", "labels": {"host.name": "a1"},
     "points": [["cpu", 1700000000.0, 0.5],
                {"metric": "http.server.requests", "t": 1700000000.0, "value": 1234, "kind": "counter",
                 "labels": {"route": "/pay"}}]},
    {"schema_version": 1, "service": "checkout", "labels": {"zone": 3, "canary": False},
     "points": [["mem", "1700000000", "0.7", {"host.name": "a2"}], ["cpu", 1700000000, -1e300, None],
                {"metric": "queue.depth", "t": T_MIN, "value": 0, "kind": "gauge", "labels": None},
                {"metric": "x", "t": T_MAX, "value": "1e300", "unit": "ignored"}]},
    {"schema_version": 1, "service": "api", "labels": None, "points": []},
    {"schema_version": 1, "service": "api", "points": None},
]


@pytest.mark.parametrize("batch", ACCEPTED)
def test_accepted_native_batches_match_schema(batch):
    d = decode_metrics(orjson.dumps(batch), known_services=None)
    assert d.fmt == "native" and d.rejects == []
    assert len(d.samples) == len(batch["points"] or [])
    assert not errors("native-batch", batch)


REJECTED = [
    ({"schema_version": 2, "service": "api", "points": [["cpu", 1.7e9, 0.5]]}, "schema_version: expected 1 (got 2)"),
    ({"schema_version": "1", "service": "api", "points": [["cpu", 1.7e9, 0.5]]}, "schema_version: expected 1"),
    ({"schema_version": 1, "points": [["cpu", 1.7e9, 0.5]]}, "service: expected a non-empty string (got null)"),
    ({"schema_version": 1, "service": "", "points": [["cpu", 1.7e9, 0.5]]}, "service: expected a non-empty string"),
    ({"schema_version": 1, "service": "api"}, "unrecognized metrics message"),
    ({"schema_version": 1, "service": "api", "labels": ["a"], "points": [["cpu", 1.7e9, 0.5]]},
     "labels: expected an object (got list)"),
    ({"schema_version": 1, "service": "api", "labels": {"k": {"a": 1}}, "points": [["cpu", 1.7e9, 0.5]]},
     "labels.k: expected a string (got object)"),
    ({"schema_version": 1, "service": "api", "labels": {"k": None}, "points": [["cpu", 1.7e9, 0.5]]},
     "labels.k: expected a string (got null)"),
    ({"schema_version": 1, "service": "api", "points": {"cpu": 0.5}}, "points: expected a list (got object)"),
    ({"schema_version": 1, "service": "api", "points": ["cpu"]}, "points[0]: expected a list or an object (got str)"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9]]}, "points[0]: expected [metric, t, value]"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9, 0.5, {}, 1]]}, "(got 5 items)"),
    ({"schema_version": 1, "service": "api", "points": [["", 1.7e9, 0.5]]}, "points[0].metric: expected a non-empty"),
    ({"schema_version": 1, "service": "api", "points": [{"t": 1.7e9, "value": 1}]},
     "points[0].metric: expected a non-empty string (got null)"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9, 0.5, "x"]]},
     "points[0][3]: expected an object (got str)"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", 1.7e12, 0.5]]},
     "cpu: timestamp 1700000000000.0 is not unix seconds in 2000..2100"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", True, 0.5]]}, "cpu: timestamp True is not unix"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", "soon", 0.5]]}, "cpu: timestamp 'soon' is not unix"),
    ({"schema_version": 1, "service": "api", "points": [{"metric": "cpu", "value": 0.5}]}, "cpu: timestamp None"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9, "NaN"]]}, "cpu: non-finite value (NaN)"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9, 1e301]]}, "cpu: value out of range (1e+301)"),
    ({"schema_version": 1, "service": "api", "points": [["cpu", 1.7e9, None]]}, "cpu: invalid value (None)"),
    ({"schema_version": 1, "service": "api", "points": [{"metric": "cpu", "t": 1.7e9, "value": 1, "kind": "histogram"}]},
     "cpu: unknown kind 'histogram' (expected gauge or counter)"),
    ({"schema_version": 1, "service": "api", "points": [{"metric": "cpu", "t": 1.7e9, "value": 1, "kind": ["gauge"]}]},
     "points[0].kind: expected a string (got list)"),
]


@pytest.mark.parametrize("batch,message", REJECTED, ids=[m[:40] for _, m in REJECTED])
def test_schema_invalid_native_batches_are_dead_lettered(batch, message):
    assert errors("native-batch", batch), f"the schema accepted {batch}"
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode_metrics(orjson.dumps(batch), known_services=None)


label_values = st.text(max_size=10) | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.floats(
    allow_nan=False, allow_infinity=False)
in_labels = st.dictionaries(st.text(max_size=10), label_values, max_size=3)
ts = st.floats(min_value=T_MIN, max_value=T_MAX) | st.integers(int(T_MIN), int(T_MAX))
vals = st.floats(min_value=-1e300, max_value=1e300) | st.integers(-(2**63), 2**63 - 1)
metrics = st.text(min_size=1, max_size=20)
compact = st.tuples(metrics, ts | ts.map(repr), vals | vals.map(repr)).map(list) | st.tuples(
    metrics, ts, vals, st.none() | in_labels).map(list)
named = st.fixed_dictionaries(
    {"metric": metrics, "t": ts, "value": vals},
    optional={"kind": st.sampled_from(["gauge", "counter"]), "labels": st.none() | in_labels})
batches = st.fixed_dictionaries(
    {"schema_version": st.just(1), "service": st.text(min_size=1, max_size=20),
     "points": st.lists(compact | named, min_size=1, max_size=6)},
    optional={"labels": st.none() | in_labels})


@SETTINGS
@given(batches)
def test_schema_valid_native_batches_are_accepted_whole(batch):
    assert not errors("native-batch", batch)
    d = decode_metrics(orjson.dumps(batch), known_services=None)
    assert d.rejects == [] and len(d.samples) == len(batch["points"])


# --- the documentation stays true ------------------------------------------------------------

DOC_SECTIONS = {"aiops.alerts": "alert", "aiops.incidents": "incident", "aiops.actions": "action",
                "aiops.tickets": "ticket", "aiops.deadletter": "deadletter"}


def _json_blocks(markdown: str, heading: str) -> list[object]:
    m = re.search(rf"^## `{re.escape(heading)}`$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert m, f"docs/records.md has no section ## `{heading}`"
    return [json.loads(b) for b in re.findall(r"^```json\n(.*?)^```$", m.group(1), re.M | re.S)]


@pytest.mark.parametrize("topic,name", DOC_SECTIONS.items())
def test_documented_examples_match_schema(topic, name):
    blocks = _json_blocks((ROOT / "docs" / "records.md").read_text(encoding="utf-8"), topic)
    assert blocks, f"docs/records.md: no JSON example under {topic}"
    for rec in blocks:
        assert not errors(name, rec), errors(name, rec)


def test_documented_native_batches_are_accepted():
    blocks = _json_blocks((ROOT / "docs" / "records.md").read_text(encoding="utf-8"), "telemetry.metrics")
    native = (ROOT / "docs" / "native-format.md").read_text(encoding="utf-8")
    blocks += [json.loads(b) for b in re.findall(r"^```json\n(.*?)^```$", native, re.M | re.S)]
    batches = [b for b in blocks if isinstance(b, dict) and "points" in b]
    assert batches
    for batch in batches:
        assert not errors("native-batch", batch), errors("native-batch", batch)
        d = decode_metrics(orjson.dumps(batch), known_services=None)
        assert d.rejects == []


def test_every_schema_is_linked_from_readme_and_records_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    records = (ROOT / "docs" / "records.md").read_text(encoding="utf-8")
    for name in SCHEMA_FILES:
        assert f"streams/schemas/{name}.schema.json" in readme, name
        assert f"{name}.schema.json" in records, name
