"""Fuzz targets for topology.yaml and for control messages (``aiops.control``, ``POST /control``).

Inputs are the corpora in ``tests/property/corpus/`` (valid files and every hostile case found so
far), mutated byte by byte and token by token, plus generated documents. The properties:

- ``parse_topology_text`` returns a Topology or raises ConfigError, nothing else; its report has
  one line per problem, whatever the file holds; and it finishes (a generous per-input deadline
  is the hang guard, not a speed test);
- a control body is refused with RecordError or becomes a record whose ids are plain ids, whose
  ``by`` has no control characters and whose silence ends after it starts, and which the worker's
  decoder reads back unchanged.

A bounded run is part of ``make test``. ``AIOPS_FUZZ_EXAMPLES`` raises the number of inputs per
property for a longer run, e.g. ``AIOPS_FUZZ_EXAMPLES=20000 pytest tests/property/test_config_fuzz.py``.
Add an input that broke something to the corpus, so it is tried on every run from then on.
"""
from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlators.config import ID_PATTERN, SERVICE_NAME_PATTERN
from streams import codec
from streams.app import control_from_http
from streams.config import ConfigError, Topology, parse_topology_text
from tests.property.fuzz import mutated

CORPUS = Path(__file__).parent / "corpus"
TOPOLOGIES = sorted((CORPUS / "topology").iterdir())
CONTROLS = sorted((CORPUS / "control").iterdir())
SETTINGS = settings(max_examples=int(os.environ.get("AIOPS_FUZZ_EXAMPLES", "60")),
                    deadline=timedelta(seconds=10),  # a hang guard: every input takes well under a second
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None)

# Tokens that have broken a YAML or config reader somewhere: aliases, tags, nesting, merge keys,
# durations, booleans, secrets' shapes, bytes that are not UTF-8.
YAML_TOKENS = [b"*a", b"&a ", b"&a [*a]", b"!!binary ", b"!!python/object:os.system ", b"!!set ", b"<<: ", b"? ",
               b"[", b"]", b"{", b"}", b": ", b"\n  ", b"\n- ", b"- ", b"\"", b"'", b"#", b"\xff", b"\x00", b"\t",
               b"99999999999999d", b"30", b"1e400", b".nan", b"true", b"null", b"~", b"2026-13-45", b"9" * 50,
               b"env:", b"env:X Y", b"Bearer abcdefgh1234", b"https://u:p@h/x?token=1", b"---\n", b"...\n",
               b"services:", b"depends_on: [", b"aiops.alerts", b"../", b"\n" + b" " * 40, b"%YAML 1.1\n"]


def read(path: Path) -> bytes:
    return path.read_bytes()


def validates_or_reports(data: bytes | str) -> Topology | None:
    try:
        topo = parse_topology_text(data, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems, "a ConfigError lists its problems"
        assert all(type(p) is str and type(m) is str and m for p, m in exc.problems)
        # One line per problem: a name in the file cannot break or forge a report line.
        assert len(str(exc).splitlines()) == 1 + len(exc.problems)
        return None
    check_accepted(topo)
    return topo


def check_accepted(topo: Topology) -> None:
    """What an accepted topology guarantees, whatever the input was."""
    assert all(re.fullmatch(SERVICE_NAME_PATTERN, name) for name in topo.services)
    topics = [t.replace(".", "_") for t in topo.topics.all()]
    assert len(topics) == len(set(topics))
    for s in topo.correlation.silences:
        assert s.ends_at > s.starts_at and s.starts_at.tzinfo is not None


@SETTINGS
@given(mutated([read(p) for p in TOPOLOGIES], YAML_TOKENS))
def test_mutated_topologies_validate_or_report(data):
    validates_or_reports(data)


def test_every_corpus_file_validates_or_reports():
    accepted = {p.name for p in TOPOLOGIES if validates_or_reports(read(p)) is not None}
    assert accepted == {"shipped.yaml", "sock-shop.yaml", "minimal.yaml", "cycle.yaml"}


# Documents of the right shape with values of the wrong kinds in random places.
NAMES = st.sampled_from(["web", "db", "api", "", "a b", "x\ny", "<b>", "web", "é", "1"]) | st.text(max_size=6)
SCALAR = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
          | st.sampled_from(["30s", "5m", "99999999999999d", "env:X", "env:", "Bearer abcdefgh", "aiops.alerts",
                             "https://u:p@h/", "2026-08-20T12:00:00Z", "P1", "exec", "robust"]))
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
                     max_leaves=12)
SECTIONS = {
    "services": st.dictionaries(NAMES, st.fixed_dictionaries({}, optional={
        "depends_on": st.lists(NAMES, max_size=3), "tier": SCALAR, "kind": SCALAR, "instances": st.lists(NAMES, max_size=2),
        "owner": SCALAR, "description": SCALAR}), max_size=4),
    "correlation": st.fixed_dictionaries({}, optional={
        "group_wait": SCALAR, "max_hops": SCALAR, "silences": st.lists(st.fixed_dictionaries({}, optional={
            "id": SCALAR, "starts_at": SCALAR, "ends_at": SCALAR, "created_by": SCALAR, "labels": VALUE}), max_size=2)}),
    "topics": st.dictionaries(st.sampled_from(["metrics", "alerts", "logs", "control", "partitions"]), SCALAR, max_size=3),
    "remediation": st.fixed_dictionaries({}, optional={"dry_run": SCALAR, "policies": st.lists(VALUE, max_size=2),
                                                       "executors": VALUE}),
    "tickets": VALUE, "detectors": VALUE, "ingest": VALUE, "worker": VALUE, "traces": VALUE,
}


@SETTINGS
@given(st.fixed_dictionaries({"services": SECTIONS["services"]},
                              optional={k: v for k, v in SECTIONS.items() if k != "services"}))
def test_generated_documents_validate_or_report(doc):
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    validates_or_reports(text)


# --- control messages --------------------------------------------------------------------------

JSON_TOKENS = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\n", b"\\u0000", b"\\u001b", b"\\ud800", b"null", b"1e400",
               b"-1", b"99999999999999d", b"0s", b"\"2026-08-20T11:00:00Z\"", b"\"9999-12-31T23:59:59-23:59\"",
               b"\"0001-01-01T00:00:00+23:59\"", b"\"approve\"", b"\"silence\"", b"\"expire_silence\"", b"\xff"]


def control_is_safe(body: bytes) -> None:
    from correlators.config import _CONTROL

    try:
        key, value = control_from_http(body, "alice", 1.7e9)
    except codec.RecordError:
        return
    assert re.fullmatch(ID_PATTERN, key)
    msg = codec.decode_control(value)  # the worker reads what /control wrote
    assert msg["by"] == "alice"
    if msg["type"] == "silence":
        s = msg["silence"]
        assert s.ends_at > s.starts_at and re.fullmatch(ID_PATTERN, s.id)
        assert not any(_CONTROL.search(t) for t in (s.service, s.metric, s.comment, *s.labels, *s.labels.values()))
    else:
        assert re.fullmatch(ID_PATTERN, msg["action_id" if msg["type"] == "approve" else "id"])


@SETTINGS
@given(mutated([read(p) for p in CONTROLS], JSON_TOKENS))
def test_mutated_control_bodies_are_refused_or_safe(body):
    control_is_safe(body)
    try:
        codec.decode_control(body)
    except codec.RecordError:
        pass


CONTROL_FIELDS = st.fixed_dictionaries({"type": st.sampled_from(["approve", "silence", "expire_silence", "x"])}, optional={
    "action_id": NAMES | SCALAR, "id": NAMES | SCALAR, "by": NAMES, "service": NAMES | SCALAR, "metric": SCALAR,
    "labels": st.dictionaries(NAMES, NAMES | SCALAR, max_size=2), "starts_at": SCALAR, "ends_at": SCALAR,
    "duration": SCALAR, "comment": NAMES | SCALAR, "schema_version": st.sampled_from([1, 1, 2, "1", True])})


@SETTINGS
@given(CONTROL_FIELDS)
def test_generated_control_bodies_are_refused_or_safe(doc):
    try:
        body = orjson.dumps(doc)
    except TypeError:  # an integer beyond 64 bits: not JSON orjson writes
        return
    control_is_safe(body)


def test_every_control_corpus_file_is_refused_or_safe():
    accepted = set()
    for path in CONTROLS:
        control_is_safe(read(path))
        try:
            control_from_http(read(path), "alice", 1.7e9)
            accepted.add(path.name)
        except codec.RecordError:
            pass
    assert accepted == {"approve.json", "silence.json", "silence-duration.json", "expire.json", "by-newline.json"}
