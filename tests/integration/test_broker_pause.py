"""The broker freezes (SIGSTOP) for 30 s mid-incident and comes back: the worker recovers on its
own, with no restart, and the incidents end exactly as `aiops replay` says.

This test needs its own broker process to freeze, so it always uses the embedded tansu, even
when ``KAFKA_BOOTSTRAP_SERVERS`` names an external one.
"""
from __future__ import annotations

import time
from collections import Counter

import orjson

from streams.broker import EmbeddedBroker
from tests.integration.harness import consume_until, fault_midway, produce, worker_process
from tests.integration.test_pipeline_kafka import essence, final_state

PAUSE_SECONDS = 30


def test_broker_paused_30s_worker_recovers_without_loss(tmp_path):
    topo_path, topo, lines, cut, want = fault_midway(tmp_path)

    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        with worker_process(topo_path, bootstrap, tmp_path) as worker:
            produce(bootstrap, topo.topics.metrics, lines[:cut])
            consume_until(bootstrap, topo.topics.tickets, lambda recs: any(r["event"] == "create" for r in recs),
                          timeout=120, proc=worker)
            broker.pause()
            try:
                time.sleep(PAUSE_SECONDS)
                assert worker.poll() is None, "the worker died while the broker was frozen"
            finally:
                broker.resume()
            produce(bootstrap, topo.topics.metrics, lines[cut:])
            got = consume_until(bootstrap, topo.topics.incidents,
                                lambda recs: essence(final_state(recs)) == essence(want), timeout=180, proc=worker)
            tickets = consume_until(bootstrap, topo.topics.tickets, lambda recs: True, timeout=10)
            assert worker.poll() is None, "the worker had to be restarted"

    assert essence(final_state(got)) == essence(want)
    contents: dict[tuple[str, int], set[bytes]] = {}
    for r in got:
        contents.setdefault((r["id"], r["version"]), set()).add(orjson.dumps(r))
    assert all(len(v) == 1 for v in contents.values()), "a version was published with two contents"
    creates = Counter(r["incident_id"] for r in {orjson.dumps(t): t for t in tickets}.values() if r["event"] == "create")
    assert creates and set(creates.values()) == {1}
