"""`make load`: one worker under a steady input rate for a stated time, watching RSS and lag.

The input is the shipped scenarios' telemetry, batched as the Collector sends it and replayed
back to back with event time moved on each time, so the detectors and the correlator keep
working on fresh faults for the whole run. Every ``--sample`` seconds it records the worker's
RSS (from /proc) and its consumer lag and input points (from its `/metrics`), prints a line, and
at the end a summary: the rate achieved, RSS at the start of the second minute and at the end
and their slope, the largest lag and whether the worker kept up.

Exit status 1 when the worker could not keep up (lag still growing at the end) or died.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

from streams import simulate as sim
from streams.broker import EmbeddedBroker, ensure_topics
from streams.config import load_topology
from tests.bench.kafka_bench import _start_worker, _stop, _wait_assigned, batched
from tests.integration.harness import private_topology

REPO = Path(__file__).resolve().parents[2]
_TIME = re.compile(rb'"(timeUnixNano|startTimeUnixNano)":"(\d+)"')


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {"points": 0.0, "lag": 0.0, "snapshots": 0.0, "snapshot_s": 0.0}
    for line in text.splitlines():
        if line.startswith("aiops_input_points_total "):
            out["points"] = float(line.split()[1])
        elif line.startswith("aiops_consumer_lag{"):
            out["lag"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("aiops_checkpoints_written_total{"):
            out["snapshots"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("aiops_checkpoint_write_seconds_total{"):
            out["snapshot_s"] += float(line.rsplit(" ", 1)[1])
    return out


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _shift(message: bytes, offset_ns: int) -> bytes:
    return _TIME.sub(lambda m: b'"%s":"%d"' % (m.group(1), int(m.group(2)) + offset_ns), message)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=float(os.environ.get("LOAD_RATE", 10000)),
                    help="input data points per second (default 10000, or $LOAD_RATE)")
    ap.add_argument("--duration", type=float, default=float(os.environ.get("LOAD_SECONDS", 600)),
                    help="seconds to sustain it (default 600, or $LOAD_SECONDS)")
    ap.add_argument("--sample", type=float, default=15.0, help="seconds between samples (default 15)")
    args = ap.parse_args(argv)

    shop = load_topology(REPO / "topology.yaml")
    scenario = sim.simulate(shop, sim.load_scenarios(None))
    messages, times = batched(scenario.requests)
    per_msg = [sum(len((met.get("gauge") or met.get("sum") or met.get("histogram") or {}).get("dataPoints", []))
                   for rm in orjson.loads(m)["resourceMetrics"] for sm in rm.get("scopeMetrics", [])
                   for met in sm.get("metrics", [])) for m in messages]
    span_ns = int((times[-1] - times[0] + 10.0) * 1e9)
    msg_rate = args.rate / (sum(per_msg) / len(per_msg))
    print(f"load: {args.rate:,.0f} points/s = {msg_rate:.1f} messages/s of ~{sum(per_msg) / len(per_msg):,.0f} "
          f"points, for {args.duration:.0f} s", flush=True)

    from kafka import KafkaProducer

    with tempfile.TemporaryDirectory(prefix="aiops-load-") as d:
        tmp = Path(d)
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        broker = None if external else EmbeddedBroker(log_path=tmp / "tansu.log").start()
        bootstrap = external or broker.bootstrap
        topo_path = private_topology(tmp)
        topo = load_topology(topo_path)
        interval = topo.worker.checkpoint_interval.total_seconds()
        ensure_topics(bootstrap, topo.topics.all(), partitions=topo.topics.partitions)
        proc, port = _start_worker(topo_path, bootstrap, tmp)
        samples: list[tuple[float, float, float, float, int]] = []  # t, rss, lag, points, produced
        last_scrape: dict[str, float] = {"snapshots": 0.0, "snapshot_s": 0.0}
        ok = True
        try:
            _wait_assigned(port, topo.topics.metrics, proc)
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20)
            t0 = time.monotonic()
            next_sample = t0
            i = produced = 0
            print(f"{'t (s)':>7} {'RSS MiB':>8} {'lag msgs':>9} {'points/s':>9}", flush=True)
            while (now := time.monotonic()) - t0 < args.duration:
                if proc.poll() is not None:
                    print(f"worker died with exit code {proc.returncode}", flush=True)
                    ok = False
                    break
                due = int((now - t0) * msg_rate)
                while i < due:
                    rep, k = divmod(i, len(messages))
                    producer.send(topo.topics.metrics, _shift(messages[k], rep * span_ns))
                    produced += per_msg[k]
                    i += 1
                if now >= next_sample:
                    producer.flush()
                    m = _scrape(port)
                    last_scrape.update(m)
                    samples.append((now - t0, _rss_mib(proc.pid), m["lag"], m["points"], produced))
                    prev = samples[-2] if len(samples) > 1 else None
                    pps = (m["points"] - prev[3]) / (samples[-1][0] - prev[0]) if prev else 0.0
                    print(f"{now - t0:7.0f} {samples[-1][1]:8.0f} {m['lag']:9.0f} {pps:9,.0f}", flush=True)
                    next_sample += args.sample
                time.sleep(0.01)
            producer.flush()
            producer.close()
        finally:
            _stop(proc)
            if broker is not None:
                broker.stop()
    if len(samples) < 4:
        print("too few samples for a summary")
        return 1
    arr = np.array(samples)
    after_warm = arr[arr[:, 0] >= min(60.0, arr[-1, 0] / 2)]
    slope = np.polyfit(after_warm[:, 0], after_warm[:, 1], 1)[0] * 60 if len(after_warm) > 2 else float("nan")
    achieved = (arr[-1, 3] - arr[0, 3]) / (arr[-1, 0] - arr[0, 0])
    lag_tail = arr[-max(3, len(arr) // 5):, 2]
    growing = bool(lag_tail[-1] > lag_tail[0] + 2 * msg_rate * args.sample) and lag_tail[-1] > 5 * msg_rate
    print(f"\nsummary: input {args.rate:,.0f} points/s for {arr[-1, 0]:.0f} s; worker scored {achieved:,.0f} points/s")
    print(f"  RSS: {after_warm[0, 1]:.0f} MiB after warm-up, {arr[-1, 1]:.0f} MiB at the end, max {arr[:, 1].max():.0f} "
          f"MiB, slope {slope:+.2f} MiB/min")
    print(f"  lag: max {arr[:, 2].max():.0f} messages, last {arr[-1, 2]:.0f} "
          f"({'still growing: the worker did not keep up' if growing else 'bounded'})")
    print(f"  checkpoints (every {interval:.0f} s, 0 = off): "
          f"{last_scrape['snapshots']:.0f} snapshots written, {last_scrape['snapshot_s']:.1f} s in their child processes")
    return 0 if ok and not growing else 1


if __name__ == "__main__":
    sys.exit(main())
