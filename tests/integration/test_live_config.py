"""Live config on a real broker: a pushed topology reaches a running worker without a restart,
an invalid one is refused while the worker keeps its config, and the CLI refuses an invalid
file before anything is sent."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

import yaml

from detectors.records import Alert, Heartbeat
from streams import codec
from streams.config import load_topology

from tests.integration.harness import REPO, consume_until, private_topology, produce, worker_process

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, event time


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_metric(proc, pattern: str, timeout: float = 60.0) -> str:
    """The /metrics text once ``pattern`` (a regex) matches it."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited with {proc.returncode}"
        try:
            text = metrics(proc.web_port)
        except OSError:
            text = ""
        if re.search(pattern, text, re.M):
            return text
        time.sleep(0.3)
    found = "\n".join(line for line in text.splitlines() if line.startswith("aiops_config"))
    raise AssertionError(f"/metrics never matched {pattern!r}; aiops_config lines:\n{found}")


def alert(service: str, t: float, metric: str = "system.filesystem.utilization") -> bytes:
    series = f"{service}/{metric}"
    return codec.encode_alert_event(Alert(
        fingerprint="fp-" + series, status="firing", service=service, metric=metric,
        series=series, labels=(), score=0.99, value=0.97, expected=0.5, starts_at=t, at=t, severity="critical"))


def push(path, bootstrap: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", "config", "push", str(path), "--bootstrap", bootstrap,
                           "--by", "alice"], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_a_pushed_config_applies_live_and_an_invalid_one_is_refused(kafka_bootstrap, tmp_path):
    path = private_topology(tmp_path)
    topics = load_topology(path).topics
    file_sha = codec.config_sha256(path.read_text())
    with worker_process(path, kafka_bootstrap, tmp_path) as proc:
        wait_metric(proc, rf'^aiops_config_info{{sha256="{file_sha}",source="file"}} 1\.0$')

        # An incident on log-host under the file's config: its ticket goes to team-platform. It opens
        # at P3, so it pages, and its ticket opens, once correlation.notify.hold (3 m) has passed.
        produce(kafka_bootstrap, topics.alerts, [alert("log-host", T0), codec.encode_alert_event(Heartbeat(at=T0 + 60)),
                                                 codec.encode_alert_event(Heartbeat(at=T0 + 250))], key=b"log-host")
        tickets = consume_until(kafka_bootstrap, topics.tickets, lambda rs: len(rs) >= 1, timeout=60, proc=proc)
        assert [(t["event"], t["team"], t["assignee"]) for t in tickets] == [("create", "team-platform", None)]

        # The operator gives log-host to team-db and pushes the file: no restart.
        doc = yaml.safe_load(path.read_text())
        doc["services"]["log-host"]["owner"] = "team-db"
        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump(doc))
        done = push(changed, kafka_bootstrap)
        assert done.returncode == 0, done.stderr
        new_sha = codec.config_sha256(changed.read_text())
        assert f"sha256 {new_sha[:12]}, by alice" in done.stdout
        text = wait_metric(proc, rf'^aiops_config_info{{sha256="{new_sha}",source="topic"}} 1\.0$')
        assert re.search(r"^aiops_config_applied_total 1\.0$", text, re.M)
        assert file_sha not in text  # one active config only

        # The next incident's ticket follows the new owner (another series, two hours later: a new incident).
        t1 = T0 + 7200
        produce(kafka_bootstrap, topics.alerts, [alert("log-host", t1, "system.cpu.utilization"),
                                                 codec.encode_alert_event(Heartbeat(at=t1 + 60)),
                                                 codec.encode_alert_event(Heartbeat(at=t1 + 250))], key=b"log-host")
        tickets = consume_until(kafka_bootstrap, topics.tickets,
                                lambda rs: any(t["event"] == "create" and t["team"] == "team-db" for t in rs),
                                timeout=60, proc=proc)
        created = [(t["team"], t["assignee"]) for t in tickets if t["event"] == "create"]
        assert created == [("team-platform", None), ("team-db", "db-oncall")]

        # An invalid config produced straight to the topic (no CLI to stop it): refused, logged, kept.
        bad = yaml.safe_load(changed.read_text())
        bad["correlation"]["group_wiat"] = "10s"
        produce(kafka_bootstrap, topics.config, [codec.encode_config(yaml.safe_dump(bad), "mallory", time.time())],
                key=codec.CONFIG_KEY.encode())
        text = wait_metric(proc, r'^aiops_config_rejected_total{reason="invalid"} 1\.0$')
        assert re.search(rf'^aiops_config_info{{sha256="{new_sha}",source="topic"}} 1\.0$', text, re.M)
        assert re.search(r"^aiops_config_applied_total 1\.0$", text, re.M)

        # A valid file that changes a restart-only setting: the CLI sends it, every worker refuses it.
        restart = yaml.safe_load(changed.read_text())
        restart["worker"]["commit_interval"] = "5s"
        restart_path = tmp_path / "restart.yaml"
        restart_path.write_text(yaml.safe_dump(restart))
        assert push(restart_path, kafka_bootstrap).returncode == 0
        text = wait_metric(proc, r'^aiops_config_rejected_total{reason="needs_restart"} 1\.0$')
        assert re.search(rf'^aiops_config_info{{sha256="{new_sha}",source="topic"}} 1\.0$', text, re.M)

        # The CLI refuses an invalid file itself: exit 2, the problem with its path, nothing sent.
        invalid = tmp_path / "invalid.yaml"
        invalid.write_text(yaml.safe_dump(bad))
        refused = push(invalid, kafka_bootstrap)
        assert refused.returncode == 2
        assert refused.stderr == f"{invalid}: 1 problem\n  correlation.group_wiat: unknown key 'group_wiat'\n"
        time.sleep(1.0)  # had it sent anything, it would be there by now
        records = consume_until(kafka_bootstrap, topics.config, lambda rs: len(rs) >= 3, timeout=20)
        assert [r["by"] for r in records] == ["alice", "mallory", "alice"]
        assert proc.poll() is None
    log = proc.log_text
    assert "config refused; the running config stays" in log
    assert "correlation.group_wiat: unknown key 'group_wiat'" in log
    assert "worker.commit_interval: needs a restart (running 1s, pushed 5s)" in log
