"""An Alertmanager webhook POSTed to a running worker on a real broker: 401 without a token,
202 with one, and an incident naming the alert's service on aiops.incidents. Then a new worker:
it rebuilds its state from the topics, so Alertmanager's resolution resolves that same incident
(no second one). A graceful restart keeps this test short; test_restart.py covers kill -9."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import yaml

from detectors.records import parse_rfc3339
from streams.broker import ensure_topics
from streams.config import load_topology
from tests.integration.harness import REPO, consume_until, free_port, private_topology, produce

TOKEN = "integration-token-5f0c1e2d3a4b"
T0 = "2026-01-01T02:00:00Z"


def post(url: str, body: bytes, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def wait_for_web(base: str, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("the worker's web server did not come up")


def start_worker(path, bootstrap: str, port: int, tmp_path, name: str):
    log = open(tmp_path / f"{name}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--topology", str(path), "--bootstrap", bootstrap,
         "--web-port", str(port), "--data-dir", str(tmp_path / f"data-{name}")],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "AIOPS_HTTP_TOKENS": f"alertmanager={TOKEN}"})
    proc.log_file = log  # type: ignore[attr-defined]
    return proc


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log_file.close()


def am_payload(status: str) -> bytes:
    return orjson.dumps({
        "version": "4", "groupKey": '{}:{alertname="PoolExhausted"}', "truncatedAlerts": 0, "status": status,
        "receiver": "aiops", "groupLabels": {"alertname": "PoolExhausted"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am:9093", "alerts": [{
            "status": status, "labels": {"alertname": "PoolExhausted", "service": "orders-db", "severity": "critical"},
            "annotations": {"summary": "connection pool exhausted"}, "startsAt": T0,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T02:06:00Z",
            "generatorURL": "http://prom:9090/graph", "fingerprint": "a1b2c3d4e5f60718"}]})


def telemetry_at(t: float) -> bytes:
    return orjson.dumps({"schema_version": 1, "service": "checkout", "points": [["process.cpu.utilization", t, 0.4]]})


def post_until_stored(url: str, body: bytes) -> tuple[int, dict]:
    deadline = time.monotonic() + 30
    while True:  # 503 only while the producer is still starting: the sender retries
        code, answer = post(url, body, token=TOKEN)
        if code != 503 or time.monotonic() > deadline:
            return code, answer
        time.sleep(0.5)


def test_alertmanager_webhook_to_incident(kafka_bootstrap, tmp_path):
    # Short consumer-group timings: the second worker's join does not wait long for the first's session.
    path = private_topology(tmp_path, worker={"rebalance_timeout": "3s", "session_timeout": "6s",
                                              "heartbeat_interval": "1s", "commit_interval": "1s"})
    doc = yaml.safe_load(path.read_text())
    prefix = doc["topics"]["alerts"].split(".")[0]
    doc["topics"].update({f"alerts_{s}": f"{prefix}.alerts.{s}" for s in ("alertmanager", "datadog", "newrelic")})
    path.write_text(yaml.safe_dump(doc))
    topo = load_topology(path)
    ensure_topics(kafka_bootstrap, topo.topics.all(), partitions=topo.topics.partitions)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    payload = am_payload("firing")
    t0 = parse_rfc3339(T0)
    proc = start_worker(path, kafka_bootstrap, port, tmp_path, "first")
    try:
        wait_for_web(base, proc)
        code, body = post(f"{base}/ingest/alertmanager", payload)
        assert code == 401 and "bearer token" in body["error"]
        code, body = post(f"{base}/ingest/alertmanager", payload, token="wrong-token-of-the-right-size")
        assert code == 401
        code, body = post(f"{base}/ingest/alertmanager", b'{"version": "4", "alerts": "x"}', token=TOKEN)
        assert (code, body) == (400, {"error": "alerts: expected a list (got str)"})
        code, body = post_until_stored(f"{base}/ingest/alertmanager", payload)
        assert (code, body["accepted"], body["by"]) == (202, 1, "alertmanager"), body
        # Accepted means on the topic, as POSTed.
        raw = consume_until(kafka_bootstrap, topo.topics.alerts_alertmanager, lambda r: len(r) >= 1, timeout=20,
                            proc=proc)
        assert raw == [orjson.loads(payload)]
        consume_until(kafka_bootstrap, topo.topics.alerts,
                      lambda r: any(x.get("source") == "alertmanager" for x in r), timeout=30, proc=proc)
        # Telemetry a few minutes later moves event time past group_wait, as it would in production.
        produce(kafka_bootstrap, topo.topics.metrics, [telemetry_at(t0 + 300)])
        opened = consume_until(kafka_bootstrap, topo.topics.incidents, lambda r: len(r) >= 1, timeout=30, proc=proc)
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:  # open: read-only
            metrics = resp.read().decode()
    finally:
        stop(proc)
    assert [(i["status"], i["services"], i["severity"]) for i in opened] == [("open", ["orders-db"], "critical")]
    assert opened[0]["root_causes"][0]["service"] == "orders-db"
    assert 'aiops_http_unauthorized_total{path="/ingest/alertmanager"} 2.0' in metrics
    assert 'aiops_http_accepted_total{path="/ingest/alertmanager"} 1.0' in metrics
    assert 'aiops_external_alerts_total{source="alertmanager",status="firing"} 1.0' in metrics

    proc = start_worker(path, kafka_bootstrap, port, tmp_path, "second")
    try:
        wait_for_web(base, proc)
        code, body = post_until_stored(f"{base}/ingest/alertmanager", am_payload("resolved"))
        assert code == 202, body
        produce(kafka_bootstrap, topo.topics.metrics, [telemetry_at(t0 + 720)])  # past resolve_after (5m)
        records = consume_until(kafka_bootstrap, topo.topics.incidents,
                                lambda r: any(i["status"] == "resolved" for i in r), timeout=60, proc=proc)
    finally:
        stop(proc)
    # The restarted worker knew the incident: the resolution closed it, and nothing opened twice.
    assert {i["id"] for i in records} == {opened[0]["id"]}
    # At least once: a version may come twice, but never with two different contents.
    assert len({(i["version"], orjson.dumps(i)) for i in records}) == len({i["version"] for i in records})
    assert records[-1]["status"] == "resolved" and records[-1]["alerts"]["firing"] == 0
    for name in ("first", "second"):
        assert TOKEN not in (tmp_path / f"{name}.log").read_text(errors="replace")
