"""Checkpoints: a shard's state with the input offset it covers, so a restart (or a partition
moving to another worker) replays only what came after it instead of the partition's history.

What is checkpointed
    One snapshot per state shard (:mod:`streams.recovery`): a :class:`DetectStage` per partition
    of the telemetry topics, a :class:`CorrelateStage` per partition of ``aiops.alerts``. A
    snapshot is the stage's learned state, ``next_offset`` (every input offset below it is in
    the state, none above), and for a correlate shard the positions of the operator topics
    (changes, control, actions) it has applied.

Where
    - The local store, ``<data-dir>/checkpoints/<topic>/<partition>/<next_offset>.snap``, for a
      restart on the same node. The last :data:`KEEP_LOCAL` snapshots per partition are kept.
    - The checkpoint topic (``topics.checkpoints``, compacted), for a partition that lands on a
      node without a local copy: a snapshot is cut into chunks of at most :data:`CHUNK_BYTES`
      (a 755 MiB detector state does not fit a Kafka message), keyed
      ``<topic>/<partition>/<slot>/<chunk>``. Snapshots alternate between two slots, so
      compaction keeps the last two whole even when a worker dies halfway through producing a
      third.

Which snapshot a shard is restored from
    The newest readable snapshot whose ``next_offset`` is at most the offset the shard is
    built for (the first offset Kafka delivers: the committed one). One above it would skip
    input whose outputs may never have left the dead worker's producer; replaying from one
    below it is what the rebuild from offset 0 always did, only shorter. So a snapshot written
    just before a crash, ahead of the last commit, is passed over for the one before it.

The format (version :data:`FORMAT_VERSION`)
    ``MAGIC`` (8 bytes) | format version (u16, big-endian) | header length (u32) | header (JSON)
    | state length (u64) | state (pickle, protocol 5) | SHA-256 of everything before it (32 bytes).

    The header names the release that wrote it, the stage kind, the input topic and partition,
    ``next_offset`` and the operator-topic positions. The state is the stage's attributes but
    the ones rebuilt on restore (the redactor's compiled caches and the runbook index, from
    config; a detect stage's wall clock, from the restoring process).
    Decoding checks the checksum before it unpickles anything, so a torn write or a flipped bit
    is a :class:`Corrupt` snapshot, never wrong state. The unpickler resolves only classes of
    this project and a fixed list of library types (:class:`_StateUnpickler`): a snapshot names
    no function to run.

Versions
    A stage's attributes are its state, so any change to them (a new field, a renamed class)
    bumps :data:`FORMAT_VERSION`. A release reads the versions in :data:`_UPGRADES`: each maps an
    earlier version's decoded state to the current one. A version it cannot read is
    :class:`Unreadable`: the worker logs which version it found and which it reads, and rebuilds
    the shard from the input as before checkpoints existed.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import logging
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

log = logging.getLogger("aiops.checkpoint")

MAGIC = b"AIOPSNAP"
FORMAT_VERSION = 1
RELEASE = "0.1.0"  # pyproject's version; in the header so a log can name who wrote a snapshot
KEEP_LOCAL = 3
CHUNK_BYTES = 512 * 1024  # under Kafka's default 1 MiB message limit, with room for the chunk header

# Attributes rebuilt from the running config instead of stored: compiled regex caches (which do
# not pickle), the runbook index (read from disk, and large) and a detect stage's wall clock
# (the restoring process's own: ``time.time`` in a worker, none in replay).
_NOT_STATE = {"detect": ("redactor", "_clock"), "correlate": ("redactor", "runbooks")}


class SnapshotError(Exception):
    """A snapshot that cannot be restored; the shard comes from an older one or the input."""


class Corrupt(SnapshotError):
    """Truncated, torn or altered: the checksum, the lengths or the magic do not match."""


class Unreadable(SnapshotError):
    """Intact, but written in a format version this release does not read."""

    def __init__(self, version: int, release: str):
        super().__init__(f"format v{version} (written by release {release}); this release reads "
                         f"v{min(_UPGRADES)}..v{FORMAT_VERSION}")
        self.version = version
        self.release = release


@dataclass(frozen=True)
class Meta:
    """What a snapshot covers. ``broadcast`` maps ``"topic/partition"`` of an operator topic to
    the next offset not applied (correlate shards only)."""

    kind: str  # "detect" or "correlate"
    topic: str
    partition: int
    next_offset: int
    broadcast: dict[str, int] = field(default_factory=dict)
    release: str = RELEASE
    version: int = FORMAT_VERSION

    def header(self) -> dict:
        return {"kind": self.kind, "topic": self.topic, "partition": self.partition,
                "next_offset": self.next_offset, "broadcast": self.broadcast, "release": self.release}


# --- state in and out of a stage ------------------------------------------------------------------

def state_of(stage, kind: str) -> dict:
    """The attributes of ``stage`` that are its state (a shallow copy of its ``__dict__``)."""
    return {k: v for k, v in vars(stage).items() if k not in _NOT_STATE[kind]}


def stage_from(kind: str, state: dict, topology, runbooks=None, *, clock=None):
    """A stage object with ``state``, the parts left out rebuilt, and reconfigured to
    ``topology`` when that differs from the config the state was learned under (as a live
    config change would have done to a worker that never stopped). A detect stage reads
    ``clock`` as its wall clock (see :class:`~streams.pipeline.DetectStage`)."""
    from streams.ingest.redact import Redactor
    from streams.pipeline import CorrelateStage, DetectStage

    if kind == "detect":
        stage = DetectStage.__new__(DetectStage)
        vars(stage).update(state)
        stage._clock = clock
        stage.redactor = Redactor.from_settings(stage.topology.ingest.redaction)
        if stage.topology != topology:
            stage.reconfigure(topology)
        return stage
    stage = CorrelateStage.__new__(CorrelateStage)
    vars(stage).update(state)
    stage.runbooks = runbooks
    stage.redactor = Redactor.from_settings(stage.topology.ingest.redaction)
    if stage.topology != topology:
        stage.reconfigure(topology, runbooks)
    return stage


# --- bytes ------------------------------------------------------------------------------------------

def encode(meta: Meta, state: dict) -> bytes:
    """A snapshot's bytes (see the module docstring for the layout).

    >>> blob = encode(Meta("detect", "telemetry.metrics", 0, 42), {"watermark": 1.5})
    >>> decode(blob)[0].next_offset, decode(blob)[1]
    (42, {'watermark': 1.5})
    """
    header = orjson.dumps(meta.header())
    body = pickle.dumps(state, protocol=5)
    head = MAGIC + struct.pack(">HI", FORMAT_VERSION, len(header)) + header + struct.pack(">Q", len(body))
    digest = hashlib.sha256(head)
    digest.update(body)
    return head + body + digest.digest()


def write(path: Path, meta: Meta, state: dict) -> int:
    """:func:`encode` straight into the file at ``path`` (fsynced), without the whole snapshot
    in memory: the state is pickled into the file, its length patched into the header, and
    the file read back for the checksum. Returns its size.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "s"
    ...     write(p, Meta("detect", "m", 0, 42), {"watermark": 1.5}) == len(p.read_bytes())
    ...     p.read_bytes() == encode(Meta("detect", "m", 0, 42), {"watermark": 1.5})
    True
    True
    """
    header = orjson.dumps(meta.header())
    head = MAGIC + struct.pack(">HI", FORMAT_VERSION, len(header)) + header
    with open(path, "w+b") as f:
        f.write(head + b"\0" * 8)
        pickle.dump(state, f, protocol=5)
        end = f.tell()
        f.seek(len(head))
        f.write(struct.pack(">Q", end - len(head) - 8))
        f.flush()
        f.seek(0)
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        f.seek(end)
        f.write(digest.digest())
        f.flush()
        os.fsync(f.fileno())
        return end + 32


def read_meta(blob: bytes) -> Meta:
    """The header alone, checked for shape but not against the checksum (listing only)."""
    return _parse(blob, verify=False)[0]


def decode(blob: bytes) -> tuple[Meta, dict]:
    """``(meta, state)``. Raises :class:`Corrupt` or :class:`Unreadable`; nothing else.

    >>> blob = encode(Meta("detect", "t", 0, 7), {"x": 1})
    >>> decode(blob[:-1])
    Traceback (most recent call last):
    ...
    streams.checkpoint.Corrupt: truncated: 166 bytes, the header says 167
    >>> decode(blob[:40] + bytes([blob[40] ^ 1]) + blob[41:])
    Traceback (most recent call last):
    ...
    streams.checkpoint.Corrupt: checksum mismatch
    """
    meta, body = _parse(blob, verify=True)
    try:
        state = _StateUnpickler(io.BytesIO(body)).load()
    except Exception as exc:  # noqa: BLE001 - checksummed but still not ours: never restore it
        raise Corrupt(f"state does not load: {type(exc).__name__}: {exc}") from None
    if type(state) is not dict:
        raise Corrupt(f"state is a {type(state).__name__}, expected a dict")
    for version in range(meta.version, FORMAT_VERSION):
        state = _UPGRADES[version + 1](state)
    return meta, state


def _parse(blob: bytes, *, verify: bool) -> tuple[Meta, bytes]:
    if len(blob) < len(MAGIC) + 6 or blob[:len(MAGIC)] != MAGIC:
        raise Corrupt("not a snapshot (bad magic)" if len(blob) >= len(MAGIC) else f"truncated: {len(blob)} bytes")
    at = len(MAGIC)
    version, header_len = struct.unpack_from(">HI", blob, at)
    at += 6
    if len(blob) < at + header_len + 8:
        raise Corrupt(f"truncated: {len(blob)} bytes, the header needs {at + header_len + 8}")
    header_bytes = blob[at:at + header_len]
    at += header_len
    (body_len,) = struct.unpack_from(">Q", blob, at)
    at += 8
    if len(blob) != at + body_len + 32:
        kind = "truncated" if len(blob) < at + body_len + 32 else "trailing bytes"
        raise Corrupt(f"{kind}: {len(blob)} bytes, the header says {at + body_len + 32}")
    if verify and hashlib.sha256(blob[:at + body_len]).digest() != blob[at + body_len:]:
        raise Corrupt("checksum mismatch")
    try:
        h = orjson.loads(header_bytes)
        meta = Meta(kind=h["kind"], topic=h["topic"], partition=int(h["partition"]),
                    next_offset=int(h["next_offset"]), broadcast={str(k): int(v) for k, v in h["broadcast"].items()},
                    release=str(h.get("release", "?")), version=version)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Corrupt(f"header does not parse: {exc}") from None
    if meta.kind not in _NOT_STATE:
        raise Corrupt(f"unknown stage kind {meta.kind!r}")
    if version not in _UPGRADES and version != FORMAT_VERSION:
        raise Unreadable(version, meta.release)
    return meta, blob[at:at + body_len]


# Version -> the function taking the previous version's state to it. Version 1 is the first, so
# there is nothing to upgrade yet; a release that changes a stage's attributes adds 2 here (or
# leaves it out, and every older snapshot is rebuilt from the input, saying so).
_UPGRADES: dict[int, Callable[[dict], dict]] = {1: lambda state: state}

_OURS = ("detectors", "correlators", "remediators", "streams")
_LIBRARY_TYPES = ("collections", "datetime", "networkx", "numpy", "zoneinfo", "pydantic", "pydantic_core", "drain3",
                  "cachetools", "decimal", "enum", "pathlib")
_SAFE_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "int", "float", "complex", "str", "bytes", "bytearray",
                  "bool", "slice", "range", "object"}
# Functions (not types) that pickles of this state name: numpy's array reconstruction and
# networkx's frozen-graph marker.
_SAFE_FUNCTIONS = {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
                   ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
                   ("networkx.classes.function", "frozen"), ("copyreg", "_reconstructor"),
                   ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
                   ("zoneinfo", "ZoneInfo"), ("zoneinfo._common", "load_data")}


class _StateUnpickler(pickle.Unpickler):
    """Resolves only this project's classes, a few library types and :data:`_SAFE_FUNCTIONS`:
    a snapshot is data, and must not be able to name ``os.system``."""

    def find_class(self, module: str, name: str):
        top = module.split(".", 1)[0]
        if module == "builtins":
            if name in _SAFE_BUILTINS:
                return super().find_class(module, name)
        elif (module, name) in _SAFE_FUNCTIONS:
            return super().find_class(module, name)
        elif top in _OURS or top in _LIBRARY_TYPES:
            obj = getattr(importlib.import_module(module), name, None) if "." not in name else None
            if isinstance(obj, type):
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a snapshot")


# --- the local store --------------------------------------------------------------------------------

class LocalStore:
    """Snapshots on this node's disk, one directory per input partition.

    A snapshot is written to ``*.pending`` and renamed once the shell has made sure every
    output it covers is on Kafka (see :meth:`commit`); a crash leaves at most a pending file,
    which :meth:`candidates` never returns and :meth:`clean` removes."""

    def __init__(self, root: Path, keep: int = KEEP_LOCAL):
        self.root = Path(root)
        self.keep = keep

    def _dir(self, topic: str, partition: int) -> Path:
        return self.root / topic / str(partition)

    def pending_path(self, topic: str, partition: int, next_offset: int, token: str) -> Path:
        return self._dir(topic, partition) / f"{next_offset:020d}.{token}.pending"

    def write_pending(self, path: Path, blob: bytes) -> None:
        """Write and fsync ``blob``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())

    def write_state(self, path: Path, meta: Meta, state: dict) -> None:
        """Pickle ``state`` into a snapshot at ``path``; called in the snapshot's child process."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, meta, state)

    def commit(self, pending: Path) -> Path:
        """The pending file becomes a snapshot a restart may use; older ones beyond ``keep`` go."""
        final = pending.with_name(pending.name.split(".", 1)[0] + ".snap")
        os.replace(pending, final)
        self._fsync_dir(final.parent)
        snaps = sorted(final.parent.glob("*.snap"))
        for old in snaps[:-self.keep]:
            old.unlink(missing_ok=True)
        return final

    def candidates(self, topic: str, partition: int, until: int) -> list[Path]:
        """Snapshot files covering no more than ``until``, newest first."""
        d = self._dir(topic, partition)
        if not d.is_dir():
            return []
        out = []
        for p in d.glob("*.snap"):
            try:
                offset = int(p.name.split(".", 1)[0])
            except ValueError:
                continue
            if offset <= until:
                out.append((offset, p))
        return [p for _, p in sorted(out, reverse=True)]

    def clean(self) -> int:
        """Remove pending files a killed worker left; how many."""
        n = 0
        if self.root.is_dir():
            for p in self.root.rglob("*.pending"):
                p.unlink(missing_ok=True)
                n += 1
        return n

    @staticmethod
    def _fsync_dir(d: Path) -> None:
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- chunks on the checkpoint topic ----------------------------------------------------------------

_CHUNK_HEAD = struct.Struct(">QII")  # snapshot's next_offset, chunk index, chunk count


def chunks(topic: str, partition: int, slot: int, blob: bytes, next_offset: int,
           size: int = CHUNK_BYTES) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` messages carrying ``blob``.

    >>> [(k, len(v)) for k, v in chunks("m", 0, 1, b"x" * 5, 9, size=2)]
    [(b'm/0/1/0', 18), (b'm/0/1/1', 18), (b'm/0/1/2', 17)]
    """
    parts = [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]
    return [(f"{topic}/{partition}/{slot}/{i}".encode(), _CHUNK_HEAD.pack(next_offset, i, len(parts)) + part)
            for i, part in enumerate(parts)]


def assemble(messages: list[tuple[bytes, bytes]], topic: str, partition: int) -> list[tuple[int, bytes]]:
    """The whole snapshots of ``topic``/``partition`` among ``messages`` (in topic order, as
    read from the checkpoint topic): ``(next_offset, blob)``, newest first. A snapshot whose
    chunks are not all there (a worker died producing it) is left out; one whose chunks are all
    there but do not fit together is left to :func:`decode` to reject."""
    prefix = f"{topic}/{partition}/".encode()
    latest: dict[bytes, bytes] = {}
    for key, value in messages:
        if key is not None and key.startswith(prefix) and len(value) >= _CHUNK_HEAD.size:
            latest[key] = value  # what compaction would keep: the last value of each key
    slots: dict[str, dict[int, tuple[int, int, bytes]]] = {}
    for key, value in latest.items():
        rest = key[len(prefix):].decode(errors="replace").split("/")
        if len(rest) != 2:
            continue
        offset, index, count = _CHUNK_HEAD.unpack_from(value)
        slots.setdefault(rest[0], {})[index] = (offset, count, value[_CHUNK_HEAD.size:])
    out = []
    for parts in slots.values():
        if 0 not in parts:
            continue
        offset, count, _ = parts[0]
        if all(i in parts and parts[i][0] == offset and parts[i][1] == count for i in range(count)):
            out.append((offset, b"".join(parts[i][2] for i in range(count))))
    return sorted(out, key=lambda r: r[0], reverse=True)


# --- the shell's side: taking snapshots off the event loop, restoring them -----------------------

@dataclass
class Found:
    """What :meth:`Checkpoints.restore` found: the stage (None: rebuild from the input) and
    the snapshots passed over on the way, with why."""

    stage: object | None
    meta: Meta | None
    source: str | None  # "local" or "kafka"
    skipped: list[tuple[str, SnapshotError]]


@dataclass
class _InFlight:
    shard: object
    meta: Meta
    pending: Path
    started: float


class Checkpoints:
    """Snapshots of the shards of one worker: written by a forked child, restored newest first.

    A snapshot is taken between two messages, with no await between deciding and forking, so
    the child holds a consistent copy of the stage (copy-on-write pages: the parent carries on
    at once and pays only for the pages it changes while the child writes). The child pickles,
    checksums and fsyncs a pending file, then exits. The parent, once the child is done,
    flushes its producer (every output computed before the fork is then on Kafka, so a restart
    from this snapshot loses none), renames the file into the local store and produces it to
    the checkpoint topic in chunks, awaiting each, so a large snapshot never stalls the loop.

    ``send(topic, key, value, partition)`` and ``flush()`` are the worker's producer;
    ``read(topic, partition)`` returns a partition's ``(key, value)`` messages."""

    def __init__(self, store: LocalStore, topic: str, partitions: int, interval: float, *,
                 send=None, flush=None, read=None, clock=None, on_written=None):
        import time as _time

        self.store = store
        self.topic = topic
        self.partitions = max(1, partitions)
        self.interval = interval
        self._send, self._flush, self._read = send, flush, read
        self._clock = clock or _time.monotonic
        self._on_written = on_written  # (kind, seconds, bytes) after each snapshot
        self._inflight: dict[int, _InFlight] = {}
        self._token = 0

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def due(self, shard) -> bool:
        """Whether ``shard`` should be snapshotted now: the interval has passed since its last
        one, it has moved on since, and none of its snapshots is being written."""
        return (self.enabled and not shard.snapshotting and shard.next_offset != shard.snapshot_offset
                and self._clock() - shard.snapshot_at >= self.interval)

    def begin(self, shard, meta: Meta) -> None:
        """Fork a child that writes ``shard``'s snapshot to a pending file. Call with no await
        between the last change to the shard and this call."""
        kind = meta.kind
        self._token += 1
        pending = self.store.pending_path(meta.topic, meta.partition, meta.next_offset, f"{os.getpid()}-{self._token}")
        shard.snapshot_at = self._clock()
        shard.snapshot_offset = meta.next_offset
        if not hasattr(os, "fork"):  # no copy-on-write here: write in line, and say what it costs
            self.store.write_state(pending, meta, state_of(shard.stage, kind))
            shard.snapshotting = True
            self._inflight[-self._token] = _InFlight(shard, meta, pending, self._clock())
            return
        pid = os.fork()
        if pid == 0:  # the child: no asyncio, no logging, no Kafka; write and leave
            code = 1
            try:
                self.store.write_state(pending, meta, state_of(shard.stage, kind))
                code = 0
            except BaseException as exc:  # noqa: BLE001 - say why on stderr; the parent logs the failure
                os.write(2, f"snapshot of {meta.topic}[{meta.partition}] failed: {type(exc).__name__}: "
                            f"{str(exc)[:500]}\n".encode("utf-8", "replace"))
            finally:
                os._exit(code)
        shard.snapshotting = True
        self._inflight[pid] = _InFlight(shard, meta, pending, self._clock())

    async def finish(self) -> int:
        """Complete the snapshots whose child has exited; how many. Called from a timer."""
        done = 0
        for pid, job in list(self._inflight.items()):
            if pid > 0:
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    got, status = pid, 1 << 8
                if got == 0:
                    continue
                ok = os.waitstatus_to_exitcode(status) == 0
            else:
                ok = True
            del self._inflight[pid]
            try:
                if ok:
                    await self._complete(job)
                    done += 1
                else:
                    log.error("%s[%d]: the snapshot at offset %d failed in its child process; the previous "
                              "one stays", job.meta.topic, job.meta.partition, job.meta.next_offset)
                    job.pending.unlink(missing_ok=True)
            except Exception as exc:  # noqa: BLE001 - a failed snapshot costs replay, never the worker
                log.error("%s[%d]: the snapshot at offset %d was not stored: %s", job.meta.topic, job.meta.partition,
                          job.meta.next_offset, exc)
                job.pending.unlink(missing_ok=True)
            finally:
                job.shard.snapshotting = False
        return done

    async def _complete(self, job: _InFlight) -> None:
        if self._flush is not None:
            await self._flush()  # the outputs the snapshot covers, on Kafka before it may be used
        final = self.store.commit(job.pending)
        size = final.stat().st_size
        if self._send is not None:
            slot = job.shard.snapshots % 2
            count = max(1, -(-size // CHUNK_BYTES))
            partition = job.meta.partition % self.partitions
            with open(final, "rb") as f:
                for i in range(count):
                    part = f.read(CHUNK_BYTES)
                    key = f"{job.meta.topic}/{job.meta.partition}/{slot}/{i}".encode()
                    await self._send(self.topic, key, _CHUNK_HEAD.pack(job.meta.next_offset, i, count) + part,
                                     partition)
            await self._flush()
        job.shard.snapshots += 1
        if self._on_written is not None:
            self._on_written(job.meta.kind, self._clock() - job.started, size)

    async def restore(self, kind: str, topic: str, partition: int, until: int, topology, runbooks=None, *,
                      clock=None) -> Found:
        """The newest readable snapshot of ``topic``/``partition`` covering at most ``until``,
        as a stage (a detect stage reading ``clock`` as its wall clock): the local store first,
        then the checkpoint topic. Each one that is corrupt or of a format this release does not
        read is logged and passed over."""
        skipped: list[tuple[str, SnapshotError]] = []
        if kind == "correlate" and runbooks is None:
            from streams.pipeline import load_runbook_index

            runbooks = load_runbook_index(topology)

        def attempt(source: str, name: str, blob: bytes) -> Found | None:
            try:
                meta, state = decode(blob)
                if (meta.kind, meta.topic, meta.partition) != (kind, topic, partition) or meta.next_offset > until:
                    raise Corrupt(f"covers {meta.kind} {meta.topic}[{meta.partition}] up to {meta.next_offset}, "
                                  f"expected {kind} {topic}[{partition}] up to {until}")
                stage = stage_from(kind, state, topology, runbooks, clock=clock)
            except Unreadable as exc:
                log.warning("%s[%d]: %s snapshot %s is in %s: rebuilding from the input instead", topic, partition,
                            source, name, exc)
                skipped.append((source, exc))
                return None
            except Corrupt as exc:
                log.error("%s[%d]: %s snapshot %s is corrupt (%s); trying an older one", topic, partition, source,
                          name, exc)
                skipped.append((source, exc))
                return None
            except Exception as exc:  # noqa: BLE001 - a state that does not fit this stage is as bad as a torn one
                err = Corrupt(f"state does not restore: {type(exc).__name__}: {exc}")
                log.error("%s[%d]: %s snapshot %s is corrupt (%s); trying an older one", topic, partition, source,
                          name, err)
                skipped.append((source, err))
                return None
            return Found(stage, meta, source, skipped)

        for path in self.store.candidates(topic, partition, until):
            try:
                blob = path.read_bytes()
            except OSError as exc:
                log.error("%s[%d]: local snapshot %s does not read: %s", topic, partition, path.name, exc)
                skipped.append(("local", Corrupt(str(exc))))
                continue
            found = attempt("local", path.name, blob)
            if found is not None:
                return found
        if self._read is not None:
            messages = await self._read(self.topic, partition % self.partitions)
            for offset, blob in assemble(messages, topic, partition):
                if offset > until:
                    continue
                found = attempt("kafka", f"at offset {offset}", blob)
                if found is not None:
                    return found
        return Found(None, None, None, skipped)


__all__ = ["Checkpoints", "Corrupt", "Found", "FORMAT_VERSION", "LocalStore", "Meta", "SnapshotError", "Unreadable", "assemble", "chunks",
           "decode", "encode", "read_meta", "stage_from", "state_of", "write"]
