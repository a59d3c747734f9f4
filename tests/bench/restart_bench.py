"""Restart after kill -9 against retention: a real `aiops worker` with the shipped defaults.

For each retention (1x, 4x, 12x of 2,160 retained messages, one simulator request each, as
the issue measured) a worker reads the history, then keeps up with live telemetry produced
at a steady rate. Once it has written a snapshot that covers the history (checkpoints on), and
half an interval later, it is killed with SIGKILL and a new worker is started on the same data
directory, the producer carrying on. **Restart time** is from the kill to the first heartbeat
on aiops.alerts for telemetry produced after the new worker started: session timeout, rejoin,
restore, replay of the uncommitted input and the backlog all included.

Baseline, same run: the same with checkpoints off (``worker.checkpoint_interval: 0``), which
rebuilds every shard from the partition's first offset, as before checkpoints.

``AIOPS_BENCH_RESTART`` picks the runs, e.g. ``1,12`` or ``1,4,12,off1,off12`` (the default);
``elsewhereN`` starts the new worker on an empty data directory (another node: it restores from
the checkpoint topic, and cannot remove the dead member, so the join waits out its session).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson

from detectors.records import parse_rfc3339
from streams import simulate as sim
from streams.broker import ensure_topics
from streams.config import load_topology
from tests.bench.kafka_bench import _start_worker, _stop, bench_broker
from tests.integration.harness import private_topology, produce

REPO = Path(__file__).resolve().parents[2]
RETAINED_1X = 2160
LIVE_RATE = 20.0  # messages/s while the worker runs


def stream(n: int) -> list[tuple[bytes, float]]:
    """``n`` single-request messages of the shipped scenarios, back to back: (payload, event time)."""
    shop = load_topology(REPO / "topology.yaml")
    out: list[tuple[bytes, float]] = []
    start = 1_767_225_600.0
    while len(out) < n:
        reqs = sim.simulate(shop, sim.load_scenarios(None), start=start).requests
        for r in reqs:
            t = max(int(p["timeUnixNano"]) for rm in r["resourceMetrics"] for sm in rm["scopeMetrics"]
                    for m in sm["metrics"] for p in (m.get("gauge") or m.get("sum") or {}).get("dataPoints", []))
            out.append((orjson.dumps(r), t / 1e9))
        start = out[-1][1] + 10.0
    return out[:n]


def scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


def counter(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def rss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else 0.0


class Live:
    """Produce ``messages`` at ``rate`` in a thread; remember when each was sent."""

    def __init__(self, bootstrap: str, topic: str, messages: list[tuple[bytes, float]], rate: float):
        self.sent: list[tuple[float, float]] = []  # (wall time, event time)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(bootstrap, topic, messages, rate), daemon=True)
        self._thread.start()

    def _run(self, bootstrap, topic, messages, rate) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
        t0 = time.time()
        for i, (payload, t) in enumerate(messages):
            if self._stop.is_set():
                break
            delay = t0 + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            producer.send(topic, payload)
            producer.flush()
            self.sent.append((time.time(), t))
        producer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Heartbeats:
    """Metrics heartbeats on aiops.alerts as they arrive: (wall time, event time)."""

    def __init__(self, bootstrap: str, topic: str):
        self.seen: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run(bootstrap, topic)), daemon=True)
        self._thread.start()

    async def _run(self, bootstrap, topic) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            while not self._stop.is_set():
                for msgs in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.time()
                    for m in msgs:
                        d = orjson.loads(m.value)
                        if d.get("type") == "heartbeat" and d.get("source") == "detector":
                            self.seen.append((now, parse_rfc3339(d["at"])))
        finally:
            await consumer.stop()

    def first_after(self, wall: float, event_time: float) -> float | None:
        return next((w for w, t in list(self.seen) if w >= wall and t > event_time), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def restart_once(bootstrap: str, tmp: Path, factor: int, checkpoints: bool, messages: list[tuple[bytes, float]],
                 elsewhere: bool = False) -> dict:
    """``elsewhere``: the new worker starts on an empty data directory, as on another node: no
    local snapshot, and no record of the dead member to remove from the group."""
    overrides = {} if checkpoints else {"worker": {"checkpoint_interval": "0s"}}
    topo_path = private_topology(tmp, **overrides)
    if not checkpoints:  # private_topology replaced worker: keep the group id it set
        import yaml

        doc = yaml.safe_load(topo_path.read_text())
        doc["worker"] = {"group_id": doc["topics"]["metrics"].split(".")[0], "checkpoint_interval": "0s"}
        topo_path.write_text(yaml.safe_dump(doc))
    topo = load_topology(topo_path)
    interval = topo.worker.checkpoint_interval.total_seconds()
    ensure_topics(bootstrap, topo.topics.all(), partitions=topo.topics.partitions)
    history = RETAINED_1X * factor
    produce(bootstrap, topo.topics.metrics, [p for p, _ in messages[:history]])
    beats = Heartbeats(bootstrap, topo.topics.alerts)
    first, port = _start_worker(topo_path, bootstrap, tmp)
    live = Live(bootstrap, topo.topics.metrics, messages[history:], LIVE_RATE)
    second = None
    try:
        # Caught up: a heartbeat for live telemetry.
        deadline = time.time() + 900
        while not live.sent or beats.first_after(0, live.sent[0][1]) is None:
            if time.time() > deadline or first.poll() is not None:
                raise RuntimeError(f"the first worker did not catch up; log in {tmp}")
            time.sleep(0.2)
        caught_up = time.time()
        rss_first = rss_mib(first.pid)
        if checkpoints:  # a snapshot of both shards written after the catch-up, then half an interval
            before = counter(scrape(port), "aiops_checkpoints_written_total")
            while counter(scrape(port), "aiops_checkpoints_written_total") < before + 2:
                if time.time() > caught_up + 4 * interval + 60:
                    raise RuntimeError(f"no snapshot written within {4 * interval + 60:.0f} s; log in {tmp}")
                time.sleep(0.2)
            time.sleep(interval / 2)
        else:
            time.sleep(15)
        first.send_signal(signal.SIGKILL)
        killed = time.time()
        first.wait()
        second_dir = tmp / "elsewhere" if elsewhere else tmp
        second_dir.mkdir(exist_ok=True)
        second, port2 = _start_worker(topo_path, bootstrap, second_dir)
        started = time.time()
        last_before = max((t for w, t in list(live.sent) if w < started), default=0.0)
        while (at := beats.first_after(started, last_before)) is None:
            if time.time() > killed + 600 or second.poll() is not None:
                raise RuntimeError(f"the restarted worker did not process new telemetry; log in {tmp}")
            time.sleep(0.05)
        text = scrape(port2)
        restored = {src: counter(text, "aiops_checkpoint_restores_total", source=src) for src in ("local", "kafka", "none")}
    finally:
        live.stop()
        beats.stop()
        if first.poll() is None:
            first.kill()
        if second is not None:
            _stop(second)
    log = (second_dir / f"worker-{topo_path.stem}.log").read_text(errors="replace")
    replayed = [int(n) for n in re.findall(r"then (\d+) messages replayed", log)]
    print(f"   (killed at {time.strftime('%H:%M:%S', time.localtime(killed))}.{int(killed % 1 * 1000):03d}, "
          f"new telemetry out at +{at - killed:.1f} s)", flush=True)
    return {"restart_s": at - killed, "history": history, "restored": restored, "replayed": replayed,
            "rss_first_mib": rss_first}


def main() -> None:
    runs = os.environ.get("AIOPS_BENCH_RESTART", "1,4,12,off1,off12").split(",")
    factors = [int(r.removeprefix("off").removeprefix("elsewhere")) for r in runs]
    messages = stream(RETAINED_1X * max(factors) + int(LIVE_RATE * 600))
    results = {}
    keep = os.environ.get("AIOPS_BENCH_KEEP")
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="aiops-rbench-")) as d, bench_broker(Path(d)) as (bootstrap, _):
        for run in runs:
            elsewhere = run.startswith("elsewhere")
            factor, on = int(run.removeprefix("off").removeprefix("elsewhere")), not run.startswith("off")
            tmp = Path(d) / run
            tmp.mkdir()
            r = restart_once(bootstrap, tmp, factor, on, messages, elsewhere)
            results[run] = r
            where = ", on another node" if elsewhere else ""
            print(f"   {factor:>2}x history ({r['history']:,} messages), checkpoints {'on ' if on else 'off'}{where}: "
                  f"restart {r['restart_s']:.1f} s; shards from {', '.join(f'{k} {v:.0f}' for k, v in r['restored'].items() if v)}; "
                  f"replayed {r['replayed']} messages", flush=True)
    on = {int(k): v["restart_s"] for k, v in results.items() if k.isdigit()}
    if len(on) > 1:
        lo, hi = min(on), max(on)
        print(f"   restart {hi}x / {lo}x history, checkpoints on: {on[hi] / on[lo]:.2f}")
    for k, v in results.items():
        if k.startswith("off") and int(k[3:]) in on:
            print(f"   restart with / without checkpoints at {k[3:]}x: {on[int(k[3:])] / v['restart_s']:.2f}")


if __name__ == "__main__":
    main()
