"""Run planned actions from ``aiops.actions``: safely, and at most once per action id.

Three layers, innermost first:

- one function per kind (``exec``, ``http``, ``kubernetes``, ``kafka``). Each first checks the
  action against the allowlists of ``remediation.executors`` (raising :class:`Refused`), then does
  its I/O and returns an :class:`Outcome`. Targets and params were templated from telemetry
  labels, so nothing here trusts them: no shell, no string-built command line, argv lists only.
- :class:`Executor` with :class:`ExecutionLedger`: the ledger records "started" (fsynced) before
  anything runs and the outcome after; an id found "started" but never finished is reported
  ``unknown`` and never re-run, because the process may have died halfway through it.
- :func:`run_action_executor`: the aiokafka loop. It consumes ``aiops.actions``, executes records
  whose decision is ``planned`` or ``approved``, produces the result record under the same key
  and only then commits the offset. Its own result records come back to it and are ignored.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from detectors.records import parse_rfc3339, rfc3339
from remediators.executor_config import ExecutorSettings
from remediators.records import ACTION_SCHEMA_VERSION, Action
from streams import kafka_security, metrics
from streams.codec import RecordError, dead_letter, decode_action, encode_action

log = logging.getLogger("aiops.executor")

EXECUTABLE = ("planned", "approved")
RESULT_DECISIONS = ("executed", "dry_run_ok", "failed", "refused", "unknown")
_EXCERPT = 2000  # bytes of stdout/stderr/response body kept in a result
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_URL_SEGMENT = re.compile(r"^[A-Za-z0-9_.:@=,+~-]*$")


class Refused(Exception):
    """The action fails a guard rail; nothing was run. The message says which and why."""


@dataclass(frozen=True)
class Outcome:
    decision: str  # "executed" | "dry_run_ok" | "failed" | "refused"
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def _excerpt(data: bytes | str | None) -> str:
    if not data:
        return ""
    if isinstance(data, bytes):
        data = data[:_EXCERPT * 2].decode("utf-8", errors="replace")
    return data if len(data) <= _EXCERPT else data[:_EXCERPT] + "…"


def _check_value(name: str, value: str, pattern: str) -> None:
    # fullmatch: with re.match a pattern ending in `$` would accept a trailing newline.
    if value.startswith("-"):
        raise Refused(f"parameter {name!r}: value {value[:80]!r} starts with '-' (could be read as an option)")
    if not re.fullmatch(pattern, value):
        raise Refused(f"parameter {name!r}: value {value[:80]!r} does not match {pattern}")


# --- exec -----------------------------------------------------------------------------------

def script_path(target: str, settings: ExecutorSettings) -> tuple[str, Path]:
    """The allowlist name and the resolved path of an exec target. Raises :class:`Refused`.

    The target may name the script relative to ``runbooks_dir`` or with ``runbooks_dir`` in front
    (``runbooks/compress-old-logs.sh``, as topology.yaml writes it).
    """
    if not target or "\\" in target or "\x00" in target:
        raise Refused(f"exec target {target[:120]!r}: not a script name")
    p = PurePosixPath(target)
    if p.is_absolute() or ".." in p.parts:
        raise Refused(f"exec target {target[:120]!r}: must be relative to {settings.runbooks_dir}, without '..'")
    base = PurePosixPath(settings.runbooks_dir)
    if not base.is_absolute() and p.parts[:len(base.parts)] == base.parts and len(p.parts) > len(base.parts):
        p = PurePosixPath(*p.parts[len(base.parts):])
    elif base.is_absolute() and len(p.parts) > 1 and p.parts[0] == base.name:
        p = PurePosixPath(*p.parts[1:])  # "runbooks/x.sh" with runbooks_dir /opt/aiops/runbooks
    name = str(p)
    if name not in settings.exec.allow:
        raise Refused(f"exec target {target[:120]!r}: script {name!r} is not in executors.exec.allow")
    root = Path(settings.runbooks_dir).resolve()
    path = (root / name).resolve()  # follows symlinks: a link out of runbooks_dir is refused too
    if not path.is_relative_to(root):
        raise Refused(f"exec target {target[:120]!r}: resolves outside {settings.runbooks_dir}")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise Refused(f"exec target {target[:120]!r}: {path} is not an executable file")
    return name, path


def exec_argv(action: Action, settings: ExecutorSettings) -> list[str]:
    """The argument list for an exec action. Raises :class:`Refused`.

    ``--dry-run`` or ``--execute`` comes first (runbook scripts are dry by default), then each
    param as ``--name value`` in name order (``_`` in a name becomes ``-``), then the words of
    ``args`` as positional arguments. Every value must match its pattern and never start with '-'.
    """
    name, path = script_path(action.target, settings)
    argv = [str(path), "--dry-run" if action.mode == "dry_run" else "--execute"]
    positional: list[str] = []
    for key, value in action.params:
        pattern = settings.exec.pattern_for(name, key)
        if pattern is None:
            raise Refused(f"parameter {key!r} is not accepted by {name} (executors.exec.allow.{name}.params)")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
            raise Refused(f"parameter name {key[:80]!r} is not a plain lower-case name")
        if key == "args":
            words = value.split()
            if not words:
                raise Refused("parameter 'args': empty")
            for w in words:
                _check_value(key, w, pattern)
            positional += words
        else:
            _check_value(key, value, pattern)
            argv += ["--" + key.replace("_", "-"), value]
    return argv + positional


def _script_env(action: Action) -> dict[str, str]:
    """A small environment: the executor's secrets (HTTP tokens, Kafka credentials) stay out."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
           "AIOPS_ACTION_ID": action.id, "AIOPS_INCIDENT_ID": action.incident_id, "AIOPS_MODE": action.mode}
    for k in ("HOME", "TMPDIR"):
        if k in os.environ:
            env[k] = os.environ[k]
    return env


def _run_argv(argv: list[str], *, timeout: float, cwd: Path | None, env: Mapping[str, str] | None
              ) -> tuple[int | None, bytes, bytes]:
    """Run argv without a shell; on timeout kill its whole process group. Exit code None: timed out."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, err = proc.communicate(timeout=grace)
                return None, out, err
            except subprocess.TimeoutExpired:
                continue
        out, err = proc.communicate()
        return None, out, err


def run_exec(action: Action, settings: ExecutorSettings) -> Outcome:
    argv = exec_argv(action, settings)
    name, _ = script_path(action.target, settings)
    spec = settings.exec.allow[name]
    timeout = (spec.timeout or settings.exec.timeout).total_seconds()
    code, out, err = _run_argv(argv, timeout=timeout, cwd=Path(settings.runbooks_dir).resolve(),
                               env=_script_env(action))
    detail = {"argv": argv, "exit": code, "stdout": _excerpt(out), "stderr": _excerpt(err)}
    if code is None:
        return Outcome("failed", f"{name} timed out after {timeout:g}s and was killed; it may have partly run", detail)
    if code != 0:
        return Outcome("failed", f"{name} exited with {code}: {_excerpt(err)[-200:].strip()}", detail)
    return Outcome("dry_run_ok" if action.mode == "dry_run" else "executed", f"{name} exited with 0", detail)


# --- http -----------------------------------------------------------------------------------

def _allowed_url(url: str, prefixes: list[str]) -> bool:
    u = urlsplit(url)
    for prefix in prefixes:
        p = urlsplit(prefix)
        if (u.scheme, u.netloc.lower()) != (p.scheme, p.netloc.lower()):
            continue
        base = p.path if p.path.endswith("/") else p.path + "/"
        if u.path == p.path or u.path.startswith(base):
            return True
    return False


def http_request(action: Action, settings: ExecutorSettings, env: Mapping[str, str]
                 ) -> tuple[str, str, dict[str, str], bytes | None]:
    """Method, URL, headers and body of an http action. Raises :class:`Refused`.

    The body is the JSON object of the params other than ``method``. ``Idempotency-Key`` carries
    the action id, so an API that honours it also never applies the step twice.
    """
    cfg = settings.http
    url = action.target
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc or "@" in u.netloc or u.fragment:
        raise Refused(f"http target {url[:200]!r}: expected http(s)://host/path without user or fragment")
    segments = u.path.split("/")
    # Telemetry fills the path (nodes/{host.name}/drain): no '..' or encoded tricks to climb out of the prefix.
    if any(unquote(s) in (".", "..") or not _URL_SEGMENT.match(unquote(s)) for s in segments):
        raise Refused(f"http target {url[:200]!r}: path has a '.', '..' or unsafe segment")
    if not _allowed_url(url, cfg.allowed_prefixes):
        raise Refused(f"http target {url[:200]!r}: not under any executors.http.allowed_prefixes")
    params = dict(action.params)
    method = params.pop("method", "POST").upper()
    if method not in cfg.methods:
        raise Refused(f"http method {method[:20]!r} is not in executors.http.methods {cfg.methods}")
    headers = {"Content-Type": "application/json", "User-Agent": "aiops-executor",
               "Idempotency-Key": action.id}
    if cfg.auth:
        var = cfg.auth.removeprefix("env:")
        secret = env.get(var)
        if not secret:
            raise Refused(f"executors.http.auth: environment variable {var} is not set")
        headers[cfg.auth_header] = f"{cfg.auth_scheme} {secret}" if cfg.auth_scheme else secret
    if action.mode == "dry_run" and cfg.dry_run_header:
        headers[cfg.dry_run_header] = "true"
    body = None if method == "GET" else orjson.dumps(params)
    return method, url, headers, body


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could leave the allowed prefix, with the auth header: never follow one."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} not followed", headers, fp)


def run_http(action: Action, settings: ExecutorSettings, env: Mapping[str, str]) -> Outcome:
    method, url, headers, body = http_request(action, settings, env)
    detail: dict[str, Any] = {"method": method, "url": url}
    if action.mode == "dry_run" and not settings.http.dry_run_header:
        return Outcome("dry_run_ok", f"dry run: would {method} {url} (guard rails passed; not sent)", detail)
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=settings.http.timeout.total_seconds()) as resp:
            detail.update(status=resp.status, body=_excerpt(resp.read(_EXCERPT * 2)))
    except urllib.error.HTTPError as exc:
        detail.update(status=exc.code, body=_excerpt(exc.read(_EXCERPT * 2) if exc.fp else b""))
        return Outcome("failed", f"{method} {url}: HTTP {exc.code} {exc.reason}", detail)
    except (urllib.error.URLError, OSError) as exc:
        # A timeout after the request left may still have been applied: say so.
        reason = getattr(exc, "reason", exc)
        return Outcome("failed", f"{method} {url}: {reason} (the request may or may not have been applied)", detail)
    verb = "dry run: " if action.mode == "dry_run" else ""
    return Outcome("dry_run_ok" if action.mode == "dry_run" else "executed",
                   f"{verb}{method} {url}: HTTP {detail['status']}", detail)


# --- kubernetes -----------------------------------------------------------------------------

_K8S_PARAMS = {"scale": {"operation", "replicas", "max_replicas"}, "restart": {"operation"},
               "undo": {"operation", "to_revision"}}


def _k8s_target(action: Action, settings: ExecutorSettings) -> str:
    kind, _, name = action.target.partition("/")
    if kind not in settings.kubernetes.kinds:
        raise Refused(f"kubernetes target {action.target[:120]!r}: kind {kind!r} not in executors.kubernetes.kinds")
    if not name or len(name) > 253 or not _DNS1123.match(name):
        raise Refused(f"kubernetes target {action.target[:120]!r}: {name[:80]!r} is not a valid object name")
    return f"{kind}/{name}"


def _k8s_scope(settings: ExecutorSettings, dry_run: bool) -> list[str]:
    k = settings.kubernetes
    out = ["--context", k.context] if k.context else []
    out += ["--namespace", k.namespace] if k.namespace else []
    return out + (["--dry-run=server"] if dry_run else [])


def _kubectl(settings: ExecutorSettings) -> str:
    found = shutil.which(settings.kubernetes.kubectl)
    if not found:
        raise Refused(f"executors.kubernetes.kubectl: {settings.kubernetes.kubectl!r} not found on PATH")
    return found


def kubernetes_argv(action: Action, settings: ExecutorSettings,
                    current_replicas: Callable[[], int] | None = None) -> list[str]:
    """The kubectl argv of a kubernetes action. Raises :class:`Refused`.

    ``current_replicas`` is called only for a relative scale (``replicas: "+1"``); the result is
    capped by the step's ``max_replicas`` and by ``executors.kubernetes.max_replicas``, and passed
    as ``--current-replicas`` so kubectl refuses if someone else scaled in between.
    """
    target = _k8s_target(action, settings)
    params = dict(action.params)
    op = params.get("operation", "")
    if op not in _K8S_PARAMS:
        raise Refused(f"kubernetes operation {op[:40]!r}: expected one of {sorted(_K8S_PARAMS)}")
    extra = sorted(set(params) - _K8S_PARAMS[op])
    if extra:
        raise Refused(f"kubernetes {op}: unknown parameter {extra[0]!r}")
    k = settings.kubernetes
    kubectl = k.kubectl  # replaced by the resolved path when run
    scope = _k8s_scope(settings, action.mode == "dry_run")
    if op == "restart":
        return [kubectl, "rollout", "restart", target, *scope]
    if op == "undo":
        rev = params.get("to_revision")
        if rev is not None and not re.fullmatch(r"[1-9][0-9]{0,8}", rev):
            raise Refused(f"kubernetes undo: to_revision {rev[:20]!r} is not a revision number")
        return [kubectl, "rollout", "undo", target, *([f"--to-revision={rev}"] if rev else []), *scope]
    replicas = params.get("replicas", "")
    if not re.fullmatch(r"[+-]?[0-9]{1,4}", replicas):
        raise Refused(f"kubernetes scale: replicas {replicas[:20]!r}: expected N, +N or -N")
    cap = k.max_replicas
    if "max_replicas" in params:
        if not re.fullmatch(r"[0-9]{1,4}", params["max_replicas"]):
            raise Refused(f"kubernetes scale: max_replicas {params['max_replicas'][:20]!r} is not a number")
        cap = min(cap, int(params["max_replicas"]))
    if replicas[0] in "+-":
        if current_replicas is None:
            raise Refused("kubernetes scale: a relative replica count needs the current count")
        current = current_replicas()
        delta = int(replicas)
        # Never the other way: "+1" on a deployment already above the cap does not scale it down.
        want = min(current + delta, cap) if delta > 0 else max(current + delta, k.min_replicas)
        if (delta > 0 and want <= current) or (delta <= 0 and want >= current):
            bound = f"max_replicas {cap}" if delta > 0 else f"min_replicas {k.min_replicas}"
            raise Refused(f"kubernetes scale: {target} has {current} replicas; {replicas} would pass "
                          f"{bound}: not scaled")
        return [kubectl, "scale", target, f"--replicas={want}", f"--current-replicas={current}", *scope]
    return [kubectl, "scale", target, f"--replicas={max(min(int(replicas), cap), k.min_replicas)}", *scope]


def run_kubernetes(action: Action, settings: ExecutorSettings) -> Outcome:
    kubectl = _kubectl(settings)
    timeout = settings.kubernetes.timeout.total_seconds()
    target = _k8s_target(action, settings)
    reads: list[dict[str, Any]] = []

    def current_replicas() -> int:
        # A read: it runs in dry-run mode too, without --dry-run (get has none).
        argv = [kubectl, "get", target, "-o", "json", *_k8s_scope(settings, False)]
        code, out, err = _run_argv(argv, timeout=timeout, cwd=None, env=None)
        reads.append({"argv": argv, "exit": code})
        if code != 0:
            raise _KubectlFailed(f"kubectl get {target} " + ("timed out" if code is None else f"exited with {code}")
                                 + f": {_excerpt(err)[-200:].strip()}")
        try:
            return int(orjson.loads(out).get("spec", {}).get("replicas", 1))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            raise _KubectlFailed(f"kubectl get {target}: no spec.replicas in its output") from None

    try:
        argv = kubernetes_argv(action, settings, current_replicas)
    except _KubectlFailed as exc:
        return Outcome("failed", str(exc), {"reads": reads})
    argv[0] = kubectl
    code, out, err = _run_argv(argv, timeout=timeout, cwd=None, env=None)
    detail = {"reads": reads, "argv": argv, "exit": code, "stdout": _excerpt(out), "stderr": _excerpt(err)}
    if code != 0:
        why = "timed out" if code is None else f"exited with {code}"
        return Outcome("failed", f"kubectl {' '.join(argv[1:3])} {why}: {_excerpt(err)[-200:].strip()}", detail)
    dry = action.mode == "dry_run"
    return Outcome("dry_run_ok" if dry else "executed",
                   f"{'server-side dry run: ' if dry else ''}kubectl {' '.join(argv[1:4])}: {_excerpt(out).strip()}",
                   detail)


class _KubectlFailed(Exception):
    pass


# --- kafka ----------------------------------------------------------------------------------

def kafka_command(action: Action, settings: ExecutorSettings) -> tuple[str, bytes, bytes]:
    """Topic, key and value of a kafka command message. Raises :class:`Refused`.

    >>> from remediators.executor_config import ExecutorSettings
    >>> a = Action(id="act-1", incident_id="inc-1", incident_version=1, policy="drain", step=1, kind="kafka",
    ...            target="ops.traffic-control", params=(("away_from", "gw-2"), ("command", "reroute")),
    ...            mode="execute", decision="planned", reason="", at=0.0)
    >>> topic, key, value = kafka_command(a, ExecutorSettings(kafka={"allowed_topics": ["ops.traffic-control"]}))
    >>> topic, key, orjson.loads(value)["command"], orjson.loads(value)["args"]
    ('ops.traffic-control', b'act-1', 'reroute', {'away_from': 'gw-2'})
    """
    if action.target not in settings.kafka.allowed_topics:
        raise Refused(f"kafka target {action.target[:120]!r} is not in executors.kafka.allowed_topics")
    params = dict(action.params)
    command = params.pop("command", "")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", command):
        raise Refused(f"kafka command {command[:40]!r}: expected a command name")
    for k, v in params.items():
        if len(v) > 1024:
            raise Refused(f"parameter {k!r}: longer than 1024 characters")
    value = orjson.dumps({"schema_version": 1, "command": command, "args": params, "action_id": action.id,
                          "incident_id": action.incident_id, "policy": action.policy,
                          "dry_run": action.mode == "dry_run", "at": rfc3339(action.at)})
    return action.target, action.id.encode(), value


def run_kafka(action: Action, settings: ExecutorSettings, send: Callable[[str, bytes, bytes], None]) -> Outcome:
    topic, key, value = kafka_command(action, settings)
    detail = {"topic": topic, "key": key.decode(), "value": orjson.loads(value)}
    if action.mode == "dry_run":
        return Outcome("dry_run_ok", f"dry run: would send {detail['value']['command']} to {topic} (not sent)", detail)
    try:
        send(topic, key, value)
    except Exception as exc:  # noqa: BLE001 - any producer failure is this action's failure
        return Outcome("failed", f"sending to {topic} failed: {type(exc).__name__}: {exc}", detail)
    return Outcome("executed", f"sent {detail['value']['command']} to {topic}", detail)


# --- the ledger -----------------------------------------------------------------------------

class LedgerError(RuntimeError):
    """The ledger cannot be trusted (corrupt, or held by another executor): nothing may run."""


class ExecutionLedger:
    """At most once per action id, across restarts: a JSON-lines file, fsynced on every write.

    Each line is ``{"id", "state", "at", ...}`` with state ``started`` (written and fsynced
    before the action runs), then ``done`` or ``failed`` with the result record, or ``unknown``.
    The last line of an id wins. A line torn by a crash is dropped on open: its write never
    returned, so the action it announced never started. An exclusive lock keeps a second executor
    off the same file.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._f = open(self.path, "a+b")
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise LedgerError(f"{self.path}: held by another executor") from None
        if created:
            _fsync_dir(self.path.parent)
        self.entries: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        self._f.seek(0)
        data = self._f.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(data) - keep)
            self._f.truncate(keep)
            os.fsync(self._f.fileno())
            data = data[:keep]
        for n, line in enumerate(data.splitlines(), 1):
            try:
                entry = orjson.loads(line)
                self.entries[entry["id"]] = entry
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise LedgerError(f"{self.path}:{n}: not a ledger entry; refusing to guess what ran") from None

    def _append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._f.seek(0, os.SEEK_END)
            self._f.write(orjson.dumps(entry) + b"\n")
            self._f.flush()
            os.fsync(self._f.fileno())
            self.entries[entry["id"]] = entry

    def get(self, action_id: str) -> dict[str, Any] | None:
        return self.entries.get(action_id)

    def start(self, action: Action) -> None:
        self._append({"id": action.id, "state": "started", "at": self.clock(), "kind": action.kind,
                      "target": action.target, "mode": action.mode})

    def finish(self, result: Action) -> None:
        state = {"failed": "failed", "unknown": "unknown"}.get(result.decision, "done")
        self._append({"id": result.id, "state": state, "at": self.clock(),
                      "result": orjson.loads(encode_action(result))})

    def close(self) -> None:
        if not self._f.closed:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            self._f.close()

    def __enter__(self) -> ExecutionLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the executor ---------------------------------------------------------------------------

class Executor:
    """``execute(action)`` runs one planned or approved action at most once and returns its result.

    ``env`` is where secrets are read (``executors.http.auth``); ``kafka_send(topic, key, value)``
    sends a command message (default: a kafka-python producer on ``kafka_bootstrap``).
    """

    def __init__(self, settings: ExecutorSettings, ledger: ExecutionLedger, *,
                 kafka_send: Callable[[str, bytes, bytes], None] | None = None, kafka_bootstrap: str | None = None,
                 env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.ledger = ledger
        self.env = os.environ if env is None else env
        self.clock = clock
        self._kafka_send = kafka_send
        self._kafka_bootstrap = settings.kafka.bootstrap or kafka_bootstrap
        self._producer = None

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        if self._kafka_send is not None:
            return self._kafka_send(topic, key, value)
        if self._producer is None:
            from kafka import KafkaProducer

            if not self._kafka_bootstrap:
                raise RuntimeError("no bootstrap servers for kafka actions (executors.kafka.bootstrap)")
            self._producer = KafkaProducer(bootstrap_servers=self._kafka_bootstrap, acks="all", retries=0,
                                           **kafka_security.current().kafka_python_kwargs())
        # retries=0: a retried send could deliver the command twice.
        self._producer.send(topic, value, key=key, headers=[("aiops-action-id", key)]).get(timeout=30)

    def run(self, action: Action) -> Outcome:
        """Check and run one action, without the ledger."""
        try:
            if action.kind == "exec":
                return run_exec(action, self.settings)
            if action.kind == "http":
                return run_http(action, self.settings, self.env)
            if action.kind == "kubernetes":
                return run_kubernetes(action, self.settings)
            if action.kind == "kafka":
                return run_kafka(action, self.settings, self._send)
            raise Refused(f"unknown action kind {action.kind[:40]!r}")
        except Refused as exc:
            return Outcome("refused", str(exc))
        except Exception as exc:  # noqa: BLE001 - the executor reports, it does not die on one action
            log.exception("action %s failed unexpectedly", action.id)
            return Outcome("failed", f"{type(exc).__name__}: {exc}")

    def _now(self) -> float:
        # Millisecond precision, as on the wire: a result re-sent from the ledger is identical.
        return parse_rfc3339(rfc3339(self.clock()))

    def execute(self, action: Action) -> Action:
        result = self._execute(action)
        metrics.ACTION_RESULTS.labels(kind=action.kind, decision=result.decision).inc()
        return result

    def _execute(self, action: Action) -> Action:
        if action.decision not in EXECUTABLE:
            raise ValueError(f"action {action.id}: decision {action.decision!r} is not one of {EXECUTABLE}")
        seen = self.ledger.get(action.id)
        if seen is not None:
            if seen["state"] == "started":
                result = replace(action, decision="unknown", at=self._now(), result=orjson.dumps(
                    {"started_at": rfc3339(seen["at"])}).decode(), reason=(
                    f"the executor stopped after starting this action at {rfc3339(seen['at'])} and before "
                    "recording its outcome; it is not run again: verify by hand whether it took effect"))
                self.ledger.finish(result)
                return result
            return _decode_result(seen["result"])  # already ran: the same result again
        if action.decision == "approved" and not action.approved_by:
            result = replace(action, decision="refused", at=self._now(), reason="approved without approved_by")
            self.ledger.finish(result)
            return result
        started = self._now()
        self.ledger.start(action)
        outcome = self.run(action)
        finished = self._now()
        detail = {"started_at": rfc3339(started), "finished_at": rfc3339(finished), **outcome.detail}
        result = replace(action, decision=outcome.decision, reason=outcome.reason, at=finished,
                         result=json.dumps(detail, ensure_ascii=False, default=str))
        self.ledger.finish(result)
        log.info("action %s (%s %s, %s): %s: %s", action.id, action.kind, action.target, action.mode,
                 result.decision, result.reason)
        return result

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(5)
            self._producer = None


# --- the wire -------------------------------------------------------------------------------

def _decode_result(d: dict[str, Any]) -> Action:
    return decode_action(orjson.dumps(d))


# --- the loop -------------------------------------------------------------------------------

def _settings_of(topology_or_settings: Any) -> tuple[ExecutorSettings, str, str | None]:
    """Executor settings, the actions topic and the dead-letter topic, from a Topology or settings."""
    if isinstance(topology_or_settings, ExecutorSettings):
        return topology_or_settings, "aiops.actions", None
    rem = topology_or_settings.remediation
    settings = getattr(rem, "executors", None) or ExecutorSettings()
    return settings, topology_or_settings.topics.actions, topology_or_settings.topics.deadletter


async def run_action_executor(topology_or_settings: Any, bootstrap: str, *, ledger_path: str | Path | None = None,
                              actions_topic: str | None = None, group_id: str = "aiops-executor",
                              stop: asyncio.Event | None = None, executor: Executor | None = None) -> int:
    """Consume ``aiops.actions`` until ``stop`` is set; returns how many actions it executed.

    Per record: decode; skip anything that is not ``planned``/``approved`` (its own results among
    them); execute through the ledger; produce the result under the same key; commit. A crash
    before the commit redelivers the record, and the ledger answers it without running it again.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    settings, topic, deadletter = _settings_of(topology_or_settings)
    topic = actions_topic or topic
    stop = stop or asyncio.Event()
    own_ledger = executor is None
    if executor is None:
        executor = Executor(settings, ExecutionLedger(ledger_path or settings.ledger_path), kafka_bootstrap=bootstrap)
    # One action may run for as long as its timeout between two polls; the group must not evict us meanwhile.
    longest = max([settings.exec.timeout, settings.http.timeout, settings.kubernetes.timeout * 2,
                   *(s.timeout for s in settings.exec.allow.values() if s.timeout)]).total_seconds()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                max_poll_interval_ms=int(max(300.0, longest + 60.0) * 1000), **kafka_security.current().aiokafka_kwargs())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **kafka_security.current().aiokafka_kwargs())
    executed = 0
    await producer.start()
    try:
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=50)
                for tp, msgs in batch.items():
                    for msg in msgs:
                        if stop.is_set():
                            break  # the rest is not committed: it comes back after the restart
                        try:
                            action = decode_action(msg.value)
                        except RecordError as exc:
                            log.warning("%s[%d]@%d: not an action record: %s", tp.topic, tp.partition, msg.offset, exc)
                            if deadletter:
                                await producer.send_and_wait(deadletter, dead_letter(
                                    str(exc), tp.topic, tp.partition, msg.offset, msg.value or b""))
                                metrics.DEADLETTER.labels(topic=tp.topic).inc()
                            action = None
                        if action is not None and action.decision in EXECUTABLE:
                            result = await asyncio.to_thread(executor.execute, action)
                            await producer.send_and_wait(topic, encode_action(result), key=action.id.encode())
                            executed += 1
                        await consumer.commit({TopicPartition(tp.topic, tp.partition): msg.offset + 1})
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
        if own_ledger:
            executor.close()
            executor.ledger.close()
    return executed


def run_executor(topology: Any, *, bootstrap: str, ledger_path: Path | None = None, verbose: bool = False,
                 metrics_port: int | None = None) -> int:
    """``aiops executor``: run until SIGINT or SIGTERM. Returns the exit code. ``metrics_port``:
    serve Prometheus' /metrics there (aiops_action_results_total, aiops_deadletter_total)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics.serve(metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_action_executor(topology, bootstrap, ledger_path=ledger_path, stop=stop)

    try:
        asyncio.run(main())
    except LedgerError as exc:
        log.error("%s", exc)
        return 2
    return 0


__all__ = ["EXECUTABLE", "ExecutionLedger", "Executor", "LedgerError", "Outcome", "Refused", "decode_action",
           "exec_argv", "http_request", "kafka_command", "kubernetes_argv", "run_action_executor", "run_executor",
           "script_path"]
