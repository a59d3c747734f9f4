"""The record decoders the worker's agents call on what other processes write (alerts, control
messages, changes, the executor's results, `POST /control` bodies) never crash: on any bytes
and any JSON they return a record or raise RecordError, which the agent dead-letters."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import codec
from streams.app import control_from_http
from tests.property.test_decoders_never_crash import JSON, enc

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS = [codec.decode_alert_event, codec.decode_control, codec.decode_change, codec.decode_action,
            lambda body: control_from_http(body, "alice", 1.7e9)]

# Well-formed records of each kind, to mutate one field at a time.
TIME = "2026-08-20T12:00:00.000Z"
VALID = [
    {"schema_version": 1, "type": "heartbeat", "at": TIME, "source": "detector", "lane": "m/0"},
    {"schema_version": 1, "type": "approve", "action_id": "act-1", "by": "alice", "at": TIME},
    {"schema_version": 1, "type": "silence", "id": "s1", "by": "alice", "at": TIME, "starts_at": TIME,
     "ends_at": "2026-08-20T13:00:00.000Z", "service": "api", "metric": "*", "labels": {}, "comment": ""},
    {"schema_version": 1, "type": "expire_silence", "id": "s1", "by": "alice", "at": TIME},
]
FIELD_VALUES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10) \
    | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)


def decodes_or_refuses(decode, payload: bytes) -> None:
    try:
        decode(payload)
    except codec.RecordError:
        pass


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes(payload):
    for decode in DECODERS:
        decodes_or_refuses(decode, payload)


@SETTINGS
@given(JSON)
def test_any_json(doc):
    payload = enc(doc)
    for decode in DECODERS:
        decodes_or_refuses(decode, payload)


@SETTINGS
@given(st.sampled_from(VALID), st.data())
def test_one_field_changed_or_dropped(record, data):
    doc = dict(record)
    key = data.draw(st.sampled_from(sorted(doc)))
    if data.draw(st.booleans()):
        del doc[key]
    else:
        doc[key] = data.draw(FIELD_VALUES)
    payload = json.dumps(doc).encode()
    for decode in DECODERS:
        decodes_or_refuses(decode, payload)


def test_the_records_mutated_above_are_valid_to_begin_with():
    assert codec.decode_alert_event(json.dumps(VALID[0]).encode()).lane == "m/0"
    for record in VALID[1:]:
        assert codec.decode_control(json.dumps(record).encode())["type"] == record["type"]
