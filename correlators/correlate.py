"""Alerts to incidents: dedup by fingerprint, topology-aware grouping, and the lifecycle.

One incident per failure. Alerts arriving together on nearby services form a group
(``group_wait``); an open incident takes a later alert only as its own failure spreading (the
alert's service calls its root cause, which still fails, within ``propagation_window`` of the
cause's latest onset), so a new failure with its own onset and root cause opens its own
incident even while an older one is open, under an entry point that calls everything. An
incident resolves when its own alerts have all resolved (after ``resolve_after``), whatever
else fires.

The correlator is driven by event time only. ``ingest`` takes alerts and heartbeats; time
advances to the largest event time seen, and ``advance`` emits what became due (an incident
after its ``group_wait``, an update after ``group_interval``, a resolution after the quiet
period). Replay and the Kafka worker feed it the same events and get the same incidents.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import networkx as nx

from correlators.config import CorrelationSettings, NotifySettings, Silence
from correlators.rca import CAUSE_KINDS, classify_metric, peer_of, rank_root_causes, suspect_missing_edge
from correlators.records import Change, Incident, RootCause, SuspectedEdge
from detectors.records import Alert, AlertEvent, Heartbeat, rfc3339, stable_hash

_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
_LOGS_LEAD = 20.0  # seconds logs may run ahead of metrics in event time
_SETTLED_LEAD = 1.1  # the top root cause's lead over the runner-up that counts as a clear ranking


@dataclass(slots=True)
class _Group:
    """Mutable working state of one incident; only the correlator touches it."""

    id: str
    created_at: float  # event time of the alert that opened the group (group_wait counts from here)
    opened_at: float  # earliest anomaly onset
    alerts: dict[str, Alert] = field(default_factory=dict)  # fingerprint -> latest state
    # fingerprint -> the strongest firing state seen: the RCA judges a series by its worst, not by
    # the calm reading it resolved at, so the ranking does not flip once the fault is over.
    peaks: dict[str, Alert] = field(default_factory=dict)
    services: set[str] = field(default_factory=set)
    status: str = "pending"  # pending -> open -> resolved
    version: int = 0
    last_sent_at: float = 0.0  # the last record published (group_interval counts from here)
    last_notified_at: float = 0.0  # the last record that notified (repeat_interval counts from here)
    last_alert_at: float = 0.0
    all_resolved_at: float | None = None
    resolved_at: float | None = None
    pending_reason: str | None = None
    last_incident: Incident | None = None
    last_notified: Incident | None = None  # what the receiver last heard: "got worse" compares with it
    open_since: float = 0.0  # when the record that opened (or reopened) it went out: notify.hold counts from here
    key: tuple[str, ...] = ()  # the values of correlation.group_by
    # Calls missing from the topology suspected with this group on one side, by (caller, callee).
    suspects: dict[tuple[str, str], SuspectedEdge] = field(default_factory=dict)
    # Suspected calls whose caller's alerts were merged here: the RCA ranks as if they were declared.
    extra_edges: set[tuple[str, str]] = field(default_factory=set)
    graph: nx.DiGraph | None = None  # the declared graph plus extra_edges, built when needed
    ranked: tuple | None = None  # (what it was ranked on, the ranking): see Correlator._rank

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.status == "firing"]


class Correlator:
    """Groups alerts into incidents over a dependency graph.

    Parameters
    ----------
    graph : call graph, ``u -> v`` when ``u`` calls ``v`` (not mutated).
    settings : the ``correlation:`` section of topology.yaml.

    Examples
    --------
    >>> g = nx.DiGraph([("web", "db")])
    >>> c = Correlator(g, CorrelationSettings())
    >>> al = Alert("f1", "firing", "db", "db.client.connections.utilization", "db/x", (), 0.99, 1.0, 0.4, 100.0, 100.0)
    >>> c.ingest([al])
    []
    >>> [(i.status, i.services) for i in c.ingest([Heartbeat(at=131.0)])]
    [('open', ('db',))]
    """

    def __init__(self, graph: nx.DiGraph, settings: CorrelationSettings, *, observed: set[str] | None = None):
        self._graph = graph
        self._undirected = graph.to_undirected(as_view=True)
        self._cfg = settings
        self._observed = observed
        self._groups: dict[str, _Group] = {}
        self._by_fingerprint: dict[str, str] = {}  # fingerprint -> group id (active or recently resolved)
        self.now: float = 0.0
        self.stats = {"alerts": 0, "duplicates": 0, "incidents": 0, "updates": 0, "transient": 0, "changes": 0,
                      "silenced": 0, "inhibited": 0, "quiet_updates": 0, "notifications": 0,
                      "suspected_edges": 0, "edge_merges": 0}
        self._changes: dict[str, Change] = {}  # change id -> change (a redelivered change is the same)
        self._silences: dict[str, Silence] = {s.id: s for s in settings.silences}
        self._below: dict[str, frozenset[str]] = {}  # service -> every service it calls, directly or not
        self._metrics_mark = 0.0  # the latest event time from metrics (see _clock)
        self._revision = 0  # bumped by reconfigure
        self._readings: dict[tuple, str] = {}  # _reading(alert) -> the first fingerprint seen with it

    # -- public API -------------------------------------------------------------------------

    def reconfigure(self, graph: nx.DiGraph, settings: CorrelationSettings) -> None:
        """Take a new graph and settings (a live config change); open incidents, their alerts,
        silences from ``aiops.control`` and noted changes stay. Timings apply from the next
        event on. Silences written in the config are replaced by the new config's; incidents
        still open are re-keyed by the new ``group_by`` (from the first alert they took)."""
        for s in self._cfg.silences:
            if self._silences.get(s.id) == s:  # not since replaced by an aiops.control message
                del self._silences[s.id]
        self._silences.update({s.id: s for s in settings.silences})
        self._cfg = settings
        self._graph = graph
        self._undirected = graph.to_undirected(as_view=True)
        self._below = {}
        self._revision += 1  # rankings made on the old graph or settings are stale
        for grp in self._groups.values():
            grp.graph = None  # rebuilt from the new graph and the group's suspected calls
            if grp.status != "resolved" and grp.alerts:
                grp.key = self._key(next(iter(grp.alerts.values())))

    def ingest(self, events: list[AlertEvent]) -> list[Incident]:
        """Take alerts and heartbeats in order; return the incident updates that became due."""
        out: list[Incident] = []
        for ev in events:
            t = self._clock(ev)
            if t > self.now:
                out += self.advance(t)
            if isinstance(ev, Alert):
                self._take(ev)
        out += self.advance(self.now)
        return out

    def _clock(self, ev: AlertEvent) -> float:
        """Event time as ``ev`` may move it. Logs arrive on their own topic and can run ahead
        of the metrics; they may not push time more than ``_LOGS_LEAD`` past the metrics (which
        would open incidents before the metric alerts of the same moment arrived), unless no
        metrics come at all."""
        if ev.source != "logs":
            self._metrics_mark = max(self._metrics_mark, ev.at)
            return ev.at
        if self._metrics_mark == 0.0:
            return ev.at
        return min(ev.at, self._metrics_mark + _LOGS_LEAD)

    def advance(self, now: float) -> list[Incident]:
        """Move event time to ``now`` (never backwards) and emit every update that is due."""
        self.now = max(self.now, now)
        cfg = self._cfg
        out = []
        for gid in sorted(self._groups, key=lambda k: (self._groups[k].created_at, k)):
            grp = self._groups.get(gid)
            if grp is None:
                continue  # merged into another group earlier in this pass
            if grp.status == "pending":
                # Strictly after: alerts stamped at the deadline itself (a blip's resolution) count.
                if self.now > grp.created_at + cfg.group_wait.total_seconds():
                    if not grp.firing():
                        # Every alert came and went within group_wait: a blip, not an incident.
                        # It is counted, and its alerts stay on aiops.alerts for the record.
                        del self._groups[gid]
                        self.stats["transient"] += 1
                        continue
                    if cfg.suspect_edges.enabled and self._suspect_edges(grp):
                        continue  # its alerts joined the incident of the service it seems to call
                    if self.now <= grp.created_at + (cfg.group_wait + cfg.settle_wait).total_seconds() \
                            and self._toss_up(grp):
                        continue  # the ranking may still settle: hold the first page a little
                    if self._absorb(grp):
                        continue  # the symptoms of an open incident's failure (or its recurrence)
                    grp.status = "open"
                    out.append(self._emit(grp, grp.pending_reason or "opened"))
                continue
            if grp.status == "open":
                if grp.all_resolved_at is not None and self.now >= grp.all_resolved_at + cfg.resolve_after.total_seconds():
                    grp.status = "resolved"
                    grp.resolved_at = grp.all_resolved_at + cfg.resolve_after.total_seconds()
                    out.append(self._emit(grp, "resolved"))
                elif grp.pending_reason and self.now >= grp.last_sent_at + cfg.group_interval.total_seconds():
                    inc = self._emit(grp, grp.pending_reason, only_if_material=True)
                    if inc is not None:
                        out.append(inc)
                elif grp.last_notified is None:
                    # Held (correlation.notify.hold): page once it is due, unless it is already recovering.
                    if grp.firing() and self.now >= grp.open_since + cfg.notify.hold_for(self._group_priority(grp)):
                        out.append(self._emit(grp, grp.pending_reason or "hold_elapsed"))
                elif self.now >= grp.last_notified_at + cfg.repeat_interval.total_seconds():
                    out.append(self._emit(grp, "repeat"))
        self._forget_old()
        return out

    def add_silence(self, silence: Silence) -> None:
        """A maintenance window from ``aiops.control`` (or an update of one, by id)."""
        self._silences[silence.id] = silence

    def expire_silence(self, silence_id: str, at: float) -> None:
        s = self._silences.get(silence_id)
        if s is not None and at < s.ends_at.timestamp():
            self._silences[silence_id] = s.model_copy(update={"ends_at": datetime.fromtimestamp(at, timezone.utc)})

    def silenced_by(self, alert: Alert) -> Silence | None:
        labels = dict(alert.labels)
        return next((s for s in self._silences.values()
                     if s.matches(alert.service, alert.metric, labels, alert.at)), None)

    def note_change(self, change: Change) -> None:
        """A deploy, config change or scaling: a candidate cause for incidents that follow it.
        It does not move event time (a change may be stamped by another clock)."""
        if change.id not in self._changes:
            self.stats["changes"] += 1
        self._changes[change.id] = change
        horizon = self.now - 2 * self._cfg.change_window.total_seconds()
        if len(self._changes) > 1000:
            self._changes = {k: c for k, c in self._changes.items() if c.at >= horizon}

    def current(self, incident_id: str) -> Incident | None:
        """The last record sent for an incident, while the correlator still remembers it."""
        grp = self._groups.get(incident_id)
        return grp.last_incident if grp is not None else None

    def open_incidents(self) -> int:
        return sum(1 for g in self._groups.values() if g.status in ("pending", "open"))

    # -- internals --------------------------------------------------------------------------

    def _take(self, alert: Alert) -> None:
        self.stats["alerts"] += 1
        gid = self._by_fingerprint.get(alert.fingerprint)
        grp = self._groups.get(gid) if gid else None
        if grp is not None and not self._new_episode(grp, alert):
            if grp.status != "resolved":
                self._update_alert(grp, alert)
            elif alert.status == "firing":
                self.stats["duplicates"] += 1  # an episode of a resolved incident, redelivered
            return
        if alert.status != "firing":
            return  # a resolution for an alert we never grouped (or already closed): nothing to do
        if self.silenced_by(alert) is not None:
            self.stats["silenced"] += 1  # recorded (the alert stays on aiops.alerts), not paged
            return
        reading = _reading(alert)
        twin = self._twin(reading, alert)
        if twin is not None:  # one series seen through several services: one anomaly, one incident
            self._update_alert(twin, alert)
            return
        host = self._host(self._hosts(self._key(alert), alert.at), alert.service, [alert])
        if host is not None:  # an open incident's failure spreading: it takes the alert at once
            self.stats["inhibited"] += 1
            self._update_alert(host, alert)
            if reading is not None:
                self._readings.setdefault(reading, alert.fingerprint)
            return
        if reading is not None:
            self._readings.setdefault(reading, alert.fingerprint)
        grp = self._find_group(alert)
        if grp is None:
            gid = "inc-" + stable_hash(alert.fingerprint, rfc3339(alert.starts_at), length=12)
            if gid in self._groups:  # the same alert redelivered after its incident was forgotten
                self.stats["duplicates"] += 1
                return
            grp = _Group(id=gid, created_at=alert.at, opened_at=alert.starts_at, key=self._key(alert))
            self._groups[gid] = grp
            self.stats["incidents"] += 1
        self._update_alert(grp, alert)

    def _twin(self, reading: tuple | None, alert: Alert) -> _Group | None:
        """The active group holding an alert of another service with the same readings (see
        :func:`_reading`): a node's series reported with each pod on it is one anomaly. (With
        several ``aiops.alerts`` partitions, services of different weakly connected parts of the
        graph meet here only if their correlation keys share a partition, as for suspected calls.)"""
        fp = self._readings.get(reading) if reading is not None else None
        if fp is None or fp == alert.fingerprint:
            return None
        grp = self._groups.get(self._by_fingerprint.get(fp, ""))
        return grp if grp is not None and grp.status != "resolved" and grp.key == self._key(alert) else None

    def _new_episode(self, grp: _Group, alert: Alert) -> bool:
        """Whether ``alert`` starts a new episode of a series that ``grp`` (open or resolved)
        saw end: a new onset, which is judged like any new alert (it may be the next failure)
        instead of being taken by the incident it once belonged to. In a pending group it is
        just one more alert of the failure being grouped."""
        if grp.status == "pending" or alert.status != "firing":
            return False
        prev = grp.alerts.get(alert.fingerprint)
        return prev is not None and prev.status == "resolved" and alert.starts_at > prev.starts_at

    def _update_alert(self, grp: _Group, alert: Alert) -> None:
        prev = grp.alerts.get(alert.fingerprint)
        if prev is not None and prev.status == alert.status and prev.starts_at == alert.starts_at \
                and (alert.at <= prev.at or alert.status == "resolved"):
            self.stats["duplicates"] += 1  # a redelivery (a later firing copy is the alert getting worse)
            return
        if prev is not None and prev.status == "firing" and alert.status == "resolved" and alert.at < prev.at:
            return  # stale resolution overtaken by a newer firing
        grp.alerts[alert.fingerprint] = alert
        self._by_fingerprint[alert.fingerprint] = grp.id
        _keep_peak(grp, alert)
        if alert.status == "firing":
            grp.services.add(alert.service)
            grp.last_alert_at = max(grp.last_alert_at, alert.at)
            grp.opened_at = min(grp.opened_at, alert.starts_at)
            grp.all_resolved_at = None
            if grp.status == "pending":
                self._settle_identity(grp, alert)
            self._mark(grp, "alerts_added" if prev is None or prev.status == "resolved" else "alerts_changed")
        else:
            if not grp.firing():
                grp.all_resolved_at = alert.at
            self._mark(grp, "alerts_resolved")

    def _settle_identity(self, grp: _Group, alert: Alert) -> None:
        """Until its first record goes out, a group is named after its earliest alert and
        timed from the earliest arrival, whichever arrived first: alerts of the same moment
        reach the correlator in any order when several workers detect in parallel, and the
        incident must not depend on it."""
        grp.created_at = min(grp.created_at, alert.at)
        first = min((a for a in grp.alerts.values() if a.status == "firing"), key=lambda a: (a.starts_at, a.fingerprint))
        gid = "inc-" + stable_hash(first.fingerprint, rfc3339(first.starts_at), length=12)
        if gid == grp.id or gid in self._groups:
            return
        del self._groups[grp.id]
        grp.id = gid
        self._groups[gid] = grp
        for fp in grp.alerts:
            self._by_fingerprint[fp] = gid

    def _mark(self, grp: _Group, reason: str) -> None:
        if grp.status == "pending":
            return  # the first notification will carry everything
        # "alerts_added" outranks the others when several changes wait for one update.
        if grp.pending_reason != "alerts_added":
            grp.pending_reason = reason

    def _reopen(self, grp: _Group, pending: _Group) -> None:
        """``pending`` is ``grp``'s failure again (see :meth:`_absorb`): ``grp`` takes its alerts and reopens."""
        grp.status = "open"
        grp.resolved_at = None
        grp.all_resolved_at = None
        self._merge(grp, pending)
        grp.last_sent_at = -1e18  # send the reopen at once: it is news
        grp.last_notified = None  # and it pages again
        grp.pending_reason = "reopened"

    def _find_group(self, alert: Alert) -> _Group | None:
        """The oldest pending group with a service within ``max_hops`` of the alert's service,
        whose last alert is within ``window``: the alerts of one failure arriving together.
        Disjoint parts of the graph never share a group.

        Nearness never makes an alert join a published incident: only its root cause does
        (:meth:`_host`, asked first). When a group comes due, :meth:`_absorb` asks the same of
        each of its services, for incidents that opened meanwhile.

        Two groups can start in the same instant from alerts that are not yet near each other
        (a pool and a database two hops apart); when a later alert is near both, they merge.
        """
        window = self._cfg.window.total_seconds()
        key = self._key(alert)
        matches = [grp for grp in self._groups.values()
                   if grp.status == "pending" and grp.key == key and alert.at - grp.last_alert_at <= window
                   and any(self._near(alert.service, svc) for svc in grp.services)]
        if not matches:
            return None
        matches.sort(key=lambda g: (g.created_at, g.id))
        best = matches[0]
        for other in matches[1:]:
            self._merge(best, other)
        return best

    def _key(self, alert: Alert) -> tuple[str, ...]:
        if not self._cfg.group_by:
            return ()
        labels = dict(alert.labels)
        return tuple(labels.get(k, "") for k in self._cfg.group_by)

    def _calls(self, service: str, grp: _Group | None = None) -> frozenset[str]:
        """Every service ``service`` calls, directly or not: in the declared graph, or in the one
        ``grp`` is ranked on (with the calls suspected and merged into it)."""
        if grp is not None and grp.extra_edges:
            g = self._graph_of(grp)
            return frozenset(nx.descendants(g, service)) if service in g else frozenset()
        below = self._below.get(service)
        if below is None:
            below = frozenset(nx.descendants(self._graph, service)) if service in self._graph else frozenset()
            self._below[service] = below
        return below

    def _merge(self, into: _Group, other: _Group, *, count: bool = True) -> None:
        for fp, a in other.alerts.items():
            into.alerts[fp] = a
            self._by_fingerprint[fp] = into.id
        for a in other.peaks.values():
            _keep_peak(into, a)
        into.services |= other.services
        into.suspects.update(other.suspects)
        if other.extra_edges:
            into.extra_edges |= other.extra_edges
            into.graph = None
        into.opened_at = min(into.opened_at, other.opened_at)
        into.last_alert_at = max(into.last_alert_at, other.last_alert_at)
        if into.firing():
            into.all_resolved_at = None
        if into.status != "pending":
            self._mark(into, "alerts_added")
        if count:  # ``other`` was a group of its own
            del self._groups[other.id]
            self.stats["incidents"] -= 1

    def _suspect_edges(self, grp: _Group) -> bool:
        """Before ``grp`` opens: does its top root cause look like a caller of another active
        incident's root cause through a call the topology lacks, and of that one only? Both
        groups then record the suspected edge; with ``suspect_edges.merge``, ``grp`` is merged
        into it instead (it was never published, so no id vanishes) and the RCA of the merged
        incident counts the suspected call. Returns whether ``grp`` was merged."""
        cfg = self._cfg.suspect_edges
        rcs = self._rank(grp)
        if not rcs:
            return False
        caller = rcs[0].service
        found: list[tuple[SuspectedEdge, _Group]] = []
        for other in sorted(self._groups.values(), key=lambda g: (g.created_at, g.id)):
            if other is grp or other.status == "resolved" or other.key != grp.key or not other.firing():
                continue
            ranked = self._rank(other)
            if not ranked:
                continue
            edge = suspect_missing_edge(self._graph, grp.alerts.values(), other.alerts.values(), caller=caller,
                                        callee=ranked[0].service, window=cfg.window.total_seconds(),
                                        min_lag=cfg.min_lag.total_seconds(),
                                        max_hops=self._cfg.max_hops, related_incident=other.id)
            if edge is not None:
                found.append((edge, other))
        if len(found) != 1:
            # Several failing services that could each explain it single none of them out: the
            # coincidence of onsets is the only evidence, and noise makes such coincidences.
            return False
        # A group held by settle_wait is asked again at each step: count each suspicion once.
        self.stats["suspected_edges"] += sum(1 for e, _ in found if (e.caller, e.callee) not in grp.suspects)
        if cfg.merge and len(found) == 1:
            edge, into = found[0]
            self._merge(into, grp)
            into.suspects[(edge.caller, edge.callee)] = replace(edge, related_incident=into.id, merged=True)
            into.extra_edges.add((edge.caller, edge.callee))
            into.graph = None
            self.stats["edge_merges"] += 1
            return True
        for edge, other in found:
            grp.suspects[(edge.caller, edge.callee)] = edge
            if (edge.caller, edge.callee) not in other.suspects:
                other.suspects[(edge.caller, edge.callee)] = replace(edge, related_incident=grp.id)
                self._mark(other, "edge_suspected")
        return False

    def _absorb(self, grp: _Group) -> bool:
        """Before ``grp`` opens: which of its services are another incident's failure? Each
        joins the open incident :meth:`_host` names; what is left is a failure of its own and
        opens. With ``reopen_within``, a group whose root cause is a resolved incident's, and
        that shares a series with it, reopens it instead. Returns whether nothing is left."""
        hosts = self._hosts(grp.key, grp.opened_at, grp)
        if hosts:
            by_service: dict[str, list[Alert]] = {}
            for a in grp.alerts.values():
                by_service.setdefault(a.service, []).append(a)
            for svc, alerts in sorted(by_service.items()):
                into = self._host(hosts, svc, alerts)
                if into is not None:
                    self._move(grp, into, svc)
                    self.stats["inhibited"] += 1
            if not grp.alerts:
                del self._groups[grp.id]
                self.stats["incidents"] -= 1
                return True
        reopen = self._cfg.reopen_within.total_seconds()
        if reopen > 0:
            root = self._root(grp)
            again = [g for g in self._groups.values()
                     if g.status == "resolved" and g.key == grp.key and self.now - (g.resolved_at or 0.0) <= reopen
                     and g.alerts.keys() & grp.alerts.keys() and self._root(g) == root]
            if again:
                self._reopen(max(again, key=lambda g: (g.resolved_at or 0.0, g.id)), grp)
                return True
        return False

    def _hosts(self, key: tuple[str, ...], at: float,
               grp: _Group | None = None) -> list[tuple[_Group, tuple[RootCause, ...]]]:
        """The open incidents (with their root causes) that may take alerts of ``at``, oldest first."""
        window = self._cfg.window.total_seconds()
        hosts = []
        for other in sorted(self._groups.values(), key=lambda g: (g.opened_at, g.created_at, g.id)):
            if other is not grp and other.status == "open" and other.key == key and at - other.last_alert_at <= window:
                ranked = self._rank(other)
                if ranked:
                    hosts.append((other, ranked))
        return hosts

    def _host(self, hosts: list[tuple[_Group, tuple[RootCause, ...]]], service: str,
              alerts: list[Alert]) -> _Group | None:
        """The open incident whose failure ``service``'s ``alerts`` are, if any.

        They join an incident whose root cause explains them and still fails: the service calls
        the root cause (directly or not), or is it, and its anomalies began within ``propagation_window`` of
        the cause's latest anomaly (for a surge of requests at an entry point: the services it
        calls). A service with a cause of its own (a resource or a pool running out) is not
        another failure's symptom. A service whose every anomaly is a drop, called by a service
        the failure reaches, is load that the failing callers no longer send. A service below
        the root cause whose anomalies began before the incident's first one is its cause,
        detected late. Of several such incidents, the most recently opened takes them: the
        newest failure is the likeliest source of new symptoms. Anything else is a failure of its
        own (elsewhere in the graph, below the incident's cause, or after that cause stopped
        failing: a finished incident takes nothing new), however near.
        """
        # Less of everything (requests, work, connections): load that a failing caller no
        # longer sends, never a cause of its own.
        drops = all(a.value < a.expected for a in alerts)
        own_cause = not drops and any(classify_metric(a.metric) in CAUSE_KINDS for a in alerts)
        onset = min(a.starts_at for a in alerts)
        # Latency of calls to a named service (peer.service) is about that service: it is this
        # incident's failure if the callee is (the callee is the cause, or calls it).
        peers = {peer_of(a) for a in alerts}
        about = sorted(peers) if None not in peers else [service]
        spreads, causes = [], []
        for other, ranked in hosts:  # oldest first: the newest that explains it wins
            cause = ranked[0]
            # A surge the incident names (first or not) still sends its load down.
            surge = next((rc for rc in ranked if rc.kind == "traffic"), None)
            if (any(self._explains(cause, s, own_cause, other) for s in about)
                    or (drops and self._below_affected(other, service))) \
                    and self._spreading(other, cause.service, onset):
                spreads.append(other)
            elif surge is not None and self._explains(surge, service, own_cause, other) \
                    and self._spreading(other, surge.service, onset):
                spreads.append(other)
            elif onset <= other.opened_at and other.firing() and cause.kind != "traffic" \
                    and service in self._calls(cause.service, other):
                causes.append(other)  # its cause, below it, that began first and was detected late
        # A symptom of a failure already known before the cause of a later one: that failure
        # reached it first.
        return (spreads or causes or [None])[-1]

    def _explains(self, cause: RootCause, service: str, own_cause: bool, grp: _Group) -> bool:
        """Whether a failure of ``cause`` (``grp``'s) explains anomalies of ``service``
        (``own_cause``: some of them are resource or saturation signals): the service is the
        cause, or calls it (directly or not, in the graph ``grp`` is ranked on) and shows no
        cause of its own; a surge of requests travels down the calls instead, and loads what it
        reaches."""
        if cause.kind == "traffic":
            return service == cause.service or service in self._calls(cause.service, grp)
        if service == cause.service:
            return True
        return not own_cause and cause.service in self._calls(service, grp)

    def _below_affected(self, grp: _Group, service: str) -> bool:
        """Whether a service that ``grp``'s failure reached calls ``service`` (directly or not)."""
        return any(service in self._calls(s, grp) for s in grp.services if s != service)

    def _move(self, grp: _Group, into: _Group, service: str) -> None:
        """Move ``service``'s alerts from the pending ``grp`` to ``into``."""
        moved = _Group(id="", created_at=grp.created_at, opened_at=float("inf"))
        for fp in [fp for fp, a in grp.alerts.items() if a.service == service]:
            moved.alerts[fp] = grp.alerts.pop(fp)
            if fp in grp.peaks:
                moved.peaks[fp] = grp.peaks.pop(fp)
        moved.services = {service}
        moved.opened_at = min(a.starts_at for a in moved.alerts.values())
        moved.last_alert_at = max(a.at for a in moved.alerts.values())
        self._merge(into, moved, count=False)
        grp.services.discard(service)
        if grp.alerts:
            grp.opened_at = min(a.starts_at for a in grp.alerts.values())
            grp.last_alert_at = max(a.at for a in grp.alerts.values())
            first = min(grp.alerts.values(), key=lambda a: (a.starts_at, a.fingerprint))
            gid = "inc-" + stable_hash(first.fingerprint, rfc3339(first.starts_at), length=12)
            if gid != grp.id and gid not in self._groups:
                del self._groups[grp.id]
                grp.id = gid
                self._groups[gid] = grp
                for fp in grp.alerts:
                    self._by_fingerprint[fp] = gid

    def _root(self, grp: _Group) -> str | None:
        rcs = self._rank(grp)
        return rcs[0].service if rcs else None

    def _spreading(self, grp: _Group, cause: str, onset: float) -> bool:
        """Whether a failure whose anomalies began at ``onset`` can be ``grp``'s failure spreading:
        ``grp``'s root cause ``cause`` still fires, and its latest anomaly began at most
        ``propagation_window`` before ``onset`` (for a cause with no telemetry of its own:
        anything of ``grp`` still fires, and ``grp`` began at most that long before)."""
        firing = grp.firing()
        if any(a.service == cause for a in grp.alerts.values()):
            onsets = [a.starts_at for a in firing if a.service == cause]
            if not onsets:
                return False
            began = max(onsets)
        elif firing:
            began = grp.opened_at
        else:
            return False
        return onset - began <= self._cfg.propagation_window.total_seconds()

    def _graph_of(self, grp: _Group) -> nx.DiGraph:
        """The graph ``grp`` is ranked on: the declared one, plus the suspected calls merged into it."""
        if not grp.extra_edges:
            return self._graph
        if grp.graph is None:
            grp.graph = self._graph.copy()
            grp.graph.add_edges_from(sorted(grp.extra_edges))
        return grp.graph

    def _near(self, a: str, b: str) -> bool:
        if a == b:
            return True
        if a not in self._undirected or b not in self._undirected:
            return False
        try:
            return nx.shortest_path_length(self._undirected, a, b) <= self._cfg.max_hops
        except nx.NetworkXNoPath:
            return False

    def _toss_up(self, grp: _Group) -> bool:
        if self._cfg.settle_wait.total_seconds() <= 0:
            return False
        rcs = self._rank(grp)
        return len(rcs) > 1 and rcs[0].score < _SETTLED_LEAD * rcs[1].score

    def _rank(self, grp: _Group) -> tuple[RootCause, ...]:
        window = self._cfg.change_window.total_seconds()
        changes = [c for c in self._changes.values() if grp.opened_at - window <= c.at <= self.now]
        graph = self._graph_of(grp)
        # Asked for every open incident each time an alert arrives: ranked again only when the
        # evidence, the graph or the changes are not what they were.
        key = (tuple(sorted(grp.peaks.items())), id(graph), self._revision, tuple(c.id for c in changes))
        if grp.ranked is not None and grp.ranked[0] == key:
            return grp.ranked[1]
        evidence = sorted(grp.peaks.values(), key=lambda a: (a.starts_at, a.fingerprint))
        ranked = rank_root_causes(graph, evidence, observed=self._observed, changes=changes,
                                  change_window=window, max_results=self._cfg.max_root_causes)
        grp.ranked = (key, ranked)
        return ranked

    def _emit(self, grp: _Group, reason: str, *, only_if_material: bool = False) -> Incident | None:
        """The incident's next record. With ``only_if_material``, ``None`` unless something a
        responder acts on changed (services, priority, severity, the top root cause, whether
        anything still fires): more alerts of the same failure are not news. Whether the record
        notifies is decided by :func:`notification` against the last record that did."""
        grp.pending_reason = None
        if grp.last_incident is None or reason == "reopened":
            grp.open_since = self.now
        alerts = sorted(grp.alerts.values(), key=lambda a: (a.starts_at, a.fingerprint))
        root_causes = self._rank(grp)
        severity = _worst_severity(alerts)
        services = tuple(sorted(grp.services))
        inc = Incident(
            id=grp.id,
            version=grp.version + 1,
            status="resolved" if grp.status == "resolved" else "open",
            reason=reason,
            opened_at=grp.opened_at,
            updated_at=self.now if grp.status != "resolved" else grp.resolved_at,
            resolved_at=grp.resolved_at if grp.status == "resolved" else None,
            title=_title(root_causes, services),
            priority=self._group_priority(grp, alerts, severity),
            severity=severity,
            services=services,
            alert_count=len(alerts),
            firing_count=sum(1 for a in alerts if a.status == "firing"),
            fingerprints=tuple(a.fingerprint for a in alerts[: self._cfg.max_fingerprints]),
            root_causes=root_causes,
            owner=self._owner(root_causes, services),
            suspected_edges=tuple(v for _, v in sorted(grp.suspects.items())),
        )
        prev = grp.last_incident
        if only_if_material and prev is not None and _same_story(prev, inc):
            self.stats["quiet_updates"] += 1
            return None
        inc = replace(inc, notification=notification(grp.last_notified, inc, self._cfg.notify,
                                                      waited=self.now - grp.open_since))
        grp.version += 1
        grp.last_sent_at = self.now
        grp.last_incident = inc
        if inc.notifies:
            grp.last_notified = inc
            grp.last_notified_at = self.now
        self.stats["updates"] += 1
        self.stats["notifications"] += inc.notifies
        return inc

    def _group_priority(self, grp: _Group, alerts: list[Alert] | None = None, severity: str | None = None) -> str:
        if alerts is None:
            alerts = list(grp.alerts.values())
        return _priority(self._graph_of(grp), tuple(sorted(grp.services)), severity or _worst_severity(alerts), alerts)

    def _owner(self, root_causes: tuple[RootCause, ...], services: tuple[str, ...]) -> str | None:
        for svc in [rc.service for rc in root_causes[:1]] + list(services):
            if svc in self._graph and self._graph.nodes[svc].get("owner"):
                return self._graph.nodes[svc]["owner"]
        return None

    def _forget_old(self) -> None:
        """Drop resolved groups once they can no longer reopen, so state stays bounded."""
        # Kept at least `window` after resolving, so a redelivered alert of it is known as one.
        horizon = max(self._cfg.reopen_within, self._cfg.window).total_seconds()
        for gid in [k for k, g in self._groups.items() if g.status == "resolved" and self.now - (g.resolved_at or 0) > horizon]:
            for fp in self._groups[gid].alerts:
                if self._by_fingerprint.get(fp) == gid:
                    del self._by_fingerprint[fp]
            del self._groups[gid]
        if len(self._readings) > 2 * len(self._by_fingerprint) + 1000:
            self._readings = {r: fp for r, fp in self._readings.items() if fp in self._by_fingerprint}


_PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}


def _worst_severity(alerts) -> str:
    return max((a.severity for a in alerts), key=lambda s: _SEVERITY_RANK.get(s, 1), default="warning")


def notification(last: Incident | None, inc: Incident, cfg: NotifySettings, *, waited: float = 0.0) -> str:
    """Whether ``inc`` reaches a receiver, given ``last``, the last record that did (``None``: none
    did since the incident opened or reopened), ``waited`` seconds after the record that opened it.

    ``page`` for the first record once ``cfg.hold`` for its priority has passed, ``resolve`` when
    it resolves (if it paged), ``update`` when it got worse in a way ``cfg.renotify_on`` lists
    (or for a ``repeat`` reminder), else ``silent``: still held, more alerts of the same failure,
    a lower priority, nothing firing while the incident waits out ``resolve_after``.

    Examples
    --------
    >>> base = Incident("i", 1, "open", "opened", 0.0, 0.0, None, "t", "P3", "warning", ("db",), 1, 1, ())
    >>> cfg = NotifySettings()
    >>> notification(None, base, cfg), notification(None, base, cfg, waited=180.0)
    ('silent', 'page')
    >>> notification(None, replace(base, priority="P1"), cfg)
    'page'
    >>> notification(base, replace(base, version=2, reason="alerts_added", services=("api", "db")), cfg)
    'silent'
    >>> notification(base, replace(base, version=2, reason="alerts_added", priority="P1"), cfg)
    'update'
    >>> notification(base, replace(base, version=3, status="resolved", reason="resolved"), cfg)
    'resolve'
    >>> notification(None, replace(base, version=3, status="resolved", reason="resolved"), cfg)
    'silent'
    """
    if inc.status == "resolved":
        return "resolve" if last is not None else "silent"  # nobody heard of it: nothing to resolve
    if last is None:
        return "page" if inc.firing_count and waited >= cfg.hold_for(inc.priority) else "silent"
    on = set(cfg.renotify_on)
    if "any_update" in on or inc.reason == "repeat":
        return "update"
    top = lambda i: i.root_causes[0].service if i.root_causes else None  # noqa: E731
    worse = (("priority_raised" in on and _PRIORITY_RANK.get(inc.priority, 4) < _PRIORITY_RANK.get(last.priority, 4))
             or ("root_cause_changed" in on and top(inc) is not None and top(inc) != top(last))
             or ("services_added" in on and len(set(inc.services) - set(last.services)) >= cfg.services_added))
    return "update" if worse else "silent"


def _same_story(a: Incident, b: Incident) -> bool:
    top = lambda i: (i.root_causes[0].service, i.root_causes[0].kind) if i.root_causes else None  # noqa: E731
    edges = lambda i: {(e.caller, e.callee, e.related_incident) for e in i.suspected_edges}  # noqa: E731
    return (a.services == b.services and a.priority == b.priority and a.severity == b.severity
            and top(a) == top(b) and (a.firing_count > 0) == (b.firing_count > 0) and edges(a) == edges(b))


def _reading(alert: Alert) -> tuple | None:
    """What makes two services' alerts one series (as :func:`correlators.rca.shared_series`):
    the same metric, onset, value and forecast. A forecast of exactly 0 is too common to match on."""
    if alert.status != "firing" or alert.expected == 0.0 or alert.value != alert.value:
        return None
    return (alert.metric, alert.starts_at, alert.value, alert.expected)


def _keep_peak(grp: _Group, alert: Alert) -> None:
    if alert.status != "firing":
        return
    prev = grp.peaks.get(alert.fingerprint)
    # Scores saturate near 1 for a severe anomaly, so on a tie the larger deviation is the worse reading.
    if prev is None or (alert.score, abs(alert.value - alert.expected)) > (prev.score, abs(prev.value - prev.expected)):
        grp.peaks[alert.fingerprint] = alert


def _title(root_causes: tuple[RootCause, ...], services: tuple[str, ...]) -> str:
    if not root_causes:
        return f"Anomalies on {', '.join(services)}"
    top = root_causes[0]
    chain = " -> ".join(top.path)
    what = {"saturation": "saturated", "resource": "resource exhaustion", "errors": "errors",
            "latency": "latency", "traffic": "traffic anomaly", "unobserved": "suspected (no telemetry)"}.get(top.kind, "anomaly")
    if len(top.path) > 1:
        return f"{top.service} {what}: {chain}"
    return f"{top.service} {what}"


def _priority(g: nx.DiGraph, services: tuple[str, ...], severity: str, alerts: list[Alert] = ()) -> str:
    """P1..P4 from severity, the most critical tier touched, and the blast radius.

    The blast radius counts the affected services and whether users see the failure: an
    entry point is affected, or a service failing requests (an error signal) is called,
    directly or not, by an entry point.
    """
    tiers = [g.nodes[s].get("tier", 3) for s in services if s in g] or [3]
    points = _SEVERITY_RANK.get(severity, 1)
    points += {1: 2, 2: 1}.get(min(tiers), 0)
    failing = {a.service for a in alerts if a.status == "firing" and classify_metric(a.metric) == "errors"}
    if any(g.nodes[s].get("entrypoint") for s in services if s in g) or any(
            g.nodes[e].get("entrypoint") for s in failing if s in g for e in nx.ancestors(g, s)):
        points += 1
    if len(services) >= 3:
        points += 1
    return "P1" if points >= 5 else "P2" if points >= 4 else "P3" if points >= 2 else "P4"
