"""kill -9 a worker while it writes a snapshot, spoil what it left on disk, and start another:
the new worker skips the torn and corrupt snapshots (logged, counted on /metrics), restores
from the checkpoint topic, and the outputs are those of `aiops replay`, nothing lost or doubled."""
from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from tests.integration.harness import assert_each_output_once, consume_until, fault_midway, produce, worker_process
from tests.integration.test_pipeline_kafka import essence, final_state


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def kill_while_writing(proc, checkpoints: Path, timeout: float = 60.0) -> list[Path]:
    """SIGKILL the worker, and the child writing its snapshot, while a snapshot is pending
    (written or being written, not yet stored): what is pending at the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(checkpoints.rglob("*.pending")):
            for pid in [*children(proc.pid), proc.pid]:  # the writer first: its file stays torn
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            return list(checkpoints.rglob("*.pending"))
        time.sleep(0.005)
    raise AssertionError("no snapshot was being written")


def produce_over(proc, bootstrap: str, topic: str, payloads: list[bytes], seconds: float, parts: int = 8) -> None:
    """``payloads`` in ``parts`` batches spread over ``seconds`` once the worker reads the first:
    a worker faster than the snapshot interval is still reading when a snapshot falls due. (Spread
    from the start, all of it can be waiting while the worker joins its group, and be read at
    once.)"""
    step = -(-len(payloads) // parts)
    produce(bootstrap, topic, payloads[:step])
    deadline = time.monotonic() + 120
    while read_metric(proc.web_port, "aiops_input_messages_total", topic=topic) < 1:
        assert proc.poll() is None, "the worker died"
        assert time.monotonic() < deadline, "the worker read nothing in 120 s"
        time.sleep(0.05)
    spread(bootstrap, topic, payloads[step:], seconds * (parts - 1) / parts, parts - 1)


def spread(bootstrap: str, topic: str, payloads: list[bytes], seconds: float, parts: int) -> None:
    """``payloads`` in ``parts`` batches, one every ``seconds / parts``."""
    step = -(-len(payloads) // parts)
    for i in range(0, len(payloads), step):
        time.sleep(seconds / parts)
        produce(bootstrap, topic, payloads[i:i + step])


def wait_for_snapshots(directory: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(directory.glob("*.snap"))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} snapshots stored in {directory}"
        time.sleep(0.05)


def read_metric(port: int, name: str, **labels) -> float:
    """``metric``, or 0 while the web server is not up yet."""
    try:
        return metric(port, name, **labels)
    except OSError:
        return 0.0


def metric(port: int, name: str, **labels) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_kill_9_while_writing_a_snapshot_then_corrupt_snapshots_are_skipped(kafka_bootstrap, tmp_path):
    topo_path, topo, lines, cut, want = fault_midway(tmp_path)
    doc = yaml.safe_load(topo_path.read_text())
    # Often, so that one is soon being written; above the commit interval (1 s), so that the
    # one before the newest covers no more than the committed offset and can be restored.
    doc["worker"]["checkpoint_interval"] = "2s"
    topo_path.write_text(yaml.safe_dump(doc))
    checkpoints = tmp_path / f"data-{topo_path.stem}" / "checkpoints"

    with worker_process(topo_path, kafka_bootstrap, tmp_path) as first:
        # Over three intervals of reading, so that two snapshots of each partition are stored
        # before the kill however fast the worker reads (at full speed it reads all in one):
        # the newest may cover more than the committed offset, and then only the one before it
        # may be restored (with one, a partition without a local copy is rebuilt instead).
        produce_over(first, kafka_bootstrap, topo.topics.metrics, lines[:cut], seconds=6.0, parts=12)
        consume_until(kafka_bootstrap, topo.topics.tickets, lambda recs: any(r["event"] == "create" for r in recs),
                      timeout=120, proc=first)
        wait_for_snapshots(checkpoints / topo.topics.metrics / "0", 2)
        wait_for_snapshots(checkpoints / topo.topics.alerts / "0", 2)
        time.sleep(2.5)  # an interval: the next message makes the next snapshot due
        # The rest, spread over a few intervals while we wait for a pending snapshot: all at
        # once, a fast worker can read it, and write and store its one due snapshot, before
        # the wait begins, and then no other falls due.
        rest = threading.Thread(target=spread, args=(kafka_bootstrap, topo.topics.metrics, lines[cut:], 8.0, 16))
        rest.start()
        try:
            torn = kill_while_writing(first, checkpoints)
        finally:
            rest.join()
    assert torn, "the worker was killed while a snapshot was pending"

    # A bad disk on top: the newest local snapshot of the metrics partition has a flipped
    # bit, the older ones are cut short; the alerts partition has no local copy at all (as on
    # a node it never ran on). Both must come from the checkpoint topic.
    snaps = sorted((checkpoints / topo.topics.metrics / "0").glob("*.snap"), reverse=True)
    assert snaps, "the first worker stored snapshots of the metrics partition"
    for i, snap in enumerate(snaps):  # flipped bits and torn writes, alternately
        blob = bytearray(snap.read_bytes())
        if i % 2 == 0:
            blob[len(blob) // 2] ^= 0x01
        else:
            del blob[len(blob) // 3:]
        snap.write_bytes(bytes(blob))
    for p in (checkpoints / topo.topics.alerts).rglob("*.snap"):
        p.unlink()

    with worker_process(topo_path, kafka_bootstrap, tmp_path) as second:
        got = consume_until(kafka_bootstrap, topo.topics.incidents,
                            lambda recs: essence(final_state(recs)) == essence(want), timeout=180, proc=second)
        tickets = consume_until(kafka_bootstrap, topo.topics.tickets, lambda recs: True, timeout=10)
        actions = consume_until(kafka_bootstrap, topo.topics.actions, lambda recs: True, timeout=10)
        corrupt = metric(second.web_port, "aiops_checkpoints_skipped_total", reason="corrupt", store="local")
        from_kafka = metric(second.web_port, "aiops_checkpoint_restores_total", source="kafka")
    log = second.log_text

    assert essence(final_state(got)) == essence(want)
    assert_each_output_once(got, tickets, actions)

    # The local snapshots covering no more than the committed offset were read and refused.
    assert "local snapshot" in log and "is corrupt (" in log
    assert corrupt >= 1 and from_kafka == 2
    assert f"{topo.topics.metrics}[0]: state restored from the kafka snapshot" in log
    assert f"{topo.topics.alerts}[0]: state restored from the kafka snapshot" in log
    # The first worker's: the second, stopped while one of its own snapshots was in flight (every
    # 2 s here), may leave its own pending file, as any stop between fork and store does.
    assert not [p for p in torn if p.exists()], "a killed writer's pending files are removed at start"
