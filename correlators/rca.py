"""Root-cause ranking over the dependency graph.

The graph's edges follow calls (``u -> v``: ``u`` calls ``v``), so a fault in ``v`` shows up at
``u``. A candidate root cause is an anomalous service or a service that anomalous services call;
it ranks higher when it explains more of what is anomalous (the failing services that reach it
through calls, and its own cause), when its own series departed further from normal
(:func:`departure`, whatever the metrics are called) and earlier, when the services it calls are
healthy, and, where a metric's name tells its kind (:func:`classify_metric`), when its evidence
is a resource or saturation signal rather than a symptom such as latency. A series reported
with the same readings under several services (a node's, seen through each pod on it) is
shared evidence (:func:`shared_series`); client-side latency is the services called.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import networkx as nx

from correlators.records import Change, Evidence, RootCause, SuspectedEdge
from detectors.records import Alert

# Order matters: the first matching pattern names the kind.
_KIND_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    # CPU and memory first: their utilization rises with any load, so it is a resource signal,
    # while a full pool, disk or queue is saturation proper.
    # A service that went silent (detectors.absence): down, the strongest cause there is.
    ("unobserved", re.compile(r"telemetry\.absent", re.I)),
    ("resource", re.compile(r"(cpu|memory|mem\b|heap|gc|threads|fd)", re.I)),
    ("saturation", re.compile(r"(utili[sz]ation|pool|connections|filesystem|disk|queue|saturat|inodes)", re.I)),
    # Our log detector's templates are error templates; a success rate falls when requests fail.
    ("errors", re.compile(r"(error|fail|5xx|exception|crash|restart|log\.template|success)", re.I)),
    ("latency", re.compile(r"(duration|latency|lat_|response_time|p9\d)", re.I)),
    ("traffic", re.compile(r"(requests|throughput|rps|lod|rate)", re.I)),
)
# A cause explains symptoms; symptoms rarely explain causes.
_KIND_WEIGHT = {"unobserved": 1.3, "saturation": 1.2, "resource": 1.1, "errors": 1.0, "latency": 0.95, "traffic": 0.9, "anomaly": 0.9}
_INSTANCE_LABELS = ("host.name", "k8s.pod.name", "service.instance.id", "instance", "k8s.node.name")
# Onset is measured against the incident's first anomaly; a minute late costs 10%.
_ONSET_SCALE_S = 60.0
_UNOBSERVED_WEIGHT = 0.85
_SYMPTOMS = ("errors", "latency")
# What a failing dependency can explain in its callers: errors, latency, and signals of no known
# kind (a syscall count, bytes received): real metrics are often named so that nothing can tell.
_EXPLAINABLE = ("errors", "latency", "anomaly")
# Latency measured on the client side of calls (OpenTelemetry's http.client.*, rpc.client.*, a
# pod's client latency) is how long the services it calls took, not the service itself.
_CLIENT = re.compile(r"client", re.I)
# A series labelled with the service it measures calls to (OpenTelemetry's ``peer.service``, as
# client instrumentation and service meshes report per-destination latency) names the callee:
# its rise is that callee's slowness (or its network's), not the caller's own.
PEER_LABEL = "peer.service"
_SURGE_WEIGHT = 0.45
_CHANGE_BOOST = 2.2  # a service changed shortly before its anomaly: changes cause most incidents
_CHANGE_ONLY_WEIGHT = 0.8  # a changed dependency with no anomaly of its own
CAUSE_KINDS = ("saturation", "resource", "unobserved")  # what a failing dependency can show besides symptoms


def classify_metric(metric: str) -> str:
    """Name the kind of signal a metric carries.

    >>> classify_metric("db.client.connections.utilization"), classify_metric("http.server.request.duration.p95")
    ('saturation', 'latency')
    """
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(metric):
            return kind
    return "anomaly"


@dataclass(frozen=True, slots=True)
class _ServiceAnomaly:
    service: str
    onset: float
    score: float
    kind: str
    alerts: tuple[Alert, ...]
    strength: float = 1.0  # how far its series departed from normal, 0..1 (see departure)
    symptom: float = 0.0  # ... its series that a failing dependency could explain (errors, latency, unknown)
    cause: float = 0.0  # ... its series that only it explains (a resource or a pool running out)
    downstream: float = 0.0  # ... its client-side latency: how long the services it calls took
    shared: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (fingerprint, services) of series it shares
    peers: tuple[tuple[str, float], ...] = ()  # its latency of calls to a named service: (callee, departure)


def departure(alert: Alert) -> float:
    """How far a reading departed from normal, whatever its unit: ``|value - expected|`` over the
    larger of the two magnitudes, in [0, 1], times the detector's score. A doubling or a halving
    is 0.5, a tenfold rise or a fall to nothing about 0.9 to 1; a memory series drifting 2 % is
    0.02 however unusual the detector found it. Without a usable reading (NaN): the score.

    >>> reading = lambda v, e: Alert("f", "firing", "svc", "Mem(Mi)", "svc/Mem(Mi)", (), 1.0, v, e, 0.0, 0.0)
    >>> round(departure(reading(0.9, 0.05)), 3), round(departure(reading(34.1, 33.4)), 3)
    (0.944, 0.021)
    """
    v, e = alert.value, alert.expected
    if not (math.isfinite(v) and math.isfinite(e)):
        return alert.score
    top = max(abs(v), abs(e))
    return alert.score * (min(abs(v - e) / top, 1.0) if top > 0 else 0.0)


def alert_kind(alert: Alert) -> str:
    """:func:`classify_metric`, knowing the direction: a resource or a pool used *less* than
    normal ran out of nothing, and a signal of no known kind that fell is less of something
    (requests, work, bytes): load that stopped coming (traffic), not a failure of its own. A
    latency that fell is no slowness to pass on (a kind of its own: anomaly)."""
    kind = classify_metric(alert.metric)
    if alert.value < alert.expected:
        if kind in ("resource", "saturation", "anomaly"):
            return "traffic"
        if kind == "latency":
            return "anomaly"  # faster than normal: no failure a dependency passes on, but not nothing
    return kind


def _sharers(alerts: Iterable[Alert]) -> dict[str, tuple[str, ...]]:
    """For each series seen under several services with the same readings, those services."""
    alerts = list(alerts)
    seen: dict[tuple, set[str]] = {}
    for a in alerts:
        if a.expected != 0.0 and math.isfinite(a.value):
            seen.setdefault((a.metric, a.starts_at, a.value, a.expected), set()).add(a.service)
    return {a.fingerprint: tuple(sorted(svcs)) for a in alerts
            if len(svcs := seen.get((a.metric, a.starts_at, a.value, a.expected), ())) > 1}


def shared_series(alerts: Iterable[Alert]) -> frozenset[str]:
    """Fingerprints of series reported under several services with the same readings: the
    same episode (onset), value and forecast of the same metric. Those are one series seen
    through several services (a node's CPU reported with each pod it runs, a cluster-wide
    gauge), not any one service's own: they may be any of those services' doing, so each of
    them gets an equal part of it as evidence, and its own series count first.
    A forecast of exactly 0 (an idle count) is too common to match on."""
    return frozenset(_sharers(alerts))


def peer_of(alert: Alert) -> str | None:
    """The service whose calls ``alert``'s series measures (its ``peer.service`` label), if that is
    another service than the alert's own and the series is a latency that rose."""
    peer = next((v for k, v in alert.labels if k == PEER_LABEL), None)
    if not peer or peer == alert.service or alert_kind(alert) != "latency":
        return None
    return peer


def _summarise(alerts: Iterable[Alert]) -> dict[str, _ServiceAnomaly]:
    alerts = list(alerts)
    sharers = _sharers(alerts)
    by_service: dict[str, list[Alert]] = {}
    for a in alerts:
        by_service.setdefault(a.service, []).append(a)
    out = {}
    for svc, items in by_service.items():
        dep = {a.fingerprint: departure(a) / len(sharers.get(a.fingerprint, (svc,))) for a in items}
        # Its own series first, cause-like signals first among them: the evidence an operator
        # reads first, and what names its kind and its onset.
        items.sort(key=lambda a: (a.fingerprint in sharers, -_KIND_WEIGHT[alert_kind(a)], -dep[a.fingerprint],
                                  a.starts_at, a.series))
        own = [a for a in items if a.fingerprint not in sharers] or items
        kinds = [alert_kind(a) for a in items]
        own_kinds = kinds[:len(own)]
        kind = max(own_kinds, key=lambda k: (_KIND_WEIGHT[k], -own_kinds.index(k)))
        peer = [peer_of(a) for a in items]
        client = [k == "latency" and p is None and _CLIENT.search(a.metric) is not None
                  for a, k, p in zip(items, kinds, peer)]
        d = [dep[a.fingerprint] for a in items]
        symptom = max((x for x, k, c, p in zip(d, kinds, client, peer) if k in _EXPLAINABLE and not c and p is None),
                      default=0.0)
        cause = max((x for x, k in zip(d, kinds) if k in CAUSE_KINDS), default=0.0)
        downstream = max((x for x, c in zip(d, client) if c), default=0.0)
        peers: dict[str, float] = {}
        for x, p in zip(d, peer):
            if p is not None:
                peers[p] = max(peers.get(p, 0.0), x)
        out[svc] = _ServiceAnomaly(svc, min(a.starts_at for a in own), max(a.score for a in items), kind,
                                   tuple(items), max(d), symptom, cause, downstream,
                                   tuple((fp, sharers[fp]) for fp in sorted(sharers) if fp in dep),
                                   tuple(sorted(peers.items())))
    return out


def _surge(g: nx.DiGraph, cand: str, own: _ServiceAnomaly | None, first_onset: float) -> Alert | None:
    """The traffic alert that makes ``cand`` an entry point under a surge, if it is one."""
    if own is None or cand not in g or not g.nodes[cand].get("entrypoint"):
        return None
    ups = [a for a in own.alerts if classify_metric(a.metric) == "traffic" and a.value > 1.3 * a.expected > 0
           and a.starts_at <= first_onset + _ONSET_SCALE_S]
    return max(ups, key=lambda a: (a.score, -a.starts_at), default=None)


def _fullness(alerts: Iterable[Alert]) -> float:
    """How close to full a saturating resource got: a pool at 100 % is a cause; one at 60 %
    is a busy pool. Only utilizations (0..1) say so; other saturation signals count in full."""
    levels = [a.value for a in alerts if "utili" in a.metric and 0.0 <= a.value <= 1.5 and a.value > a.expected]
    if not levels:
        return 1.0
    return 0.8 + 0.2 * min(max((max(levels) - 0.4) / 0.3, 0.0), 1.0)


def _instance_local(anomaly: _ServiceAnomaly) -> bool:
    return any(k in _INSTANCE_LABELS for al in anomaly.alerts for k, _ in al.labels)


def _evidence(alerts: Iterable[Alert], limit: int = 5, detail: str | None = None,
              shared: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> tuple[Evidence, ...]:
    seen_with = dict(shared)

    def what(a: Alert) -> str:
        text = detail or a.summary
        if a.fingerprint in seen_with:
            text = (f"{text}; " if text else "") + f"the same readings under {', '.join(seen_with[a.fingerprint])}"
        return text

    return tuple(
        Evidence(series=a.series, metric=a.metric, score=a.score, value=a.value, expected=a.expected,
                 at=a.starts_at, detail=what(a), labels=a.labels)
        for a in list(alerts)[:limit]
    )


def _healthy_below(g: nx.DiGraph, cand: str, onset: float, anomalies: dict[str, _ServiceAnomaly],
                   below: Callable[[str], frozenset[str]]) -> float:
    """How healthy ``cand``'s dependencies are, 0..1: one less how far the most failing service it
    calls (directly or not) departed, counting those whose failure (a symptom or a cause of
    their own, not less load) began no later than ``cand``'s, give or take a minute. A service
    whose dependency failed first is likelier its symptom than the cause."""
    if cand not in g:
        return 1.0
    worst = max((max(a.symptom, a.cause) for d, a in anomalies.items() if d != cand and d in below(cand)
                 and a.onset <= onset + _ONSET_SCALE_S), default=0.0)
    return 1.0 - worst


def propagation_path(g: nx.DiGraph, root: str, affected: set[str]) -> tuple[str, ...]:
    """The path from ``root`` up its callers to the most upstream affected service.

    >>> g = nx.DiGraph([("web", "api"), ("api", "db")])
    >>> propagation_path(g, "db", {"web", "api", "db"})
    ('db', 'api', 'web')
    """
    if root not in g:
        return (root,)
    # Walk against the calls, only through services that show the failure.
    callers = g.reverse(copy=False).subgraph(affected | {root})
    paths = nx.single_source_shortest_path(callers, root)
    def rank(target: str):
        is_entry = bool(g.nodes[target].get("entrypoint")) if target in g else False
        return (is_entry, len(paths[target]), target)
    best = max(paths, key=rank)
    return tuple(paths[best])


def rank_root_causes(
    g: nx.DiGraph,
    alerts: Iterable[Alert],
    *,
    observed: set[str] | None = None,
    max_results: int = 5,
    changes: Iterable[Change] = (),
    change_window: float = 3600.0,
) -> tuple[RootCause, ...]:
    """Rank the likely root causes of the anomalies in ``alerts``, best first.

    Parameters
    ----------
    g : the call graph (``u -> v``: ``u`` calls ``v``). It is never mutated.
    alerts : the incident's alerts, firing or resolved.
    observed : services known to emit telemetry. A silent dependency that is not observed (or is
        declared ``kind: external``) can still be named when its callers degrade.
    max_results : how many candidates to return.
    changes : recent deploys, config changes and scalings. A change to a service shortly (up to
        ``change_window`` seconds) before its anomaly makes it a likelier cause; a changed
        dependency of failing services becomes a candidate even when it looks healthy.

    Returns
    -------
    Root causes with scores that sum to at most 1.

    Examples
    --------
    >>> g = nx.DiGraph([("web", "db")])
    >>> a = lambda svc, metric, t: Alert("f"+svc, "firing", svc, metric, svc+"/"+metric, (), 0.99, 1.0, 0.1, t, t)
    >>> [rc.service for rc in rank_root_causes(g, [a("web", "http.server.request.duration.p95", 30), a("db", "db.client.connections.utilization", 0)])]
    ['db', 'web']
    """
    anomalies = _summarise(alerts)
    if not anomalies:
        return ()
    descendants: dict[str, frozenset[str]] = {}

    def calls(svc: str) -> frozenset[str]:
        """Every service ``svc`` calls, directly or not (each walk done once per ranking)."""
        if svc not in descendants:
            descendants[svc] = frozenset(nx.descendants(g, svc)) if svc in g else frozenset()
        return descendants[svc]

    first_onset = min(a.onset for a in anomalies.values())
    affected = set(anomalies)

    # Candidates: anomalous services, plus silent services that anomalous services call.
    candidates: set[str] = set(affected)
    silent_deps: set[str] = set()
    for svc in affected:
        if svc in g:
            for dep in calls(svc):
                silent = (observed is not None and dep not in observed) or g.nodes[dep].get("kind") == "external"
                if dep not in affected and silent:
                    candidates.add(dep)
                    silent_deps.add(dep)

    # What a root cause must explain: the services that fail (errors, latency, or signals of no
    # known kind), each as far as it departed from normal; a failing dependency explains them in
    # its callers. A service's own cause (a resource or a pool running out) is explained only
    # by that service. Traffic and load anomalies flow the other way (a surge at the entry point
    # reaches every callee), so they would credit every busy dependency; they count only when
    # nothing else is anomalous.
    symptomatic = {svc: a.symptom for svc, a in anomalies.items() if a.symptom > 0.0}
    causes = {svc: a.cause for svc, a in anomalies.items() if a.cause > 0.0}
    # A service's client-side latency is explained by the services it calls (by itself only
    # when the graph knows none); a callee that shows nothing of its own is then a suspect.
    downstream = {svc: a.downstream for svc, a in anomalies.items() if a.downstream > 0.0}
    # Latency of calls to a named service is explained by that service (and what it calls).
    to_peer = [(svc, peer, w) for svc, a in anomalies.items() for peer, w in a.peers if w > 0.0]
    if not symptomatic and not causes and not downstream and not to_peer:
        symptomatic = {svc: a.strength for svc, a in anomalies.items()}
    reach_cache = {svc: calls(svc) | {svc} for svc in symptomatic}
    below_cache = {svc: (calls(svc) if svc in g and g.out_degree(svc) else {svc}) for svc in downstream}
    quiet_callees: dict[str, list[str]] = {}  # callee with no anomaly -> its callers whose client latency rose
    for svc in downstream:
        if svc in g:
            for dep in g.successors(svc):
                if dep not in affected:
                    quiet_callees.setdefault(dep, []).append(svc)
                    candidates.add(dep)
    peer_reach = {peer: calls(peer) | {peer} for _, peer, _ in to_peer}
    for svc, peer, _ in to_peer:
        if peer not in affected:
            callers = quiet_callees.setdefault(peer, [])
            if svc not in callers:
                callers.append(svc)
            candidates.add(peer)
    changed: dict[str, list[Change]] = {}
    for ch in changes:
        changed.setdefault(ch.service, []).append(ch)
    for svc in changed:
        if svc not in candidates and any(svc in reach for reach in reach_cache.values()):
            candidates.add(svc)  # a changed dependency of failing services, healthy-looking or silent
    total_weight = (sum(symptomatic.values()) + sum(downstream.values()) + sum(causes.values())
                    + sum(w for _, _, w in to_peer)) or 1.0

    ranked: list[tuple[float, str, RootCause]] = []
    for cand in candidates:
        explained = [w for svc, w in symptomatic.items() if cand in reach_cache[svc]]
        explained += [w for svc, w in downstream.items() if cand in below_cache[svc]]
        explained += [w for _, peer, w in to_peer if cand in peer_reach[peer]]
        coverage = (sum(explained) + causes.get(cand, 0.0)) / total_weight
        if coverage <= 0.0 and _surge(g, cand, anomalies.get(cand), first_onset) is None:
            continue  # explains none of the failures
        recent = [ch for ch in changed.get(cand, ())
                  if first_onset - change_window <= ch.at <= (anomalies[cand].onset if cand in anomalies
                                                               else first_onset) + _ONSET_SCALE_S]
        if cand in anomalies:
            own = anomalies[cand]
            kind = own.kind
            onset = own.onset
            weight = _KIND_WEIGHT[kind] * (0.5 + 0.5 * own.strength)
            if kind == "saturation":
                weight *= _fullness(own.alerts)
            # A fault seen on some instances of a service only is local to that service.
            if any(k in _INSTANCE_LABELS for al in own.alerts for k, _ in al.labels):
                weight *= 1.05
            evidence = _evidence(own.alerts, shared=own.shared)
            reason = f"{len(own.alerts)} anomalous series; explains {len(explained)} of {len(anomalies)} affected services"
        elif cand in quiet_callees and cand not in silent_deps:
            # Slow as its callers see it, while it reports nothing unusual itself (a delay on its
            # network, a fault its own metrics do not show).
            callers = [anomalies[c] for c in sorted(quiet_callees[cand])]
            kind = "latency"
            onset = min(a.onset for a in callers)
            # A caller that calls several services waited on one of them, or on several; one
            # whose series names the callee waited on this one.
            weight = _UNOBSERVED_WEIGHT * max(
                max(a.downstream / max(g.out_degree(a.service), 1) if a.service in g else 0.0,
                    dict(a.peers).get(cand, 0.0)) for a in callers)
            evidence = _evidence((al for a in callers for al in a.alerts
                                  if alert_kind(al) == "latency"
                                  and (peer_of(al) == cand or (peer_of(al) is None and _CLIENT.search(al.metric)))),
                                 detail=f"calls to {cand} slowed down; {cand} shows nothing of its own")
            reason = f"{len(callers)} caller(s) waited longer on their calls; shows no anomaly itself"
        elif cand not in silent_deps:  # a changed dependency that shows nothing itself
            kind = "change"
            onset = min(ch.at for ch in recent)
            weight = _CHANGE_ONLY_WEIGHT
            evidence = ()
            reason = "changed shortly before the failures it can explain"
        else:
            callers = [c for c in g.predecessors(cand)]
            caller_anoms = [anomalies[c] for c in callers if c in anomalies]
            if not caller_anoms or len(caller_anoms) < len(callers):
                continue  # a silent dependency is suspect only when every caller degrades
            kind = "unobserved"
            onset = min(a.onset for a in caller_anoms)
            weight = _UNOBSERVED_WEIGHT * max(a.strength for a in caller_anoms)
            # Callers that only fail (errors, latency) on every node, with nothing of their own
            # running out, point past themselves: a silent dependency explains them better than
            # they explain themselves. A failure on some nodes only stays the caller's.
            if all(a.kind in _SYMPTOMS and not _instance_local(a) for a in caller_anoms):
                weight = 1.05 * max(_KIND_WEIGHT[a.kind] * (0.5 + 0.5 * a.strength) for a in caller_anoms)
            evidence = _evidence((al for a in caller_anoms for al in a.alerts),
                                 detail=f"caller of {cand} degraded; {cand} emits no telemetry")
            reason = f"emits no telemetry; all {len(callers)} callers degraded"
        if recent:
            weight *= _CHANGE_BOOST
            latest = max(recent, key=lambda ch: (ch.at, ch.id))
            evidence = (Evidence(series=f"{cand}/change.{latest.kind}", metric=f"change.{latest.kind}", score=1.0,
                                 value=float("nan"), expected=float("nan"), at=latest.at,
                                 detail=f"{latest.kind} {latest.id}: {latest.description}".strip()),) + evidence
            reason = f"{latest.kind} {latest.id} shortly before; " + reason
        lateness = max(0.0, onset - first_onset) / _ONSET_SCALE_S
        raw = coverage * weight / (1.0 + 0.1 * lateness)
        if not recent:
            # A failing dependency explains a symptom, not a cause of the service's own (a change
            # counts as one): the discount shrinks as the own cause grows.
            own_cause = anomalies[cand].cause if cand in anomalies else 0.0
            raw *= 1.0 - (1.0 - _healthy_below(g, cand, onset, anomalies, calls)) * (1.0 - own_cause)
        path = propagation_path(g, cand, affected)
        surge = _surge(g, cand, anomalies.get(cand), first_onset)
        if surge is not None:
            # A surge of requests at an entry point travels down the calls, the opposite way of a
            # fault: it explains the failing services it calls. It ranks behind a resource that
            # ran out under it (that is what the fix targets), but ahead of busy bystanders.
            below = calls(cand) | {cand}
            # ... and the load it sends loads what it reaches (a busy CPU, a pool filling up), as
            # far as the surge itself went: what departed further than the surge (a pool that
            # ran out, a latency that exploded) broke under it, and is a cause of its own.
            limit = departure(surge)
            down = sum(w for part in (symptomatic, downstream, causes) for svc, w in part.items()
                       if svc in below and w <= limit) / total_weight
            surge_raw = _SURGE_WEIGHT * (0.5 + 0.5 * surge.score) * down
            if surge_raw > raw or kind in _SYMPTOMS:  # an entry point failing under a surge: the trigger
                raw, kind = max(raw, surge_raw), "traffic"
                evidence = _evidence([surge] + [a for a in anomalies[cand].alerts if a is not surge])
                reason = (f"requests at {surge.value:.4g}/s against {surge.expected:.4g}/s expected; the surge "
                          f"reaches {len([s for s in symptomatic if s in below])} failing services below it")
                path = (cand,)
        ranked.append((raw, cand, RootCause(service=cand, score=0.0, kind=kind, path=path,
                                            evidence=evidence, reason=reason)))

    ranked.sort(key=lambda r: (-r[0], r[1]))
    top = ranked[:max_results]
    norm = sum(r[0] for r in ranked) or 1.0
    return tuple(
        RootCause(service=rc.service, score=round(raw / norm, 4), kind=rc.kind, path=rc.path,
                  evidence=rc.evidence, reason=rc.reason)
        for raw, _, rc in top
    )


def suspect_missing_edge(
    g: nx.DiGraph,
    caller_alerts: Iterable[Alert],
    callee_alerts: Iterable[Alert],
    *,
    caller: str,
    callee: str,
    window: float,
    min_lag: float = 0.0,
    max_hops: int = 0,
    related_incident: str = "",
) -> SuspectedEdge | None:
    """Suspect that ``caller`` calls ``callee`` although ``g`` has no such call.

    A missing call shows as a failure that no declared dependency explains, following another
    one: ``callee`` fails, and shortly after, ``caller``, which by the graph has nothing to do
    with it, starts failing the same way. Two independent faults can look alike, so every rule
    below must hold; each one rules out a way two unrelated faults overlap:

    1. The graph does not already know it: ``caller`` does not reach ``callee`` through calls,
       and the two are more than ``max_hops`` apart in either direction (closer, the correlator
       would have grouped them).
    2. Onset order: the callee's anomaly started first, at least ``min_lag`` seconds (and
       strictly) before the caller's, and at most ``window`` seconds. A fault travels up the
       calls one hop at a time; two onsets closer than one collection interval give no order.
    3. The caller only shows symptoms: every alert of its is errors or latency that rose. A
       resource, saturation, traffic or silence signal of its own is a cause of its own (kinds
       as :func:`alert_kind` tells them: a resource used less, or a latency that fell, is no
       failure to pass on).
    4. Kind: the caller shows a symptom the callee shows (errors pass as errors, latency as
       latency), or the callee's evidence is a cause (saturation, resource, silence, rising),
       which callers see as either.
    5. Co-anomaly: the callee still fires (some alert of it is firing) when this is asked.

    Parameters
    ----------
    g : the declared call graph (``u -> v``: ``u`` calls ``v``); never mutated.
    caller_alerts, callee_alerts : the latest state of each service's alerts (others ignored).
    window : the longest onset lag, in seconds, still taken for propagation.
    min_lag : the shortest onset lag, in seconds, that orders two anomalies.
    related_incident : recorded on the result.

    Returns
    -------
    The suspected edge ``caller -> callee`` with its onset lag, or ``None``.

    Examples
    --------
    >>> g = nx.DiGraph([("web", "api"), ("batch", "db")])
    >>> a = lambda svc, metric, t: Alert("f"+svc+metric, "firing", svc, metric, svc+"/"+metric, (), 0.99, 1.0, 0.1, t, t)
    >>> e = suspect_missing_edge(g, [a("api", "http.server.errors.rate", 140)], [a("db", "db.errors.rate", 100)],
    ...                          caller="api", callee="db", window=300)
    >>> (e.caller, e.callee, e.lag_s)
    ('api', 'db', 40.0)
    >>> suspect_missing_edge(g, [a("api", "http.server.errors.rate", 100)], [a("db", "db.errors.rate", 100)],
    ...                      caller="api", callee="db", window=300) is None  # same instant: no direction
    True
    """
    if caller == callee or caller not in g or callee not in g:
        return None
    mine = [a for a in caller_alerts if a.service == caller]
    theirs = [a for a in callee_alerts if a.service == callee]
    if not mine or not theirs or not any(a.status == "firing" for a in theirs):
        return None
    # 1. Known already: a declared path, or close enough to have been grouped.
    if callee in nx.descendants(g, caller):
        return None
    und = g.to_undirected(as_view=True)
    try:
        if nx.shortest_path_length(und, caller, callee) <= max_hops:
            return None
    except nx.NetworkXNoPath:
        pass
    # 2. Onset order.
    lag = min(a.starts_at for a in mine) - min(a.starts_at for a in theirs)
    if not (0.0 < lag and min_lag <= lag <= window):
        return None
    # 3. Symptoms only.
    kinds = {alert_kind(a) for a in mine}
    if not kinds <= set(_SYMPTOMS):
        return None
    # 4. The same symptom, or a cause below.
    their_kinds = {alert_kind(a) for a in theirs}
    if not (kinds & their_kinds or their_kinds & set(CAUSE_KINDS)):
        return None
    shared = sorted(kinds & their_kinds) or sorted(kinds)
    below = sorted(their_kinds & set(CAUSE_KINDS)) or shared
    reason = (f"{caller} started failing ({', '.join(shared)}) {lag:.0f}s after {callee} ({', '.join(below)}) "
              f"with no declared path between them and no cause of its own")
    return SuspectedEdge(caller=caller, callee=callee, lag_s=float(lag), reason=reason,
                         related_incident=related_incident)
