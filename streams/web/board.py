"""What the board knows: a fold of the records on ``aiops.incidents``, ``aiops.actions``,
``aiops.tickets`` and ``aiops.control``. No I/O, no clock: :meth:`Board.apply` takes one decoded
record and says which incidents it changed, and every question takes the time it is asked at.

Every worker folds every record of those topics (not only its partitions' ones), so each shows
every incident. Records are the wire dicts (``orjson.loads`` of the value); one that lacks what
the board needs is ignored, never raised on: a worker's page must not fall over on a bad record.

The board's clock is event time, the latest time a record carried (:attr:`Board.clock`), as in
the rest of the pipeline: the board that ``aiops replay``'s records build is the one the live
records build, and a replayed scenario from last year still shows its incidents.

>>> b = Board()
>>> b.apply("incidents", {"id": "inc-1", "version": 1, "status": "open", "updated_at": "2026-01-01T00:00:00.000Z"})
frozenset({'inc-1'})
>>> b.apply("incidents", {"id": "inc-1", "version": 1, "status": "open", "updated_at": "2026-01-01T00:00:00.000Z"})
frozenset()
>>> [r["id"] for r in b.visible(resolved_for=3600)]
['inc-1']
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PRIORITY_ORDER = {"P1": 0, "P2": 1, "P3": 2, "P4": 3}
SILENCES = "*silences*"  # the "incident id" of a change to the silences: every page shows them


def parse_time(value: Any) -> float | None:
    """An RFC 3339 string as unix seconds; ``None`` for anything else.

    >>> parse_time("2026-01-01T00:00:00.500Z"), parse_time("yesterday"), parse_time(None)
    (1767225600.5, None, None)
    """
    if type(value) is not str:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.timestamp() if t.tzinfo is not None else None


@dataclass
class IncidentState:
    """One incident as the board knows it. ``versions`` ascending, one record per version;
    ``actions`` every record of each action id in arrival order (decision, approval, result)."""

    versions: list[dict] = field(default_factory=list)
    actions: dict[str, list[dict]] = field(default_factory=dict)
    tickets: list[dict] = field(default_factory=list)

    @property
    def latest(self) -> dict | None:
        return self.versions[-1] if self.versions else None

    def awaiting(self) -> list[str]:
        """The action ids whose latest record awaits an operator's approval."""
        return [aid for aid, recs in self.actions.items() if recs[-1].get("decision") == "awaiting_approval"]


@dataclass
class Board:
    """The incidents, their actions and tickets, and the silences, as the topics say."""

    incidents: dict[str, IncidentState] = field(default_factory=dict)
    silences: dict[str, dict] = field(default_factory=dict)  # id -> the silence record, until expired
    approvals: dict[str, str] = field(default_factory=dict)  # action id -> who approved it on aiops.control
    delivered: dict[str, tuple[str, str]] = field(default_factory=dict)  # ticket key -> (sink, tracker's id)
    clock: float = 0.0  # the latest event time any record carried

    def _tick(self, *times: Any) -> None:
        for t in times:
            s = parse_time(t)
            if s is not None and s > self.clock:
                self.clock = s

    def apply(self, kind: str, record: Mapping[str, Any]) -> frozenset[str]:
        """Fold one record of topic ``kind`` (``incidents``, ``actions``, ``tickets`` or
        ``control``); the ids of the incidents it changed (:data:`SILENCES` for the silences)."""
        if not isinstance(record, Mapping):
            return frozenset()
        if kind == "incidents":
            return self._incident(record)
        if kind == "actions":
            return self._action(record)
        if kind == "tickets":
            return self._ticket(record)
        if kind == "control":
            return self._control(record)
        return frozenset()

    def _incident(self, rec: Mapping[str, Any]) -> frozenset[str]:
        iid, version = rec.get("id"), rec.get("version")
        if type(iid) is not str or not iid or type(version) is not int:
            return frozenset()
        st = self.incidents.setdefault(iid, IncidentState())
        if any(v.get("version") == version for v in st.versions):
            return frozenset()  # redelivered, or written again by a rebuilt shard
        st.versions.append(dict(rec))
        st.versions.sort(key=lambda v: v["version"])
        self._tick(rec.get("updated_at"))
        return frozenset({iid})

    def _action(self, rec: Mapping[str, Any]) -> frozenset[str]:
        aid, iid = rec.get("id"), rec.get("incident_id")
        if type(aid) is not str or type(iid) is not str or not aid:
            return frozenset()
        recs = self.incidents.setdefault(iid, IncidentState()).actions.setdefault(aid, [])
        if recs and recs[-1] == rec:
            return frozenset()
        recs.append(dict(rec))
        self._tick(rec.get("at"))
        return frozenset({iid})

    def _ticket(self, rec: Mapping[str, Any]) -> frozenset[str]:
        iid = rec.get("incident_id")
        if type(iid) is not str:
            return frozenset()
        st = self.incidents.setdefault(iid, IncidentState())
        if rec in st.tickets:
            return frozenset()
        st.tickets.append(dict(rec))
        self._tick(rec.get("at"))
        return frozenset({iid})

    def _control(self, rec: Mapping[str, Any]) -> frozenset[str]:
        kind = rec.get("type")
        if kind == "silence" and type(rec.get("id")) is str:
            self.silences[rec["id"]] = dict(rec)
            return frozenset({SILENCES})
        if kind == "expire_silence" and type(rec.get("id")) is str:
            return frozenset({SILENCES}) if self.silences.pop(rec["id"], None) is not None else frozenset()
        if kind == "approve" and type(rec.get("action_id")) is str and type(rec.get("by")) is str:
            self.approvals[rec["action_id"]] = rec["by"]
            return frozenset(iid for iid, st in self.incidents.items() if rec["action_id"] in st.actions)
        return frozenset()

    def apply_ledger(self, ticket_key: str, entry: Mapping[str, Any]) -> frozenset[str]:
        """One entry of the ticket ledger (``tickets.delivery.ledger_topic``, keyed by ticket key,
        which is the incident id): the tracker's id of the ticket ``aiops tickets deliver`` made."""
        if not isinstance(entry, Mapping) or type(entry.get("ticket_id")) is not str or type(entry.get("sink")) is not str:
            return frozenset()
        new = (entry["sink"], entry["ticket_id"])
        if self.delivered.get(ticket_key) == new:
            return frozenset()
        self.delivered[ticket_key] = new
        return frozenset({ticket_key})

    def forget(self, *, resolved_for: float) -> list[str]:
        """Drop the incidents resolved more than ``resolved_for`` seconds before :attr:`clock`
        (so a long-running worker's board stays the size of what it shows); their ids."""
        gone = []
        for iid, st in self.incidents.items():
            latest = st.latest
            if latest is None or latest.get("status") != "resolved":
                continue
            at = parse_time(latest.get("resolved_at")) or parse_time(latest.get("updated_at")) or 0.0
            if at < self.clock - resolved_for:
                gone.append(iid)
        for iid in gone:
            del self.incidents[iid]
            self.delivered.pop(iid, None)
        return gone

    def visible(self, *, resolved_for: float) -> list[dict]:
        """The latest version of each incident the board lists: the open ones (most urgent, then
        newest first), then those resolved within ``resolved_for`` seconds of :attr:`clock` (most
        recently resolved first)."""
        open_, resolved = [], []
        for st in self.incidents.values():
            latest = st.latest
            if latest is None:
                continue  # actions or tickets of an incident whose record has not arrived yet
            if latest.get("status") == "resolved":
                at = parse_time(latest.get("resolved_at")) or parse_time(latest.get("updated_at")) or 0.0
                if at >= self.clock - resolved_for:
                    resolved.append((-at, str(latest["id"]), latest))
            else:
                opened = parse_time(latest.get("opened_at")) or 0.0
                open_.append((PRIORITY_ORDER.get(latest.get("priority"), 9), -opened, str(latest["id"]), latest))
        return [x[-1] for x in sorted(open_, key=lambda x: x[:-1])] + [x[-1] for x in sorted(resolved, key=lambda x: x[:-1])]

    def active_silences(self) -> list[dict]:
        """Silences not yet ended at :attr:`clock`, soonest-ending first."""
        live = [s for s in self.silences.values() if (parse_time(s.get("ends_at")) or 0.0) > self.clock]
        return sorted(live, key=lambda s: (parse_time(s.get("ends_at")) or 0.0, str(s.get("id"))))


__all__ = ["Board", "IncidentState", "PRIORITY_ORDER", "SILENCES", "parse_time"]
