"""How end-to-end throughput scales with workers and input partitions.

Real `aiops worker` processes in one consumer group drain batched OTLP/JSON messages, for N
workers on P metrics partitions (N = 1, 2; P = 1, 2, 4; N > P is not run: Faust assigns whole
partitions, so a worker beyond P holds nothing and sits idle). The messages are the ones
kafka_bench.py uses (the shipped scenarios, 200 simulator requests per message), except that each
partition gets only its own services' requests: detector state is per input partition, so a
series must always arrive on the same one, as the Collector's kafka exporter does with
``partition_metrics_by_resource_attributes``. The services are split into fixed groups of about
equal point counts (the exporter hashes the resource, which with nine services could give one
partition three times another's load, measuring hash luck rather than scaling).

- **Workers.** They start on empty topics; once the group has settled (every worker holds its
  partitions, the same ones across two lag reports) they are paused (SIGSTOP), every partition
  is filled, and they are resumed together, so no join or rebalance falls inside the window.
  Points are read off each worker's `/metrics` (``aiops_input_points_total``); the aggregate is
  every worker's points over the time from the resume to the last worker's last point, a
  worker's own figure its points over the time to its own last point.
- **Baselines, same run, same messages:** kafka_bench's raw aiokafka consume-and-``orjson.loads``
  loop, one reading all P partitions, and for P >= 2 two in processes of their own on half the
  partitions each (what the cores can do with no pipeline at all). Both are timed from a common
  start with nothing prefetched, unlike kafka_bench's loop, whose clock starts at its first
  batch: with 16 MB fetches per partition that batch is much of the backlog at P = 4.

Uses ``KAFKA_BOOTSTRAP_SERVERS`` when set, else the embedded tansu broker.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import orjson
import yaml

from streams import simulate as sim
from streams.broker import ensure_topics
from streams.config import load_topology
from tests.bench.kafka_bench import REPO, _event_time, _points_counter, batched, bench_broker
from tests.integration.harness import private_topology, worker_process

CASES = [(1, 1), (1, 2), (1, 4), (2, 2), (2, 4)]
MAX_PARTITIONS = 4
POLL_S = 0.05


def _service(request: dict) -> str:
    # The simulator sends one service per request (checked: no request mixes two).
    for attr in request["resourceMetrics"][0]["resource"]["attributes"]:
        if attr["key"] == "service.name":
            return attr["value"]["stringValue"]
    raise ValueError("request without service.name")


def scenario_requests(reps: int) -> list[dict]:
    """The shipped scenarios ``reps`` times back to back, event time moving on each time, so the
    detectors keep learning instead of seeing time go backwards."""
    shop = load_topology(REPO / "topology.yaml")
    requests: list[dict] = []
    start = 1_767_225_600.0
    for _ in range(reps):
        rep = sim.simulate(shop, sim.load_scenarios(None), start=start).requests
        requests += rep
        start = max(_event_time(rm) for r in rep for rm in r["resourceMetrics"]) + 10.0
    return requests


def expected_points(requests: list[dict]) -> dict[str, int]:
    """Points the worker will count, per service. A detect stage per service: the normalizer's
    state is per series, so the count does not depend on which partition or message a point is in."""
    from streams.pipeline import DetectStage

    topo = load_topology(REPO / "topology.yaml")
    by_service: dict[str, list[dict]] = {}
    for r in requests:
        by_service.setdefault(_service(r), []).append(r)
    out = {}
    for service, reqs in by_service.items():
        stage = DetectStage(topo)
        out[service] = sum(stage.process(m).points for m in batched(reqs)[0])
    return out


def _halve(weights: dict[str, int], services: list[str]) -> tuple[list[str], list[str]]:
    """The two-way split of ``services`` with the closest loads (exhaustive: a handful of services)."""
    total = sum(weights[s] for s in services)
    best = None
    for r in range(1, len(services)):
        for left in itertools.combinations(services, r):
            gap = abs(total - 2 * sum(weights[s] for s in left))
            if best is None or gap < best[0]:
                best = (gap, list(left))
    left = best[1]
    return left, [s for s in services if s not in left]


def service_groups(weights: dict[str, int]) -> list[list[str]]:
    """Four groups, nested: groups 0+1 and 2+3 are the two-partition split. Nesting keeps each
    service's partition the same idea at every P, and lets one count serve all three."""
    a, b = _halve(weights, sorted(weights))
    return [*_halve(weights, a), *_halve(weights, b)]


def partition_services(groups: list[list[str]], partitions: int) -> list[list[str]]:
    per = len(groups) // partitions
    return [sum(groups[i * per:(i + 1) * per], []) for i in range(partitions)]


def partition_messages(requests: list[dict], services: list[list[str]], encoding: str = "otlp_json"
                       ) -> list[list[bytes]]:
    where = {s: p for p, group in enumerate(services) for s in group}
    parts: list[list[dict]] = [[] for _ in services]
    for r in requests:
        parts[where[_service(r)]].append(r)
    # Same batch size per partition as kafka_bench, so messages stay the same size at every P
    # and only the partitioning changes between cases.
    out = [batched(p)[0] for p in parts]
    if encoding == "otlp_proto":
        from streams.ingest import otlp_proto

        out = [[otlp_proto.encode(orjson.loads(m), "metrics") for m in part] for part in out]
    return out


def _parser(encoding: str):
    """The raw loop's parser: the format's own, as in otlp_bench."""
    if encoding == "otlp_proto":
        from streams.ingest import otlp_proto

        return otlp_proto.REQUESTS["metrics"].FromString
    return orjson.loads


def produce_partitioned(bootstrap: str, topic: str, messages: list[list[bytes]], groups: list[list[str]]) -> None:
    """Every partition's messages, interleaved as producers feeding them all at once would deliver them."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        # aiokafka rather than kafka-python: it builds batches in C, some fifteen times faster
        # here, and the workers are paused for as long as this takes.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_request_size=16 << 20)
        await producer.start()
        try:
            sent = []
            for i in range(max(map(len, messages))):
                for p, msgs in enumerate(messages):
                    if i < len(msgs):
                        sent.append(await producer.send(topic, msgs[i], partition=p, key=",".join(groups[p]).encode()))
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())


def _scrape(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None


def assigned(port: int, topic: str) -> set[int] | None:
    """The ``topic`` partitions a worker reports lag for, i.e. holds; None if it does not answer."""
    text = _scrape(port)
    if text is None:
        return None
    out = set()
    for labels in re.findall(r"^aiops_consumer_lag\{([^}]*)\}", text, re.M):
        kv = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if kv.get("topic") == topic:
            out.add(int(kv["partition"]))
    return out


def wait_settled(workers: list, topic: str, partitions: int, timeout: float = 180.0) -> list[set[int]]:
    """Until every worker holds partitions of ``topic``, together all of them once, and the
    same ones across two lag reports (every 2 s). A join still under way shows as a worker with
    none or a partition reported twice (the old holder's report lags the new one's)."""
    deadline = time.monotonic() + timeout
    last, since = None, 0.0
    while time.monotonic() < deadline:
        for w in workers:
            if w.poll() is not None:
                raise RuntimeError(f"worker exited with {w.returncode}")
        now = [assigned(w.web_port, topic) for w in workers]
        ok = (all(now) and sum(len(a) for a in now) == partitions
              and set().union(*now) == set(range(partitions)))
        if not ok:
            last = None
        elif now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 2.5:
            return now
        time.sleep(0.25)
    raise RuntimeError(f"the group did not settle on {partitions} partitions within {timeout:.0f} s: {last}")


def drain(workers: list, total: int, timeout: float = 600.0) -> list[tuple[float, float]]:
    """Poll every worker's point counter until together they reach ``total``; per worker the
    ``(time, count)`` at which its count last moved."""
    last = [(float("nan"), 0.0)] * len(workers)
    deadline = time.monotonic() + timeout
    progress = time.monotonic()
    while time.monotonic() < deadline:
        for i, w in enumerate(workers):
            if w.poll() is not None:
                raise RuntimeError(f"worker exited with {w.returncode}")
            n = _points_counter(w.web_port) or 0.0
            if n != last[i][1]:
                last[i] = (time.perf_counter(), n)
                progress = time.monotonic()
        if sum(n for _, n in last) >= total:
            return last
        if time.monotonic() - progress > 60:
            raise RuntimeError(f"no progress for 60 s at {sum(n for _, n in last):,.0f} of {total:,} points")
        time.sleep(POLL_S)
    raise RuntimeError(f"the workers did not finish {total:,} points in {timeout:.0f} s")


def _topology(tmp: Path, partitions: int) -> Path:
    path = private_topology(tmp)
    doc = yaml.safe_load(path.read_text())
    doc["topics"]["partitions"] = partitions
    # The backlog is drained at about a thousand times real time, so the partitions' event times
    # drift apart by far more than the default 1 m; treating the slower one as idle would skip the
    # wait-for-the-slowest-partition work live workers always do.
    doc.setdefault("worker", {})["partition_idle_after"] = "2h"
    # tansu holds a first join for half the session timeout (15 s at the default 30 s), which
    # was most of a case's run time. The workers are paused for about a second, far below this.
    doc["worker"]["session_timeout"] = "12s"
    path.write_text(yaml.safe_dump(doc))
    return path


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workers(bootstrap: str, tmp: Path, n: int, partitions: int, messages: list[list[bytes]],
                groups: list[list[str]], expected: list[int], broker_pid: int | None = None) -> tuple[dict, str]:
    """One case on topics of its own; returns the figures and the metrics topic (left filled for the raw loops)."""
    path = _topology(tmp, partitions)
    topo = load_topology(path)
    # As `aiops worker` would create them (the config topic one compacted partition), before
    # the harness creates them all alike.
    ensure_topics(bootstrap, topo.topics.all(), partitions=partitions,
                  special={topo.topics.config: (1, {"cleanup.policy": "compact"})})
    total = sum(expected)
    with ExitStack() as stack:
        workers = [stack.enter_context(worker_process(path, bootstrap, tmp, name=f"{path.stem}-w{i}"))
                   for i in range(n)]
        t_start = time.perf_counter()
        before = wait_settled(workers, topo.topics.metrics, partitions)
        t_settled = time.perf_counter()
        for w in workers:
            os.kill(w.pid, signal.SIGSTOP)
        try:
            produce_partitioned(bootstrap, topo.topics.metrics, messages, groups)
        finally:
            pids = [w.pid for w in workers] + ([broker_pid] if broker_pid else [])
            cpu0 = [cpu_seconds(pid) for pid in pids]
            # The clock starts here, not at a worker's first point: that point comes after its
            # first fetch, which at 16 MB per partition can hold most of the backlog, and leaving
            # it out would flatter the cases with more partitions.
            t_resumed = time.perf_counter()
            for w in workers:
                os.kill(w.pid, signal.SIGCONT)
        last = drain(workers, total)
        # Where the CPU went while draining: on a small machine the workers and the broker
        # share the cores, and this says whether a worker was starved or had nothing to do.
        wall = max(t for t, _ in last) - t_resumed
        cpu = [(c1 - c0) / wall for c0, c1 in zip(cpu0, (cpu_seconds(pid) for pid in pids))]
        after = [assigned(w.web_port, topo.topics.metrics) for w in workers]
        for w in workers:  # all at once: their shutdowns overlap instead of queueing in the ExitStack
            w.terminate()
    per_worker = [{"partitions": sorted(a), "points": n, "expected": sum(expected[p] for p in a),
                   "points_per_s": n / (t - t_resumed)} for a, (t, n) in zip(before, last)]
    return {"points_per_s": sum(n for _, n in last) / wall, "seconds": wall, "workers": per_worker,
            "rebalanced": after != before, "settle_s": t_settled - t_start, "produce_s": t_resumed - t_settled,
            "worker_cores": cpu[:n], "broker_cores": cpu[n] if broker_pid else None}, topo.topics.metrics


async def _raw_part(bootstrap: str, topic: str, partitions: list[int], n: int, barrier, encoding: str = "otlp_json"
                    ) -> tuple[float, float]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    parse = _parser(encoding)
    # kafka_bench's raw loop settings, so the baseline is the same loop, just on P partitions.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        # Paused until the clock starts: aiokafka fetches in the background from assignment on,
        # and a prefetch of up to 16 MB per partition left out of the time would flatter the
        # cases with more partitions (and the process that got there first).
        consumer.pause(*tps)
        await consumer.seek_to_beginning(*tps)
        barrier.wait()
        t0 = time.monotonic()
        consumer.resume(*tps)
        seen = 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for msgs in batch.values():
                for msg in msgs:
                    parse(msg.value)
                seen += len(msgs)
        return t0, time.monotonic()
    finally:
        await consumer.stop()


def _raw_child(bootstrap, topic, partitions, n, barrier, out, encoding="otlp_json") -> None:
    out.put(asyncio.run(_raw_part(bootstrap, topic, partitions, n, barrier, encoding)))


def raw_loops(bootstrap: str, topic: str, counts: list[int], k: int, encoding: str = "otlp_json") -> float:
    """``k`` raw loops in processes of their own (one process too, so one and two differ only in
    count), the partitions split between them; seconds from the start to the last one's last
    message (CLOCK_MONOTONIC is one clock for every process)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    parts = [list(range(len(counts)))[i::k] for i in range(k)]
    procs = [ctx.Process(target=_raw_child, args=(bootstrap, topic, ps, sum(counts[p] for p in ps), barrier, out,
                                                  encoding))
             for ps in parts]
    for p in procs:
        p.start()
    try:
        spans = [out.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.scaling_bench", description=__doc__.split("\n\n")[0])
    # 5 and 10 copies gave the same medians (within 5 %, three runs each of 1x1 and 1x4 on a
    # loaded 2-core machine); 5 keeps the whole bench near two minutes.
    ap.add_argument("--reps", type=int, default=5,
                    help="copies of the shipped scenarios (about 44k points each) drained per case (default 5)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every case and baseline this many times and report the median, with the range "
                         "(default 1)")
    ap.add_argument("--cases", default=",".join(f"{n}x{p}" for n, p in CASES),
                    help="NxP cases, comma-separated: N workers on P partitions, P in 1, 2, 4 (default: %(default)s)")
    ap.add_argument("--encoding", choices=("otlp_json", "otlp_proto"), default="otlp_json",
                    help="the messages' encoding, and the raw loop's parser (default %(default)s)")
    args = ap.parse_args([] if argv is None else argv)
    cases = [tuple(int(x) for x in c.split("x")) for c in args.cases.split(",")]
    if any(p not in (1, 2, 4) or n < 1 or n > p for n, p in cases):
        ap.error("each case is NxP with P in 1, 2, 4 and 1 <= N <= P")

    started = time.perf_counter()
    requests = scenario_requests(args.reps)
    weights = expected_points(requests)
    groups = service_groups(weights)
    total = sum(weights.values())
    print(f"   {len(requests):,} requests, {total:,} points; services per partition at P=4: "
          + " | ".join(f"{','.join(g)} ({sum(weights[s] for s in g):,})" for g in groups))

    results: dict[tuple[int, int], dict] = {}
    raw: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="aiops-scale-") as d, bench_broker(Path(d)) as (bootstrap, broker):
        tmp = Path(d)
        for p in sorted({p for _, p in cases}):
            services = partition_services(groups, p)
            messages = partition_messages(requests, services, args.encoding)
            expected = [sum(weights[s] for s in g) for g in services]
            counts = [len(m) for m in messages]
            for n in sorted(n for n, q in cases if q == p):
                runs = []
                for _ in range(args.repeat):
                    res, topic = run_workers(bootstrap, tmp, n, p, messages, services, expected,
                                             broker.proc.pid if broker is not None else None)
                    runs.append(res)
                    if p not in raw or len(raw[p][1]) < args.repeat:
                        # The topic just drained still holds every message: the baselines read
                        # it with no worker running.
                        for k in (1, 2) if p >= 2 else (1,):
                            raw.setdefault(p, {}).setdefault(k, []).append(
                                total / raw_loops(bootstrap, topic, counts, k, args.encoding))
                runs.sort(key=lambda r: r["points_per_s"])
                results[(n, p)] = {**runs[len(runs) // 2], "range": (runs[0]["points_per_s"],
                                                                      runs[-1]["points_per_s"])}

    spread = {p: {k: (min(v), max(v)) for k, v in by_k.items()} for p, by_k in raw.items()}
    raw = {p: {k: sorted(v)[len(v) // 2] for k, v in by_k.items()} for p, by_k in raw.items()}
    base = results.get((1, 1), {}).get("points_per_s")
    print(f"   {'N':>2} {'P':>2} {'points/s, all':>14}  {'per worker (its partitions)':<40} "
          f"{'x 1w/1p':>8} {'/ raw 1':>8} {'/ raw N':>8}")
    for (n, p), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        per = " / ".join(f"{w['points_per_s']:,.0f} (p{','.join(map(str, w['partitions']))})" for w in r["workers"])
        raw_n = raw[p].get(n)
        rng = f"  ({r['range'][0]:,.0f}-{r['range'][1]:,.0f})" if args.repeat > 1 else ""
        print(f"   {n:>2} {p:>2} {r['points_per_s']:>14,.0f}  {per:<40} "
              f"{r['points_per_s'] / base if base else float('nan'):>8.2f} {r['points_per_s'] / raw[p][1]:>8.3f} "
              f"{r['points_per_s'] / raw_n if raw_n else float('nan'):>8.3f}{rng}")
    for (n, p), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        broker_cores = f", broker {r['broker_cores']:.2f}" if r["broker_cores"] is not None else ""
        # Points per CPU-second of the workers: if it holds while the aggregate does not grow,
        # the cores ran out, not the pipeline's parallelism.
        per_cpu = sum(w["points"] for w in r["workers"]) / (sum(r["worker_cores"]) * r["seconds"])
        print(f"   {n}x{p}: drained in {r['seconds']:.1f} s; CPU cores busy while draining: workers "
              + " / ".join(f"{c:.2f}" for c in r["worker_cores"]) + broker_cores
              + f"; {per_cpu:,.0f} points per worker CPU-second"
              + f"  (group settled in {r['settle_s']:.0f} s, produced in {r['produce_s']:.1f} s)")
    for p in sorted(raw):
        def fig(k: int) -> str:
            lo, hi = spread[p][k]
            return f"{raw[p][k]:,.0f} points/s" + (f" ({lo:,.0f}-{hi:,.0f})" if args.repeat > 1 else "")
        two = f", two processes on half the partitions each {fig(2)}" if 2 in raw[p] else ""
        print(f"   raw loop P={p}: one consumer {fig(1)}{two}")
    for (n, p), r in sorted(results.items()):
        for i, w in enumerate(r["workers"]):
            if w["points"] != w["expected"]:
                print(f"   WARNING {n}x{p} worker {i}: counted {w['points']:,.0f} points, its partitions "
                      f"hold {w['expected']:,} (a series crossed partitions?)")
        if r["rebalanced"]:
            print(f"   WARNING {n}x{p}: the assignment changed during the run (a rebalance is in the figure)")
    if any(q == 1 for _, q in cases):
        print("   N=2 on P=1 is not run: Faust assigns whole partitions, so the second worker would hold "
              "nothing and idle; more workers than input partitions add no throughput.")
    print(f"   ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
