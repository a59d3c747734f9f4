"""State per input partition, rebuilt from the partition itself: after a crash, a restart or a
rebalance, nothing is lost and nothing is repeated.

Every stage is a deterministic function of its input, so the input topic *is* the changelog
(Kafka Streams does the same for tables read from a topic: its source-topic changelog
optimisation). A worker holds one state shard per partition it has been assigned:

- a :class:`DetectStage` per partition of ``telemetry.metrics``, ``telemetry.logs`` and
  ``telemetry.traces`` (telemetry is keyed by service, so a series never spans partitions);
- a :class:`CorrelateStage` per partition of ``aiops.alerts`` (keyed by correlation key, so a
  shard sees every alert that could join one of its incidents).

A shard is built the first time its partition delivers a message, by running the stage over
the partition from its first offset up to that message. The same happens when a message
arrives out of sequence: another worker applied the offsets in between (the partition moved
away and came back), so the shard is stale and is rebuilt. A message below the shard's next
offset was applied already (Kafka redelivers after a crash) and is skipped. So the rules need
no rebalance callback, and they hold for a restart of one worker, for N workers sharing a
group, and for a partition moving between them.

What the rebuild computes from the partition is not sent again: Faust flushes the producer
before it commits an offset, so every output of the offsets below the committed one is on its
topic already, and the input above it is delivered again and processed as new. (Comparing with
the output topics instead would also re-send history whenever a live config change made the
rebuild compute something else.) Operator messages (approvals, silences, changes, executor
results) reach every correlate shard: each worker reads those topics whole (:class:`Broadcast`),
outside the group and its commits, and replays them into each shard it builds; what applying
them computes is compared with the output topics, and what is missing (the process that
applied them died before its producer flushed) is sent.

Without checkpoints the cost is one pass over a partition's retained history when the shard is
built. With them (:mod:`streams.checkpoint`), a shard starts from the newest snapshot that
covers no more than the offset it is built for, and only the input after the snapshot is
replayed; the rules above are unchanged, since a restored shard is exactly the shard a rebuild
up to the snapshot's offset would have made. A correlate shard's snapshot records how far it
applied each operator-topic partition, and only what lies beyond is applied after restoring.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from streams import codec, kafka_security
from streams.config import Topology
from streams.ingest import DecodeError
from streams.pipeline import CorrelateStage, DetectStage, load_runbook_index

if TYPE_CHECKING:
    from streams.checkpoint import Checkpoints

log = logging.getLogger("aiops.recovery")

RESULT_DECISIONS = ("executed", "failed", "dry_run_ok", "refused", "unknown")


def group_less_consumer(bootstrap: str):
    """A consumer outside every group: it reads what it is assigned and commits nothing."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                            auto_offset_reset="earliest", **kafka_security.current().aiokafka_kwargs())


async def _partitions(consumer, topic: str) -> list[int]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    return sorted(parts)


async def follow(bootstrap: str, topics: tuple[str, ...], loaded: asyncio.Event,
                 on_message: Callable[[str, bytes, int, int], Awaitable[None]]) -> None:
    """Read ``topics`` whole and for ever, outside the group, so every worker sees every message
    whichever partitions it holds (operator messages, configs). ``on_message(topic, value,
    partition, offset)`` gets each message in order; ``loaded`` is set once the end offsets
    found at the start are reached, so a message that arrives after it is set is a live one."""
    from aiokafka import TopicPartition

    consumer = group_less_consumer(bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await _partitions(consumer, t)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        history_end = await consumer.end_offsets(tps)
        while True:
            if not loaded.is_set() and all([await consumer.position(tp) >= end for tp, end in history_end.items()]):
                loaded.set()
            batch = await consumer.getmany(timeout_ms=500)
            for tp in sorted(batch):
                for msg in batch[tp]:
                    await on_message(tp.topic, msg.value, tp.partition, msg.offset)
    finally:
        await consumer.stop()


# How long a read up to a given offset waits for the broker to report that offset as written
# before it settles for what there is (see read_partitions).
UNTIL_PATIENCE = 30.0


async def read_partitions(bootstrap: str, topic: str, partitions: list[int] | None = None,
                          until: dict[int, int] | None = None, start: dict[int, int] | None = None
                          ) -> list[tuple[int, int, bytes | None, bytes]]:
    """``(partition, offset, key, value)`` of ``topic``: from ``start`` (default the beginning)
    up to ``until`` (default the end offsets now), in offset order per partition.

    ``until`` is an offset the caller has seen a message at, so everything before it is
    written; it is read through even where the broker's end offset says less. A broker may
    report an end offset behind messages it has already handed a consumer (tansu does, under
    load), and a rebuild cut there silently drops the state of the messages in between. Only
    an end offset that stays short of ``until`` for ``UNTIL_PATIENCE`` seconds (the log was
    truncated) ends the read short, with a warning."""
    from aiokafka import TopicPartition

    consumer = group_less_consumer(bootstrap)
    await consumer.start()
    try:
        if partitions is None:
            partitions = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if until is not None:
            ends = {tp: until.get(tp.partition, 0) for tp in tps}
        todo = set()
        for tp in tps:
            first = (start or {}).get(tp.partition, 0)
            if first < ends[tp]:
                consumer.seek(tp, first)
                todo.add(tp)
        out: list[tuple[int, int, bytes | None, bytes]] = []
        stalled_since: float | None = None
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, msgs in batch.items():
                out += [(tp.partition, m.offset, m.key, m.value) for m in msgs if m.offset < ends[tp]]
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
            if batch or not todo:
                stalled_since = None
                continue
            now = time.monotonic()
            stalled_since = stalled_since or now
            if now - stalled_since >= UNTIL_PATIENCE:
                written = await consumer.end_offsets(list(todo))
                for tp in [tp for tp in todo if written[tp] < ends[tp]]:
                    log.warning("%s[%d]: read up to offset %d, but the log ends at %d", topic, tp.partition,
                                ends[tp], written[tp])
                    todo.discard(tp)
                stalled_since = None
        out.sort(key=lambda r: (r[1], r[0]))
        return out
    finally:
        await consumer.stop()


MEMBER_FILE = "group-member.json"


def remember_member(data_dir: Path, group: str, member_id: str) -> None:
    """Note this worker's member id in the group, so the worker restarted on this data directory
    can take its place at once (:func:`leave_for_dead_member`)."""
    path = Path(data_dir) / MEMBER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"group": group, "member_id": member_id}))
    os.replace(tmp, path)


def leave_for_dead_member(bootstrap: str, data_dir: Path, group: str, timeout: float = 5.0) -> str | None:
    """Remove from ``group`` the member a previous worker on ``data_dir`` was, if any; its id, or None.

    A worker killed with SIGKILL stays a member until its session times out
    (``worker.session_timeout``), and the coordinator holds a join until every member
    has rejoined or been dropped: the restarted worker would wait out the dead one's session,
    then a second round (about 60 s in all). A LeaveGroup on the dead member's behalf (the
    request a clean shutdown sends) drops it now. Only the member this data directory last
    was is removed: one data directory is one worker. Static membership (``--instance-id``)
    solves the same on brokers that support it. Best effort: any failure leaves the normal wait."""
    import asyncio

    path = Path(data_dir) / MEMBER_FILE
    try:
        doc = orjson.loads(path.read_bytes())
        member_id = doc["member_id"] if doc.get("group") == group else None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not member_id:
        return None

    async def leave() -> None:
        from aiokafka.client import AIOKafkaClient
        from aiokafka.protocol.group import LeaveGroupRequest

        client = AIOKafkaClient(bootstrap_servers=bootstrap, **kafka_security.current().aiokafka_kwargs())
        try:
            await client.bootstrap()
            node = await client.coordinator_lookup(0, group)  # 0: a consumer group's coordinator
            resp = await client.send(node, LeaveGroupRequest(group, member_id))
            if resp.error_code:
                raise RuntimeError(f"LeaveGroup error code {resp.error_code}")
        finally:
            await client.close()

    try:
        asyncio.run(asyncio.wait_for(leave(), timeout))
    except Exception as exc:  # noqa: BLE001 - the restart still works, only slower
        log.warning("could not remove the previous member %s from group %s (%s); the join waits for its "
                    "session to time out", member_id, group, exc)
        return None
    log.warning("removed the previous member %s of this data directory from group %s", member_id, group)
    return member_id


class OutputIndex:
    """What the output topics hold, as a multiset of (topic, value), read incrementally so that
    building many shards does not re-read the topics each time."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self.bootstrap = bootstrap
        self.topics = topics
        self.seen: Counter = Counter()
        self._next: dict[str, dict[int, int]] = {t: {} for t in topics}
        self._lock = asyncio.Lock()

    async def refresh(self) -> Counter:
        async with self._lock:
            for topic in self.topics:
                rows = await read_partitions(self.bootstrap, topic, start=self._next[topic])
                for partition, offset, _, value in rows:
                    self.seen[(topic, value)] += 1
                    self._next[topic][partition] = offset + 1
            return Counter(self.seen)


@dataclass
class Broadcast:
    """Operator and executor messages every correlate shard must see, in the order read:
    ``(topic, value)``. Filled by the worker's reader of those topics (all partitions, no group)."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    # Where each message came from, ``(topic, partition, offset)``, parallel to ``messages``: a
    # checkpoint records how far it applied each partition, since another process may read the
    # partitions interleaved differently.
    where: list[tuple[str, int, int]] = field(default_factory=list)

    def positions(self, seen: int) -> dict[str, int]:
        """``"topic/partition"`` -> the next offset not among the first ``seen`` messages."""
        out: dict[str, int] = {}
        for topic, partition, offset in self.where[:seen]:
            key = f"{topic}/{partition}"
            if offset + 1 > out.get(key, 0):
                out[key] = offset + 1
        return out

    def applied(self, i: int, positions: dict[str, int]) -> bool:
        """Whether message ``i`` is below ``positions`` (a checkpoint has applied it)."""
        topic, partition, offset = self.where[i]
        return offset < positions.get(f"{topic}/{partition}", 0)


def apply_broadcast(topology: Topology, stage: CorrelateStage, topic: str, value: bytes):
    """One broadcast message into ``stage``; returns the stage's result (or None)."""
    t = topology.topics
    try:
        if topic == t.changes:
            stage.change(codec.decode_change(value, stage.redactor))
        elif topic == t.control:
            return stage.control(codec.decode_control(value))
        elif topic == t.actions:
            act = codec.decode_action(value)
            if act.decision in RESULT_DECISIONS:
                stage.action_result(act)
    except codec.RecordError:
        pass  # dead-lettered by the agent that reads the topic in the group
    return None


@dataclass
class Shard:
    stage: DetectStage | CorrelateStage
    next_offset: int
    broadcast_seen: int = 0  # correlate shards: how many of Broadcast.messages the stage has applied
    # Checkpointing (streams/checkpoint.py): when the last snapshot began, how many were taken
    # (the slot on the checkpoint topic alternates), and whether one is being written.
    snapshot_at: float = 0.0
    snapshots: int = 0
    snapshotting: bool = False
    snapshot_offset: int = -1  # next_offset of the last snapshot begun: none is taken twice
    publishing: int = 0  # broadcast outputs of this shard being handed to the producer: no snapshot meanwhile


@dataclass
class Rebuilt:
    shard: Shard
    missing: list[tuple[str, bytes, bytes]]
    messages: int
    seconds: float
    broadcast_seen: int = 0  # how many broadcast messages the shard has applied
    restored: str | None = None  # "local" or "kafka" when a checkpoint gave the state, then ``messages`` replayed
    skipped: list = field(default_factory=list)  # checkpoints passed over: (store, SnapshotError)


async def rebuild_detect(topology: Topology, bootstrap: str, topic: str, partition: int, until: int,
                         checkpoints: Checkpoints | None = None) -> Rebuilt:
    """A detect shard for ``topic``/``partition`` as of offset ``until``: from the newest usable
    checkpoint and the input after it, else from the partition's first offset."""
    started = time.monotonic()
    found = (await checkpoints.restore("detect", topic, partition, until, topology, clock=time.time)
             if checkpoints else None)
    if found is not None and found.stage is not None:
        stage, start = found.stage, found.meta.next_offset
    else:
        stage, start = DetectStage(topology, lane=f"{topic}/{partition}", clock=time.time), 0
    process = stage.processor(topic)
    rows = await read_partitions(bootstrap, topic, [partition], until={partition: until}, start={partition: start})
    for _, _, _, value in rows:
        try:
            process(value)  # its alerts are on aiops.alerts already: see the module's docstring
        except DecodeError:
            continue  # dead-lettered by the process that read it first
    return Rebuilt(Shard(stage, until), [], len(rows), time.monotonic() - started,
                   restored=found.source if found and found.stage is not None else None,
                   skipped=found.skipped if found else [])


async def rebuild_correlate(topology: Topology, bootstrap: str, partition: int, until: int,
                            broadcast: Broadcast, outputs: OutputIndex, checkpoints: Checkpoints | None = None
                            ) -> Rebuilt:
    """A correlate shard for ``aiops.alerts``/``partition`` as of offset ``until``: changes
    first (candidate causes must be known before the alerts they explain), then the alerts,
    then approvals and silences, then the executor's results. From a checkpoint, only the
    alerts after it and the broadcast messages it had not applied."""
    started = time.monotonic()
    t = topology.topics
    await broadcast.loaded.wait()
    found = await checkpoints.restore("correlate", t.alerts, partition, until, topology) if checkpoints else None
    if found is not None and found.stage is not None:
        stage, start, positions = found.stage, found.meta.next_offset, found.meta.broadcast
    else:
        stage, start, positions = CorrelateStage(topology, load_runbook_index(topology)), 0, {}
    rows = await read_partitions(bootstrap, t.alerts, [partition], until={partition: until}, start={partition: start})
    outputs_: list[tuple[str, bytes, bytes]] = []
    log_ = [(topic, value) for i, (topic, value) in enumerate(list(broadcast.messages))
            if not broadcast.applied(i, positions)]
    seen = len(broadcast.messages)
    for topic, value in log_:
        if topic == t.changes:
            apply_broadcast(topology, stage, topic, value)
    for _, _, _, value in rows:
        try:
            ev = codec.decode_alert_event(value)
        except codec.RecordError:
            continue
        stage.process([ev])  # its outputs are on their topics already: see the module's docstring
    for topic, value in log_:
        if topic == t.control:
            res = apply_broadcast(topology, stage, topic, value)
            if res is not None:
                outputs_ += encode_result(topology, res)
    for topic, value in log_:
        if topic == t.actions:
            apply_broadcast(topology, stage, topic, value)
    missing = []
    if outputs_:
        seen_out = await outputs.refresh()
        for topic, key, value in outputs_:
            if seen_out[(topic, value)] > 0:
                seen_out[(topic, value)] -= 1
            else:
                missing.append((topic, key, value))
    return Rebuilt(Shard(stage, until), missing, len(rows), time.monotonic() - started, broadcast_seen=seen,
                   restored=found.source if found and found.stage is not None else None,
                   skipped=found.skipped if found else [])


def encode_result(topology: Topology, res) -> list[tuple[str, bytes, bytes]]:
    t = topology.topics
    return ([(t.incidents, i.id.encode(), codec.encode_incident(i)) for i in res.incidents]
            + [(t.actions, a.id.encode(), codec.encode_action(a)) for a in res.actions]
            + [(t.tickets, k.ticket_key.encode(), codec.encode_ticket(k)) for k in res.tickets])


__all__ = ["Broadcast", "follow", "group_less_consumer", "OutputIndex", "Rebuilt", "Shard", "apply_broadcast", "encode_result", "read_partitions",
           "rebuild_correlate", "rebuild_detect"]
