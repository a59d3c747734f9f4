"""Both OTLP encodings end to end through Kafka, one worker, against a raw consume-and-decode loop.

What issue 16 asks of one worker, in each of the Collector's encodings (``otlp_json`` and
``otlp_proto``), on the same requests:

- **Metrics in realistic export batches**, 100 to 2,000 data points a message (the shipped
  scenarios' requests merged, sizes drawn per message): derived points/s of a real ``aiops
  worker`` process, read off its ``/metrics`` from its first processed point to its last, so
  start-up and the group join are not counted.
- **Baseline, same run, same messages:** a raw aiokafka loop that fetches the topic and parses
  every message with the format's own parser (``orjson.loads``; ``FromString`` of the protobuf
  class on upb) and does nothing else. ``worker / raw`` is the ratio the issue asks >= 0.8 of.
  Beside it, the Faust shell's floor: a Faust agent that is handed the same messages the
  worker's way (one event at a time) and does nothing with them (:mod:`tests.bench.faust_floor`).
- **Small messages** (the simulator's requests as they are: one service, one instant, a few
  points each, as a chatty exporter sends them): messages/s and points/s.
- **Logs at volume**: OTLP log batches (bodies of 100 to 500 bytes from 300 templates spread
  unevenly over the services, each logging its own, a third holding something the redaction
  rules catch: emails, IPs, tokens), template mining included; records/s against the same kind
  of raw loop. Beside it, the in-process stage figure on the bench's former log data (every
  service all 300 templates, see :func:`log_batches`), so a change of data is not taken for a
  change of speed.

Before Kafka, the same messages in process (decode only, the detect stage) against the parser
alone, for the figures without a broker. ``AIOPS_BENCH_KAFKA=0`` stops there (quick iteration);
``AIOPS_BENCH_REPS`` (default 3) sets how many back-to-back copies of the scenarios the metrics
figures use; ``AIOPS_BENCH_PARTS=small`` (a comma list of ``metrics``, ``small``, ``logs``) runs
only those parts, in process and end to end. Uses ``KAFKA_BOOTSTRAP_SERVERS`` when set, else the embedded tansu broker.
"""
from __future__ import annotations

import asyncio
import gc
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from streams import simulate as sim
from streams.app import RUN_BYTES, TAKE
from streams.broker import ensure_topics
from streams.config import load_topology
from streams.ingest import otlp_proto
from tests.bench.kafka_bench import _start_worker, _stop, bench_broker
from tests.integration.harness import private_topology, produce

REPO = Path(__file__).resolve().parents[2]
ENCODINGS = ("otlp_json", "otlp_proto")
PARSERS = {"otlp_json": lambda signal: orjson.loads,
           "otlp_proto": lambda signal: otlp_proto.REQUESTS[signal].FromString}


# --- data ------------------------------------------------------------------------------------

def _points(rm: dict) -> int:
    n = 0
    for sm in rm.get("scopeMetrics", []):
        for m in sm.get("metrics", []):
            data = m.get("gauge") or m.get("sum") or m.get("histogram") or {}
            n += len(data.get("dataPoints", []))
    return n


def export_batches(requests: list[dict], lo: int = 100, hi: int = 2000, seed: int = 16) -> list[dict]:
    """Consecutive requests merged into export requests of ``lo``..``hi`` data points each (a
    size drawn per message), as the Collector's batch processor sends them."""
    rng = random.Random(seed)
    out, current, n, target = [], [], 0, rng.randint(lo, hi)
    for r in requests:
        for rm in r["resourceMetrics"]:
            current.append(rm)
            n += _points(rm)
        if n >= target:
            out.append({"resourceMetrics": current})
            current, n, target = [], 0, rng.randint(lo, hi)
    if current:
        out.append({"resourceMetrics": current})
    return out


def scenario_requests(reps: int) -> list[dict]:
    """The shipped scenarios, ``reps`` back-to-back copies (event time moved on each time)."""
    shop = load_topology(REPO / "topology.yaml")
    requests: list[dict] = []
    start = 1_767_225_600.0
    for _ in range(reps):
        batch = sim.simulate(shop, sim.load_scenarios(None), start=start).requests
        requests += batch
        start = max(int(p["timeUnixNano"]) for r in batch[-50:] for rm in r["resourceMetrics"]
                    for sm in rm["scopeMetrics"] for m in sm["metrics"]
                    for p in (m.get("gauge") or m.get("sum") or m.get("histogram"))["dataPoints"]) / 1e9 + 10.0
    return requests


_TEMPLATE_WORDS = ["timeout", "acquiring", "connection", "from", "pool", "after", "ms", "request", "served",
                   "cache", "miss", "for", "key", "retrying", "upstream", "returned", "status", "user", "session",
                   "expired", "payment", "declined", "order", "shipped", "queue", "depth", "is", "high", "disk",
                   "usage", "at", "percent", "GET", "POST", "/api/v1/orders", "/api/v1/cart", "slow", "query"]
_PII = ["jane.doe@example.com", "10.0.3.17", "Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "ops@shop.example",
        "192.168.44.201"]


def log_batches(services: list[str], n_messages: int, per_message: int = 500, templates: int = 300,
                seed: int = 16, *, shared_templates: bool = False) -> list[dict]:
    """OTLP/JSON ``ExportLogsServiceRequest`` objects: ``per_message`` records each, over the
    services, bodies of 100..500 bytes drawn from ``templates`` templates (numbers and ids vary),
    a third of them holding something the default redaction catches.

    The templates are spread over the services, each service logging its own (as real services
    log their own code's lines), in uneven counts drawn with the seed (:func:`template_counts`).
    ``shared_templates=True`` gives the bench's former data, byte for byte: every service sends
    all the templates. That is no service's logs: the miner keeps at most 200 clusters per
    service, so with about 1,160 distinct masked lines per service two lines in three make a
    cluster and evict another, and its cache of answers almost never hits. It is kept so that
    the figure on the new data is printed beside the old data's, and a change of data is not
    read as a speed-up."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(templates):
        words = [rng.choice(_TEMPLATE_WORDS) for _ in range(rng.randint(12, 60))]
        shapes.append((words, rng.choice([9, 9, 9, 13, 17])))
    pools = {} if shared_templates else {s: [shapes[i] for i in own] for s, own in
                                         template_pools(services, templates, seed).items()}
    t = 1_767_225_600_000_000_000
    out = []
    for _ in range(n_messages):
        by_service: dict[str, list] = {}
        for _ in range(per_message):
            if shared_templates:
                words, sev = shapes[rng.randrange(templates)]
            else:
                service = rng.choice(services)
                pool = pools[service]
                words, sev = pool[rng.randrange(len(pool))]
            body = " ".join(words) + f" id={rng.randrange(10**6)} took {rng.randrange(5000)} ms"
            if rng.random() < 1 / 3:
                body += f" for {rng.choice(_PII)}"
            body = body[:500] if len(body) > 500 else body.ljust(100, ".")
            t += 2_000_000  # 500 records/s of event time
            if shared_templates:
                service = rng.choice(services)
            by_service.setdefault(service, []).append(
                {"timeUnixNano": str(t), "severityNumber": sev, "body": {"stringValue": body},
                 "attributes": [{"key": "host.name", "value": {"stringValue": f"host-{rng.randrange(4)}"}}]})
        out.append({"resourceLogs": [
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}}]},
             "scopeLogs": [{"scope": {"name": "bench"}, "logRecords": recs}]} for s, recs in by_service.items()]})
    return out


def template_pools(services: list[str], templates: int, seed: int = 16) -> dict[str, list[int]]:
    """The indices of the templates each service logs: a shuffle of them cut in
    :func:`template_counts` pieces. Its own generator, so the templates and the records' draws
    in :func:`log_batches` are those the seed gave before the templates were spread."""
    rng = random.Random(seed + 1)
    order = list(range(templates))
    rng.shuffle(order)
    pools, at = {}, 0
    for s, n in zip(services, template_counts(len(services), templates, rng)):
        pools[s] = order[at:at + n]
        at += n
    return pools


def template_counts(n_services: int, templates: int, rng: random.Random) -> list[int]:
    """How many of ``templates`` templates each of ``n_services`` services logs: at least one
    each, the rest drawn in proportion to a log-normal weight per service (a few chatty services
    with many templates, many with a few).

    >>> counts = template_counts(10, 300, random.Random(17))
    >>> sum(counts), min(counts) >= 1
    (300, True)
    """
    weights = [rng.lognormvariate(0.0, 0.8) for _ in range(n_services)]
    counts = [1] * n_services
    for i in rng.choices(range(n_services), weights, k=templates - n_services):
        counts[i] += 1
    return counts


def encode_all(objs: list[dict], signal: str) -> dict[str, list[bytes]]:
    return {"otlp_json": [orjson.dumps(o) for o in objs],
            "otlp_proto": [otlp_proto.encode(o, signal) for o in objs]}


# --- in process ------------------------------------------------------------------------------

def _best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def in_process(label: str, signal: str, encoded: dict[str, list[bytes]], topo,
               old_shape: dict[str, list[bytes]] | None = None) -> dict[str, int]:
    """Parser alone, decode, and the detect stage, per encoding; returns points per encoding.
    ``old_shape``: the same encodings of the former log data (see :func:`log_batches`), whose
    stage figure is printed beside the main one."""
    from streams.ingest import Redactor, decode_logs, decode_metrics
    from streams.pipeline import DetectStage

    known = frozenset(topo.services)
    redactor = Redactor.from_settings(topo.ingest.redaction)
    counts = {}
    old_stage.clear()
    for enc, msgs in encoded.items():
        parse = PARSERS[enc](signal)
        if signal == "metrics":
            decode = lambda m: decode_metrics(m, known_services=known, redactor=redactor).rows  # noqa: E731
        else:
            decode = lambda m: decode_logs(m, known_services=known, redactor=redactor)[0]  # noqa: E731
        n_items = sum(len(decode(m)) for m in msgs)

        def each(fn):
            for m in msgs:  # results dropped as they come, as a worker drops them: no GC pile-up
                fn(m)

        t_parse = _best_of(lambda: each(parse))
        t_decode = _best_of(lambda: each(decode))
        choices = ""
        if signal == "metrics" and enc == "otlp_proto":
            # The choices for protobuf, measured: the request read as its OTLP/JSON object by the
            # JSON decoder (the simplest path to the same output), against reading the upb
            # message directly (what ships), with and without the resource-head cache.
            from streams.ingest import Context, otlp

            def via_json(m):
                ctx = Context(known, frozenset(), redactor)
                otlp.decode(otlp_proto.load(m, "metrics"), ctx)

            class _NoStore(dict):
                def __setitem__(self, k, v):
                    pass

            t_via_json = _best_of(lambda: each(via_json))
            heads, otlp_proto._heads = otlp_proto._heads, _NoStore()
            try:
                t_no_heads = _best_of(lambda: each(decode))
            finally:
                otlp_proto._heads = heads
            choices = (f"     choices: via the OTLP/JSON object {n_items / t_via_json:,.0f} samples/s; upb fields "
                       f"directly, no head cache {n_items / t_no_heads:,.0f}; with it (shipped) {n_items / t_decode:,.0f}")
        DetectStage(topo).process(msgs[0]) if signal == "metrics" else None  # numba warm-up
        stage = DetectStage(topo)
        process = stage.process if signal == "metrics" else stage.process_logs
        t0 = time.perf_counter()
        points = sum(process(m).points for m in msgs)
        t_stage = time.perf_counter() - t0
        batched = ""
        if signal == "metrics":
            # As the worker scores a backlog: up to TAKE consecutive messages per engine call, a
            # call closed once it holds RUN_BYTES of payload.
            runs, run, size = [], [], 0
            for m in msgs:
                if run and (len(run) >= TAKE or size >= RUN_BYTES):
                    runs.append(run)
                    run, size = [], 0
                run.append(m)
                size += len(m)
            runs.append(run)
            stage = DetectStage(topo)
            t0 = time.perf_counter()
            for run in runs:
                stage.process_many(run)
            t_many = time.perf_counter() - t0
            batched = (f"     detect stage, {len(msgs) / len(runs):,.0f} messages a call (the worker's way): "
                       f"{points / t_many:,.0f} points/s, "
                       f"{len(msgs) / t_many:,.0f} msg/s ({t_stage / t_many:.2f}x one call each)")
        what = "samples" if signal == "metrics" else "records"
        mb = sum(map(len, msgs)) / 1e6
        print(f"   {label} {enc}: {len(msgs)} messages ({mb:.1f} MB), {n_items:,} {what}, {points:,} derived points")
        print(f"     parser alone:        {n_items / t_parse:>12,.0f} {what}/s")
        print(f"     decode to {what:8s}: {n_items / t_decode:>11,.0f} {what}/s  (parser / decode {t_parse / t_decode:.3f})")
        print(f"     detect stage:        {n_items / t_stage:>12,.0f} {what}/s, {points / t_stage:,.0f} points/s, "
              f"{len(msgs) / t_stage:,.0f} msg/s  (parser / stage {t_parse / t_stage:.3f})")
        if old_shape is not None:
            old_rate = logs_stage_rate(old_shape[enc], topo)
            old_stage[enc] = old_rate
            print(f"     detect stage, former data (all {LOG_TEMPLATES} templates in every service): "
                  f"{old_rate:,.0f} records/s  (other data: not a speed-up or a slow-down)")
        if batched:
            print(batched)
        if choices:
            print(choices)
        counts[enc] = points
    return counts


LOG_TEMPLATES = 300
old_stage: dict[str, float] = {}  # records/s of the detect stage on the former log data, per encoding


def logs_stage_rate(msgs: list[bytes], topo, per_message: int = 500) -> float:
    """Records/s of a fresh detect stage's log path over ``msgs`` of ``per_message`` records."""
    from streams.pipeline import DetectStage

    stage = DetectStage(topo)
    t0 = time.perf_counter()
    for m in msgs:
        stage.process_logs(m)
    return len(msgs) * per_message / (time.perf_counter() - t0)


# --- through the broker ----------------------------------------------------------------------

async def _raw_loop(bootstrap: str, topic: str, n: int, parse) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=16 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        seen, t0 = 0, None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for msgs in batch.values():
                for msg in msgs:
                    parse(msg.value)
                seen += len(msgs)
        return time.perf_counter() - (t0 or time.perf_counter())
    finally:
        await consumer.stop()


def _counter(port: int, pattern: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


def through_kafka(bootstrap: str, tmp: Path, topic_of, messages: list[bytes], parse, counter: str,
                  target: float) -> dict:
    """Produce ``messages``, time the raw loop over them, then one worker until ``counter`` (a
    regex with one number group, on the worker's /metrics) reaches ``target``. Seconds of each."""
    topo_path = private_topology(tmp)
    topo = load_topology(topo_path)
    topic = topic_of(topo.topics)
    ensure_topics(bootstrap, topo.topics.all(), partitions=topo.topics.partitions)
    produce(bootstrap, topic, messages)
    raw_s = asyncio.run(_raw_loop(bootstrap, topic, len(messages), parse))
    floor = _faust_floor(bootstrap, topic, len(messages))
    proc, port = _start_worker(topo_path, bootstrap, tmp)
    pattern = counter.replace("TOPIC", re.escape(topic))
    try:
        first = last = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; log in {tmp}")
            n = _counter(port, pattern)
            now = time.perf_counter()
            if n and first is None:
                first = (now, n)
            if n is not None and n >= target:
                last = (now, n)
                break
            time.sleep(0.05)
        if first is None or last is None:
            raise RuntimeError(f"the worker did not finish the messages in 900 s; log in {tmp}")
    finally:
        _stop(proc)
    return {"raw_s": raw_s, "worker_s": last[0] - first[0], "worker_done": last[1] - first[1], "floor": floor}


def _faust_floor(bootstrap: str, topic: str, n: int) -> float:
    """Messages/s a Faust agent that does nothing is handed (:mod:`tests.bench.faust_floor`)."""
    out = subprocess.run([sys.executable, "-m", "tests.bench.faust_floor", "--bootstrap", bootstrap, "--topic", topic,
                          "--messages", str(n)], cwd=REPO, capture_output=True, text=True, timeout=900)
    m = re.search(r"floor ([0-9.]+) ", out.stdout + out.stderr)  # Faust sends print() to its log
    if m is None:
        raise RuntimeError(f"faust_floor printed no figure: {out.stdout[-500:]} {out.stderr[-2000:]}")
    return float(m.group(1))


POINTS = r"^aiops_input_points_total ([0-9.e+]+)$"
MESSAGES = r'^aiops_input_messages_total\{topic="TOPIC"\} ([0-9.e+]+)$'


def main() -> None:
    reps = int(os.environ.get("AIOPS_BENCH_REPS", "3"))
    kafka = os.environ.get("AIOPS_BENCH_KAFKA", "1") != "0"
    # AIOPS_BENCH_PARTS=small (a comma list of metrics, small, logs): only those end to end.
    # The in-process figures are limited to those parts too when the variable is set.
    parts = set(os.environ.get("AIOPS_BENCH_PARTS", "metrics,small,logs").split(","))
    topo = load_topology(REPO / "topology.yaml")
    requests = scenario_requests(reps) if parts & {"metrics", "small"} else []
    batches = export_batches(requests)
    metrics = encode_all(batches, "metrics")
    small = encode_all(requests[: len(requests) // reps], "metrics")
    services = sorted(topo.services)
    # Main figure: each service its own templates. Beside it, the in-process stage figure on the
    # former data (every service all 300 templates; see log_batches), which is other data: the
    # two figures differ by data, not by code.
    logs = encode_all(log_batches(services, 200, templates=LOG_TEMPLATES), "logs") if "logs" in parts else {}
    logs_old = (encode_all(log_batches(services, 200, templates=LOG_TEMPLATES, shared_templates=True), "logs")
                if "logs" in parts else None)
    counts = [len(p) for p in template_pools(services, LOG_TEMPLATES).values()]
    sizes = sorted(_points({"scopeMetrics": [sm for rm in b["resourceMetrics"] for sm in rm["scopeMetrics"]]})
                   for b in batches) or [0]
    # The requests as Python objects are millions of tracked containers: out of the collector's
    # sight, or every full collection in the raw loop and the stage below walks them, which the
    # worker (holding none of them) never does. Measured: without this the JSON parser alone read
    # 4-5x slower, and the JSON raw loop through Kafka 2-3x (BENCHMARKS.md).
    gc.freeze()
    if batches:
        print(f"   metrics: {len(batches)} export batches of {sizes[0]}..{sizes[-1]} data points "
              f"(median {sizes[len(sizes) // 2]}); small: {len(small['otlp_json'])} requests")
    if logs:
        print(f"   logs: {len(logs['otlp_json'])} batches of 500 records, {LOG_TEMPLATES} templates spread over "
              f"{len(services)} services ({min(counts)}..{max(counts)} each: {counts})")
    print("   -- in process, no broker")
    points = in_process("metrics", "metrics", metrics, topo) if "metrics" in parts else {}
    small_points = in_process("small", "metrics", small, topo) if "small" in parts else {}
    if "logs" in parts:
        in_process("logs", "logs", logs, topo, old_shape=logs_old)
    if not kafka:
        return
    print("   -- one worker end to end through the broker (machine shared: compare ratios within this run)")
    # AIOPS_BENCH_ORDER=reverse runs protobuf first: on a shared machine, order alone can move a figure.
    order = ENCODINGS[::-1] if os.environ.get("AIOPS_BENCH_ORDER") == "reverse" else ENCODINGS
    with tempfile.TemporaryDirectory(prefix="aiops-otlpbench-") as d, bench_broker(Path(d)) as (bootstrap, _):
        for enc in order if "metrics" in parts else ():
            tmp = Path(d) / f"metrics-{enc}"
            tmp.mkdir()
            r = through_kafka(bootstrap, tmp, lambda t: t.metrics, metrics[enc], PARSERS[enc]("metrics"), POINTS,
                              points[enc])
            raw, worker = points[enc] / r["raw_s"], r["worker_done"] / r["worker_s"]
            floor = r["floor"] * points[enc] / len(metrics[enc])
            print(f"   metrics batches, {enc}: worker {worker:,.0f} points/s, raw consume+parse {raw:,.0f} points/s, "
                  f"worker / raw {worker / raw:.3f}; Faust agent doing nothing {floor:,.0f} points/s, "
                  f"worker / that {worker / floor:.3f}")
        for enc in order if "small" in parts else ():
            tmp = Path(d) / f"small-{enc}"
            tmp.mkdir()
            msgs = small[enc]
            r = through_kafka(bootstrap, tmp, lambda t: t.metrics, msgs, PARSERS[enc]("metrics"), MESSAGES, len(msgs))
            rate = r["worker_done"] / r["worker_s"]
            print(f"   small messages, {enc}: worker {rate:,.0f} msg/s, {rate * small_points[enc] / len(msgs):,.0f} "
                  f"points/s; raw consume+parse {len(msgs) / r['raw_s']:,.0f} msg/s, worker / raw "
                  f"{rate * r['raw_s'] / len(msgs):.3f}; Faust agent doing nothing {r['floor']:,.0f} msg/s, "
                  f"worker / that {rate / r['floor']:.3f}")
        for enc in order if "logs" in parts else ():
            tmp = Path(d) / f"logs-{enc}"
            tmp.mkdir()
            msgs = logs[enc]
            r = through_kafka(bootstrap, tmp, lambda t: t.logs, msgs, PARSERS[enc]("logs"), MESSAGES, len(msgs))
            rate = r["worker_done"] / r["worker_s"] * 500
            raw = len(msgs) * 500 / r["raw_s"]
            print(f"   logs, {enc}: worker {rate:,.0f} records/s (template mining included), raw consume+parse "
                  f"{raw:,.0f} records/s, worker / raw {rate / raw:.3f}; Faust agent doing nothing "
                  f"{r['floor'] * 500:,.0f} records/s; in process on the former data (all templates in every "
                  f"service) {old_stage.get(enc, 0):,.0f} records/s")


if __name__ == "__main__":
    main()
