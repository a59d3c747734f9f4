"""A rebuild reads its input through the offset it was asked for, whatever end offset the broker
reports at that moment.

A shard is rebuilt up to the offset of the message the worker was just handed, so every
message before it is written. A broker may still report an end offset behind it (tansu does
under load: a consumer is handed offset 7,288 while ListOffsets says 7,253), and a read cut
there dropped the state of the messages in between: a restarted worker's correlator missed
17 alerts and opened a second incident for one fault (test_restart under CPU load).
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from kafka import KafkaProducer

from streams import recovery
from streams.broker import ensure_topics


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for v in values:
            producer.send(topic, v, partition=0)
        producer.flush(30)
    finally:
        producer.close()


def test_reads_through_until_even_past_the_end_offset_reported_when_it_began(kafka_bootstrap):
    topic = f"read-through-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, [topic], partitions=1)
    _produce(kafka_bootstrap, topic, [b"early-%d" % i for i in range(40)])

    async def read_while_the_rest_arrives():
        # The end offset is 40 when the read begins; 60 is what the caller saw a message at.
        reading = asyncio.ensure_future(recovery.read_partitions(kafka_bootstrap, topic, [0], until={0: 60}))
        await asyncio.sleep(1.5)
        assert not reading.done(), "the read stopped at the end offset of when it began"
        await asyncio.to_thread(_produce, kafka_bootstrap, topic, [b"late-%d" % i for i in range(30)])
        return await asyncio.wait_for(reading, 60)

    rows = asyncio.run(read_while_the_rest_arrives())
    assert [offset for _, offset, _, _ in rows] == list(range(60))
    assert rows[-1][3] == b"late-19"


def test_a_log_that_stays_short_of_until_ends_the_read_with_a_warning(kafka_bootstrap, monkeypatch, caplog):
    topic = f"read-short-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, [topic], partitions=1)
    _produce(kafka_bootstrap, topic, [b"only-%d" % i for i in range(5)])
    monkeypatch.setattr(recovery, "UNTIL_PATIENCE", 2.0)

    with caplog.at_level(logging.WARNING, logger="aiops.recovery"):
        rows = asyncio.run(recovery.read_partitions(kafka_bootstrap, topic, [0], until={0: 9}))

    assert [offset for _, offset, _, _ in rows] == list(range(5))
    # The end offset named is the broker's word (tansu says 1 for five records sent in one batch).
    assert "read up to offset 9, but the log ends at" in caplog.text
