"""Three workers share one consumer group on 6-partition topics while the group changes under
them: two start, a third joins mid-stream, one leaves. Every partition's state moves with the
partition, and the incidents end exactly as `aiops replay` computes them in one process, with
no version published twice with different contents and one ticket per incident."""
from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter

import orjson
import yaml

from streams import simulate as sim
from streams.config import load_topology
from streams.replay import replay
from tests.integration.harness import consume_until, private_topology, worker_process
from tests.integration.test_pipeline_kafka import essence, final_state

PARTITIONS = 6  # Faust assigns by capacity ceil(partitions / workers): 6 gives each of 3 workers two


def _service(request: dict) -> bytes:
    for attr in request["resourceMetrics"][0]["resource"]["attributes"]:
        if attr["key"] == "service.name":
            return attr["value"]["stringValue"].encode()
    raise AssertionError("no service.name")


def produce_keyed(bootstrap: str, topic: str, requests: list[dict]) -> None:
    """Telemetry keyed by service, as the Collector's resource hash keys it: a series stays on
    one partition."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        for r in requests:
            producer.send(topic, orjson.dumps(r), key=_service(r))
        producer.flush(30)
    finally:
        producer.close(5)


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def messages_in(text: str) -> float:
    return sum(float(v) for v in re.findall(r'^aiops_input_messages_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))


def wait_assigned(proc, timeout: float = 60.0) -> None:
    """Until the worker reports lag for some partition: it joined and holds partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "worker died"
        try:
            if re.search(r"^aiops_consumer_lag\{", scrape(proc.web_port), re.M):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("worker was never assigned a partition")


def board_lists(port: int, ids: set[str], timeout: float = 60.0) -> set[str]:
    """The incident ids the worker's board (GET /) lists, once it lists ``ids`` or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                listed = set(re.findall(r'<tr class="[a-z]*" data-id="([^"]+)"', r.read().decode()))
        except OSError:
            listed = set()
        if listed >= ids or time.monotonic() > deadline:
            return listed
        time.sleep(0.5)


def test_three_workers_share_partitions_through_joins_and_a_leave(kafka_bootstrap, tmp_path):
    path = private_topology(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["topics"]["partitions"] = PARTITIONS
    # The telemetry is produced as fast as it goes, about a thousand times real time, so the
    # workers' lanes may drift an hour of event time apart where live ones drift seconds.
    doc.setdefault("worker", {})["partition_idle_after"] = "2h"
    path.write_text(yaml.safe_dump(doc))
    topo = load_topology(path)
    result = sim.simulate(topo, sim.load_scenarios(["flash-sale-db-pool", "disk-full"]))
    telemetry = tmp_path / "telemetry.jsonl"
    telemetry.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in result.requests))
    expected = tmp_path / "replay.jsonl"
    replay(topo, telemetry, expected, progress=None)
    want = final_state([orjson.loads(x) for x in expected.read_bytes().splitlines()])
    assert len(want) >= 2
    n = len(result.requests)
    first, second = result.requests[: n * 2 // 5], result.requests[n * 2 // 5: n * 7 // 10]
    rest = result.requests[n * 7 // 10:]

    with worker_process(path, kafka_bootstrap, tmp_path, name="w1") as w1, \
            worker_process(path, kafka_bootstrap, tmp_path, name="w2") as w2:
        wait_assigned(w1)
        wait_assigned(w2)
        produce_keyed(kafka_bootstrap, topo.topics.metrics, first)
        with worker_process(path, kafka_bootstrap, tmp_path, name="w3") as w3:
            wait_assigned(w3)
            produce_keyed(kafka_bootstrap, topo.topics.metrics, second)
            time.sleep(5)
            seen = {name: messages_in(scrape(p.web_port)) for name, p in (("w1", w1), ("w2", w2), ("w3", w3))}
            w1.terminate()  # leaves the group: its partitions move to w2 and w3
            w1.wait(30)
            produce_keyed(kafka_bootstrap, topo.topics.metrics, rest)
            try:
                got = consume_until(kafka_bootstrap, topo.topics.incidents,
                                    lambda recs: essence(final_state(recs)) == essence(want), timeout=240, proc=w2)
            except TimeoutError:  # show what differs
                got = consume_until(kafka_bootstrap, topo.topics.incidents, lambda recs: True, timeout=10)
            tickets = consume_until(kafka_bootstrap, topo.topics.tickets, lambda recs: True, timeout=10)
            after = {name: scrape(p.web_port) for name, p in (("w2", w2), ("w3", w3))}
            # Each worker's board lists every incident, whichever partitions produced it.
            boards = {name: board_lists(p.web_port, set(want)) for name, p in (("w2", w2), ("w3", w3))}

    assert essence(final_state(got)) == essence(want)
    assert all(ids >= set(want) for ids in boards.values()), boards
    # The work was shared: every worker consumed telemetry before w1 left...
    assert all(v > 0 for v in seen.values()), seen
    # ... and the partitions w1 left were rebuilt where they went.
    rebuilt = sum(float(v) for text in after.values()
                  for v in re.findall(r"^aiops_state_rebuilds_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))
    assert rebuilt > 0
    contents: dict[tuple[str, int], set[bytes]] = {}
    for r in got:
        contents.setdefault((r["id"], r["version"]), set()).add(orjson.dumps(r))
    assert all(len(v) == 1 for v in contents.values()), "a version was published with two contents"
    creates = Counter(r["incident_id"] for r in {orjson.dumps(t): t for t in tickets}.values() if r["event"] == "create")
    assert set(creates) == set(want) and set(creates.values()) == {1}

