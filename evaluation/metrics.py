"""Scoring incidents against injected faults: matching, AC@k, Avg@5, false incidents, delays.

Pure functions over plain data: incident records as the pipeline writes them to
``aiops.incidents`` (decoded JSON, every version) and :class:`FaultTruth` records.

Matching (as ``tests/scenarios/test_replay_scenarios.py``, plus a service check so that an
unrelated incident in the same window is not credited): an incident matches a fault when it
opened (its earliest anomaly onset, ``opened_at``) between ``MATCH_BEFORE`` seconds before the
fault's start and the fault's end, and it involves a service related to the fault (the faulted
service, a service that calls it directly or not, or for a traffic surge one it calls). An
incident matching no fault is a false incident.

Root-cause accuracy, per fault: its rank is the position (1 = first) of the true service in
the ``root_causes`` of the final version of a matched incident (the best over its matched
incidents). AC@k is the share of faults ranked within the top ``k``, over *all* faults: a missed
fault counts as a miss. Avg@5 is the mean of AC@1..AC@5 (as in the RCAEval benchmark). The same figures on each
incident's first notification (version 1, what the on-call reads when paged) are reported
alongside, not as targets.

>>> ac_at([1, 2, None, 1], 1), ac_at([1, 2, None, 1], 3), avg_at_5([1, 2, None, 1])
(0.5, 0.75, 0.7)
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from detectors.records import parse_rfc3339

MATCH_BEFORE = 60.0  # seconds: an anomaly onset may precede the injected start by a sample or two


@dataclass(frozen=True)
class FaultTruth:
    """One fault the pipeline should find, or a noise window (``service is None``)."""

    id: str
    service: str | None
    kind: str  # the root-cause kind the RCA should name
    start: float
    end: float
    related: frozenset[str] = frozenset()
    category: str = "single"
    run: str = ""
    removed_edge: tuple[str, str] | None = None  # missing-edge cases: the call dropped from the pipeline's topology

    @property
    def is_noise(self) -> bool:
        return self.service is None


def final_versions(records: Iterable[dict]) -> dict[str, dict]:
    """Each incident's highest version (what a consumer keeps), by id."""
    out: dict[str, dict] = {}
    for r in records:
        if r["id"] not in out or r["version"] > out[r["id"]]["version"]:
            out[r["id"]] = r
    return out


def notifies(record: dict) -> bool:
    """Does this incident record reach a receiver (its ``notification`` is not ``silent``)?
    Records from builds before the field existed all did.

    >>> notifies({"notification": "silent"}), notifies({"notification": "page"}), notifies({})
    (False, True, True)
    """
    return record.get("notification", "update") != "silent"


def first_versions(records: Iterable[dict]) -> dict[str, dict]:
    """Each incident's first notification: its earliest open record that notifies, by id. An
    incident held (``correlation.notify.hold``) publishes silent records before it; one that
    never paged has none.

    >>> recs = [{"id": "a", "version": 1, "status": "open", "notification": "silent"},
    ...         {"id": "a", "version": 2, "status": "open", "notification": "page"},
    ...         {"id": "b", "version": 1, "status": "open"}]
    >>> {i: r["version"] for i, r in first_versions(recs).items()}
    {'a': 2, 'b': 1}
    """
    out: dict[str, dict] = {}
    for r in records:
        if r.get("status", "open") == "open" and notifies(r) and (r["id"] not in out or r["version"] < out[r["id"]]["version"]):
            out[r["id"]] = r
    return out


def first_notified(records: Iterable[dict]) -> dict[str, float]:
    """When each incident first notified (``updated_at`` of its first notifying record), by id."""
    return {i: parse_rfc3339(r["updated_at"]) for i, r in first_versions(records).items()}


def rank_of(service: str, incident: dict) -> int | None:
    """1-based position of ``service`` among the incident's root causes, else ``None``.

    >>> rank_of("db", {"root_causes": [{"service": "api"}, {"service": "db"}]})
    2
    """
    for i, rc in enumerate(incident.get("root_causes") or ()):
        if rc["service"] == service:
            return i + 1
    return None


def matches(fault: FaultTruth, incident: dict) -> bool:
    if fault.is_noise:
        return False
    opened = parse_rfc3339(incident["opened_at"])
    if not fault.start - MATCH_BEFORE <= opened <= fault.end:
        return False
    return bool(set(incident["services"]) & (fault.related | {fault.service}))


def match(faults: Sequence[FaultTruth], incidents: dict[str, dict]) -> dict[str, list[str]]:
    """Fault id -> ids of the (final) incidents that match it, earliest opened first.

    An incident matching several concurrent faults (through a shared caller such as the entry
    point) is credited only to those whose service it involves or ranks, if any, so two faults
    answered by one incident each are not counted as two incidents per fault.
    """
    order = sorted(incidents.values(), key=lambda i: (parse_rfc3339(i["opened_at"]), i["id"]))
    hits = {i["id"]: [f for f in faults if matches(f, i)] for i in order}
    out: dict[str, list[str]] = {f.id: [] for f in faults}
    for inc in order:
        fs = hits[inc["id"]]
        if len(fs) > 1:
            named = set(inc["services"]) | {rc["service"] for rc in inc.get("root_causes") or ()}
            fs = [f for f in fs if f.service in named] or fs
        for f in fs:
            out[f.id].append(inc["id"])
    return out


def best_rank(fault: FaultTruth, ids: Sequence[str], incidents: dict[str, dict]) -> int | None:
    ranks = [r for r in (rank_of(fault.service, incidents[i]) for i in ids) if r is not None]
    return min(ranks) if ranks else None


def ac_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of ``ranks`` at or above ``k`` (``None``: not ranked, a miss)."""
    if not ranks:
        return math.nan
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def avg_at_5(ranks: Sequence[int | None]) -> float:
    if not ranks:
        return math.nan
    return sum(ac_at(ranks, k) for k in range(1, 6)) / 5


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), NaN for no data.

    >>> quantile([10, 20, 30, 40], 0.5), quantile([], 0.9)
    (25.0, nan)
    """
    if not xs:
        return math.nan
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


@dataclass(frozen=True)
class FaultResult:
    fault: FaultTruth
    incidents: tuple[str, ...]  # matched incident ids
    rank: int | None
    rank_first: int | None  # the same, in the matched incidents' first notifications
    top: str | None  # the first root cause of the best-ranked (else first) matched incident
    top_kind: str | None
    delay: float | None  # opened_at of the first matched incident - fault start
    notify_delay: float | None  # first notification of the first matched incident - fault start

    @property
    def detected(self) -> bool:
        return bool(self.incidents)


def score_faults(faults: Sequence[FaultTruth], records: Sequence[dict]) -> tuple[list[FaultResult], list[dict]]:
    """Per-fault results, and the false incidents (final versions matching no fault)."""
    incidents = final_versions(records)
    notified = first_notified(records)
    firsts = first_versions(records)
    real = [f for f in faults if not f.is_noise]
    matched = match(real, incidents)
    results = []
    for f in real:
        ids = matched[f.id]
        rank = best_rank(f, ids, incidents) if ids else None
        lead = None
        if ids:
            lead = min(ids, key=lambda i: (rank_of(f.service, incidents[i]) or 99, ids.index(i)))
        top = incidents[lead]["root_causes"][0] if lead and incidents[lead]["root_causes"] else None
        first = incidents[ids[0]] if ids else None
        results.append(FaultResult(
            fault=f, incidents=tuple(ids), rank=rank,
            rank_first=best_rank(f, [i for i in ids if i in firsts], firsts) if ids else None,
            top=top["service"] if top else None, top_kind=top["kind"] if top else None,
            delay=parse_rfc3339(first["opened_at"]) - f.start if first else None,
            notify_delay=notified.get(first["id"], math.nan) - f.start if first else None))
    claimed = {i for ids in matched.values() for i in ids}
    false = sorted((i for i in incidents.values() if i["id"] not in claimed), key=lambda i: i["opened_at"])
    return results, false


def in_window(incident: dict, window: FaultTruth, slack: float = 300.0) -> bool:
    """Did ``incident`` open during ``window`` (or up to ``slack`` seconds after it)?"""
    opened = parse_rfc3339(incident["opened_at"])
    return window.start - MATCH_BEFORE <= opened <= window.end + slack


def summarize(results: Sequence[FaultResult], false: Sequence[dict], hours: float) -> dict:
    """The headline figures of one set of results."""
    ranks = [r.rank for r in results]
    detected = [r for r in results if r.detected]
    delays = [r.delay for r in detected]
    notify = [r.notify_delay for r in detected if r.notify_delay is not None and math.isfinite(r.notify_delay)]
    return {
        "faults": len(results),
        "detected": len(detected),
        "recall": len(detected) / len(results) if results else math.nan,
        "ac1": ac_at(ranks, 1),
        "ac3": ac_at(ranks, 3),
        "avg5": avg_at_5(ranks),
        "ac1_first": ac_at([r.rank_first for r in results], 1),
        "ac3_first": ac_at([r.rank_first for r in results], 3),
        "false_incidents": len(false),
        "hours": hours,
        "false_per_hour": len(false) / hours if hours else math.nan,
        "incidents_per_fault": (sum(len(r.incidents) for r in detected) / len(detected)) if detected else math.nan,
        "delay_p50": quantile(delays, 0.5),
        "delay_p90": quantile(delays, 0.9),
        "notify_p50": quantile(notify, 0.5),
        "notify_p90": quantile(notify, 0.9),
    }


def suspected_edges(records: Iterable[dict]) -> dict[str, set[tuple[str, str, str]]]:
    """Incident id -> every ``(caller, callee, related incident)`` any of its versions suspected.

    >>> suspected_edges([{"id": "i", "suspected_edges": [{"caller": "a", "callee": "b", "related_incident": "j"}]},
    ...                  {"id": "j"}])
    {'i': {('a', 'b', 'j')}, 'j': set()}
    """
    out: dict[str, set[tuple[str, str, str]]] = {}
    for r in records:
        out.setdefault(r["id"], set()).update(
            (e["caller"], e["callee"], e["related_incident"]) for e in r.get("suspected_edges") or ())
    return out


def score_suspected_edges(results: Sequence[FaultResult], records: Sequence[dict],
                          removed: Iterable[tuple[str, str]] = ()) -> dict:
    """How well missing calls were suspected in one run.

    ``found``: the missing-edge faults (``removed_edge`` set) whose dropped call ``u -> v`` a matched
    incident reported as suspected, caller ``u`` and callee ``v``. ``false``: the suspicions of a
    call that is not one of the run's ``removed`` calls, each counted once per pair of incidents
    (both sides carry it), with the category of the fault whose incident reported it (``none``
    when no fault's).

    >>> f = FaultTruth("f", "db", "errors", 0, 1, category="missing-edge", removed_edge=("api", "db"))
    >>> r = FaultResult(f, ("i",), 1, 1, "db", "errors", 0.0, 0.0)
    >>> recs = [{"id": "i", "suspected_edges": [{"caller": "api", "callee": "db", "related_incident": "i"}]},
    ...         {"id": "k", "suspected_edges": [{"caller": "web", "callee": "db", "related_incident": "i"}]}]
    >>> s = score_suspected_edges([r], recs, [("api", "db")])
    >>> s["found"], s["missing_edge_faults"], s["false"], s["false_by_category"]
    (1, 1, 1, {'missing-edge': 1})
    """
    edges = suspected_edges(records)
    removed = set(removed)
    found = 0
    faults = [r for r in results if r.fault.removed_edge is not None]
    for r in faults:
        if any(r.fault.removed_edge == (c, v) for i in r.incidents for c, v, _ in edges.get(i, ())):
            found += 1
    category = {i: r.fault.category for r in results for i in r.incidents}
    false: dict[tuple, str] = {}
    for inc, es in sorted(edges.items()):
        for caller, callee, related in es:
            if (caller, callee) in removed:
                continue
            pair = (caller, callee, frozenset((inc, related)))
            false.setdefault(pair, category.get(inc) or category.get(related) or "none")
    by_cat: dict[str, int] = {}
    for cat in false.values():
        by_cat[cat] = by_cat.get(cat, 0) + 1
    return {"missing_edge_faults": len(faults), "found": found, "false": len(false), "false_by_category": by_cat,
            "false_edges": sorted(f"{c} -> {v}" for c, v, _ in false)}


# name, summary key, comparison, target
TARGETS = (
    ("detection recall", "recall", ">=", 0.98),
    ("AC@1", "ac1", ">=", 0.90),
    ("AC@3", "ac3", ">=", 0.98),
    ("false incidents/h", "false_per_hour", "<=", 0.1),
    ("incidents per fault", "incidents_per_fault", "<=", 1.1),
)


def verdicts(summary: dict) -> dict[str, bool]:
    """PASS (``True``) or FAIL per target; a NaN figure fails."""
    out = {}
    for name, key, op, target in TARGETS:
        v = summary[key]
        out[name] = (not math.isnan(v)) and (v >= target if op == ">=" else v <= target)
    return out
