"""A fuzz target per parser, their corpora, and a long-running fuzzer that reports.

Each target takes bytes as they arrive (a Kafka message value, a webhook body, a topology file)
and must, whatever the bytes: return, or raise only its documented error (``DecodeError``,
``RecordError``, ``ConfigError``); never take more than ``HANG_SECONDS``; and never let out
a secret that redaction would have caught in the input's text (a *leak*: the secret is
replaced when the raw input's text is redacted, yet it stands in what the parser returned or in
the dead-letter record its error makes). Corpora are in ``tests/property/corpus/<target>/``:
valid inputs with planted secrets, and every input that once broke something.

``make test`` runs each target for a bounded number of hypothesis examples
(tests/property/test_fuzz_targets.py); ``make fuzz`` runs this module, a mutation loop over
the corpora for ``FUZZ_SECONDS`` per target (default 30), and reports executions, crashes,
hangs, leaks and the slowest input per target (``out/fuzz/report.json``; failing and slowest
inputs under ``out/fuzz/``)::

    python -m tests.property.fuzz --seconds 30 [--target otlp_json_metrics] [--out out/fuzz]
    python -m tests.property.fuzz --write-seeds   # (re)write the generated seed files
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from hypothesis import strategies as st

from streams import codec
from streams.config import ConfigError, parse_topology_text
from streams.ingest import DecodeError, decode_logs, decode_metrics, decode_traces, otlp_proto
from streams.ingest.external import decode_external
from streams.ingest.redact import DEFAULT

CORPUS = Path(__file__).parent / "corpus"
HANG_SECONDS = 2.0
KNOWN = frozenset({"checkout", "orders", "orders-db", "api"})

# Planted in the seeds; each is redacted whatever surrounds it (an address, a Luhn-valid card
# number, a key shape), so a mutated input that still holds one, standing alone, must not let
# it out.
SECRETS = ("jane.doe@example.com", "4111 1111 1111 1111", "4111.1111.1111.1111",
           "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "ghp_" + "a1B2" * 9)

TOKENS = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\\u0000", b"\\ud800", b"\xff", b"\x00", b"\n",
          b"null", b"true", b"-1", b"1e999", b"NaN", b"9" * 40, b'""', b"{}", b"[]", b'"x":', b'"' + b"a" * 300 + b'"',
          b"%40", b"\\u0040", b"@", b"4111 1111 1111 1111", b"jane.doe@example.com", b"Bearer ", b"password=",
          b'"timeUnixNano":"99999999999999999999"', b'"asDouble":1e308', b'"bucketCounts":[' + b"1," * 50 + b"1]",
          b"\x0a\x80\x80\x80\x80\x10", b"\x12\xff\xff\xff\xff\x0f", b"\x08\x96\x01", b"\x22\x00"]


@dataclass
class Target:
    name: str
    run: Callable[[bytes], list[str]]  # the strings that leave the parser (outputs, error text)
    errors: tuple[type[BaseException], ...]
    leak_checked: bool = True
    tokens: list[bytes] = field(default_factory=lambda: list(TOKENS))

    def corpus(self) -> list[Path]:
        return sorted(p for p in (CORPUS / self.name).iterdir() if p.is_file())


def _dead_letter(exc: BaseException, payload: bytes) -> list[str]:
    """What the worker writes for a message that raised ``exc``: the reason and the excerpt."""
    rec = orjson.loads(codec.dead_letter(str(exc), "t", 0, 0, payload))
    return [rec["reason"], rec["excerpt"]]


def _metrics(payload: bytes) -> list[str]:
    try:
        d = decode_metrics(payload, known_services=None)
    except DecodeError as exc:
        return _dead_letter(exc, payload)
    out = list(d.rejects)
    for s in d.samples:
        out.append(s.series.metric)
        out += [x for kv in s.series.labels for x in kv]
    return out


def _logs(payload: bytes) -> list[str]:
    try:
        records, rejects = decode_logs(payload, known_services=None)
    except DecodeError as exc:
        return _dead_letter(exc, payload)
    return list(rejects) + [x for r in records for x in (r.body, *[y for kv in r.labels for y in kv])]


def _traces(payload: bytes) -> list[str]:
    try:
        spans, rejects = decode_traces(payload, known_services=None)
    except DecodeError as exc:
        return _dead_letter(exc, payload)
    return list(rejects) + [s.name for s in spans]


def _webhook(source: str) -> Callable[[bytes], list[str]]:
    def run(payload: bytes) -> list[str]:
        try:
            res = decode_external(source, payload, known_services=KNOWN)
        except DecodeError as exc:
            return _dead_letter(exc, payload)
        out = list(res.rejects)
        for a in res.alerts:
            out += [a.metric, a.summary, a.series, *[x for kv in a.labels for x in kv],
                    *[x for kv in a.evidence for x in kv]]
        return out
    return run


def _control(payload: bytes) -> list[str]:
    try:
        msg = codec.decode_control(payload)
    except codec.RecordError as exc:
        return _dead_letter(exc, payload)
    return [str(v) for v in msg.values()]


def _change(payload: bytes) -> list[str]:
    try:
        ch = codec.decode_change(payload)
    except codec.RecordError as exc:
        return _dead_letter(exc, payload)
    return [ch.id, ch.description]


def _topology(payload: bytes) -> list[str]:
    try:
        parse_topology_text(payload, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems and len(str(exc).splitlines()) == 1 + len(exc.problems)
    return []


TARGETS = {t.name: t for t in [
    Target("otlp_json_metrics", _metrics, (DecodeError,)),
    Target("otlp_json_logs", _logs, (DecodeError,)),
    Target("otlp_json_traces", _traces, (DecodeError,)),
    Target("otlp_proto_metrics", _metrics, (DecodeError,)),
    Target("otlp_proto_logs", _logs, (DecodeError,)),
    Target("otlp_proto_traces", _traces, (DecodeError,)),
    Target("native_batch", _metrics, (DecodeError,)),
    Target("prometheus_sample", _metrics, (DecodeError,)),
    Target("webhook_alertmanager", _webhook("alertmanager"), (DecodeError,)),
    Target("webhook_datadog", _webhook("datadog"), (DecodeError,)),
    Target("webhook_newrelic", _webhook("newrelic"), (DecodeError,)),
    # Control messages are not telemetry: ids, names and comments are checked, not redacted.
    Target("control", _control, (codec.RecordError,), leak_checked=False),
    Target("change", _change, (codec.RecordError,)),
    Target("topology", _topology, (), leak_checked=False,
           tokens=[b"*a", b"&a ", b"&a [*a]", b"!!binary ", b"<<: ", b"[", b"]", b"{", b"}", b": ", b"\n  ", b"\n- ",
                   b"\"", b"'", b"\xff", b"\x00", b"99999999999999d", b"1e400", b"true", b"env:", b"\n" + b" " * 40,
                   b"services:", b"depends_on: [", b"Bearer abcdefgh1234", b"https://u:p@h/x?token=1"]),
]}


# --- one execution ------------------------------------------------------------------------------

@dataclass
class Outcome:
    seconds: float
    crash: str | None = None  # the unexpected exception
    leaks: list[str] = field(default_factory=list)


def execute(target: Target, data: bytes) -> Outcome:
    t = time.perf_counter()
    try:
        out = target.run(data)
    except target.errors:
        out = []
    except Exception as exc:  # noqa: BLE001 - what a fuzzer is for
        return Outcome(time.perf_counter() - t, crash=f"{type(exc).__name__}: {str(exc)[:300]}")
    seconds = time.perf_counter() - t
    leaks: list[str] = []
    if target.leak_checked:
        text = data.decode("utf-8", "replace")
        exposed = [s for s in SECRETS if s in text and s not in DEFAULT.redact(text)]
        leaks = [f"{s!r} in {o[:200]!r}" for s in exposed for o in out if s in o]
    return Outcome(seconds, leaks=leaks)


def check(target: Target, data: bytes) -> None:
    """The property the bounded run asserts."""
    res = execute(target, data)
    assert res.crash is None, res.crash
    assert not res.leaks, res.leaks
    assert res.seconds < HANG_SECONDS, f"{res.seconds:.2f}s"


# --- mutation ------------------------------------------------------------------------------------

def mutate(rng: random.Random, data: bytes, tokens: list[bytes], other: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randint(0, len(buf))
        op = rng.choice(("token", "byte", "delete", "repeat", "truncate", "splice", "flip"))
        if op == "token":
            buf[at:at] = rng.choice(tokens)
        elif op == "byte":
            buf[at:at + 1] = bytes([rng.randrange(256)])
        elif op == "flip" and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == "delete":
            del buf[at:at + rng.randint(1, 40)]
        elif op == "repeat":
            span = buf[at:at + rng.randint(1, 80)]
            buf[at:at] = span * rng.randint(1, 30)
        elif op == "splice" and other:
            a = rng.randint(0, len(other))
            buf[at:] = other[a:a + rng.randint(1, 400)] + buf[at:]
        else:
            del buf[at:]
    return bytes(buf)


@st.composite
def mutated(draw, seeds: list[bytes], tokens: list[bytes]) -> bytes:
    """The mutations of :func:`mutate`, drawn by hypothesis, so that a failure in ``make test``
    shrinks to a small input."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["token", "byte", "delete", "repeat", "truncate", "splice"]))
        if op == "token":
            data[at:at] = draw(st.sampled_from(tokens))
        elif op == "byte":
            data[at:at + 1] = bytes([draw(st.integers(0, 255))])
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif op == "repeat":
            span = data[at:at + draw(st.integers(1, 80))]
            data[at:at] = span * draw(st.integers(1, 20))
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            a = draw(st.integers(0, len(other)))
            data[at:at] = other[a:a + draw(st.integers(1, 200))]
        else:
            del data[at:]
    return bytes(data)


# --- the long run ----------------------------------------------------------------------------------

def fuzz(target: Target, seconds: float, out: Path, seed: int = 0) -> dict:
    rng = random.Random(seed)
    seeds = [p.read_bytes() for p in target.corpus()]
    execs = crashes = hangs = leaks = 0
    slowest = (0.0, b"")
    first: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    for data in seeds:  # the corpus itself first, unmutated
        res = execute(target, data)
        execs += 1
        if res.seconds > slowest[0]:
            slowest = (res.seconds, data)
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(seeds), target.tokens, rng.choice(seeds))
        res = execute(target, data)
        execs += 1
        if res.seconds > slowest[0]:
            slowest = (res.seconds, data)
        problem = None
        if res.crash:
            crashes += 1
            problem = ("crash", res.crash)
        elif res.leaks:
            leaks += 1
            problem = ("leak", res.leaks[0])
        elif res.seconds >= HANG_SECONDS:
            hangs += 1
            problem = ("hang", f"{res.seconds:.2f}s")
        if problem is not None:
            digest = hashlib.sha256(data).hexdigest()[:16]
            path = out / "failures" / f"{target.name}-{problem[0]}-{digest}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            first.setdefault(problem[0], f"{problem[1]} ({path})")
    slow_path = out / "slowest" / f"{target.name}.bin"
    slow_path.parent.mkdir(parents=True, exist_ok=True)
    slow_path.write_bytes(slowest[1])
    return {"target": target.name, "seconds": seconds, "executions": execs, "crashes": crashes, "hangs": hangs,
            "leaks": leaks, "slowest_seconds": round(slowest[0], 4), "slowest_bytes": len(slowest[1]),
            "slowest_input": str(slow_path), "corpus": len(seeds), "first": first}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.property.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="per target (default 30)")
    p.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: every target")
    p.add_argument("--out", type=Path, default=Path("out/fuzz"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-seeds", action="store_true", help="(re)write the generated seed files and exit")
    args = p.parse_args(argv)
    if args.write_seeds:
        write_seeds()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'target':22} {'execs':>8} {'crash':>5} {'hang':>4} {'leak':>4} {'slowest':>9} {'bytes':>7}")
    for name in args.target or sorted(TARGETS):
        row = fuzz(TARGETS[name], args.seconds, args.out, args.seed)
        rows.append(row)
        print(f"{name:22} {row['executions']:8d} {row['crashes']:5d} {row['hangs']:4d} {row['leaks']:4d} "
              f"{row['slowest_seconds']:8.4f}s {row['slowest_bytes']:7d}", flush=True)
        for kind, what in row["first"].items():
            print(f"  first {kind}: {what}", flush=True)
    (args.out / "report.json").write_text(json.dumps(rows, indent=1) + "\n")
    total = {k: sum(r[k] for r in rows) for k in ("executions", "crashes", "hangs", "leaks")}
    print(f"total: {total['executions']} executions, {total['crashes']} crashes, {total['hangs']} hangs, "
          f"{total['leaks']} leaks; report {args.out / 'report.json'}")
    return 1 if total["crashes"] or total["hangs"] or total["leaks"] else 0


# --- seeds ------------------------------------------------------------------------------------------

def _kv(d: dict) -> list[dict]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]


T_NS = "1787227200000000000"


def _seed_docs() -> dict[str, dict[str, object]]:
    res = {"attributes": _kv({"service.name": "checkout", "user": "jane.doe@example.com"})}
    metrics = {"resourceMetrics": [{"resource": res, "scopeMetrics": [{"scope": {"name": "s"}, "metrics": [
        {"name": "http.server.requests", "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [
            {"timeUnixNano": T_NS, "startTimeUnixNano": "1787227100000000000", "asInt": "42",
             "attributes": _kv({"route": "/pay", "card": "4111 1111 1111 1111"})}]}},
        {"name": "cpu", "gauge": {"dataPoints": [{"timeUnixNano": T_NS, "asDouble": 0.5,
                                                  "attributes": _kv({"key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"})}]}},
        {"name": "http.server.request.duration", "histogram": {"aggregationTemporality": 2, "dataPoints": [
            {"timeUnixNano": T_NS, "count": "10", "sum": 1.5, "bucketCounts": ["1", "7", "2"],
             "explicitBounds": [0.05, 0.5], "attributes": _kv({"dsn": "postgres://admin:hunter2@db/shop"})}]}}]}]}]}
    logs = {"resourceLogs": [{"resource": res, "scopeLogs": [{"logRecords": [
        {"timeUnixNano": T_NS, "severityNumber": 17, "severityText": "ERROR",
         "body": {"stringValue": "payment declined for jane.doe@example.com card 4111.1111.1111.1111"},
         "attributes": _kv({"token": "ghp_" + "a1B2" * 9})},
        {"observedTimeUnixNano": T_NS, "severityText": "INFO",
         "body": {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "ok"}}]}}}]}]}]}
    traces = {"resourceSpans": [{"resource": res, "scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "GET /users/jane.doe@example.com",
         "kind": 2, "startTimeUnixNano": T_NS, "endTimeUnixNano": "1787227200250000000", "status": {"code": 2}},
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175", "parentSpanId": "eee19b7ec3c1b174",
         "name": "SELECT orders", "kind": 3, "startTimeUnixNano": T_NS, "endTimeUnixNano": "1787227200100000000"}]}]}]}
    return {"metrics": metrics, "logs": logs, "traces": traces}


def write_seeds() -> None:
    """The generated seeds: OTLP/JSON and protobuf requests, native batches, Prometheus samples,
    webhooks and change events, each with planted secrets (hand-written corpora, control and
    topology, are kept as they are)."""
    from streams.ingest.external import DATADOG_TEMPLATE

    docs = _seed_docs()
    files: dict[str, bytes] = {}
    for signal, doc in docs.items():
        files[f"otlp_json_{signal}/seed.json"] = orjson.dumps(doc)
        files[f"otlp_proto_{signal}/seed.pb"] = otlp_proto.encode(doc, signal)
    files["native_batch/seed.json"] = orjson.dumps({
        "schema_version": 1, "service": "api", "labels": {"host.name": "a1", "owner": "jane.doe@example.com"},
        "points": [["cpu", 1787227200.0, 0.5], {"metric": "mem", "t": 1787227200.0, "value": 3,
                                                 "kind": "counter", "labels": {"card": "4111 1111 1111 1111"}}]})
    files["prometheus_sample/seed.json"] = orjson.dumps({
        "timestamp": "2026-08-20T12:00:00Z", "value": "0.5", "name": "node_cpu",
        "labels": {"__name__": "node_cpu", "job": "node", "service": "api", "instance": "node-1:9100",
                   "user": "jane.doe@example.com", "api_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"}})
    files["webhook_alertmanager/seed.json"] = orjson.dumps({
        "version": "4", "status": "firing", "receiver": "aiops", "groupLabels": {"alertname": "HighCPU"},
        "alerts": [{"status": "firing", "labels": {"alertname": "HighCPU", "service": "checkout", "severity": "critical",
                                                   "owner": "jane.doe@example.com"},
                    "annotations": {"summary": "card 4111 1111 1111 1111 failed", "runbook_url": "https://runbooks/cpu"},
                    "startsAt": "2026-08-20T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": "3fff2c2d7595e046"}]})
    values = {"$ALERT_ID": "1234", "$ALERT_CYCLE_KEY": "7061395284219318419", "$ALERT_TRANSITION": "Triggered",
              "$ALERT_TYPE": "error", "$ALERT_PRIORITY": "P1",
              "$ALERT_TITLE": "[Triggered on {service:orders-db}] Pool for jane.doe@example.com",
              "$ALERT_METRIC": "postgresql.percent_usage_connections", "$ALERT_SCOPE": "service:orders-db,env:prod",
              "$HOSTNAME": "db-1", "$TAGS": "env:prod,service:orders-db,owner:jane.doe@example.com",
              "$DATE": "1787227200000", "$LINK": "https://app.datadoghq.com/monitors/1234"}
    text = DATADOG_TEMPLATE
    for var in sorted(values, key=len, reverse=True):
        text = text.replace(var, values[var])
    files["webhook_datadog/seed.json"] = text.encode()
    files["webhook_newrelic/seed.json"] = orjson.dumps({
        "id": "0e4a7d1c-2f0b-4c8a-9a55-3c3e8e2a1f10", "issueUrl": "https://radar-api.service.newrelic.com/x",
        "title": "checkout error rate > 5% for jane.doe@example.com", "priority": "CRITICAL",
        "impactedEntities": ["checkout"], "totalIncidents": 1, "state": "ACTIVATED", "trigger": "STATE_CHANGE",
        "isCorrelated": False, "createdAt": 1787227200000, "updatedAt": 1787227260000, "sources": ["newrelic"],
        "alertPolicyNames": ["Shop"], "alertConditionNames": ["card 4111 1111 1111 1111"], "workflowName": "aiops"})
    files["change/deploy.json"] = orjson.dumps({
        "schema_version": 1, "id": "deploy-jane.doe@example.com", "service": "checkout", "kind": "deploy",
        "at": "2026-08-20T12:00:00Z",
        "description": "v2.3.1 by jane.doe@example.com, key sk_live_4eC39HqLyjWDarjtT1zdp7dc, card 4111.1111.1111.1111"})
    files["change/config.json"] = orjson.dumps({
        "schema_version": 1, "id": "cfg-7", "service": "orders-db", "kind": "config", "at": "2026-08-20T12:00:00Z",
        "description": "max_connections 100 -> 20, dsn postgres://admin:hunter2@db/shop"})
    for rel, data in files.items():
        path = CORPUS / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


if __name__ == "__main__":
    sys.exit(main())
