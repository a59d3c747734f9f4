"""End to end through Kafka: a real `aiops worker` process against the broker, batched messages.

- **Throughput.** Batched OTLP/JSON messages (many services' points per message, as the
  Collector's batch processor sends them) are put on the metrics topic first; then a worker
  starts and drains them. Points per second are read off the worker's own `/metrics`
  (`aiops_input_points_total`), from its first processed point to its last, so start-up and
  consumer-group join are not counted.
- **Baseline, same run, same messages:** a raw aiokafka consume-and-decode loop (fetch, then
  `orjson.loads` every message) with nothing else. It is the physical limit of this machine
  and broker for these messages.
- **Latency, produce to incident.** A fresh worker is kept caught up while a fault scenario
  is produced at a steady pace. An incident record is caused by the first message whose event
  time reaches the record's `updated_at` (the correlator acts on event time); its latency is
  the wall time from that message's produce to the record's arrival at a consumer.

Uses ``KAFKA_BOOTSTRAP_SERVERS`` when set, else the embedded tansu broker.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

from detectors.records import parse_rfc3339
from streams import simulate as sim
from streams.broker import EmbeddedBroker, ensure_topics
from streams.config import load_topology
from tests.integration.harness import free_port, private_topology, produce

REPO = Path(__file__).resolve().parents[2]
BATCH_REQUESTS = 200  # simulator requests (one service, one instant each) merged per Kafka message


@contextlib.contextmanager
def bench_broker(tmp: Path):
    """``(bootstrap, broker)``: ``KAFKA_BOOTSTRAP_SERVERS`` when set (``broker`` is ``None``), else
    an embedded tansu broker that lives as long as the block."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else EmbeddedBroker(log_path=tmp / "tansu.log").start()
    try:
        yield external or broker.bootstrap, broker
    finally:
        if broker is not None:
            broker.stop()


def batched(requests: list[dict], size: int = BATCH_REQUESTS) -> tuple[list[bytes], list[float]]:
    """Merge consecutive requests into messages; each message's latest event time, in seconds."""
    messages, times = [], []
    for i in range(0, len(requests), size):
        resource = [rm for r in requests[i:i + size] for rm in r["resourceMetrics"]]
        messages.append(orjson.dumps({"resourceMetrics": resource}))
        times.append(max(_event_time(rm) for rm in resource))
    return messages, times


def _event_time(rm: dict) -> float:
    latest = 0
    for sm in rm.get("scopeMetrics", []):
        for m in sm.get("metrics", []):
            data = m.get("gauge") or m.get("sum") or m.get("histogram") or {}
            for p in data.get("dataPoints", []):
                latest = max(latest, int(p.get("timeUnixNano", 0)))
    return latest / 1e9


def _points_counter(port: int) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    m = re.search(r"^aiops_input_points_total ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait_assigned(port: int, topic: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the worker reports lag for ``topic``: it has joined the group and holds the partition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            if re.search(r'^aiops_consumer_lag\{[^}]*topic="' + re.escape(topic) + '"', text, re.M):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not assigned {topic} within {timeout:.0f} s")


def _start_worker(topo_path: Path, bootstrap: str, log_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(log_dir / f"worker-{topo_path.stem}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--topology", str(topo_path), "--bootstrap", bootstrap,
         "--web-port", str(port), "--data-dir", str(log_dir / f"data-{topo_path.stem}"), *(["-v"] if os.environ.get("AIOPS_BENCH_VERBOSE") else [])],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _raw_loop(bootstrap: str, topic: str, n: int) -> tuple[float, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=16 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        seen, nbytes, t0 = 0, 0, None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for msgs in batch.values():
                for msg in msgs:
                    orjson.loads(msg.value)
                    nbytes += len(msg.value)
                seen += sum(len(v) for v in batch.values())
        return time.perf_counter() - (t0 or time.perf_counter()), nbytes
    finally:
        await consumer.stop()


def throughput(bootstrap: str, tmp: Path, messages: list[bytes], points: int) -> dict:
    topo_path = private_topology(tmp)
    topo = load_topology(topo_path)
    ensure_topics(bootstrap, topo.topics.all(), partitions=topo.topics.partitions)
    produce(bootstrap, topo.topics.metrics, messages)
    raw_s, nbytes = asyncio.run(_raw_loop(bootstrap, topo.topics.metrics, len(messages)))
    proc, port = _start_worker(topo_path, bootstrap, tmp)
    try:
        first = last = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; log in {tmp}")
            n = _points_counter(port)
            now = time.perf_counter()
            if n and first is None:
                first = (now, n)
            if n is not None and n >= points:
                last = (now, n)
                break
            time.sleep(0.05)
        if first is None or last is None:
            raise RuntimeError("the worker did not finish the messages in 600 s")
    finally:
        _stop(proc)
    worker_s = last[0] - first[0]
    worker_pts = last[1] - first[1]
    return {"raw_msgs_per_s": len(messages) / raw_s, "raw_points_per_s": points / raw_s,
            "raw_mb_per_s": nbytes / raw_s / 1e6, "worker_points_per_s": worker_pts / worker_s,
            "worker_seconds": worker_s}


def latency(bootstrap: str, tmp: Path, messages: list[bytes], times: list[float], rate: float) -> dict:
    """Produce at ``rate`` messages/s into a caught-up worker; latency of every incident record."""
    from kafka import KafkaProducer

    topo_path = private_topology(tmp)
    topo = load_topology(topo_path)
    ensure_topics(bootstrap, topo.topics.all(), partitions=topo.topics.partitions)
    proc, port = _start_worker(topo_path, bootstrap, tmp)
    arrivals: list[tuple[float, dict]] = []
    stop = threading.Event()

    def listen():
        async def run():
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(topo.topics.incidents, bootstrap_servers=bootstrap,
                                        auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
            await consumer.start()
            try:
                while not stop.is_set():
                    for msgs in (await consumer.getmany(timeout_ms=100)).values():
                        now = time.time()
                        arrivals.extend((now, orjson.loads(m.value)) for m in msgs)
            finally:
                await consumer.stop()
        asyncio.run(run())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    sent_at: list[float] = []
    try:
        _wait_assigned(port, topo.topics.metrics, proc)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
        t0 = time.time()
        for i, m in enumerate(messages):
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            producer.send(topo.topics.metrics, m)
            producer.flush()
            sent_at.append(time.time())
        producer.close()
        # Done when every incident has resolved and nothing new arrived for a while.
        deadline = time.time() + 120
        while time.time() < deadline:
            latest: dict[str, str] = {}
            for _, rec in list(arrivals):
                latest[rec["id"]] = rec["status"]
            quiet = not arrivals or time.time() - arrivals[-1][0] > 5
            if latest and all(st == "resolved" for st in latest.values()) and quiet:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        listener.join(10)
        _stop(proc)
    lat = []
    for at, rec in arrivals:
        updated = parse_rfc3339(rec["updated_at"])
        cause = next((i for i, t in enumerate(times) if t >= updated), None)
        if cause is not None and cause < len(sent_at):
            lat.append(at - sent_at[cause])
    if not lat:
        return {"records": 0}
    arr = np.array(lat)
    return {"records": len(lat), "p50_s": float(np.percentile(arr, 50)), "p99_s": float(np.percentile(arr, 99)),
            "max_s": float(arr.max())}


def _data(reps: int) -> tuple[list[bytes], list[bytes], list[float]]:
    """The shipped scenarios, batched: ``reps`` back-to-back copies (event time moved on by
    their length each time) for throughput, and one copy with each message's event time for
    latency."""
    shop = load_topology(REPO / "topology.yaml")
    scenario = sim.simulate(shop, sim.load_scenarios(None))
    messages, times = batched(scenario.requests)
    span = times[-1] - times[0] + 10.0
    bulk = list(messages)
    for rep in range(1, reps):
        bulk += batched(sim.simulate(shop, sim.load_scenarios(None), start=1_767_225_600.0 + rep * span).requests)[0]
    return bulk, messages, times


def main() -> None:
    from streams.pipeline import DetectStage

    reps = int(os.environ.get("AIOPS_BENCH_REPS", "5"))
    bulk, messages, times = _data(reps)
    topo = load_topology(REPO / "topology.yaml")
    # The detector's loop is compiled (or loaded from numba's cache) on a process's first batch;
    # the worker's figure starts after its first batch too, so the stage is timed warm as well.
    DetectStage(topo).process(bulk[0])
    stage = DetectStage(topo)
    t0 = time.perf_counter()
    points = sum(stage.process(m).points for m in bulk)
    core_s = time.perf_counter() - t0
    mb = sum(map(len, bulk)) / 1e6
    print(f"   {len(bulk)} messages ({mb:.1f} MB, {points / len(bulk):,.0f} points each), {points:,} points")
    print(f"   detect stage in-process, no Kafka:   {points / core_s:,.0f} points/s")
    with tempfile.TemporaryDirectory(prefix="aiops-kbench-") as d, bench_broker(Path(d)) as (bootstrap, broker):
        tmp = Path(d)
        tp = throughput(bootstrap, tmp, bulk, points)
        print(f"   raw aiokafka consume + orjson.loads: {tp['raw_points_per_s']:,.0f} points/s "
              f"({tp['raw_msgs_per_s']:,.0f} msg/s, {tp['raw_mb_per_s']:.0f} MB/s)  (baseline)")
        print(f"   one aiops worker, end to end:        {tp['worker_points_per_s']:,.0f} points/s "
              f"over {tp['worker_seconds']:.1f} s")
        print(f"   worker / raw loop:                   {tp['worker_points_per_s'] / tp['raw_points_per_s']:.3f}")
        print(f"   worker / in-process detect stage:    {tp['worker_points_per_s'] / (points / core_s):.3f}")
        # Half the measured throughput, so the latency is the pipeline's and not a queue's.
        rate = 0.5 * tp["worker_points_per_s"] / (points / len(bulk))
        lt = latency(bootstrap, tmp, messages, times, rate)
        if lt.get("records"):
            print(f"   produce -> incident latency at {rate:.1f} msg/s: p50 {lt['p50_s'] * 1000:,.0f} ms, "
                  f"p99 {lt['p99_s'] * 1000:,.0f} ms, max {lt['max_s'] * 1000:,.0f} ms "
                  f"over {lt['records']} incident records")
        else:
            print("   produce -> incident latency: no incident records arrived")


if __name__ == "__main__":
    main()
