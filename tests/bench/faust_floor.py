"""The Faust shell's floor: how fast a Faust agent is handed a topic's messages when it does nothing
with them, on the same broker and messages as the worker. The worker cannot beat this; the
raw aiokafka loop shows what the broker and client allow without Faust's per-message stream.

    python -m tests.bench.faust_floor --bootstrap HOST:PORT --topic TOPIC --messages N

Reads ``TOPIC`` from the earliest offset in a fresh consumer group, the worker's way (one event
at a time from ``stream.events()``), and prints one line,
``floor <messages/s> <cores>``, from its first message to its ``N``-th, then exits.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

import faust


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.bench.faust_floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--messages", type=int, required=True)
    args = p.parse_args()
    data = tempfile.mkdtemp(prefix="aiops-faust-floor-")
    app = faust.App(f"faust-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{args.bootstrap}", store="memory://",
                    datadir=data, consumer_auto_offset_reset="earliest", web_enabled=False,
                    consumer_max_fetch_size=16 * 1024 * 1024, stream_wait_empty=False)  # as the worker's app
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "t0": 0.0, "cpu0": 0.0}

    @app.agent(topic)
    async def drain(stream):
        async for _event in stream.events():
            if not seen["n"]:
                seen["t0"], seen["cpu0"] = time.perf_counter(), time.process_time()
            seen["n"] += 1
            if seen["n"] >= args.messages:
                wall = time.perf_counter() - seen["t0"]
                print(f"floor {args.messages / wall:.1f} {(time.process_time() - seen['cpu0']) / wall:.2f}", flush=True)
                os._exit(0)  # nothing to keep: the group and its offsets are thrown away

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
