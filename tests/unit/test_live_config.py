"""Live config: what a pushed topology may change without a restart, and that applying it keeps
what the stages learned (baselines, open incidents, the dispatcher's state)."""
from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from detectors.records import Alert, Heartbeat, SeriesKey
from detectors.records import Point
from streams import codec
from streams.cli import watch_config
from streams.config import Topology, parse_topology, parse_topology_text
from streams.live_config import Applied, LiveConfig, Refused, Unchanged, restart_only_changes
from streams.pipeline import CorrelateStage, DetectStage

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "topology.yaml").read_text()
SCHEMA = json.loads((ROOT / "streams" / "schemas" / "config.schema.json").read_text())
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def edited(**sections) -> str:
    """The shipped topology.yaml with some sections replaced or merged (one level deep)."""
    doc = yaml.safe_load(SHIPPED)
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(name), dict):
            doc[name] = {**doc[name], **value}
        else:
            doc[name] = value
    return yaml.safe_dump(doc, sort_keys=False)


def topo(text: str) -> Topology:
    return parse_topology_text(text)


def record(text: str, by: str = "alice", at: float = 1.7e9) -> codec.ConfigRecord:
    return codec.decode_config(codec.encode_config(text, by, at))


def alert(service: str, t: float, status: str = "firing", metric: str = "http.server.errors.rate") -> Alert:
    series = f"{service}/{metric}"
    return Alert(fingerprint="fp-" + series, status=status, service=service, metric=metric, series=series, labels=(),
                 score=0.99, value=9.0, expected=0.1, starts_at=t, at=t, severity="critical")


# --- the codec and its schema ------------------------------------------------------------------

def test_config_record_round_trips_and_matches_its_schema():
    payload = codec.encode_config(SHIPPED, "alice", T0 + 0.1234)
    rec = codec.decode_config(payload)
    assert (rec.yaml, rec.by, rec.at) == (SHIPPED, "alice", T0 + 0.123)
    assert rec.sha256 == codec.config_sha256(SHIPPED) and len(rec.sha256) == 64
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == "https://aiops.dev/schemas/config-1.json"
    assert list(Draft202012Validator(SCHEMA).iter_errors(orjson.loads(payload))) == []


@pytest.mark.parametrize("field,value", [("sha256", "ABC"), ("by", ""), ("schema_version", 2), ("extra", 1),
                                         ("at", "2026-01-01T00:00:00Z"), ("yaml", None)])
def test_schema_rejects_what_it_must(field, value):
    rec = orjson.loads(codec.encode_config(SHIPPED, "alice", T0))
    if value is None:
        del rec[field]
    else:
        rec[field] = value
    assert list(Draft202012Validator(SCHEMA).iter_errors(rec)), f"schema accepted {field}={value!r}"


@pytest.mark.parametrize("change,message", [
    ({"sha256": "0" * 64}, "sha256: '" + "0" * 64 + "' is not the SHA-256 of yaml"),
    ({"by": " "}, "by: a config record must name who pushed it"),
    ({"schema_version": 2}, "schema_version: expected 1"),
    ({"yaml": 3}, "yaml: expected a string (got int)"),
])
def test_decode_refuses_a_bad_record_naming_the_field(change, message):
    rec = {**orjson.loads(codec.encode_config(SHIPPED, "alice", T0)), **change}
    with pytest.raises(codec.RecordError) as exc:
        codec.decode_config(orjson.dumps(rec))
    assert str(exc.value).startswith(message)


# --- live or needs a restart -------------------------------------------------------------------

@pytest.mark.parametrize("sections", [
    {"services": {**yaml.safe_load(SHIPPED)["services"], "log-host": {"kind": "host", "owner": "team-db"}}},
    {"detectors": {"threshold": 0.95, "warmup_points": 10}},
    {"correlation": {"group_wait": "10s", "resolve_after": "1m", "group_by": ["env"]}},
    {"remediation": {"dry_run": False}},
    {"tickets": {"default_team": "ops"}},
    {"ingest": {"keep_labels": ["host.name"]}},
    {"name": "renamed"},
])
def test_live_sections_apply(sections):
    running = topo(SHIPPED)
    live = LiveConfig(running, sha256=codec.config_sha256(SHIPPED))
    text = edited(**sections)
    assert restart_only_changes(running, topo(text)) == []
    out = live.offer(record(text), "aiops.config")
    assert isinstance(out, Applied)
    assert (live.topology, live.sha256, live.source) == (topo(text), codec.config_sha256(text), "topic")


@pytest.mark.parametrize("sections,problem", [
    ({"topics": {"partitions": 4}}, "topics.partitions: needs a restart (running 1, pushed 4)"),
    ({"topics": {"alerts": "other.alerts"}}, "topics.alerts: needs a restart (running aiops.alerts, pushed other.alerts)"),
    ({"worker": {"commit_interval": "5s"}}, "worker.commit_interval: needs a restart (running 1s, pushed 5s)"),
    ({"worker": {"partition_idle_after": "90s"}}, "worker.partition_idle_after: needs a restart (running 1m, pushed 90s)"),
])
def test_restart_only_sections_refuse_the_whole_change(sections, problem):
    running = topo(SHIPPED)
    live = LiveConfig(running, sha256="f" * 64)
    # a live change rides along: it must not be half-applied
    text = edited(detectors={"threshold": 0.5}, **sections)
    out = live.offer(record(text, by="bob", at=T0), "aiops.config")
    assert isinstance(out, Refused) and out.reason == "needs_restart"
    assert out.error == (f"aiops.config (sha256 {codec.config_sha256(text)[:12]}, pushed by bob at "
                         f"2026-01-01T00:00:00.000Z): 1 problem\n  {problem}")
    assert live.topology is running and live.sha256 == "f" * 64 and live.source == "file"


def test_an_invalid_config_is_refused_with_every_problem_and_the_running_one_stays():
    live = LiveConfig(topo(SHIPPED), sha256="f" * 64)
    good = edited(tickets={"default_team": "ops"})
    assert isinstance(live.offer(record(good), "aiops.config"), Applied)
    bad = edited(correlation={"group_wiat": "10s"}, detectors={"threshold": 1.5})
    out = live.offer(record(bad, by="mallory", at=T0), "aiops.config")
    assert isinstance(out, Refused) and out.reason == "invalid"
    assert out.error.splitlines()[1:] == [
        "  detectors.threshold: Input should be less than or equal to 1 (got 1.5)",
        "  correlation.group_wiat: unknown key 'group_wiat'",
    ]
    assert live.topology.tickets.default_team == "ops" and live.sha256 == codec.config_sha256(good)
    assert isinstance(live.offer(record(good), "aiops.config"), Unchanged)


def test_a_config_whose_runbooks_cannot_load_is_refused_by_prepare():
    from streams.config import ConfigError

    live = LiveConfig(topo(SHIPPED))

    def prepare(new, source):
        raise ConfigError(source, [("remediation.executors.runbooks_dir", "runbooks/x.md: no title")])

    out = live.offer(record(edited(name="x")), "aiops.config", prepare)
    assert isinstance(out, Refused) and out.reason == "invalid"
    assert out.error.endswith("remediation.executors.runbooks_dir: runbooks/x.md: no title")
    assert live.topology.name == "demo-shop"


# --- reconfigure keeps learned state -----------------------------------------------------------

def test_detector_threshold_change_applies_to_the_next_batch_and_keeps_baselines():
    key = SeriesKey("orders-db", "db.client.connections.utilization")
    calm = [Point(key, T0 + 60.0 * i, 0.41 + 0.01 * (i % 3)) for i in range(60)]
    spike = [Point(key, T0 + 60.0 * (60 + i), 0.98) for i in range(3)]
    strict = edited(detectors={"threshold": 1.0, "rules": []})
    stage = DetectStage(topo(SHIPPED))
    stage.engine.process(calm)
    stage.reconfigure(topo(strict))
    assert stage.engine.series_count() == 1
    assert stage.engine.process(spike) == []  # nothing reaches 1.0: the new threshold holds
    # the same history under the default threshold fires: the change, not the data, kept it quiet
    same = DetectStage(topo(SHIPPED))
    same.engine.process(calm)
    assert [a.status for a in same.engine.process(spike)] == ["firing"]
    # back to the default: fires at once, so the warm-up did not start over
    stage.reconfigure(topo(SHIPPED))
    more = [Point(key, T0 + 60.0 * (63 + i), 0.98) for i in range(2)]
    assert [a.status for a in stage.engine.process(more)] == ["firing"]
    fresh = DetectStage(topo(SHIPPED))
    assert fresh.engine.process(more) == []  # a new stage would still be warming up


def test_a_known_series_keeps_its_model_and_a_new_series_gets_the_new_rule():
    rule = {"match": {"service": "log-host"}, "model": "holtwinters", "threshold": 0.7}
    stage = DetectStage(topo(SHIPPED))
    old = SeriesKey("log-host", "system.filesystem.utilization")
    stage.engine.process([Point(old, T0, 0.5)])
    stage.reconfigure(topo(edited(detectors={"rules": [rule]})))
    new = SeriesKey("log-host", "system.cpu.utilization")
    stage.engine.process([Point(new, T0, 0.5)])
    eng = stage.engine
    i_old, i_new = eng._index[old], eng._index[new]
    assert eng._slot[i_old] != eng._slot[i_new]
    assert [round(float(eng._thr[i]), 3) for i in (i_old, i_new)] == [0.7, 0.7]  # thresholds follow the rules


def test_an_open_incident_survives_a_correlation_timing_change():
    stage = CorrelateStage(topo(SHIPPED))
    out = stage.process([alert("orders-db", T0), Heartbeat(at=T0 + 40)])
    assert [(i.status, i.version) for i in out.incidents] == [("open", 1)]
    inc_id = out.incidents[0].id
    assert [t.event for t in out.tickets] == ["create"]
    stage.reconfigure(topo(edited(correlation={"resolve_after": "1m", "group_interval": "10s"})), stage.runbooks)
    assert stage.correlator.open_incidents() == 1
    out = stage.process([alert("orders", T0 + 50), Heartbeat(at=T0 + 70)])
    assert [(i.id, i.version, i.services) for i in out.incidents] == [(inc_id, 2, ("orders", "orders-db"))]
    out = stage.process([alert("orders-db", T0 + 80, "resolved"), alert("orders", T0 + 80, "resolved"),
                         Heartbeat(at=T0 + 80 + 61)])
    assert [(i.id, i.status) for i in out.incidents] == [(inc_id, "resolved")]  # after 1m, not the old 5m
    assert [t.event for t in out.tickets] == ["resolve"]  # the dispatcher remembers the ticket it created


def test_an_owner_change_reaches_the_next_ticket_and_the_open_incident():
    stage = CorrelateStage(topo(SHIPPED))
    # log-host opens at P3, held 3 minutes (correlation.notify.hold): the ticket opens with the page.
    out = stage.process([alert("log-host", T0), Heartbeat(at=T0 + 40), Heartbeat(at=T0 + 221)])
    assert [(t.event, t.team) for t in out.tickets] == [("create", "team-platform")]
    services = yaml.safe_load(SHIPPED)["services"]
    services["log-host"]["owner"] = "team-db"
    stage.reconfigure(topo(edited(services=services)), stage.runbooks)
    out = stage.process([alert("log-host", T0 + 230, "resolved"), Heartbeat(at=T0 + 230 + 301)])
    assert [(t.event, t.team, t.assignee) for t in out.tickets] == [("resolve", "team-db", "db-oncall")]
    out = stage.process([alert("log-host", T0 + 7200, metric="system.filesystem.utilization"),
                         Heartbeat(at=T0 + 7240), Heartbeat(at=T0 + 7421)])
    assert [(t.event, t.team, t.assignee) for t in out.tickets] == [("create", "team-db", "db-oncall")]


def test_config_silences_are_replaced_and_operators_silences_stay():
    from correlators.config import Silence

    window = {"id": "sil-upgrade", "service": "orders*", "starts_at": "2026-01-01T00:00:00Z",
              "ends_at": "2026-01-02T00:00:00Z", "comment": "upgrade", "created_by": "ops"}
    stage = CorrelateStage(topo(edited(correlation={"silences": [window]})))
    mine = Silence.model_validate({"id": "sil-mine", "service": "log-host", "starts_at": "2026-01-01T00:00:00Z",
                                   "ends_at": "2026-01-02T00:00:00Z", "created_by": "alice"})
    stage.correlator.add_silence(mine)
    stage.reconfigure(topo(SHIPPED), stage.runbooks)
    assert sorted(stage.correlator._silences) == ["sil-mine"]
    out = stage.process([alert("orders-db", T0), alert("log-host", T0), Heartbeat(at=T0 + 40)])
    assert [i.services for i in out.incidents] == [("orders-db",)]


# --- aiops config push --watch -----------------------------------------------------------------

def test_watch_pushes_each_valid_version_once_and_reports_invalid_ones(tmp_path, capsys):
    import sys

    path = tmp_path / "topology.yaml"
    path.write_text(SHIPPED)
    versions = [edited(name="two"), edited(name="two"), "services: {web: {ownr: x}}\n", edited(name="three")]
    pushed: list[str] = []

    def sleep(_):
        if versions:
            path.write_text(versions.pop(0))
            path.touch()

    watch_config(path, pushed.append, interval=0, sleep=sleep, err=sys.stderr, rounds=5)
    assert [parse_topology_text(t).name for t in pushed] == ["demo-shop", "two", "three"]
    err = capsys.readouterr().err
    assert err == f"refused, not pushed:\n{path}: 1 problem\n  services.web.ownr: unknown key 'ownr'\n"


def test_the_shipped_topology_names_the_config_topic():
    assert parse_topology({"services": {"a": {}}}).topics.config == "aiops.config"
    assert "aiops.config" in parse_topology({"services": {"a": {}}}).topics.all()


def test_the_documented_example_is_a_record_the_codec_accepts():
    import re

    doc = (ROOT / "docs" / "records.md").read_text(encoding="utf-8")
    section = doc.split("## `aiops.config`", 1)[1]
    example = re.search(r"```json\n(.*?)\n```", section, re.S).group(1)
    assert list(Draft202012Validator(SCHEMA).iter_errors(json.loads(example))) == []
    rec = codec.decode_config(example.encode())
    assert codec.encode_config(rec.yaml, rec.by, rec.at) == orjson.dumps(json.loads(example))
