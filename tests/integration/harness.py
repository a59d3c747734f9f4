"""Run a real worker process against the test broker, on topics of its own."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import orjson
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_topology(tmp_path: Path, base: Path = REPO / "topology.yaml", **overrides) -> Path:
    """A copy of ``base`` whose topics carry a unique prefix, so tests never share a topic."""
    doc = yaml.safe_load(base.read_text())
    prefix = "t" + uuid.uuid4().hex[:8]
    from streams.config import TopicSettings

    # Every topic name the settings know, so a topic added later is never shared between tests.
    defaults = TopicSettings().model_dump()
    doc["topics"] = {k: f"{prefix}.{v}" for k, v in defaults.items() if isinstance(v, str)}
    # Nor a consumer group: members a previous test's workers left behind would delay the join.
    doc.setdefault("worker", {})["group_id"] = prefix
    for key, value in overrides.items():
        doc[key] = value
    path = tmp_path / f"{prefix}-topology.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextmanager
def worker_process(topology_path: Path, bootstrap: str, log_dir: Path, name: str | None = None,
                   extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None):
    """Start ``aiops worker`` as a subprocess; yield it; stop it. The log is shown on failure.
    ``env`` adds to the worker's environment (HTTP tokens, say)."""
    from streams.broker import ensure_topics
    from streams.config import load_topology

    # Create the topics before anything produces: a producer's auto-create would pick the
    # broker's default partition count, and the worker's ordering guarantees are per partition.
    t = load_topology(topology_path).topics
    ensure_topics(bootstrap, t.all(),
                  partitions=t.partitions)
    name = name or topology_path.stem
    log_path = log_dir / f"worker-{name}.log"
    web_port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--topology", str(topology_path), "--bootstrap", bootstrap,
             "--web-port", str(web_port), "--data-dir", str(log_dir / f"data-{name}"), *extra_args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        proc.web_port = web_port  # type: ignore[attr-defined]
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    proc.log_text = log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def produce(bootstrap: str, topic: str, payloads: list[bytes], key: bytes | None = None) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        for p in payloads:
            producer.send(topic, p, key=key)
        producer.flush(30)
    finally:
        producer.close(5)


def consume_until(bootstrap: str, topic: str, done, timeout: float = 120.0, proc=None) -> list[dict]:
    """Read ``topic`` from the start until ``done(records)`` is true; fail with the worker's state on timeout."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def run() -> list[dict]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        records: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"worker exited with {proc.returncode}")
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    records += [orjson.loads(m.value) for m in msgs]
                if done(records):
                    return records
            raise TimeoutError(f"{topic}: condition not met after {timeout}s; got {len(records)} records")
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _first_point_time(request: dict) -> float:
    metric = request["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    points = (metric.get("gauge") or metric.get("sum") or {}).get("dataPoints") or [{"timeUnixNano": "0"}]
    return int(points[0]["timeUnixNano"]) / 1e9


def fault_midway(tmp_path: Path, scenario: str = "flash-sale-db-pool", after: float = 240.0):
    """A scenario's telemetry on a private topology, cut ``after`` seconds into its fault (the
    incident is open, its ticket and action are out), and the final incidents `aiops replay`
    computes from all of it: ``(topology_path, topology, lines, cut, want)``."""
    from evaluation.metrics import final_versions
    from streams import simulate as sim
    from streams.config import load_topology
    from streams.replay import replay

    topo_path = private_topology(tmp_path)
    topo = load_topology(topo_path)
    result = sim.simulate(topo, sim.load_scenarios([scenario]))
    lines = [orjson.dumps(r) for r in result.requests]
    telemetry = tmp_path / "telemetry.jsonl"
    telemetry.write_bytes(b"".join(line + b"\n" for line in lines))
    expected = tmp_path / "replay.jsonl"
    replay(topo, telemetry, expected, progress=None)
    want = final_versions([orjson.loads(x) for x in expected.read_bytes().splitlines()])
    onset = result.truth[0]["start"]
    cut = next(i for i, r in enumerate(result.requests) if _first_point_time(r) > onset + after)
    return topo_path, topo, lines, cut, want


def assert_each_output_once(incidents: list[dict], tickets: list[dict], actions: list[dict]) -> None:
    """What a crash must not break. A version is never published with two different contents:
    consumers keep the highest version, so a conflicting copy would be a silent corruption
    (versions may differ from replay's in between: alerts a killed worker never got out are
    re-sent after it). Exactly one ticket per incident (a redelivered record is byte-identical,
    so sinks dedupe it by key), and each planned step has exactly one decision."""
    contents: dict[tuple[str, int], set[bytes]] = {}
    for r in incidents:
        contents.setdefault((r["id"], r["version"]), set()).add(orjson.dumps(r))
    assert all(len(v) == 1 for v in contents.values())
    creates = Counter(r["incident_id"] for r in {orjson.dumps(t): t for t in tickets}.values() if r["event"] == "create")
    assert creates and set(creates.values()) == {1}
    decisions = Counter(a["id"] for a in {orjson.dumps(a): a for a in actions}.values())
    assert decisions and set(decisions.values()) == {1}
