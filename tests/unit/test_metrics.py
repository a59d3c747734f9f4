"""/metrics: the stages, the executor and ticket delivery drive the series the dashboard plots.

The registry is process-wide and other tests feed it too, so every check compares the
exposition text before and after the stage ran."""
from __future__ import annotations

from collections import namedtuple
from dataclasses import replace

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from remediators.records import TicketEvent
from remediators.sink_config import DeliverySettings
from remediators.sinks import HttpResponse, build_sinks
from streams import codec
from streams import metrics as m
from streams.config import parse_topology
from streams.delivery import DeadLettered, Delivered, MemoryLedger, Skipped, TicketDelivery
from streams.executors import ExecutionLedger, Executor
from streams.pipeline import DetectStage
from tests.unit.test_executors import action, runbooks, settings  # noqa: F401 - runbooks is a fixture

T0 = 1_767_225_600.0
BOUNDS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.85", "0.9", "0.95", "0.99", "1.0", "+Inf"]


def scrape() -> dict[tuple[str, frozenset], float]:
    """The exposition text, parsed: (sample name, labels) -> value."""
    text = generate_latest(REGISTRY).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in after, f"{name}{labels} is not on /metrics"
    return after[key] - before.get(key, 0.0)


def batch(t: float, value: float, service: str = "api") -> bytes:
    return orjson.dumps({"schema_version": 1, "service": service, "points": [["process.cpu.utilization", t, value]]})


def test_detect_stage_exposes_its_score_distribution_and_anomalous_points():
    stage = DetectStage(parse_topology({"services": {"api": {}}}))
    values = [0.3 + 0.01 * (i % 3) for i in range(60)] + [0.95] * 5
    before = scrape()
    results = [stage.process(batch(T0 + 10 * i, v)) for i, v in enumerate(values)]
    after = scrape()

    scored = sum(r.points for r in results)
    anomalous = sum(r.anomalous_points for r in results)
    assert scored == len(values) and anomalous >= 2
    src = {"source": "metrics"}
    assert delta(before, after, "aiops_anomaly_score_count", **src) == scored
    assert delta(before, after, "aiops_anomalous_points_total", **src) == anomalous
    buckets = [delta(before, after, "aiops_anomaly_score_bucket", le=le, **src) for le in BOUNDS]
    assert buckets == sorted(buckets), "buckets are cumulative"
    assert buckets[BOUNDS.index("1.0")] == buckets[-1] == scored, "scores lie in [0, 1]"
    # The threshold is 0.9: the anomalous points are exactly the ones above the 0.85 bucket,
    # less any that scored between 0.85 and 0.9.
    assert scored - buckets[BOUNDS.index("0.9")] <= anomalous <= scored - buckets[BOUNDS.index("0.85")]
    assert buckets[0] >= scored - anomalous - 30, "a steady series scores mostly near 0"
    score_sum = delta(before, after, "aiops_anomaly_score_sum", **src)
    assert 0.9 * anomalous <= score_sum <= scored


def test_metrics_do_not_change_what_the_stage_computes():
    values = [0.3 + 0.01 * (i % 3) for i in range(40)] + [0.95] * 3
    runs = []
    for _ in range(2):
        stage = DetectStage(parse_topology({"services": {"api": {}}}))
        runs.append([stage.process(batch(T0 + 10 * i, v)) for i, v in enumerate(values)])
    assert runs[0] == runs[1]


def test_batch_histogram_buckets_like_prometheus_le():
    reg = CollectorRegistry()
    h = m.BatchHistogram("t_score", "test", [0.5, 0.9, 1.0], ["source"], registry=reg)
    h.observe_many(np.array([0.0, 0.5, 0.5000001, 0.9, 0.95, 1.0, 1.5, np.nan]), source="x")
    h.observe_many(np.array([0.2]), source="x")
    got = {le: reg.get_sample_value("t_score_bucket", {"source": "x", "le": le}) for le in ["0.5", "0.9", "1.0", "+Inf"]}
    assert got == {"0.5": 3.0, "0.9": 5.0, "1.0": 7.0, "+Inf": 8.0}
    assert reg.get_sample_value("t_score_count", {"source": "x"}) == 8.0
    assert reg.get_sample_value("t_score_sum", {"source": "x"}) == pytest.approx(5.3500001 + 0.2)
    with pytest.raises(ValueError, match="t_bad: buckets must be increasing"):
        m.BatchHistogram("t_bad", "test", [0.9, 0.5], registry=reg)


TP = namedtuple("TP", "topic partition")


class Consumer:
    """The three things observe_consumer_lag reads from Faust's consumer."""

    def __init__(self, highwaters: dict, committed: dict):
        self.highwaters, self._committed_offset = highwaters, committed

    def assignment(self):
        return set(self.highwaters)

    def highwater(self, tp):
        if self.highwaters[tp] == "revoked":
            raise AssertionError("partition is not assigned")
        return self.highwaters[tp]


def test_consumer_lag_per_partition_follows_the_assignment():
    lags = m.observe_consumer_lag(Consumer({TP("lagtest.metrics", 0): 500, TP("lagtest.metrics", 1): 40,
                                            TP("lagtest.alerts", 0): None},
                                           {TP("lagtest.metrics", 0): 380}))
    assert lags == {("lagtest.metrics", 0): 120, ("lagtest.metrics", 1): 40}
    now = scrape()
    assert now[("aiops_consumer_lag", frozenset({("topic", "lagtest.metrics"), ("partition", "0")}))] == 120
    assert now[("aiops_consumer_lag", frozenset({("topic", "lagtest.metrics"), ("partition", "1")}))] == 40
    # A rebalance took partition 1 away and partition 0 is being revoked: no stale series stay behind.
    m.observe_consumer_lag(Consumer({TP("lagtest.metrics", 0): "revoked", TP("lagtest.alerts", 0): 9},
                                    {TP("lagtest.alerts", 0): 9}))
    now = scrape()
    assert not [k for k in now if k[0] == "aiops_consumer_lag" and ("topic", "lagtest.metrics") in k[1]]
    assert now[("aiops_consumer_lag", frozenset({("topic", "lagtest.alerts"), ("partition", "0")}))] == 0


def test_executor_results_are_counted_by_kind_and_decision(runbooks, tmp_path):  # noqa: F811
    ex = Executor(settings(runbooks), ExecutionLedger(tmp_path / "ledger.jsonl"))
    before = scrape()
    ok = ex.execute(action(mode="dry_run"))
    refused = ex.execute(replace(action(), id="act-2", decision="approved", approved_by=None))
    after = scrape()
    assert (ok.decision, refused.decision) == ("dry_run_ok", "refused")
    assert delta(before, after, "aiops_action_results_total", kind="exec", decision="dry_run_ok") == 1
    assert delta(before, after, "aiops_action_results_total", kind="exec", decision="refused") == 1


def ticket(kind: str, version: int, sink: str = "webhook") -> bytes:
    return codec.encode_ticket(TicketEvent(
        ticket_key="inc-m1", event=kind, incident_id="inc-m1", incident_version=version, sink=sink, team="sre",
        assignee=None, priority="P2", title="[P2] api errors", description="", tags=(), at=T0 + version))


def test_ticket_deliveries_per_sink_and_outcome():
    answers = [503, 200, 200, 400]  # the tracker: busy once, then fine, then refuses the update
    sent = []

    def transport(req):
        sent.append(req)
        return HttpResponse(answers.pop(0), (), b"{}")

    cfg = DeliverySettings.model_validate({"webhook": {"url": "http://tracker.test/hook"},
                                           "retry": {"max_attempts": 3}})
    eng = TicketDelivery(build_sinks(cfg), MemoryLedger(), transport, environ={}, retry=cfg.retry,
                         sleep=lambda s: None)
    before = scrape()
    outcomes = [eng.deliver_payload(ticket("create", 1)),
                eng.deliver_payload(ticket("create", 1)),  # redelivered
                eng.deliver_payload(ticket("update", 2)),
                eng.deliver_payload(ticket("update", 3)),
                eng.deliver_payload(ticket("create", 1, sink="jira")),  # not configured
                eng.deliver_payload(b"{not json")]
    after = scrape()
    assert [type(o) for o in outcomes] == [Delivered, Skipped, Delivered, DeadLettered, DeadLettered, DeadLettered]
    assert len(sent) == 4 and not answers
    assert delta(before, after, "aiops_ticket_deliveries_total", sink="webhook", outcome="delivered") == 2
    assert delta(before, after, "aiops_ticket_deliveries_total", sink="webhook", outcome="skipped") == 1
    assert delta(before, after, "aiops_ticket_deliveries_total", sink="webhook", outcome="dead_lettered") == 1
    assert delta(before, after, "aiops_ticket_deliveries_total", sink="jira", outcome="dead_lettered") == 1
    assert delta(before, after, "aiops_ticket_deliveries_total", sink="unknown", outcome="dead_lettered") == 1
    assert delta(before, after, "aiops_ticket_delivery_failed_attempts_total", sink="webhook") == 2  # 503, 400
