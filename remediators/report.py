"""Post-incident reports in Markdown, and the topology as a Mermaid flowchart. Pure: no I/O, no clock.

:func:`render_report` takes every version of one incident as written on ``aiops.incidents``
(``streams.codec.incident_dict``), the action and ticket records (any incident's: others are
ignored), an optional :class:`~remediators.runbooks.RunbookIndex` and the topology, and returns
the report. The same input always gives the same text.

Sections: summary, impact, timeline, root cause with its evidence, propagation graph (Mermaid),
actions, runbooks, follow-ups. Every statement comes from the records; where the records do
not say (no action planned, no ticket), the report says so rather than guessing.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx

from detectors.records import parse_rfc3339

from remediators.runbooks import RELEVANT

if TYPE_CHECKING:  # streams.config imports remediators.config; avoid the cycle at run time
    from correlators.learned import Drift
    from remediators.runbooks import RunbookIndex
    from streams.config import Topology

# role -> (fill, border): shared by the Mermaid picture here and the SVG/PNG in remediators.picture
PALETTE = {"rootcause": ("#d62728", "#7f0000"), "path": ("#ff9896", "#d62728"), "affected": ("#ffe08a", "#b8860b")}
CLASS_DEFS = (
    f"classDef rootcause fill:{PALETTE['rootcause'][0]},stroke:{PALETTE['rootcause'][1]},stroke-width:3px,color:#ffffff",
    f"classDef path fill:{PALETTE['path'][0]},stroke:{PALETTE['path'][1]},stroke-width:2px,color:#000000",
    f"classDef affected fill:{PALETTE['affected'][0]},stroke:{PALETTE['affected'][1]},color:#000000",
)
PATH_LINK_STYLE = f"stroke:{PALETTE['rootcause'][0]},stroke-width:3px"
FLAP_THRESHOLD = 2  # alerts that fire again after resolving this often within one incident call for tuning
MAX_EVIDENCE_ROWS = 8
MAX_RUNBOOKS = 3
MAX_DRIFT_EDGES = 4  # per kind of drift on the report's one line


# --- small formatters --------------------------------------------------------------------------

def _t(s: str | None) -> float | None:
    return parse_rfc3339(s) if s else None


def _duration(seconds: float) -> str:
    """
    >>> _duration(1030), _duration(45), _duration(3900), _duration(93600)
    ('17m 10s', '45s', '1h 05m', '1d 2h')
    """
    s = int(round(max(seconds, 0)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def _when(rfc: str | None) -> str:
    """``2026-01-01T00:45:10.000Z`` -> ``2026-01-01 00:45:10``."""
    if not rfc:
        return "n/a"
    return rfc.replace("T", " ").split(".")[0].rstrip("Z")


def _num(v: Any, metric: str = "") -> str:
    """
    >>> _num(0.373155, "db.client.connections.utilization"), _num(121.0), _num(None)
    ('37.3 %', '121', 'n/a')
    """
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "n/a"
    if metric.endswith("utilization"):
        return f"{v * 100:.1f} %"
    return f"{v:.4g}"


def _score(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _change(value: Any, expected: Any) -> str:
    """
    >>> _change(121, 65.37), _change(9, 0.0914), _change(1, 0)
    ('+85 %', '×98', 'new')
    """
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (value, expected)):
        return "n/a"
    if expected == 0:
        return "new" if value else "0"
    ratio = value / expected
    if ratio >= 10 or ratio <= 0.1:
        return f"×{ratio:.2g}" if ratio >= 10 else f"×{ratio:.2f}"
    return f"{(ratio - 1) * 100:+.0f} %"


def _n(count: int, word: str) -> str:
    """
    >>> _n(1, "alert"), _n(3, "service")
    ('1 alert', '3 services')
    """
    return f"{count} {word}{'' if count == 1 else 's'}"


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _arrow(path: Sequence[str]) -> str:
    return " → ".join(path)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


# --- Mermaid ----------------------------------------------------------------------------------

_SHAPES = {"datastore": ('[("', '")]'), "external": ('{{"', '"}}'), "queue": ('[/"', '"/]'),
           "gateway": ('[["', '"]]'), "host": ('["', '"]'), "service": ('["', '"]')}


def _node_ids(names: Iterable[str]) -> dict[str, str]:
    """Mermaid-safe, unique, deterministic node ids (``orders-db`` -> ``s_orders_db``)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(names):
        base = "s_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        nid, k = base, 2
        while nid in used:
            nid, k = f"{base}_{k}", k + 1
        used.add(nid)
        ids[name] = nid
    return ids


def render_mermaid(graph: nx.DiGraph, *, root_cause: str | None = None, path: Sequence[str] = (),
                   affected: Iterable[str] = (), nodes: Iterable[str] | None = None,
                   notes: Mapping[str, str] | None = None, direction: str = "LR") -> str:
    """A Mermaid flowchart of ``graph`` (edge ``u -> v``: ``u`` calls ``v``), without fences.

    ``nodes`` restricts it to a subgraph. ``root_cause``, the propagation ``path`` (root cause
    first, as in ``RootCause.path``) and ``affected`` services are highlighted with classDefs;
    the path's edges are drawn thick and red. ``notes`` add a second label line per node. Node
    shapes follow the service kind: datastores are cylinders, external services hexagons.
    The graph is not modified.

    >>> g = nx.DiGraph([("web", "api"), ("api", "db")])
    >>> print(render_mermaid(g, root_cause="db", path=["db", "api"], affected=["web"]))
    flowchart LR
      s_api["api"]
      s_db["db"]
      s_web["web"]
      s_api ==> s_db
      s_web --> s_api
      classDef rootcause fill:#d62728,stroke:#7f0000,stroke-width:3px,color:#ffffff
      classDef path fill:#ff9896,stroke:#d62728,stroke-width:2px,color:#000000
      classDef affected fill:#ffe08a,stroke:#b8860b,color:#000000
      class s_db rootcause
      class s_api path
      class s_web affected
      linkStyle 0 stroke:#d62728,stroke-width:3px
    """
    keep = set(graph.nodes) if nodes is None else set(nodes)
    keep |= set(path) | ({root_cause} if root_cause else set())
    ids = _node_ids(keep)
    notes = notes or {}
    lines = [f"flowchart {direction}"]
    for name in sorted(keep):
        attrs = graph.nodes[name] if name in graph else {}
        kind = attrs.get("kind") or "service"
        left, right = ('(["', '"])') if attrs.get("entrypoint") else _SHAPES.get(kind, _SHAPES["service"])
        label = name + (f"<br/>{notes[name]}" if name in notes else "")
        lines.append(f"  {ids[name]}{left}{label.replace(chr(34), '#quot;')}{right}")
    path_edges = {(path[i + 1], path[i]) for i in range(len(path) - 1)}  # the path runs against the calls
    edges = sorted({(u, v) for u, v in graph.edges if u in keep and v in keep} | path_edges)
    thick: list[int] = []
    for i, (u, v) in enumerate(edges):
        on_path = (u, v) in path_edges
        lines.append(f"  {ids[u]} {'==>' if on_path else '-->'} {ids[v]}")
        if on_path:
            thick.append(i)
    classes: dict[str, list[str]] = {"rootcause": [], "path": [], "affected": []}
    for name in sorted(keep):
        if name == root_cause:
            classes["rootcause"].append(ids[name])
        elif name in path:
            classes["path"].append(ids[name])
        elif name in set(affected):
            classes["affected"].append(ids[name])
    if any(classes.values()):
        lines += [f"  {c}" for c in CLASS_DEFS]
        lines += [f"  class {','.join(v)} {k}" for k, v in classes.items() if v]
    if thick:
        lines.append(f"  linkStyle {','.join(map(str, thick))} {PATH_LINK_STYLE}")
    return "\n".join(lines)


# --- the report -------------------------------------------------------------------------------

def _versions(incident_records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if not incident_records:
        raise ValueError("render_report: no incident records")
    ids = sorted({str(r.get("id")) for r in incident_records})
    if len(ids) > 1:
        raise ValueError(f"render_report: records of more than one incident: {', '.join(ids)}")
    by_version: dict[int, Mapping[str, Any]] = {}
    for r in incident_records:  # a redelivered version replaces the earlier copy
        by_version[int(r["version"])] = r
    return [by_version[v] for v in sorted(by_version)]


def _top(rec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rcs = rec.get("root_causes") or []
    return rcs[0] if rcs else None


def _cause_label(rc: Mapping[str, Any] | None) -> str:
    return f"{rc['service']} {rc['kind']}" if rc else "none"


def _latest_actions(actions: Iterable[Mapping[str, Any]], incident_id: str) -> list[Mapping[str, Any]]:
    latest: dict[str, Mapping[str, Any]] = {}
    for a in actions:  # a later record of the same action (approval, result) supersedes the earlier one
        if a.get("incident_id") == incident_id:
            latest[a["id"]] = a
    return sorted(latest.values(), key=lambda a: (a["at"], a["policy"], a["step"], a["id"]))


def _action_result(a: Mapping[str, Any]) -> str:
    if a.get("result"):
        return str(a["result"])
    decision, mode = a.get("decision"), a.get("mode")
    if decision == "skipped":
        reason = str(a.get("reason", ""))
        return "skipped: " + reason.rsplit(": ", 1)[-1] if reason else "skipped"
    if decision == "awaiting_approval":
        return f"approved by {a['approved_by']}, no result recorded" if a.get("approved_by") else "awaiting approval"
    if mode == "dry_run":
        return "not executed (dry run)"
    return "no result recorded"


def _peaks(versions: Sequence[Mapping[str, Any]], service: str) -> dict[str, Mapping[str, Any]]:
    """The highest value each series of ``service``'s evidence reached over all versions."""
    peaks: dict[str, Mapping[str, Any]] = {}
    for rec in versions:
        for rc in rec.get("root_causes") or []:
            if rc.get("service") != service:
                continue
            for e in rc.get("evidence") or []:
                v = e.get("value")
                if not isinstance(v, (int, float)):
                    continue
                best = peaks.get(e["series"])
                if best is None or v > best["value"]:
                    peaks[e["series"]] = e
    return peaks


def _evidence(versions: Sequence[Mapping[str, Any]], rc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The root cause's evidence, each series at its most anomalous reading over all versions.

    The last version's readings are taken as the fault subsides; the most anomalous one (the
    highest anomaly score, the later on ties) is what the incident was about. Series keep the
    last version's order, then the order in which earlier versions first named them.
    """
    best: dict[str, Mapping[str, Any]] = {}
    order: list[str] = [e["series"] for e in rc.get("evidence") or []]
    for rec in versions:
        for cand in rec.get("root_causes") or []:
            if cand.get("service") != rc["service"]:
                continue
            for e in cand.get("evidence") or []:
                if e["series"] not in order:
                    order.append(e["series"])
                score = e.get("score") if isinstance(e.get("score"), (int, float)) else -1.0
                prev = best.get(e["series"])
                prev_score = prev.get("score") if prev and isinstance(prev.get("score"), (int, float)) else -1.0
                if prev is None or score >= prev_score:
                    best[e["series"]] = e
    return [best[s] for s in order if s in best]


def _flaps(versions: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(times alerts fired again after some had resolved, times the incident reopened)."""
    refires = sum(1 for a, b in zip(versions, versions[1:])
                  if a.get("reason") == "alerts_resolved" and b.get("reason") == "alerts_added")
    reopens = sum(1 for r in versions if r.get("reason") == "reopened")
    return refires, reopens


def _top_changes(versions: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Runs of the same top root cause: ``[("v1-v2", "payment-gateway errors"), ("v3", ...)]``."""
    runs: list[tuple[int, int, str]] = []
    for rec in versions:
        label = _cause_label(_top(rec))
        if runs and runs[-1][2] == label:
            runs[-1] = (runs[-1][0], rec["version"], label)
        else:
            runs.append((rec["version"], rec["version"], label))
    return [(f"v{a}" if a == b else f"v{a}-v{b}", label) for a, b, label in runs]


def _graph(topology: Topology | None, path: Sequence[str]) -> nx.DiGraph:
    if topology is not None:
        return topology.graph()
    return nx.DiGraph([(path[i + 1], path[i]) for i in range(len(path) - 1)])


def _suspected_edges(versions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every call any version suspected missing from the topology, the latest word on each."""
    seen: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in versions:
        for e in r.get("suspected_edges") or []:
            seen[(e["caller"], e["callee"])] = e
    return [seen[k] for k in sorted(seen)]


def _drift_line(drift: Drift | None, services: Iterable[str]) -> str | None:
    """One line on where the spans and the declared graph disagree around the incident's services."""
    if drift is None:
        return None
    d = drift.involving(services)
    if not d:
        return None

    def edges(es) -> str:
        shown = ", ".join(f"`{e.caller} -> {e.callee}`" + (f" ({_n(e.calls, 'call')})" if e.calls else "")
                          for e in es[:MAX_DRIFT_EDGES])
        return shown + (f" and {len(es) - MAX_DRIFT_EDGES} more" if len(es) > MAX_DRIFT_EDGES else "")

    parts = [f"seen in spans, not declared: {edges(d.undeclared)}"] if d.undeclared else []
    if d.stale:
        parts.append(f"declared, not seen in spans for {_duration(d.stale_after)}: {edges(d.stale)}")
    return "- Call graph drift: " + "; ".join(parts)


def _follow_ups(versions, rc, acts, hits, runbooks, entry_points, duration) -> list[str]:
    out: list[str] = []
    last = versions[-1]
    if rc is not None:
        svc, kind = rc["service"], rc["kind"]
        ev = list(rc.get("evidence") or [])
        metrics = [e.get("metric", "") for e in ev]
        peaks = _peaks(versions, svc)
        labels = {k: v for e in ev for k, v in sorted((e.get("labels") or {}).items())}

        def peak(prefix: str) -> str:
            hits_ = [e for s, e in sorted(peaks.items()) if e.get("metric", "").startswith(prefix)]
            if not hits_:
                return ""
            e = hits_[0]
            return (f" {e['metric']} reached {_num(e['value'], e['metric'])} against an expected "
                    f"{_num(e['expected'], e['metric'])}")

        if kind == "saturation" and any(m.startswith("db.client.connection") for m in metrics):
            traffic = peak("http.server.requests.rate")
            out.append(f"Capacity review of the `{svc}` connection pool:{peak('db.client.connection')}"
                       f"{';' + traffic if traffic else ''}. Size the pool and its pooler replicas for this peak, "
                       f"within the database's `max_connections`.")
        elif kind == "saturation" and any(m.startswith("system.filesystem") for m in metrics):
            mount = labels.get("mountpoint", "the filesystem")
            out.append(f"Log retention on `{svc}` `{mount}`:{peak('system.filesystem')}. Check logrotate "
                       f"(compress, maxage) and add a time-to-full forecast alert that fires before 90 %.")
        elif kind == "saturation":
            out.append(f"Capacity review of `{svc}`:{peak(metrics[0]) if metrics else ''}.")
        elif kind == "errors" and "host.name" in labels:
            node = labels["host.name"]
            out.append(f"Find why node `{node}` of `{svc}` failed before returning it to the pool, and add an "
                       f"active health check so the load balancer ejects a failing node without an operator.")
        elif kind == "errors":
            out.append(f"Find the source of the errors on `{svc}` (logs, changes before "
                       f"{_when(versions[0].get('opened_at'))}) and fix or guard it.")
        elif kind == "latency":
            out.append(f"Check changes to `{svc}` and its dependencies shortly before "
                       f"{_when(versions[0].get('opened_at'))}; add a latency SLO alert on it if it has none.")
        elif kind == "traffic":
            out.append(f"Review autoscaling and rate limits of `{svc}` for this traffic level.")
        elif kind == "resource":
            out.append(f"Review the resource requests and limits of `{svc}` against its usage in this incident.")
        elif kind == "unobserved":
            out.append(f"`{svc}` sends no telemetry and was named from its callers' symptoms: add synthetic "
                       f"probes or client-side metrics for it, and confirm the cause with its owner.")
        if not acts:
            out.append(f"No remediation policy matched {kind} on `{svc}`: decide whether one should.")
    for e in _suspected_edges(versions):
        out.append(f"Confirm whether `{e['caller']}` calls `{e['callee']}`; if so, add it to "
                   f"`services.{e['caller']}.depends_on` in topology.yaml.")
    if entry_points:
        out.append(f"Quantify user impact on {', '.join(f'`{e}`' for e in entry_points)} over the {duration} "
                   f"window (failed requests, SLO budget burned).")
    refires, reopens = _flaps(versions)
    if refires >= FLAP_THRESHOLD or reopens:
        what = [f"alerts fired again after resolving {refires} times"] if refires else []
        what += [f"the incident reopened {reopens} times"] if reopens else []
        out.append(f"Alert tuning: {' and '.join(what)}. Review `detectors.fire_after` and "
                   f"`resolve_after_points`, or add a detector rule for the flapping series.")
    changes = _top_changes(versions)
    if len(changes) > 1:
        out.append("Review the root-cause ranking: the top candidate changed ("
                   + "; ".join(f"{v}: {label}" for v, label in changes) + "). Rule out a second fault.")
    dry = sorted({a["policy"] for a in acts if a.get("mode") == "dry_run"})
    if dry:
        out.append(f"Remediation ran as a dry run only ({', '.join(f'`{p}`' for p in dry)}): review the planned "
                   f"steps and decide whether to enable the polic{'ies' if len(dry) > 1 else 'y'} "
                   f"(`dry_run: false`).")
    pending = [a for a in acts if a.get("decision") == "awaiting_approval" and not a.get("result")]
    for a in pending:
        out.append(f"Approve or reject the pending action `{a['id']}` ({a['kind']} `{a['target']}`).")
    if runbooks is not None and rc is not None and not hits:
        out.append(f"Write a runbook for {rc['kind']} on `{rc['service']}`: none matched.")
    if last.get("status") != "resolved":
        out.append(f"The incident was still open at its last update (v{last['version']}); re-run this report "
                   f"once it resolves.")
    return out


def render_report(incident_records: Sequence[Mapping[str, Any]], actions: Sequence[Mapping[str, Any]],
                  tickets: Sequence[Mapping[str, Any]], runbooks: RunbookIndex | None,
                  topology: Topology | None, *, drift: Drift | None = None) -> str:
    """The Markdown report of one incident.

    Parameters
    ----------
    incident_records
        Every version of the incident as written on ``aiops.incidents``, in any order;
        a version seen twice counts once (the later copy wins).
    actions, tickets
        Records as written on ``aiops.actions`` and ``aiops.tickets``; other incidents' are ignored.
    runbooks
        An index to suggest runbooks from, or ``None`` to leave that section out.
    topology
        The topology, for the service graph, owners and entry points; ``None`` draws only the path.
    drift
        The learned call graph's drift (:mod:`correlators.learned`); where it touches the
        incident's services, the Impact section says so in one line.

    Raises
    ------
    ValueError
        No records, or records of more than one incident.
    """
    versions = _versions(incident_records)
    first, last = versions[0], versions[-1]
    inc_id = str(last["id"])
    rc = _top(last)
    acts = _latest_actions(actions, inc_id)
    all_acts = sorted((a for a in actions if a.get("incident_id") == inc_id),
                      key=lambda a: (a["at"], a["policy"], a["step"], a["id"]))
    tks = sorted((t for t in tickets if t.get("incident_id") == inc_id),
                 key=lambda t: (t["at"], t["incident_version"]))
    hits = (runbooks.for_incident(last, MAX_RUNBOOKS, cutoff=RELEVANT)
            if runbooks is not None and rc is not None else [])
    graph = _graph(topology, rc["path"] if rc else ())
    specs = topology.services if topology is not None else {}

    opened = _t(last["opened_at"])
    end = _t(last["resolved_at"]) if last.get("resolved_at") else _t(last["updated_at"])
    duration = _duration(end - opened)
    services = sorted(last.get("services") or [])
    entry_points = [s for s in services if s in specs and specs[s].entrypoint]
    path = list(rc["path"]) if rc else []
    peak_alerts = max(int((r.get("alerts") or {}).get("count", 0)) for r in versions)
    priorities = list(dict.fromkeys(r["priority"] for r in versions))
    resolved = last.get("status") == "resolved"

    out = [f"# Incident {inc_id}: {last['title']}", ""]
    out += _table(["Status", "Priority", "Owner", "Opened (UTC)", "Resolved (UTC)", "Duration"], [[
        last["status"], f"{last['priority']} ({last['severity']})", last.get("owner") or "unassigned",
        _when(last["opened_at"]), _when(last.get("resolved_at")) if resolved else "open",
        duration if resolved else f"{duration} (open at v{last['version']})"]])

    # Summary: one paragraph of facts.
    s = []
    evidence = _evidence(versions, rc) if rc else []
    if rc:
        lead = evidence[0] if evidence else None
        ev = (f": {lead['metric']} at {_num(lead['value'], lead['metric'])} against "
              f"{_num(lead['expected'], lead['metric'])} expected") if lead else ""
        s.append(f"Most likely root cause: `{rc['service']}` ({rc['kind']}){ev}.")
        if len(path) > 1:
            s.append(f"The fault propagated {_arrow(path)}.")
    else:
        s.append("No root cause was ranked.")
    s.append(f"{_n(len(services), 'service')} alerted"
             + (f", including the entry point{'s' if len(entry_points) > 1 else ''} "
                f"{', '.join(entry_points)}" if entry_points else ", no entry point among them") + ".")
    s.append(f"{'Resolved after' if resolved else 'Open for'} {duration}, {_n(len(versions), 'update')}, "
             f"up to {_n(peak_alerts, 'alert')}.")
    if acts:
        executed = sum(1 for a in acts if a.get("mode") == "execute" and a.get("result"))
        dry = sum(1 for a in acts if a.get("mode") == "dry_run")
        s.append(f"{_n(len(acts), 'remediation step')} planned by "
                 f"{', '.join(sorted({a['policy'] for a in acts}))}"
                 + (", all as a dry run" if dry == len(acts) else f", {executed} executed with a result") + ".")
    else:
        s.append("No remediation step was planned.")
    created = next((t for t in tks if t["event"] == "create"), None)
    if created:
        s.append(f"Ticket to {created['team']}" + (f" ({created['assignee']})" if created.get("assignee") else "")
                 + f" via {created['sink']}.")
    out += ["", "## Summary", "", " ".join(s)]

    # Impact.
    out += ["", "## Impact", ""]
    out.append(f"- Root cause: `{rc['service']}`" + (f" ({specs[rc['service']].kind}, owner "
               f"{specs[rc['service']].owner or 'unassigned'})" if rc and rc["service"] in specs else "")
               if rc else "- Root cause: not ranked")
    if len(path) > 1:
        out.append(f"- Propagation path: {_arrow(path)}")
    out.append(f"- Services alerting ({len(services)}): {', '.join(services) or 'none'}")
    out.append(f"- Entry points affected: {', '.join(entry_points) if entry_points else 'none'}")
    out.append(f"- Priority: {' → '.join(priorities)} ({last['severity']})")
    out.append(f"- Duration: {duration} ({_when(last['opened_at'])} to "
               f"{_when(last['resolved_at']) + ' UTC' if resolved else 'last update ' + _when(last['updated_at'])})")
    out.append(f"- Alerts: up to {peak_alerts} ({max(int((r.get('alerts') or {}).get('firing', 0)) for r in versions)}"
               f" firing at once)")
    teams = sorted({specs[x].owner for x in services if x in specs and specs[x].owner})
    if teams:
        out.append(f"- Teams owning affected services: {', '.join(teams)}")
    drift_line = _drift_line(drift, services)
    if drift_line:
        out.append(drift_line)

    # Timeline: versions, actions and ticket events, in event-time order.
    events: list[tuple[str, int, str, str]] = [(first["opened_at"], 0, "", "first alert")]
    prev_top = None
    ticket_by_version = {t["incident_version"]: t for t in tks}
    for r in versions:
        top = _cause_label(_top(r))
        alerts = r.get("alerts") or {}
        text = f"v{r['version']} {r['reason']}: {_n(alerts.get('count', 0), 'alert')}, {alerts.get('firing', 0)} firing"
        if r["version"] == first["version"] or top != prev_top:
            text += f"; top cause {top}"
        t = ticket_by_version.get(r["version"])
        if t is not None:
            who = t["team"] + (f" ({t['assignee']})" if t.get("assignee") else "")
            text += {"create": f"; ticket created for {who}", "resolve": "; ticket resolved"}.get(t["event"], "")
        prev_top = top
        events.append((r["updated_at"], 1, f"{r['version']:09d}", text))
    for a in all_acts:
        events.append((a["at"], 2, a["id"], f"action {a['policy']} step {a['step']}: {a['kind']} `{a['target']}` "
                                            f"{a['decision']} ({a['mode']})"))
    day = _when(first["opened_at"])[:10]
    rows = []
    for at, _, _, text in sorted(events):
        w = _when(at)
        rows.append([w[11:] if w[:10] == day else w, text])
    out += ["", "## Timeline", "", f"Times are UTC on {day}.", ""]
    out += _table(["Time", "Event"], rows)
    updates = [t["incident_version"] for t in tks if t["event"] == "update"]
    if updates:
        out += ["", f"The ticket was updated at {_n(len(updates), 'version')} "
                    f"(v{min(updates)}-v{max(updates)})." if len(updates) > 1
                else f"The ticket was updated at v{updates[0]}."]

    # Root cause and evidence.
    out += ["", "## Root cause", ""]
    if rc:
        out.append(f"**`{rc['service']}`: {rc['kind']}** (score {rc['score']:.2f})."
                   + (f" {rc['reason'][0].upper()}{rc['reason'][1:]}." if rc.get("reason") else ""))
        if len(path) > 1:
            out += ["", f"Chain, from the cause to the most upstream service: {_arrow(path)}."]
        ev = evidence[:MAX_EVIDENCE_ROWS]
        if ev:
            out += ["", "Evidence (each series at its most anomalous reading during the incident):", ""]
            out += _table(["Series", "Value", "Expected", "Change", "Anomaly score", "Since"], [
                [f"`{e['series']}`", _num(e.get("value"), e["metric"]), _num(e.get("expected"), e["metric"]),
                 _change(e.get("value"), e.get("expected")), _score(e.get("score")), _when(e.get("at"))[11:]]
                for e in ev])
            notes = [e["detail"] for e in ev if e.get("detail")
                     and not e["detail"].startswith(f"{rc['service']} {e['metric']} ")]
            out += [f"- {d}" for d in dict.fromkeys(notes)]
        others = (last.get("root_causes") or [])[1:]
        if others:
            out += ["", "Other candidates:", ""]
            out += [f"{n}. `{o['service']}` {o['kind']} (score {o['score']:.2f}): {_arrow(o['path'])}"
                    for n, o in enumerate(others, 2)]
        changes = _top_changes(versions)
        if len(changes) > 1:
            out += ["", "Top candidate by update: " + "; ".join(f"{v} {label}" for v, label in changes) + "."]
    else:
        out.append("The correlator ranked no root cause for this incident.")
    suspected = _suspected_edges(versions)
    if suspected:
        out += ["", "Calls missing from the topology, suspected from onset order and co-anomaly:", ""]
        out += [f"- `{e['caller']}` -> `{e['callee']}` ({e['lag_s']:.0f} s later; "
                + ("its alerts were merged into this incident" if e.get("merged")
                   else f"see incident `{e['related_incident']}`") + f"): {e['reason']}." for e in suspected]

    # Propagation graph.
    if rc:
        node_notes = {}
        node = next((e["labels"]["host.name"] for e in rc.get("evidence") or []
                     if (e.get("labels") or {}).get("host.name")), None)
        mount = next((e["labels"]["mountpoint"] for e in rc.get("evidence") or []
                      if (e.get("labels") or {}).get("mountpoint")), None)
        if node or mount:
            node_notes[rc["service"]] = f"node {node}" if node else f"mount {mount}"
        shown = set(services) | set(path)
        mermaid = render_mermaid(graph, root_cause=rc["service"], path=path, affected=services,
                                 nodes=shown & set(graph.nodes) | set(path), notes=node_notes)
        out += ["", "## Propagation graph", "",
                "Edges point from caller to callee; the root cause is red, the propagation path pink "
                "with thick red edges, other alerting services yellow.", "", "```mermaid", mermaid, "```"]

    # Actions.
    out += ["", "## Actions", ""]
    if acts:
        out += _table(["Planned (UTC)", "Policy, step", "Kind", "Target", "Params", "Decision", "Result"], [
            [_when(a["at"])[11:], f"{a['policy']} #{a['step']}", a["kind"], f"`{a['target']}`",
             ", ".join(f"{k}={v}" for k, v in sorted((a.get("params") or {}).items())) or "-",
             f"{a['decision']} ({a['mode']})", _action_result(a)] for a in acts])
    else:
        out.append("None planned: no remediation policy matched the root cause.")

    # Runbooks.
    if runbooks is not None:
        out += ["", "## Runbooks", ""]
        if hits:
            out += [f"{n}. **{h.runbook.title}** (`{h.runbook.path}`)"
                    + (f": matched {', '.join(h.why)}" if h.why else "") for n, h in enumerate(hits, 1)]
        else:
            out.append("No runbook matched.")

    # Follow-ups.
    fus = _follow_ups(versions, rc, acts, hits, runbooks, entry_points, duration)
    out += ["", "## Follow-ups", ""]
    out += [f"- [ ] {f}" for f in fus] if fus else ["None."]
    return "\n".join(out) + "\n"


__all__ = ["render_mermaid", "render_report"]
