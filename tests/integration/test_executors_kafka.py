"""The action executor on a real broker: planned actions in, results out under the same key, and a
redelivered or replayed action never runs twice, across a restart that lost the group's offsets."""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson

from remediators.executor_config import ExecutorSettings
from remediators.records import Action
from streams.broker import ensure_topics
from streams.codec import encode_action
from streams.executors import run_action_executor
from tests.integration.harness import produce

T0 = 1_767_225_600.0


def planned(aid: str, kind: str, target: str, mode: str = "execute", decision: str = "planned",
            **params: str) -> Action:
    return Action(id=aid, incident_id="inc-1", incident_version=1, policy="p", step=0, kind=kind, target=target,
                  params=tuple(sorted(params.items())), mode=mode, decision=decision, reason="matched", at=T0)


def publish(bootstrap: str, topic: str, actions: list[Action]) -> None:
    for a in actions:  # keyed by action id, as the dispatcher writes them
        produce(bootstrap, topic, [encode_action(a)], key=a.id.encode())


def run_until(settings: ExecutorSettings, bootstrap: str, topic: str, group: str, done, timeout: float = 90.0
              ) -> list[dict]:
    """Run the executor loop until ``done(records on topic)``; return those records."""
    from aiokafka import AIOKafkaConsumer

    async def main() -> list[dict]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_action_executor(settings, bootstrap, actions_topic=topic, group_id=group,
                                                       stop=stop))
        reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                  enable_auto_commit=False, group_id=None)
        await reader.start()
        records: list[dict] = []
        try:
            deadline = time.monotonic() + timeout
            while not done(records):
                if task.done():
                    task.result()  # raises the executor's error
                    raise AssertionError("the executor stopped by itself")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"condition not met after {timeout}s; records: {records}")
                for msgs in (await reader.getmany(timeout_ms=300)).values():
                    records += [orjson.loads(m.value) | {"_key": m.key.decode()} for m in msgs]
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await reader.stop()
        return records

    return asyncio.run(main())


def read_all(bootstrap: str, topic: str) -> list[dict]:
    """Every record on a one-partition topic, up to its end offset now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def main() -> list[dict]:
        tp = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            out: list[dict] = []
            while await consumer.position(tp) < end:
                for msgs in (await consumer.getmany(tp, timeout_ms=500)).values():
                    out += [orjson.loads(m.value) for m in msgs]
            return out
        finally:
            await consumer.stop()

    return asyncio.run(main())


def results(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        if r["decision"] not in ("planned", "approved", "awaiting_approval"):
            out.setdefault(r["id"], []).append(r)
    return out


def test_executor_runs_each_action_once_across_redelivery_and_restart(kafka_bootstrap, tmp_path):
    prefix = "t" + uuid.uuid4().hex[:8]
    topic, commands = f"{prefix}.aiops.actions", f"{prefix}.ops.traffic-control"
    ensure_topics(kafka_bootstrap, [topic, commands])
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    count = tmp_path / "ran.log"
    script = runbooks / "compress-old-logs.sh"
    script.write_text(f'#!/bin/sh\necho "$*" >> {count}\n')
    script.chmod(0o755)
    settings = ExecutorSettings(runbooks_dir=str(runbooks), ledger_path=str(tmp_path / "ledger.jsonl"),
                                exec={"allow": ["compress-old-logs.sh"]}, kafka={"allowed_topics": [commands]})

    run = planned("act-run", "exec", "runbooks/compress-old-logs.sh", host="db-1", args="/var/log")
    dry = planned("act-dry", "exec", "runbooks/compress-old-logs.sh", mode="dry_run", host="db-2", args="/")
    cmd = planned("act-cmd", "kafka", commands, command="reroute", away_from="gw-2")
    wait = planned("act-wait", "exec", "runbooks/compress-old-logs.sh", decision="awaiting_approval",
                   host="db-3", args="/")
    bad = planned("act-bad", "exec", "runbooks/compress-old-logs.sh", host="db-1;reboot", args="/")
    publish(kafka_bootstrap, topic, [run, dry, cmd, wait, bad, run])  # `run` delivered twice

    want = {"act-run", "act-dry", "act-cmd", "act-bad"}
    first = results(run_until(settings, kafka_bootstrap, topic, f"{prefix}-executor",
                              lambda recs: set(results(recs)) >= want and len(results(recs)["act-run"]) >= 2))
    assert {k: [r["decision"] for r in v] for k, v in first.items()} == {
        "act-run": ["executed", "executed"], "act-dry": ["dry_run_ok"], "act-cmd": ["executed"],
        "act-bad": ["refused"]}
    assert first["act-run"][0] == first["act-run"][1]  # the duplicate got the ledger's answer, byte for byte
    assert all(r["_key"] == i for i, rs in first.items() for r in rs)
    assert "act-wait" not in first
    assert count.read_text().splitlines() == ["--execute --host db-1 /var/log", "--dry-run --host db-2 /"]

    # Restart with the group's offsets lost (a new group reads everything again), and one more
    # redelivery of `run`: nothing runs again; the same results are re-emitted.
    publish(kafka_bootstrap, topic, [run])
    second = results(run_until(settings, kafka_bootstrap, topic, f"{prefix}-executor-2",
                               lambda recs: len(results(recs).get("act-run", [])) >= 5))
    assert {r["decision"] for r in second["act-run"]} == {"executed"}
    assert len({orjson.dumps({k: v for k, v in r.items() if k != "_key"}) for r in second["act-run"]}) == 1
    assert count.read_text().splitlines() == ["--execute --host db-1 /var/log", "--dry-run --host db-2 /"]

    # The kafka step's command went out exactly once, keyed by the action id.
    sent = read_all(kafka_bootstrap, commands)
    assert [(m["command"], m["action_id"], m["args"]) for m in sent] == [("reroute", "act-cmd", {"away_from": "gw-2"})]
    assert Path(settings.ledger_path).read_bytes().count(b'"state":"started"') == 4  # run, dry, cmd, bad
