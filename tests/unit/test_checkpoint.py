"""Snapshots of the stages (streams/checkpoint.py): a restored stage continues exactly as the one
that never stopped; a corrupt, truncated or foreign snapshot is refused, never restored."""
from __future__ import annotations

import asyncio
import pickle
import struct
import time
from pathlib import Path

import orjson
import pytest

from streams import codec
from streams import checkpoint as ck
from streams import simulate as sim
from streams.config import load_topology
from streams.pipeline import CorrelateStage, DetectStage, load_runbook_index
from streams.recovery import Shard

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scenario():
    topo = load_topology(REPO / "topology.yaml")
    result = sim.simulate(topo, sim.load_scenarios(["disk-full"]))
    return topo, [orjson.dumps(r) for r in result.requests]


def run(detect: DetectStage, correlate: CorrelateStage, messages: list[bytes]) -> list[list[bytes]]:
    """Everything both stages emit for each message, on the wire, in order."""
    out = []
    for m in messages:
        events = [codec.decode_alert_event(codec.encode_alert_event(e)) for e in detect.process(m).events]
        res = correlate.process(events)
        out.append([codec.encode_alert_event(e) for e in events] + [codec.encode_incident(i) for i in res.incidents]
                   + [codec.encode_action(a) for a in res.actions] + [codec.encode_ticket(t) for t in res.tickets])
    return out


def test_a_restored_stage_continues_exactly_as_the_one_that_never_stopped(scenario):
    topo, messages = scenario
    whole = run(DetectStage(topo, lane="m/0"), CorrelateStage(topo, load_runbook_index(topo)), messages)
    # Into the fault: an incident is open and its ticket out.
    cut = next(i for i, out in enumerate(whole) if any(b'"event":"create"' in r for r in out)) + 10

    detect, correlate = DetectStage(topo, lane="m/0"), CorrelateStage(topo, load_runbook_index(topo))
    before = run(detect, correlate, messages[:cut])
    d_blob = ck.encode(ck.Meta("detect", "m", 0, cut), ck.state_of(detect, "detect"))
    c_blob = ck.encode(ck.Meta("correlate", "a", 0, 17, {"c/0": 3}), ck.state_of(correlate, "correlate"))
    d_meta, d_state = ck.decode(d_blob)
    c_meta, c_state = ck.decode(c_blob)
    assert (d_meta.next_offset, c_meta.broadcast) == (cut, {"c/0": 3})
    detect2 = ck.stage_from("detect", d_state, topo)
    correlate2 = ck.stage_from("correlate", c_state, topo, load_runbook_index(topo))
    after = run(detect2, correlate2, messages[cut:])

    assert any(b'"event":"create"' in r for out in before for r in out)
    assert any(b'"status":"resolved"' in r for out in after for r in out)
    assert before + after == whole


def test_a_snapshot_learned_under_another_config_is_reconfigured_to_the_running_one(scenario):
    topo, messages = scenario
    detect = DetectStage(topo)
    run(detect, CorrelateStage(topo), messages[:50])
    _, state = ck.decode(ck.encode(ck.Meta("detect", "m", 0, 50), ck.state_of(detect, "detect")))
    newer = topo.model_copy(update={"detectors": topo.detectors.model_copy(update={"threshold": 0.99})})
    restored = ck.stage_from("detect", state, newer)
    assert restored.topology.detectors.threshold == 0.99
    assert restored.engine.settings.threshold == 0.99


def test_a_detect_stage_is_snapshotted_without_its_wall_clock_and_reads_the_restorers(scenario):
    # The worker's stage reads time.time (ingest.max_ahead); a snapshot names no function (the
    # unpickler would refuse it), and replay's stages have no wall clock at all.
    topo, messages = scenario
    detect = DetectStage(topo, lane="m/0", clock=time.time)
    for m in messages[:50]:
        detect.process(m)
    _, state = ck.decode(ck.encode(ck.Meta("detect", "m", 0, 50), ck.state_of(detect, "detect")))
    assert "_clock" not in state
    assert ck.stage_from("detect", state, topo)._clock is None
    assert ck.stage_from("detect", state, topo, clock=time.time)._clock is time.time
    # And it is the clock it reads: at 1970 every point of the next message is too far ahead.
    epoch = ck.stage_from("detect", state, topo, clock=lambda: 0.0)
    res = epoch.process(messages[50])
    assert res.events == [] and any("ahead of the wall clock" in r for r in res.rejects)


def small_blob() -> bytes:
    return ck.encode(ck.Meta("detect", "telemetry.metrics", 3, 1000), {"watermark": 12.5, "marks": {"logs": 1.0}})


def test_every_truncation_is_detected():
    blob = small_blob()
    for n in range(len(blob)):
        with pytest.raises(ck.Corrupt):
            ck.decode(blob[:n])
    with pytest.raises(ck.Corrupt, match="trailing bytes"):
        ck.decode(blob + b"\0")


def test_every_flipped_bit_is_detected():
    blob = small_blob()
    for i in range(len(blob)):
        for bit in (0, 7):
            bad = blob[:i] + bytes([blob[i] ^ (1 << bit)]) + blob[i + 1:]
            # A flip in the version field reads as another version; anything else is corrupt.
            with pytest.raises((ck.Corrupt, ck.Unreadable)):
                ck.decode(bad)


def with_version(blob: bytes, version: int) -> bytes:
    """``blob`` re-sealed under another format version (as another release would write it)."""
    body = blob[:-32]
    body = body[:8] + struct.pack(">H", version) + body[10:]
    import hashlib

    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("version", [0, ck.FORMAT_VERSION + 1, 65535])
def test_a_format_this_release_does_not_read_is_unreadable_and_says_which(version):
    with pytest.raises(ck.Unreadable) as err:
        ck.decode(with_version(small_blob(), version))
    assert str(err.value) == (f"format v{version} (written by release {ck.RELEASE}); this release reads "
                              f"v1..v{ck.FORMAT_VERSION}")


def test_an_earlier_version_is_upgraded_when_this_release_knows_how(monkeypatch):
    blob = with_version(small_blob(), 1)
    monkeypatch.setattr(ck, "FORMAT_VERSION", 2)
    monkeypatch.setitem(ck._UPGRADES, 2, lambda state: {**state, "added_in_v2": True})
    meta, state = ck.decode(blob)
    assert meta.version == 1 and state["added_in_v2"] is True and state["watermark"] == 12.5


class Boom:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_snapshot_that_names_a_function_is_refused_even_with_a_valid_checksum():
    blob = ck.encode(ck.Meta("detect", "m", 0, 1), {"x": Boom()})
    with pytest.raises(ck.Corrupt, match="posix.system is not allowed|os.system is not allowed"):
        ck.decode(blob)


def test_the_local_store_offers_snapshots_up_to_the_offset_newest_first(tmp_path):
    store = ck.LocalStore(tmp_path, keep=2)
    for offset in (10, 20, 30):
        p = store.pending_path("m", 0, offset, "t")
        store.write_pending(p, b"x")
        store.commit(p)
    store.write_pending(store.pending_path("m", 0, 40, "t"), b"torn")  # a killed writer's leftover
    assert [p.name for p in store.candidates("m", 0, 100)] == ["00000000000000000030.snap", "00000000000000000020.snap"]
    assert [p.name for p in store.candidates("m", 0, 25)] == ["00000000000000000020.snap"]
    assert store.candidates("m", 1, 100) == []
    assert store.clean() == 1


def test_chunks_reassemble_and_an_incomplete_snapshot_is_left_out():
    a = ck.chunks("m", 0, 0, b"A" * 10, 5, size=4)
    b = ck.chunks("m", 0, 1, b"B" * 6, 9, size=4)
    c = ck.chunks("m", 0, 0, b"C" * 9, 14, size=4)  # slot 0 again: its first chunks overwrite a's
    other = ck.chunks("m", 1, 0, b"D", 3)
    assert ck.assemble(a + other + b, "m", 0) == [(9, b"B" * 6), (5, b"A" * 10)]
    # A worker died after c's first two chunks: slot 0 mixes c and a, so only b is whole.
    assert ck.assemble(a + b + c[:2], "m", 0) == [(9, b"B" * 6)]
    assert ck.assemble(a + b + c, "m", 0) == [(14, b"C" * 9), (9, b"B" * 6)]


def test_restore_skips_a_corrupt_newest_snapshot_for_the_one_before(tmp_path, scenario, caplog):
    topo, messages = scenario
    detect = DetectStage(topo, lane="m/0")
    run(detect, CorrelateStage(topo), messages[:40])
    store = ck.LocalStore(tmp_path)
    good = ck.encode(ck.Meta("detect", "m", 0, 40), ck.state_of(detect, "detect"))
    for offset, blob in ((40, good), (60, good[: len(good) // 2])):  # 60: a torn write
        p = store.pending_path("m", 0, offset, "t")
        store.write_pending(p, blob)
        store.commit(p)
    cps = ck.Checkpoints(store, "ckpt", 1, 30.0)
    found = asyncio.run(cps.restore("detect", "m", 0, 100, topo))
    assert found.source == "local" and found.meta.next_offset == 40
    assert [type(e) for _, e in found.skipped] == [ck.Corrupt]
    assert "corrupt (truncated" in caplog.text
    # Never a snapshot ahead of what is asked (its outputs may not have left the dead worker).
    assert asyncio.run(cps.restore("detect", "m", 0, 39, topo)).stage is None
    # Nor one of another partition filed under this one.
    p = store.pending_path("m", 1, 40, "t")
    store.write_pending(p, good)
    store.commit(p)
    found = asyncio.run(cps.restore("detect", "m", 1, 100, topo))
    assert found.stage is None and "expected detect m[1]" in str(found.skipped[0][1])


def test_an_unreadable_version_logs_that_it_rebuilds(tmp_path, caplog):
    topo = load_topology(REPO / "topology.yaml")
    store = ck.LocalStore(tmp_path)
    p = store.pending_path("m", 0, 5, "t")
    store.write_pending(p, with_version(small_blob(), 99))
    store.commit(p)
    found = asyncio.run(ck.Checkpoints(store, "ckpt", 1, 30.0).restore("detect", "m", 0, 100, topo))
    assert found.stage is None and isinstance(found.skipped[0][1], ck.Unreadable)
    assert "is in format v99" in caplog.text and "rebuilding from the input instead" in caplog.text


def test_a_snapshot_is_written_by_a_child_and_stored_once_it_is_done(tmp_path, scenario):
    topo, messages = scenario
    detect = DetectStage(topo, lane="m/0")
    run(detect, CorrelateStage(topo), messages[:30])
    sent: list[tuple[str, bytes, bytes, int]] = []

    async def send(topic, key, value, partition):
        sent.append((topic, key, value, partition))

    async def flush():
        pass

    async def main():
        cps = ck.Checkpoints(ck.LocalStore(tmp_path), "ckpt", 4, 0.001, send=send, flush=flush)
        shard = Shard(detect, 30)
        assert cps.due(shard)
        cps.begin(shard, ck.Meta("detect", "m", 5, 30))
        assert shard.snapshotting and not cps.due(shard)
        for _ in range(200):
            if await cps.finish():
                break
            await asyncio.sleep(0.01)
        return cps, shard

    cps, shard = asyncio.run(main())
    assert not shard.snapshotting and shard.snapshots == 1
    [path] = cps.store.candidates("m", 5, 30)
    assert {(t, p) for t, _, _, p in sent} == {("ckpt", 1)}  # input partition 5 on partition 5 % 4
    assert ck.assemble([(k, v) for _, k, v, _ in sent], "m", 5) == [(30, path.read_bytes())]
    assert pickle.dumps(ck.decode(path.read_bytes())[1]["watermark"]) == pickle.dumps(detect.watermark)
