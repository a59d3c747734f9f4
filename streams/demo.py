"""``aiops demo`` (``make run``): broker, worker and the shipped scenarios, incidents printed live."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import orjson

from detectors.records import rfc3339
from streams import kafka_security
from streams.config import Topology

_BOLD, _RED, _GREEN, _DIM, _RESET = ("\033[1m", "\033[31m", "\033[32m", "\033[2m", "\033[0m") \
    if sys.stdout.isatty() else ("",) * 5


def _print(line: str = "") -> None:
    print(line, flush=True)


def describe_incident(rec: dict) -> list[str]:
    """Human lines for an incident record, as the demo prints them."""
    if rec["status"] == "resolved":
        head = f"{_GREEN}RESOLVED{_RESET} [{rec['priority']}] {rec['title']}  ({rec['id']} v{rec['version']}, " \
               f"at {rec['resolved_at']})"
        return [head]
    verb = {"opened": "OPENED", "reopened": "REOPENED"}.get(rec["reason"], "UPDATED")
    if verb == "UPDATED" and rec.get("notification") == "page":
        verb = "PAGED"  # held below P1 (correlation.notify.hold), it notifies now
    # Whether a receiver hears of it: a record held silent is published all the same.
    heard = {"page": "pages", "update": "notifies", "silent": "silent"}.get(rec.get("notification", ""), "")
    lines = [f"{_RED}{_BOLD}{verb}{_RESET} [{rec['priority']}] {rec['title']}  ({rec['id']} v{rec['version']}, "
             f"{rec['reason']}, {heard + ', ' if heard else ''}at {rec['updated_at']})",
             f"    services: {', '.join(rec['services'])};  alerts: {rec['alerts']['count']}"]
    for i, rc in enumerate(rec["root_causes"][:3], 1):
        chain = " -> ".join(rc["path"])
        lines.append(f"    root cause #{i}: {rc['service']} ({rc['kind']}, score {rc['score']:.2f})  chain: {chain}")
        for ev in rc["evidence"][:2]:
            # A log alert's detail holds its template, a sample line and the host: what names the node.
            if ev["value"] is None or rc["kind"] == "unobserved" or (ev.get("metric", "").startswith("log.template.")
                                                                   and ev["detail"]):
                lines.append(f"{_DIM}        evidence: {ev['detail'] or ev['series']}{_RESET}")
            else:
                lines.append(f"{_DIM}        evidence: {ev['series']} = {ev['value']:.4g} "
                             f"(expected {ev['expected']:.4g}){_RESET}")
    return lines


async def _watch(bootstrap: str, topology: Topology, state: dict) -> None:
    from aiokafka import AIOKafkaConsumer

    t = topology.topics
    consumer = AIOKafkaConsumer(t.incidents, t.actions, t.tickets, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                                **kafka_security.current().aiokafka_kwargs())
    await consumer.start()
    held: dict[tuple[str, int], list[str]] = {}
    try:
        async for msg in consumer:
            rec = orjson.loads(msg.value)
            state["last_output"] = time.monotonic()
            if msg.topic == t.incidents:
                state["incidents"][rec["id"]] = rec
                if rec["reason"] in ("opened", "reopened", "resolved") or rec.get("notification") in ("page", "update"):
                    for line in describe_incident(rec):
                        _print(line)
                # Actions and tickets arrive on their own topics, possibly before the incident
                # they answer: print them under it.
                for line in held.pop((rec["id"], rec["version"]), []):
                    _print(line)
                continue
            if msg.topic == t.actions:
                state["actions"] += 1
                key = (rec["incident_id"], rec["incident_version"])
                line = (f"    action  {rec['decision']:<9} {rec['mode']:<7} {rec['kind']}: {rec['target']} "
                        f"(policy {rec['policy']})")
            else:
                state["tickets"] += 1
                key = (rec["incident_id"], rec["incident_version"])
                if rec["event"] not in ("create", "resolve"):
                    continue
                line = (f"    ticket  {rec['event']:<9} team {rec['team']}"
                        f"{' -> ' + rec['assignee'] if rec.get('assignee') else ''}: {rec['title']}")
            seen = state["incidents"].get(key[0])
            if seen is not None and seen["version"] >= key[1]:
                _print(line)
            else:
                held.setdefault(key, []).append(line)
    finally:
        await consumer.stop()


async def _feed(bootstrap: str, topic: str, requests: list[dict], speed: float, state: dict,
                logs_topic: str | None = None, logs: list[dict] = ()) -> None:
    """Metrics to ``topic`` and logs to ``logs_topic``, interleaved by event time (metrics first on a tie)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **kafka_security.current().aiokafka_kwargs())
    await producer.start()
    try:
        t0_event = None
        t0_wall = time.monotonic()
        timed = [(_request_time(r), 0, k, topic, r) for k, r in enumerate(requests)]
        if logs_topic is not None:
            timed += [(_request_time(r), 1, k, logs_topic, r) for k, r in enumerate(logs)]
            timed.sort(key=lambda x: x[:3])
        for t_event, _, _, topic, req in timed:
            if t0_event is None:
                t0_event = t_event
            delay = (t_event - t0_event) / speed - (time.monotonic() - t0_wall)
            if delay > 0:
                await asyncio.sleep(delay)
            key = _service_of(req).encode()
            await producer.send(topic, orjson.dumps(req), key=key)
            state["fed"] += 1
            state["event_time"] = t_event
        await producer.flush()
    finally:
        await producer.stop()


def _request_time(req: dict) -> float:
    if "resourceLogs" in req:  # the latest record: when the collector would export the batch
        return max((int(lr.get("timeUnixNano") or lr.get("observedTimeUnixNano") or 0) / 1e9
                    for rl in req["resourceLogs"] for sl in rl.get("scopeLogs", []) for lr in sl.get("logRecords", [])),
                   default=0.0)
    for rm in req.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                for kind in ("gauge", "sum", "histogram"):
                    if kind in metric:
                        for dp in metric[kind].get("dataPoints", []):
                            return int(dp["timeUnixNano"]) / 1e9
    return 0.0


def _service_of(req: dict) -> str:
    for rm in req.get("resourceMetrics", req.get("resourceLogs", [])):
        for attr in rm.get("resource", {}).get("attributes", []):
            if attr.get("key") == "service.name":
                return attr["value"].get("stringValue", "")
    return ""


async def _run(bootstrap: str, topology: Topology, requests: list[dict], truth: list[dict], speed: float,
               worker: subprocess.Popen, idle_exit: float, logs: list[dict] = ()) -> dict:
    state = {"incidents": {}, "actions": 0, "tickets": 0, "fed": 0, "event_time": 0.0,
             "last_output": time.monotonic()}
    watcher = asyncio.create_task(_watch(bootstrap, topology, state))
    feeder = asyncio.create_task(_feed(bootstrap, topology.topics.metrics, requests, speed, state,
                                       topology.topics.logs, logs))
    started = time.monotonic()
    last_progress = 0.0
    while True:
        await asyncio.sleep(0.5)
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with status {worker.returncode}")
        if watcher.done():
            watcher.result()
        now = time.monotonic()
        if not feeder.done() and now - last_progress > 15:
            last_progress = now
            pct = 100.0 * state["fed"] / max(1, len(requests) + len(logs))
            _print(f"{_DIM}  .. fed {state['fed']}/{len(requests) + len(logs)} telemetry batches ({pct:.0f}%), event time "
                   f"{rfc3339(state['event_time'])}, {now - started:.0f}s elapsed{_RESET}")
        if feeder.done():
            feeder.result()
            open_ = [i for i in state["incidents"].values() if i["status"] == "open"]
            if (not open_ and now - state["last_output"] > 3) or now - state["last_output"] > idle_exit:
                break
    watcher.cancel()
    return state


def _score(truth: list[dict], incidents: dict) -> list[str]:
    lines = []
    for fault in truth:
        start, end = fault["start"], fault["end"] + 900
        hits = [i for i in incidents.values() if start - 60 <= _ts(i["opened_at"]) <= end]
        ranks = [next((k for k, rc in enumerate(i["root_causes"], 1) if rc["service"] == fault["root_cause"]), None)
                 for i in hits]
        ranks = [r for r in ranks if r]
        verdict = f"root cause ranked #{min(ranks)}" if ranks else ("detected, root cause not in top 5" if hits else "MISSED")
        lines.append(f"  {fault['scenario']:<22} {fault['root_cause']:<16} {len(hits)} incident(s), {verdict}")
    return lines


def _ts(s: str) -> float:
    from detectors.records import parse_rfc3339

    return parse_rfc3339(s)


def run_demo(topology: Topology, topology_path: Path, *, speed: float = 60.0, bootstrap: str | None = None,
             web_port: int = 6066, idle_exit: float = 60.0) -> int:
    from streams import simulate as sim
    from streams.broker import EmbeddedBroker, ensure_topics

    with ExitStack() as stack:
        if bootstrap is None:
            _print("starting the embedded Kafka-compatible broker (tansu) ...")
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap = broker.bootstrap
        _print(f"broker at {bootstrap}")
        t = topology.topics
        ensure_topics(bootstrap, t.all(),
                      partitions=t.partitions)
        log_path = Path(tempfile.gettempdir()) / "aiops-demo-worker.log"
        log_file = stack.enter_context(open(log_path, "wb"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--topology", str(topology_path), "--bootstrap", bootstrap,
             "--web-port", str(web_port), "--data-dir", tempfile.mkdtemp(prefix="aiops-demo-")],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        stack.callback(_stop, worker)
        _print(f"worker started (pid {worker.pid}, log {log_path}, metrics on http://127.0.0.1:{web_port}/metrics)")
        sim_result = sim.simulate(topology, sim.load_scenarios(None))
        _print(f"feeding {len(sim_result.requests)} OTLP/JSON batches from {len(sim_result.truth)} scenarios "
               f"at {speed:g}x real time")
        for f in sim_result.truth:
            _print(f"  scenario {f['scenario']}: fault at {f['root_cause']} from {rfc3339(f['start'])}")
        state = asyncio.run(_run(bootstrap, topology, sim_result.requests, sim_result.truth, speed, worker, idle_exit,
                                 sim_result.logs))
        _print()
        n_open = sum(1 for i in state["incidents"].values() if i["status"] == "open")
        _print(f"{_BOLD}summary{_RESET}: {len(state['incidents'])} incidents ({n_open} still open), "
               f"{state['actions']} actions, {state['tickets']} ticket events")
        for line in _score(sim_result.truth, state["incidents"]):
            _print(line)
    return 0


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
