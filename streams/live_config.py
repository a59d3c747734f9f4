"""Live config: which pushed topology a worker may take without a restart, decided with no I/O.

Operators push topology.yaml to the compacted ``aiops.config`` topic (``aiops config push``);
every worker reads the topic whole and offers each record to its :class:`LiveConfig`. A record
is applied only when it validates in full (the same checks as ``aiops validate``) and changes
nothing that only a restart can change; otherwise it is refused as a whole with the reason, and
the running config stays. Never half-applied.

Live: ``services`` (graph, owners, tiers), ``detectors``, ``correlation``, ``remediation``,
``tickets``, ``ingest``, ``traces`` (the learned graph's settings; span buckets keep the width
they started with), ``name``, ``version``. Restart only: ``topics`` (the worker's
subscriptions and partition counts are fixed when Faust starts) and ``worker`` (consumer-group
timings given to the Kafka client at start).
"""
from __future__ import annotations

from dataclasses import dataclass

from streams.codec import ConfigRecord
from streams.config import ConfigError, Topology, format_path, parse_topology_text

RESTART_SECTIONS = ("topics", "worker")
LIVE_SECTIONS = ("version", "name", "services", "detectors", "correlation", "remediation", "tickets", "ingest",
                 "traces")


def restart_only_changes(running: Topology, pushed: Topology) -> list[tuple[str, str]]:
    """``(path, message)`` for every setting of a restart-only section that ``pushed`` changes.

    >>> from streams.config import parse_topology
    >>> a = parse_topology({"services": {"web": {}}})
    >>> b = parse_topology({"services": {"web": {}}, "topics": {"partitions": 4}, "worker": {"session_timeout": "45s"}})
    >>> restart_only_changes(a, b)
    [('topics.partitions', 'needs a restart (running 1, pushed 4)'), ('worker.session_timeout', 'needs a restart (running 10s, pushed 45s)')]
    >>> restart_only_changes(a, parse_topology({"services": {"web": {"owner": "team-web"}}}))
    []
    """
    out = []
    for section in RESTART_SECTIONS:
        old, new = getattr(running, section), getattr(pushed, section)
        for name in type(old).model_fields:
            a, b = getattr(old, name), getattr(new, name)
            if a != b:
                out.append((format_path((section, name)), f"needs a restart (running {_show(a)}, pushed {_show(b)})"))
    return out


def _show(v) -> str:
    from datetime import timedelta

    if isinstance(v, timedelta):
        s = v.total_seconds()
        for unit, n in (("h", 3600), ("m", 60)):
            if s >= n and s % n == 0:
                return f"{int(s // n)}{unit}"
        return f"{s:g}s"
    return str(v)


def check(record: ConfigRecord, running: Topology, source: str) -> Topology:
    """The topology ``record`` carries, if a worker running ``running`` may apply it live.
    Raises :class:`ConfigError` naming ``source`` and every problem: validation first (all of
    them, as ``aiops validate`` reports them), then the restart-only settings it changes."""
    pushed = parse_topology_text(record.yaml, source)
    needs_restart = restart_only_changes(running, pushed)
    if needs_restart:
        raise ConfigError(source, needs_restart)
    return pushed


@dataclass(frozen=True)
class Applied:
    topology: Topology
    record: ConfigRecord


@dataclass(frozen=True)
class Unchanged:
    """The record is the active config already (a re-push, or the history read again)."""


@dataclass(frozen=True)
class Refused:
    reason: str  # "invalid" (fails validation) or "needs_restart"
    error: str  # the ConfigError report: source, then one line per problem with its path


Outcome = Applied | Unchanged | Refused


class LiveConfig:
    """The running topology of one worker and where it came from.

    ``base`` is the file the worker started with: it sets the restart-only sections for the
    life of the process, and is the config until the topic holds one that applies.

    >>> from streams.codec import decode_config, encode_config
    >>> from streams.config import parse_topology
    >>> live = LiveConfig(parse_topology({"services": {"web": {}}}), sha256="f" * 64)
    >>> rec = decode_config(encode_config("services: {web: {owner: team-web}}\\n", "alice", 1.7e9))
    >>> type(live.offer(rec, "aiops.config")).__name__, live.source, live.topology.services["web"].owner
    ('Applied', 'topic', 'team-web')
    >>> type(live.offer(rec, "aiops.config")).__name__
    'Unchanged'
    >>> bad = decode_config(encode_config("services: {web: {ownr: x}}\\n", "bob", 1.7e9))
    >>> print(live.offer(bad, "aiops.config").error)
    aiops.config (sha256 1b3c18c94d29, pushed by bob at 2023-11-14T22:13:20.000Z): 1 problem
      services.web.ownr: unknown key 'ownr'
    >>> live.topology.services["web"].owner  # the running config stays
    'team-web'
    """

    def __init__(self, base: Topology, *, sha256: str = "", source: str = "file"):
        self.base = base
        self.topology = base
        self.sha256 = sha256
        self.source = source
        self.record: ConfigRecord | None = None

    def offer(self, record: ConfigRecord, topic: str, prepare=None) -> Outcome:
        """Apply ``record`` if it may be applied live; otherwise keep the running config.

        ``prepare(topology)``, when given, runs on the validated topology before it becomes the
        running one (the worker loads what the new config names there); a :class:`ConfigError`
        it raises refuses the record like a validation problem."""
        if record.sha256 == self.sha256 and self.source == "topic":
            return Unchanged()
        source = describe(topic, record)
        try:
            pushed = check(record, self.base, source)
            if prepare is not None:
                prepare(pushed, source)
        except ConfigError as exc:
            restart = any(msg.startswith("needs a restart") for _, msg in exc.problems)
            return Refused("needs_restart" if restart else "invalid", str(exc))
        self.topology, self.sha256, self.source, self.record = pushed, record.sha256, "topic", record
        return Applied(pushed, record)


def describe(topic: str, record: ConfigRecord) -> str:
    from detectors.records import rfc3339

    return f"{topic} (sha256 {record.sha256[:12]}, pushed by {record.by} at {rfc3339(record.at)})"


__all__ = ["Applied", "LIVE_SECTIONS", "LiveConfig", "Outcome", "RESTART_SECTIONS", "Refused", "Unchanged", "check",
           "describe", "restart_only_changes"]
