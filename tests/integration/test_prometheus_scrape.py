"""Debian's Prometheus scrapes a real worker's /metrics on loopback.

A worker on the test broker reads telemetry; ``prometheus`` (the Debian package, installed by
``.ci/run``) scrapes it every second with a temporary config and storage; its HTTP API must then
answer with what the worker did: the points it scored, their scores, and a consumer lag that
drains to zero."""
from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import orjson
import pytest

from streams.config import load_topology
from tests.integration.harness import free_port, private_topology, produce, worker_process

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed "
                                                   "(apt-get install prometheus; .ci/run installs it when root)"),
]

T0 = 1_767_225_600.0
BATCHES = 40  # one point each


def get(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError):
        return None


def wait_for(what: str, check, deadline: float, procs=()):
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args[0]} exited with {p.returncode} while waiting for {what}")
        got = check()
        if got is not None:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def query(api: str, promql: str) -> list[dict] | None:
    body = get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if body is None:
        return None
    doc = orjson.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def value(api: str, promql: str, want) -> float | None:
    """The single value of ``promql`` once ``want(value)`` holds, else None (not yet)."""
    result = query(api, promql)
    if not result:
        return None
    assert len(result) == 1, result
    v = float(result[0]["value"][1])
    return v if want(v) else None


def test_prometheus_scrapes_the_worker(kafka_bootstrap, tmp_path):
    started = time.monotonic()
    deadline = started + 55
    topo_path = private_topology(tmp_path)
    topo = load_topology(topo_path)
    batches = [orjson.dumps({"schema_version": 1, "service": "checkout",
                             "points": [["process.cpu.utilization", T0 + 10 * i, 0.3 + 0.01 * (i % 4)]]})
               for i in range(BATCHES)]

    with worker_process(topo_path, kafka_bootstrap, tmp_path) as worker:
        web_port = int(worker.args[worker.args.index("--web-port") + 1])
        wait_for("the worker's /metrics", lambda: get(f"http://127.0.0.1:{web_port}/metrics"), deadline, [worker])

        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: aiops-test
    static_configs:
      - targets: ["127.0.0.1:{web_port}"]
""")
        log = open(tmp_path / "prometheus.log", "wb")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                stdout=log, stderr=subprocess.STDOUT)
        api = f"http://127.0.0.1:{prom_port}"
        try:
            wait_for("the worker's target to be up", lambda: value(api, 'up{job="aiops-test"}', lambda v: v == 1),
                     deadline, [worker, prom])
            produce(kafka_bootstrap, topo.topics.metrics, batches)

            points = wait_for("every point in a scrape", lambda: value(
                api, 'aiops_input_points_total{job="aiops-test"}', lambda v: v == BATCHES), deadline, [worker, prom])
            assert points == BATCHES
            messages = value(api, f'aiops_input_messages_total{{topic="{topo.topics.metrics}"}}', lambda v: True)
            assert messages == BATCHES
            scored = wait_for("the score histogram", lambda: value(
                api, 'aiops_anomaly_score_count{source="metrics"}', lambda v: v == BATCHES), deadline, [worker, prom])
            assert scored == BATCHES
            # A steady series: nothing anomalous, every score well under the 0.9 threshold.
            below = value(api, 'aiops_anomaly_score_bucket{source="metrics",le="0.9"}', lambda v: True)
            assert below == BATCHES
            # The lag timer sees the topic's partitions; once the offsets are committed they drain to zero.
            lag = wait_for("the metrics topic's lag to drain", lambda: value(
                api, f'sum(aiops_consumer_lag{{topic="{topo.topics.metrics}"}})', lambda v: v == 0),
                deadline, [worker, prom])
            assert lag == 0
            parts = query(api, f'aiops_consumer_lag{{topic="{topo.topics.metrics}"}}')
            assert sorted(int(r["metric"]["partition"]) for r in parts) == list(range(topo.topics.partitions))
        finally:
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            log.close()
    assert time.monotonic() - started < 60
