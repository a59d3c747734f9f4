"""What checkpoints cost, and how long a large state takes to restore.

- **Snapshot of N series** (default 1,000,000; ``AIOPS_BENCH_SNAPSHOT_SERIES``), in a child
  process holding a detect stage with N series of learned state: how long the event loop
  stops (the ``fork``: page tables only), how long the forked child takes to pickle, checksum
  and fsync the snapshot, its size, and the memory the child adds (its private dirty pages:
  pages the pickler touched plus its output buffer). Baseline in the same run: the stage's
  own RSS.
- **Restore of N series**: the snapshot read back and decoded into a stage (what a restart on
  the same node does before replaying), and the same through the checkpoint topic (produced in
  chunks, read back with a group-less consumer and reassembled: what a node without a local
  copy does).
- **Throughput**: one worker draining the same backlog as ``kafka_bench`` with checkpoints off
  (baseline), at the shipped interval, and every 2 s; points/s and peak RSS of each.
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _private_dirty_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return sum(int(m) for m in re.findall(r"Private_(?:Dirty|Clean):\s+(\d+) kB", text))


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    m = re.search(field + r":\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) if m else 0


def snapshot_child(n_series: int, out_dir: str, bootstrap: str) -> None:
    """Runs in its own process: build the state, snapshot it as the worker does, restore it."""
    from detectors.records import Point, SeriesKey
    from streams import checkpoint as ck
    from streams.config import load_topology
    from streams.pipeline import DetectStage
    from streams.recovery import Shard, read_partitions

    topo = load_topology(REPO / "topology.yaml")
    stage = DetectStage(topo, lane="m/0")
    chunk = 100_000
    for step in range(2):
        for lo in range(0, n_series, chunk):
            stage.engine.process([Point(SeriesKey(f"svc-{i % 1000}", "http.server.request.duration.p95",
                                                  (("host.name", f"node-{i}"),)), 1.7e9 + 60 * step, 1.0)
                                  for i in range(lo, min(lo + chunk, n_series))])
    rss = _rss_kib(os.getpid())
    store = ck.LocalStore(Path(out_dir))
    sent: list[tuple[bytes, bytes]] = []

    async def send(topic, key, value, partition):
        sent.append((key, value))

    async def flush():
        pass

    async def snapshot() -> tuple[float, float, int]:
        cps = ck.Checkpoints(store, "bench.checkpoints", 1, 1.0, send=send, flush=flush)
        shard = Shard(stage, 1000)
        t0 = time.perf_counter()
        cps.begin(shard, ck.Meta("detect", "m", 0, 1000))
        stall = time.perf_counter() - t0
        child = next(iter(cps._inflight))
        dirty = 0
        while not await cps.finish():
            dirty = max(dirty, _private_dirty_kib(child))
            await asyncio.sleep(0.02)
        return stall, time.perf_counter() - t0, dirty

    stall, written, dirty = asyncio.run(snapshot())
    [path] = store.candidates("m", 0, 1000)
    size = path.stat().st_size
    t0 = time.perf_counter()
    meta, state = ck.decode(path.read_bytes())
    restored = ck.stage_from("detect", state, topo)
    local_s = time.perf_counter() - t0
    assert restored.engine.series_count() == n_series
    del restored, state
    kafka_s = float("nan")
    if bootstrap:
        from kafka import KafkaProducer

        from streams.broker import ensure_topics

        topic = f"bench-ckpt-{os.getpid()}"
        ensure_topics(bootstrap, [topic])
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_request_size=2 << 20)
        futures = [producer.send(topic, value, key=key, partition=0) for key, value in sent]
        producer.flush(600)
        producer.close()
        failed = [f.exception for f in futures if f.failed()]
        if failed:
            print(f"{len(failed)} of {len(futures)} chunks not produced: {failed[0]!r}", file=sys.stderr)
        t0 = time.perf_counter()
        rows = asyncio.run(read_partitions(bootstrap, topic, [0]))
        whole = ck.assemble([(k, v) for _, _, k, v in rows], "m", 0)
        if whole:
            meta, state = ck.decode(whole[0][1])
            ck.stage_from("detect", state, topo)
            kafka_s = time.perf_counter() - t0
        else:
            print(f"read back {len(rows)} of {len(sent)} chunks: no whole snapshot", file=sys.stderr)
    print(f"RESULT {n_series} {rss} {stall} {written} {dirty} {size} {local_s} {kafka_s}")


def snapshot_figures(n_series: int, bootstrap: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="aiops-ckbench-") as d:
        out = subprocess.run([sys.executable, "-m", "tests.bench.checkpoint_bench", "--child", str(n_series), d,
                              bootstrap], check=True, stdout=subprocess.PIPE, text=True, cwd=REPO).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    n, rss, stall, written, dirty, size, local_s, kafka_s = line.split()[1:]
    return {"series": int(n), "rss_mib": int(rss) / 1024, "stall_s": float(stall), "written_s": float(written),
            "child_private_mib": int(dirty) / 1024, "size_mib": int(size) / 2**20, "restore_local_s": float(local_s),
            "restore_kafka_s": float(kafka_s)}


def throughput_with(bootstrap: str, tmp: Path, messages: list[bytes], points: int, interval: str) -> dict:
    """kafka_bench's throughput run on a topology whose checkpoint interval is ``interval``."""
    import yaml

    from tests.bench import kafka_bench as kb
    from tests.integration.harness import private_topology

    real = kb.private_topology

    def with_interval(tmp_path, **kw):
        path = private_topology(tmp_path, **kw)
        doc = yaml.safe_load(path.read_text())
        doc["worker"]["checkpoint_interval"] = interval
        path.write_text(yaml.safe_dump(doc))
        return path

    peak = {"kib": 0}
    kb.private_topology = with_interval
    real_start = kb._start_worker

    def start(*a, **kw):
        proc, port = real_start(*a, **kw)
        peak["pid"] = proc.pid
        return proc, port

    real_stop = kb._stop

    def stop(proc):
        peak["kib"] = _rss_kib(proc.pid, "VmHWM") if proc.poll() is None else 0
        real_stop(proc)

    kb._start_worker, kb._stop = start, stop
    try:
        r = kb.throughput(bootstrap, tmp, messages, points)
    finally:
        kb.private_topology, kb._start_worker, kb._stop = real, real_start, real_stop
    return {**r, "peak_rss_mib": peak["kib"] / 1024}


def main() -> None:
    from tests.bench.kafka_bench import _data, bench_broker

    n_series = int(os.environ.get("AIOPS_BENCH_SNAPSHOT_SERIES", "1000000"))
    reps = int(os.environ.get("AIOPS_BENCH_REPS", "5"))
    with tempfile.TemporaryDirectory(prefix="aiops-ckbench-") as d, bench_broker(Path(d)) as (bootstrap, _):
        # The checkpoint topic at the bench's Kafka size: the embedded tansu broker takes a
        # 1M-series snapshot (808 MiB) at about 3.5 MiB/s, so its produce times out there.
        n_kafka = min(n_series, int(os.environ.get("AIOPS_BENCH_KAFKA_SERIES", "100000")))
        s = snapshot_figures(n_series, "" if n_kafka < n_series else bootstrap)
        if n_kafka < n_series:
            s["restore_kafka_s"] = snapshot_figures(n_kafka, bootstrap)["restore_kafka_s"]
        print(f"   {s['series']:,} series of detector state: stage RSS {s['rss_mib']:,.0f} MiB (baseline), "
              f"snapshot {s['size_mib']:,.0f} MiB")
        print(f"   event loop stopped for the fork:     {s['stall_s'] * 1000:,.1f} ms")
        print(f"   snapshot written by the child in:    {s['written_s']:,.1f} s "
              f"(child's own memory {s['child_private_mib']:,.0f} MiB = {s['child_private_mib'] / s['rss_mib']:.2f} "
              f"of the stage's RSS)")
        print(f"   restore, local file:                 {s['restore_local_s']:,.1f} s")
        print(f"   restore, from the checkpoint topic:  {s['restore_kafka_s']:,.1f} s"
              + (f" (for {n_kafka:,} series)" if n_kafka < n_series else ""))
        bulk, _, _ = _data(reps)
        from streams.config import load_topology
        from streams.pipeline import DetectStage

        topo = load_topology(REPO / "topology.yaml")
        points = sum(DetectStage(topo).process(m).points for m in bulk)
        base = None
        for interval in ("0s", "30s", "2s"):
            tmp = Path(d) / f"tp-{interval}"
            tmp.mkdir()
            r = throughput_with(bootstrap, tmp, bulk, points, interval)
            base = base or r["worker_points_per_s"]
            label = "off (baseline)" if interval == "0s" else f"every {interval}"
            print(f"   worker throughput, checkpoints {label:<15} {r['worker_points_per_s']:>10,.0f} points/s "
                  f"({r['worker_points_per_s'] / base:.3f}), peak RSS {r['peak_rss_mib']:,.0f} MiB", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        snapshot_child(int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
    else:
        main()
