"""streams.executors: guard rails per action kind, real processes and a loopback HTTP server, and the
ledger's at-most-once promise across a crash. No broker (tests/integration has that)."""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from remediators.executor_config import ExecutorSettings
from remediators.records import Action
from streams.codec import encode_action
from streams.executors import (ExecutionLedger, Executor, LedgerError, Refused, decode_action, exec_argv,
                               http_request, kafka_command, kubernetes_argv, script_path)

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


def action(kind: str = "exec", target: str = "runbooks/compress-old-logs.sh", mode: str = "execute",
           decision: str = "planned", **params: str) -> Action:
    if not params and kind == "exec":
        params = {"host": "db-1", "args": "/var/log"}
    return Action(id=f"act-{kind}-1", incident_id="inc-1", incident_version=1, policy="p", step=0, kind=kind,
                  target=target, params=tuple(sorted(params.items())), mode=mode, decision=decision,
                  reason="matched", at=T0)


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.fixture()
def runbooks(tmp_path) -> Path:
    """A runbooks dir whose compress-old-logs.sh appends its argv (one line per run) to argv.log."""
    d = tmp_path / "runbooks"
    d.mkdir()
    write_script(d / "compress-old-logs.sh", """\
        out="$(dirname "$0")/argv.log"
        printf '%s' "$1" >> "$out"; shift
        for a in "$@"; do printf ' %s' "$a" >> "$out"; done
        echo >> "$out"
        echo "compressed 3 files"
        """)
    write_script(d / "fail.sh", "echo boom >&2; exit 3\n")
    write_script(d / "slow.sh", "sleep 30\n")
    write_script(d / "env.sh", "env\n")
    (d / "not-executable.sh").write_text("#!/bin/sh\n")
    return d


def settings(runbooks: Path | str = "runbooks", **kw) -> ExecutorSettings:
    doc = {"runbooks_dir": str(runbooks),
           "exec": {"allow": {"compress-old-logs.sh": {}, "fail.sh": {}, "env.sh": {}, "not-executable.sh": {},
                              "slow.sh": {"timeout": "300ms"},
                              "strict.sh": {"params": {"host": r"^db-[0-9]+$"}}}}}
    doc.update(kw)
    return ExecutorSettings.model_validate(doc)


def runs(runbooks: Path) -> list[str]:
    f = runbooks / "argv.log"
    return f.read_text().splitlines() if f.exists() else []


# --- exec: guard rails ----------------------------------------------------------------------

@pytest.mark.parametrize("params, message", [
    ({"host": "db-1;rm -rf /", "args": "/var/log"},
     "parameter 'host': value 'db-1;rm -rf /' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "$(id)", "args": "/var/log"},
     "parameter 'host': value '$(id)' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "`id`", "args": "/var/log"}, "parameter 'host': value '`id`' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "db-1", "args": "/var/log|sh"},
     "parameter 'args': value '/var/log|sh' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "db-1", "args": "/var/log >/etc/passwd"},
     "parameter 'args': value '>/etc/passwd' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "db 1", "args": "/var/log"}, "parameter 'host': value 'db 1' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "db-1\n", "args": "/var/log"},
     "parameter 'host': value 'db-1\\n' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "", "args": "/var/log"}, "parameter 'host': value '' does not match ^[A-Za-z0-9_./:@=-]{1,256}$"),
    ({"host": "-rf", "args": "/var/log"},
     "parameter 'host': value '-rf' starts with '-' (could be read as an option)"),
    ({"host": "db-1", "args": "--execute"},
     "parameter 'args': value '--execute' starts with '-' (could be read as an option)"),
    ({"host": "db-1", "args": "/var/log --log-dir=/"},
     "parameter 'args': value '--log-dir=/' starts with '-' (could be read as an option)"),
    ({"host": "db-1", "args": "  "}, "parameter 'args': empty"),
    ({"Host": "db-1"}, "parameter name 'Host' is not a plain lower-case name"),
])
def test_exec_refuses_unsafe_arguments(runbooks, params, message):
    with pytest.raises(Refused) as err:
        exec_argv(action(**params), settings(runbooks))
    assert str(err.value) == message


@pytest.mark.parametrize("target, message", [
    ("runbooks/rm.sh", "exec target 'runbooks/rm.sh': script 'rm.sh' is not in executors.exec.allow"),
    ("/bin/sh", "exec target '/bin/sh': must be relative to {dir}, without '..'"),
    ("../compress-old-logs.sh", "exec target '../compress-old-logs.sh': must be relative to {dir}, without '..'"),
    ("runbooks/../runbooks/compress-old-logs.sh",
     "exec target 'runbooks/../runbooks/compress-old-logs.sh': must be relative to {dir}, without '..'"),
    ("runbooks\\fail.sh", "exec target 'runbooks\\\\fail.sh': not a script name"),
    ("", "exec target '': not a script name"),
    ("not-executable.sh", "exec target 'not-executable.sh': {dir}/not-executable.sh is not an executable file"),
    ("strict.sh", "exec target 'strict.sh': {dir}/strict.sh is not an executable file"),  # allowed, but missing
])
def test_exec_refuses_scripts_outside_the_allowlist(runbooks, target, message):
    with pytest.raises(Refused) as err:
        script_path(target, settings(runbooks))
    assert str(err.value) == message.format(dir=runbooks)


def test_exec_refuses_an_allowlisted_symlink_that_leaves_runbooks_dir(runbooks, tmp_path):
    outside = write_script(tmp_path / "evil.sh", "echo evil\n")
    (runbooks / "linked.sh").symlink_to(outside)
    cfg = settings(runbooks, exec={"allow": ["linked.sh"]})
    with pytest.raises(Refused, match="resolves outside"):
        script_path("linked.sh", cfg)


def test_per_script_patterns_replace_the_default_and_limit_the_params(runbooks):
    write_script(runbooks / "strict.sh", "true\n")
    cfg = settings(runbooks)
    assert exec_argv(action(target="strict.sh", host="db-12"), cfg)[1:] == ["--execute", "--host", "db-12"]
    with pytest.raises(Refused) as err:
        exec_argv(action(target="strict.sh", host="web-1"), cfg)
    assert str(err.value) == "parameter 'host': value 'web-1' does not match ^db-[0-9]+$"
    with pytest.raises(Refused) as err:
        exec_argv(action(target="strict.sh", host="db-1", args="/"), cfg)
    assert str(err.value) == ("parameter 'args' is not accepted by strict.sh "
                              "(executors.exec.allow.strict.sh.params)")


# --- exec: real processes -------------------------------------------------------------------

def test_exec_runs_the_script_with_exactly_this_argv(runbooks, tmp_path):
    ledger = ExecutionLedger(tmp_path / "ledger.jsonl")
    a = action(host="db-1", args="/var/log /srv/logs", min_age_days="2")
    result = Executor(settings(runbooks), ledger).execute(a)
    assert result.decision == "executed", result.reason
    assert result.reason == "compress-old-logs.sh exited with 0"
    assert runs(runbooks) == ["--execute --host db-1 --min-age-days 2 /var/log /srv/logs"]
    detail = json.loads(result.result)
    assert detail["argv"] == [str(runbooks / "compress-old-logs.sh"), "--execute", "--host", "db-1",
                              "--min-age-days", "2", "/var/log", "/srv/logs"]
    assert detail["exit"] == 0 and detail["stdout"] == "compressed 3 files\n"
    assert (result.id, result.incident_id, result.kind, result.target) == (a.id, a.incident_id, a.kind, a.target)


def test_exec_dry_run_passes_dry_run(runbooks, tmp_path):
    result = Executor(settings(runbooks), ExecutionLedger(tmp_path / "l.jsonl")).execute(action(mode="dry_run"))
    assert result.decision == "dry_run_ok"
    assert runs(runbooks) == ["--dry-run --host db-1 /var/log"]


def test_exec_failure_timeout_and_environment(runbooks, tmp_path, monkeypatch):
    monkeypatch.setenv("LB_ADMIN_TOKEN", "s3cret")
    ex = Executor(settings(runbooks), ExecutionLedger(tmp_path / "l.jsonl"))
    failed = ex.execute(replace(action(target="fail.sh"), id="a1"))
    assert (failed.decision, failed.reason) == ("failed", "fail.sh exited with 3: boom")
    slow = ex.execute(replace(action(target="slow.sh"), id="a2"))
    assert (slow.decision, slow.reason) == (
        "failed", "slow.sh timed out after 0.3s and was killed; it may have partly run")
    env = json.loads(ex.execute(replace(action(target="env.sh"), id="a3")).result)["stdout"]
    assert "AIOPS_ACTION_ID=a3\n" in env and "AIOPS_MODE=execute\n" in env
    assert "s3cret" not in env  # the executor's secrets stay out of scripts


def test_the_shipped_runbook_script_takes_the_executors_argv(tmp_path):
    """runbooks/compress-old-logs.sh (when present) accepts exactly what the executor passes it."""
    script = REPO / "runbooks" / "compress-old-logs.sh"
    if not script.exists():
        pytest.skip("runbooks/compress-old-logs.sh not written yet")
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = settings(REPO / "runbooks", exec={"allow": ["compress-old-logs.sh"]})
    result = Executor(cfg, ExecutionLedger(tmp_path / "l.jsonl")).execute(
        action(mode="dry_run", host="db-1", args=str(logs)))
    assert result.decision == "dry_run_ok", result.result


# --- http -----------------------------------------------------------------------------------

class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[dict] = []
    status = 200

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                              "body": self.rfile.read(n)})
        if self.path.endswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/elsewhere")
            self.end_headers()
            return
        self.send_response(self.status)
        body = b'{"drained": true}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_GET = _handle

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    _Recorder.requests = []
    _Recorder.status = 200
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Recorder
    srv.shutdown()
    srv.server_close()


def http_settings(base: str, **kw) -> ExecutorSettings:
    return ExecutorSettings(http={"allowed_prefixes": [f"{base}/v1/pools/payment-gateway/nodes/"],
                                  "auth": "env:LB_ADMIN_TOKEN", "timeout": "5s", **kw})


def test_http_sends_method_json_body_and_auth(server, tmp_path):
    base, rec = server
    url = f"{base}/v1/pools/payment-gateway/nodes/gw-2/drain"
    ex = Executor(http_settings(base), ExecutionLedger(tmp_path / "l.jsonl"), env={"LB_ADMIN_TOKEN": "tok"})
    result = ex.execute(action("http", url, method="PUT", reason="errors"))
    assert (result.decision, result.reason) == ("executed", f"PUT {url}: HTTP 200")
    [req] = rec.requests
    assert (req["method"], req["path"]) == ("PUT", "/v1/pools/payment-gateway/nodes/gw-2/drain")
    assert req["headers"]["Authorization"] == "Bearer tok"
    assert req["headers"]["Idempotency-Key"] == "act-http-1"
    assert req["headers"]["Content-Type"] == "application/json"
    assert orjson.loads(req["body"]) == {"reason": "errors"}
    assert "tok" not in result.result  # the secret never reaches the result record
    assert json.loads(result.result)["body"] == '{"drained": true}'


def test_http_failures_and_redirects(server, tmp_path):
    base, rec = server
    ex = Executor(http_settings(base), ExecutionLedger(tmp_path / "l.jsonl"), env={"LB_ADMIN_TOKEN": "tok"})
    rec.status = 503
    url = f"{base}/v1/pools/payment-gateway/nodes/gw-2/drain"
    failed = ex.execute(replace(action("http", url, method="POST"), id="a1"))
    assert (failed.decision, failed.reason) == ("failed", f"POST {url}: HTTP 503 Service Unavailable")
    moved = ex.execute(replace(action("http", f"{base}/v1/pools/payment-gateway/nodes/gw-2/moved"), id="a2"))
    assert moved.decision == "failed" and "redirect to http://example.invalid/elsewhere not followed" in moved.reason
    assert [r["path"] for r in rec.requests] == ["/v1/pools/payment-gateway/nodes/gw-2/drain",
                                                  "/v1/pools/payment-gateway/nodes/gw-2/moved"]


def test_http_dry_run_is_not_sent_unless_the_api_has_a_dry_run_header(server, tmp_path):
    base, rec = server
    url = f"{base}/v1/pools/payment-gateway/nodes/gw-2/drain"
    quiet = Executor(http_settings(base), ExecutionLedger(tmp_path / "a.jsonl"), env={"LB_ADMIN_TOKEN": "t"})
    result = quiet.execute(action("http", url, mode="dry_run", method="POST"))
    assert (result.decision, result.reason) == (
        "dry_run_ok", f"dry run: would POST {url} (guard rails passed; not sent)")
    assert rec.requests == []
    header = Executor(http_settings(base, dry_run_header="X-Dry-Run"), ExecutionLedger(tmp_path / "b.jsonl"),
                      env={"LB_ADMIN_TOKEN": "t"})
    assert header.execute(action("http", url, mode="dry_run", method="POST")).decision == "dry_run_ok"
    assert [r["headers"]["X-Dry-Run"] for r in rec.requests] == ["true"]


BASE = "https://lb.internal"


@pytest.mark.parametrize("url, params, env, message", [
    (f"{BASE}/v1/pools/payment-gateway/nodes/../../admin/wipe", {}, {"T": "x"},
     f"http target '{BASE}/v1/pools/payment-gateway/nodes/../../admin/wipe': path has a '.', '..' or unsafe segment"),
    (f"{BASE}/v1/pools/payment-gateway/nodes/%2e%2e/x", {}, {"T": "x"},
     f"http target '{BASE}/v1/pools/payment-gateway/nodes/%2e%2e/x': path has a '.', '..' or unsafe segment"),
    (f"{BASE}/v1/pools/payment-gateway/nodes/a%2fb/drain", {}, {"T": "x"},
     f"http target '{BASE}/v1/pools/payment-gateway/nodes/a%2fb/drain': path has a '.', '..' or unsafe segment"),
    ("https://lb.internal.evil.com/v1/pools/payment-gateway/nodes/gw/drain", {}, {"T": "x"},
     "http target 'https://lb.internal.evil.com/v1/pools/payment-gateway/nodes/gw/drain': "
     "not under any executors.http.allowed_prefixes"),
    ("https://me@lb.internal/v1/pools/payment-gateway/nodes/gw/drain", {}, {"T": "x"},
     "http target 'https://me@lb.internal/v1/pools/payment-gateway/nodes/gw/drain': "
     "expected http(s)://host/path without user or fragment"),
    ("http://lb.internal/v1/pools/payment-gateway/nodes/gw/drain", {}, {"T": "x"},
     "http target 'http://lb.internal/v1/pools/payment-gateway/nodes/gw/drain': "
     "not under any executors.http.allowed_prefixes"),
    (f"{BASE}/v1/pools/payment-gateway/nodesX/gw/drain", {}, {"T": "x"},
     f"http target '{BASE}/v1/pools/payment-gateway/nodesX/gw/drain': not under any executors.http.allowed_prefixes"),
    (f"{BASE}/v1/pools/payment-gateway/nodes/gw/drain", {"method": "CONNECT"}, {"T": "x"},
     "http method 'CONNECT' is not in executors.http.methods ['POST', 'PUT', 'PATCH', 'DELETE']"),
    (f"{BASE}/v1/pools/payment-gateway/nodes/gw/drain", {}, {},
     "executors.http.auth: environment variable T is not set"),
])
def test_http_refusals(url, params, env, message):
    cfg = ExecutorSettings(http={"allowed_prefixes": [f"{BASE}/v1/pools/payment-gateway/nodes"], "auth": "env:T"})
    with pytest.raises(Refused) as err:
        http_request(action("http", url, **params), cfg, env)
    assert str(err.value) == message


# --- kubernetes -----------------------------------------------------------------------------

@pytest.fixture()
def kubectl(tmp_path, monkeypatch):
    """A fake kubectl first on PATH: records each argv as a JSON line; `get` reports $FAKE_REPLICAS."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "kubectl-calls.jsonl"
    (bindir / "kubectl").write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        with open({str(calls)!r}, "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\\n")
        if sys.argv[1] == "get":
            if os.environ.get("FAKE_GET_FAILS"):
                sys.exit("error: deployments.apps not found")
            print(json.dumps({{"spec": {{"replicas": int(os.environ["FAKE_REPLICAS"])}}}}))
        else:
            print(sys.argv[2] + " " + sys.argv[3] + " done")
        """))
    (bindir / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return lambda: [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


K8S = {"context": "prod-eu", "namespace": "payments", "max_replicas": 8}


def k8s_run(tmp_path, a: Action, **kw) -> Action:
    cfg = ExecutorSettings(kubernetes={**K8S, **kw})
    return Executor(cfg, ExecutionLedger(tmp_path / f"{a.id}-{a.mode}.jsonl")).execute(a)


def test_kubernetes_relative_scale_reads_the_current_count(kubectl, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_REPLICAS", "3")
    a = action("kubernetes", "deployment/orders-db-pooler", mode="dry_run",
               operation="scale", replicas="+1", max_replicas="6")
    result = k8s_run(tmp_path, a)
    assert result.decision == "dry_run_ok", result.reason
    assert kubectl() == [
        ["get", "deployment/orders-db-pooler", "-o", "json", "--context", "prod-eu", "--namespace", "payments"],
        ["scale", "deployment/orders-db-pooler", "--replicas=4", "--current-replicas=3",
         "--context", "prod-eu", "--namespace", "payments", "--dry-run=server"]]
    assert result.reason == "server-side dry run: kubectl scale deployment/orders-db-pooler --replicas=4: " \
                            "deployment/orders-db-pooler --replicas=4 done"


@pytest.mark.parametrize("current, replicas, step_cap, want", [
    ("5", "+3", "6", "--replicas=6"),     # capped by the step
    ("5", "+9", "99", "--replicas=8"),    # a step cannot exceed executors.kubernetes.max_replicas
    ("3", "-1", None, "--replicas=2"),
    ("1", "-1", None, None),              # min_replicas 1: nothing to do
    ("6", "+1", "6", None),               # at the cap: refused, not scaled
    ("9", "+1", "6", None),               # above the cap: "+1" never scales down
])
def test_kubernetes_scale_cap(kubectl, tmp_path, monkeypatch, current, replicas, step_cap, want):
    monkeypatch.setenv("FAKE_REPLICAS", current)
    params = {"operation": "scale", "replicas": replicas, **({"max_replicas": step_cap} if step_cap else {})}
    result = k8s_run(tmp_path, action("kubernetes", "deployment/pooler", **params))
    calls = kubectl()
    if want is None:
        assert result.decision == "refused" and result.reason.endswith("not scaled")
        assert [c[0] for c in calls] == ["get"]
    else:
        assert result.decision == "executed", result.reason
        assert calls[1][:3] == ["scale", "deployment/pooler", want]
        assert "--dry-run=server" not in calls[1]


def test_kubernetes_rollouts_and_failures(kubectl, tmp_path, monkeypatch):
    restart = k8s_run(tmp_path, action("kubernetes", "deployment/api", mode="dry_run", operation="restart"))
    undo = k8s_run(tmp_path, replace(action("kubernetes", "statefulset/db", operation="undo", to_revision="4"),
                                     id="a2"))
    assert (restart.decision, undo.decision) == ("dry_run_ok", "executed")
    assert kubectl() == [
        ["rollout", "restart", "deployment/api", "--context", "prod-eu", "--namespace", "payments", "--dry-run=server"],
        ["rollout", "undo", "statefulset/db", "--to-revision=4", "--context", "prod-eu", "--namespace", "payments"]]
    monkeypatch.setenv("FAKE_GET_FAILS", "1")
    failed = k8s_run(tmp_path, replace(action("kubernetes", "deployment/api", operation="scale", replicas="+1"),
                                       id="a3"))
    assert (failed.decision, failed.reason) == (
        "failed", "kubectl get deployment/api exited with 1: error: deployments.apps not found")


@pytest.mark.parametrize("target, params, message", [
    ("pod/api-1", {"operation": "restart"},
     "kubernetes target 'pod/api-1': kind 'pod' not in executors.kubernetes.kinds"),
    ("deployment/API;x", {"operation": "restart"},
     "kubernetes target 'deployment/API;x': 'API;x' is not a valid object name"),
    ("deployment/-x", {"operation": "restart"}, "kubernetes target 'deployment/-x': '-x' is not a valid object name"),
    ("deployment/api", {"operation": "delete"},
     "kubernetes operation 'delete': expected one of ['restart', 'scale', 'undo']"),
    ("deployment/api", {"operation": "scale", "replicas": "+1", "selector": "x"},
     "kubernetes scale: unknown parameter 'selector'"),
    ("deployment/api", {"operation": "scale", "replicas": "--all"},
     "kubernetes scale: replicas '--all': expected N, +N or -N"),
    ("deployment/api", {"operation": "undo", "to_revision": "-1"},
     "kubernetes undo: to_revision '-1' is not a revision number"),
])
def test_kubernetes_refusals(target, params, message):
    with pytest.raises(Refused) as err:
        kubernetes_argv(action("kubernetes", target, **params), ExecutorSettings(), lambda: 1)
    assert str(err.value) == message


def test_kubernetes_without_context_or_namespace_passes_neither():
    argv = kubernetes_argv(action("kubernetes", "deployment/api", operation="scale", replicas="12"),
                           ExecutorSettings())
    assert argv == ["kubectl", "scale", "deployment/api", "--replicas=10"]  # absolute, capped by the default 10


# --- kafka ----------------------------------------------------------------------------------

def test_kafka_command_message(tmp_path):
    cfg = ExecutorSettings(kafka={"allowed_topics": ["ops.traffic-control"]})
    a = action("kafka", "ops.traffic-control", command="reroute", service="payment-gateway", away_from="gw-2",
               incident="inc-1")
    topic, key, value = kafka_command(a, cfg)
    assert (topic, key) == ("ops.traffic-control", b"act-kafka-1")
    assert orjson.loads(value) == {
        "schema_version": 1, "command": "reroute", "args": {"away_from": "gw-2", "incident": "inc-1",
                                                            "service": "payment-gateway"},
        "action_id": "act-kafka-1", "incident_id": "inc-1", "policy": "p", "dry_run": False,
        "at": "2023-11-14T22:13:20.000Z"}
    sent: list = []
    ex = Executor(cfg, ExecutionLedger(tmp_path / "l.jsonl"), kafka_send=lambda *m: sent.append(m))
    assert ex.execute(a).decision == "executed" and sent == [(topic, key, value)]
    assert ex.execute(replace(a, id="dry", mode="dry_run")).decision == "dry_run_ok" and len(sent) == 1
    with pytest.raises(Refused) as err:
        kafka_command(replace(a, target="__consumer_offsets"), cfg)
    assert str(err.value) == "kafka target '__consumer_offsets' is not in executors.kafka.allowed_topics"


# --- the ledger: at most once ---------------------------------------------------------------

def test_redelivery_never_runs_an_action_twice(runbooks, tmp_path):
    path = tmp_path / "ledger.jsonl"
    with ExecutionLedger(path) as ledger:
        ex = Executor(settings(runbooks), ledger)
        first = ex.execute(action())
        assert ex.execute(action()) == first  # redelivered: the same result, not a second run
    with ExecutionLedger(path) as ledger:  # restarted
        again = Executor(settings(runbooks), ledger)
        assert again.execute(action()) == first
        assert again.execute(replace(action(), decision="approved", approved_by="alice")) == first
    assert len(runs(runbooks)) == 1
    states = [orjson.loads(line)["state"] for line in path.read_bytes().splitlines()]
    assert states == ["started", "done"]


def test_a_crash_between_started_and_done_reports_unknown_and_never_reruns(runbooks, tmp_path):
    """A real crash: the script kills the executor's process (SIGKILL) while it runs."""
    write_script(runbooks / "crash.sh", """\
        echo ran >> "$(dirname "$0")/crash.log"
        kill -9 "$PPID"
        """)
    path = tmp_path / "ledger.jsonl"
    a = action(target="crash.sh", host="db-1")
    child = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO)!r})
        from remediators.executor_config import ExecutorSettings
        from remediators.records import Action
        from streams.executors import ExecutionLedger, Executor
        cfg = ExecutorSettings(runbooks_dir={str(runbooks)!r}, exec={{"allow": ["crash.sh"]}})
        Executor(cfg, ExecutionLedger({str(path)!r})).execute(Action(**{_fields(a)!r}))
        print("not reached")
        """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    assert [orjson.loads(line)["state"] for line in path.read_bytes().splitlines()] == ["started"]

    cfg = settings(runbooks, exec={"allow": ["crash.sh"]})
    with ExecutionLedger(path) as ledger:
        result = Executor(cfg, ledger, clock=lambda: T0 + 60).execute(a)
        assert result.decision == "unknown"
        assert result.reason.startswith("the executor stopped after starting this action at ")
        assert result.reason.endswith("it is not run again: verify by hand whether it took effect")
    with ExecutionLedger(path) as ledger:  # and after another restart, still unknown, still not run
        assert Executor(cfg, ledger).execute(a).decision == "unknown"
    assert (runbooks / "crash.log").read_text() == "ran\n"


def _fields(a: Action) -> dict:
    return {f: getattr(a, f) for f in a.__slots__}


def test_ledger_drops_a_torn_last_line_and_rejects_corruption(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b'{"id":"a","state":"started","at":1.0}\n{"id":"b","sta')
    with ExecutionLedger(path) as ledger:
        assert ledger.get("a")["state"] == "started" and ledger.get("b") is None
    assert path.read_bytes() == b'{"id":"a","state":"started","at":1.0}\n'
    path.write_bytes(b'garbage\n{"id":"a","state":"started","at":1.0}\n')
    with pytest.raises(LedgerError) as err:
        ExecutionLedger(path)
    assert str(err.value) == f"{path}:1: not a ledger entry; refusing to guess what ran"


def test_only_one_executor_holds_a_ledger(tmp_path):
    with ExecutionLedger(tmp_path / "l.jsonl"):
        with pytest.raises(LedgerError) as err:
            ExecutionLedger(tmp_path / "l.jsonl")
        assert str(err.value) == f"{tmp_path / 'l.jsonl'}: held by another executor"


def test_execute_takes_only_planned_or_approved_records(tmp_path):
    ex = Executor(ExecutorSettings(), ExecutionLedger(tmp_path / "l.jsonl"))
    with pytest.raises(ValueError, match="decision 'executed' is not one of"):
        ex.execute(action(decision="executed"))
    refused = ex.execute(action(decision="approved"))
    assert (refused.decision, refused.reason) == ("refused", "approved without approved_by")


def test_decode_action_round_trips_encode_action():
    a = replace(action(), result='{"exit": 0}', approved_by="alice", decision="approved")
    assert decode_action(encode_action(a)) == a


# --- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("doc, loc, message", [
    ({"exec": {"allow": ["/bin/sh"]}}, ("exec", "allow"),
     "Value error, script '/bin/sh': expected a path relative to runbooks_dir, without '..'"),
    ({"exec": {"allow": ["../x.sh"]}}, ("exec", "allow"),
     "Value error, script '../x.sh': expected a path relative to runbooks_dir, without '..'"),
    ({"exec": {"arg_pattern": "(["}}, ("exec", "arg_pattern"),
     "Value error, invalid regular expression '([': unterminated character set at position 1"),
    # the value is not echoed, not even its start: it is probably the secret
    ({"http": {"auth": "Bearer abc"}}, ("http", "auth"),
     "Value error, expected 'env:VARIABLE_NAME': secrets never go in topology.yaml"),
    ({"http": {"allowed_prefixes": ["https://u:p@lb/x"]}}, ("http", "allowed_prefixes"),
     "Value error, prefix 'https://u:p@lb/x': expected http(s)://host[:port]/path, without user, query or fragment"),
    ({"kafka": {"allowed_topic": ["x"]}}, ("kafka", "allowed_topic"), "Extra inputs are not permitted"),
])
def test_settings_name_the_bad_field(doc, loc, message):
    with pytest.raises(ValidationError) as err:
        ExecutorSettings.model_validate(doc)
    [e] = err.value.errors()
    assert (e["loc"], e["msg"]) == (loc, message)
