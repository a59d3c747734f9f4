"""Detector speed and memory: the default detector vs River HalfSpaceTrees, per core.

Run: ``.venv/bin/python -m tests.bench.detector_bench [--series N] [--steps K] [--rss-series M]``.

- throughput: the same stream (``series`` series, one point each per step, a batch per step) goes
  through ``RobustDetector.score_learn`` in batches and, in the same run, through River
  ``HalfSpaceTrees`` ``score_one`` + ``learn_one`` (one model per series, as the adapter does) on
  its first ``river_points`` points;
- memory: state bytes per series (detector row + engine alert state);
- RSS: a child process registers ``rss_series`` series in a ``DetectionEngine`` (one batch of points
  each) and reports its peak resident set size.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np


def stream(series: int, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    level = rng.uniform(1, 100, series)
    for k in range(steps):
        idx = np.arange(series, dtype=np.int64)
        t = np.full(series, 1.7e9 + 60.0 * k)
        x = level + rng.standard_normal(series)
        yield idx, t, x


def robust_rate(series: int, steps: int) -> tuple[float, int]:
    from detectors.robust import RobustDetector

    d = RobustDetector()
    d.grow(series)
    n = 0
    warm_up()  # the loop is compiled (or loaded from numba's cache) once per process: not per point
    start = time.process_time()
    for idx, t, x in stream(series, steps):
        d.score_learn(idx, t, x)
        n += len(idx)
    return n / (time.process_time() - start), n


def warm_up() -> float:
    """Seconds the first call of the compiled detector loop takes in this process."""
    from detectors.robust import RobustDetector

    t0 = time.perf_counter()
    RobustDetector().score_learn(np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros(1))
    return time.perf_counter() - t0


def river_rate(series: int, steps: int, max_points: int) -> tuple[float, int]:
    from river import anomaly

    models = [anomaly.HalfSpaceTrees(seed=42) for _ in range(series)]
    n = 0
    start = time.process_time()
    for idx, t, x in stream(series, steps):
        for i, v in zip(idx.tolist(), x.tolist()):
            m = models[i]
            m.score_one({"x": v / 100.0})
            m.learn_one({"x": v / 100.0})
            n += 1
            if n >= max_points:
                return n / (time.process_time() - start), n
    return n / (time.process_time() - start), n


def memory_per_series() -> dict:
    from detectors.config import DetectorSettings
    from detectors.engine import DetectionEngine
    from detectors.records import Point, SeriesKey
    from detectors.robust import RobustDetector

    d = RobustDetector()
    eng = DetectionEngine(DetectorSettings())
    n = 4096
    eng.process([Point(SeriesKey("svc", "m", (("i", str(i)),)), 1.0, 1.0) for i in range(n)])
    return {"detector_row_bytes": d.bytes_per_series, "engine_state_bytes_per_series": eng.nbytes() / n}


def rss_child(n_series: int) -> None:
    from detectors.config import DetectorSettings
    from detectors.engine import DetectionEngine
    from detectors.records import Point, SeriesKey

    eng = DetectionEngine(DetectorSettings())
    chunk = 100_000
    for step in range(2):
        for lo in range(0, n_series, chunk):
            eng.process([Point(SeriesKey(f"svc-{i % 1000}", "http.server.request.duration.p95",
                                         (("host.name", f"node-{i}"),)), 1.7e9 + 60 * step, 1.0)
                         for i in range(lo, min(lo + chunk, n_series))])
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec.
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    rss = hwm * 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{eng.series_count()} {eng.nbytes()} {rss}")


def rss_for(n_series: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "tests.bench.detector_bench", "--rss-child", str(n_series)],
                         check=True, capture_output=True, text=True).stdout.split()
    count, state, rss = map(int, out)
    return {"series": count, "state_bytes": state, "peak_rss_bytes": rss}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--river-points", type=int, default=50_000)
    ap.add_argument("--rss-series", type=int, default=1_000_000)
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.rss_child:
        rss_child(a.rss_child)
        return {}
    results: dict = rss_for(a.rss_series)  # first, while this process is small
    results["first_call_s"] = warm_up()
    rate, n = robust_rate(a.series, a.steps)
    results["robust_points_per_s"] = rate
    for batch in (10, 1_000, 10_000, 100_000):
        r, _ = robust_rate(batch, max(3, 300_000 // batch))
        results[f"robust_points_per_s_batch_{batch}"] = r
    rrate, rn = river_rate(a.series, a.steps, a.river_points)
    results["river_hst_points_per_s"] = rrate
    results["speedup"] = rate / rrate
    results.update(memory_per_series())
    print(f"first call of the compiled detector loop in a process (numba: compile or cache load): "
          f"{results['first_call_s']:.2f} s")
    print(f"default detector (robust): {rate:,.0f} points/s per core over {n:,} points "
          f"({a.series:,} series, batches of {a.series:,})")
    for batch in (10, 1_000, 10_000, 100_000):
        print(f"  batches of {batch:>7,}: {results[f'robust_points_per_s_batch_{batch}']:,.0f} points/s")
    print(f"River HalfSpaceTrees score_one+learn_one: {rrate:,.0f} points/s over {rn:,} of the same points")
    print(f"speed-up on the same points: {results['speedup']:.0f}x")
    print(f"memory per series: detector row {results['detector_row_bytes']} B, "
          f"detector + engine state {results['engine_state_bytes_per_series']:.0f} B (arrays grow geometrically)")
    print(f"{results['series']:,} series: state arrays {results['state_bytes'] / 2**20:.0f} MiB, "
          f"peak RSS {results['peak_rss_bytes'] / 2**30:.2f} GiB")
    return results


if __name__ == "__main__":
    main()
