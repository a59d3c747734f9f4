"""``make eval``: inject faults into four public call graphs, run the production core, score it.

    python -m evaluation.run [--quick] [--out DIR] [--jobs N] [--topology NAME ...] [--no-rca-data]

For each topology in ``evaluation/topologies`` the cases of :mod:`evaluation.cases` are simulated
(:func:`streams.simulate.simulate`) and pushed through the production core exactly as
``aiops replay`` does (:mod:`evaluation.core`), with the pipeline settings at their defaults.
Incidents are matched to faults and scored by :mod:`evaluation.metrics`; the ten real Sock Shop
cases of ``../shared/rca-data`` go through the same core (:mod:`evaluation.rca_data`).

Prints a table per topology and overall, PASS/FAIL per target, the per-category breakdown, each
fault whose root cause was not ranked first and each false incident; writes it all as
``DIR/results.json`` (default ``out/eval``). Exits 0 whatever the figures: it measures, the
targets are reported, not enforced.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import networkx as nx
import numpy as np
import orjson

from evaluation import rca_data
from evaluation.cases import RECOVERY, Run, build_runs, expected_kind
from evaluation.core import run_core
from evaluation.metrics import (TARGETS, FaultResult, FaultTruth, in_window, score_faults, score_suspected_edges,
                                summarize, verdicts)
from detectors.records import parse_rfc3339
from streams import simulate as sim
from streams.config import load_topology

HERE = Path(__file__).resolve().parent
TOPOLOGIES = HERE / "topologies"
SEED = 7


def truths(run: Run, truth: list[dict]) -> list[FaultTruth]:
    """The faults (and noise windows) of a simulated run, from the simulator's truth records."""
    g = run.topology.graph()
    out = []
    for i, (case, rec) in enumerate(zip(run.cases, truth)):
        onset = rec["start"]
        if not case.roots:
            f = case.faults[0]
            out.append(FaultTruth(f"{run.name}#{i}:{case.name}", None, "noise", onset + f.start, onset + f.end + 30,
                                  category=case.category, run=run.name))
            continue
        for f in case.faults:
            related = set(nx.ancestors(g, f.service))
            if f.kind == "traffic_surge":
                related |= nx.descendants(g, f.service)
            fid = f"{run.name}#{i}:{case.name}" + (f"@{f.service}" if len(case.faults) > 1 else "")
            out.append(FaultTruth(fid, f.service, expected_kind(run.topology, f),
                                  onset + f.start, rec["end"], frozenset(related), case.category, run.name,
                                  removed_edge=case.removed_edge))
    return out


def evaluate_run(run: Run, seed: int = SEED) -> dict:
    """Simulate one run, push it through the core, and score it."""
    t0 = time.perf_counter()
    with np.errstate(over="ignore"):  # simulate's decay term overflows harmlessly before a fault's end
        result = sim.simulate(run.topology, run.scenarios(), seed=seed)
    t_sim = time.perf_counter() - t0
    core = run_core(run.pipeline_topology, result.requests)
    faults = truths(run, result.truth)
    results, false = score_faults(faults, core.incidents)
    start, end = float(result.truth[0]["start"]) - run.cases[0].scenario(True).start, result.truth[-1]["end"] + RECOVERY
    noise = [f for f in faults if f.is_noise]
    fault_windows = [f for f in faults if not f.is_noise]
    for inc in false:
        if any(in_window(inc, w) for w in noise):
            inc["_where"] = "noise spike"
        elif any(in_window(inc, w, slack=0) for w in fault_windows):
            inc["_where"] = "during a fault, unrelated services"
        elif any(w.end < parse_rfc3339(inc["opened_at"]) <= w.end + RECOVERY for w in fault_windows):
            inc["_where"] = "after a fault ended (recovery)"
        else:
            inc["_where"] = "quiet"
    return {
        "run": run.name, "topology": run.topology.name, "hours": (end - start) / 3600.0,
        "messages": core.messages, "alerts": core.alerts, "incident_records": len(core.incidents),
        "seconds_simulate": round(t_sim, 1), "seconds_core": round(time.perf_counter() - t0 - t_sim, 1),
        "removed_edges": [list(e) for e in run.removed_edges], "external": list(run.external),
        "results": results, "false": false,
        "edges": score_suspected_edges(results, core.incidents, run.removed_edges),
    }


def _fault_row(r: FaultResult) -> dict:
    f = r.fault
    return {"id": f.id, "run": f.run, "category": f.category, "service": f.service, "kind": f.kind,
            "start": f.start, "end": f.end, "detected": r.detected, "incidents": list(r.incidents), "rank": r.rank,
            "rank_first_notification": r.rank_first, "top": r.top, "top_kind": r.top_kind, "delay_s": r.delay, "notify_delay_s": r.notify_delay}


def _false_row(inc: dict, run: str) -> dict:
    rc = inc.get("root_causes") or []
    return {"run": run, "id": inc["id"], "opened_at": inc["opened_at"], "resolved_at": inc.get("resolved_at"),
            "services": inc["services"], "title": inc["title"], "where": inc.get("_where"),
            "top": rc[0]["service"] if rc else None, "alerts": [a["series"] for a in inc.get("alerts", [])][:8]
            if isinstance(inc.get("alerts"), list) else None}


def _fmt(v: float, kind: str = "ratio") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "ratio":
        return f"{v:.3f}"
    if kind == "s":
        return f"{v:.0f}"
    return f"{v:.2f}"


def _table(rows: list[tuple[str, dict]]) -> list[str]:
    head = (f"{'':24} {'faults':>6} {'recall':>7} {'AC@1':>6} {'AC@3':>6} {'Avg@5':>6} {'false/h':>8} "
            f"{'inc/fault':>9} {'delay p50/p90 s':>16} {'notify p50/p90 s':>17} {'hours':>6} {'AC@1/3 first':>13}")
    lines = [head, "-" * len(head)]
    for name, s in rows:
        lines.append(
            f"{name:24} {s['faults']:>6} {_fmt(s['recall']):>7} {_fmt(s['ac1']):>6} {_fmt(s['ac3']):>6} "
            f"{_fmt(s['avg5']):>6} {_fmt(s['false_per_hour'], 'x'):>8} {_fmt(s['incidents_per_fault'], 'x'):>9} "
            f"{_fmt(s['delay_p50'], 's') + ' / ' + _fmt(s['delay_p90'], 's'):>16} "
            f"{_fmt(s['notify_p50'], 's') + ' / ' + _fmt(s['notify_p90'], 's'):>17} {s['hours']:>6.1f} "
            f"{_fmt(s['ac1_first']) + ' ' + _fmt(s['ac3_first']):>13}")
    return lines


def _edge_totals(parts: list[dict]) -> dict:
    total = {"missing_edge_faults": sum(p["missing_edge_faults"] for p in parts), "found": sum(p["found"] for p in parts),
             "false": sum(p["false"] for p in parts), "false_by_category": {}}
    for p in parts:
        for c, n in p["false_by_category"].items():
            total["false_by_category"][c] = total["false_by_category"].get(c, 0) + n
    total["found_fraction"] = total["found"] / total["missing_edge_faults"] if total["missing_edge_faults"] else math.nan
    return total


def _rca_job(fault_time_given: bool) -> dict:
    return rca_data.evaluate(rca_data.DEFAULT_DATA, fault_time_given=fault_time_given)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one case per category (a smoke run)")
    ap.add_argument("--out", type=Path, default=Path("out/eval"), help="where results.json goes (default out/eval)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--topology", action="append", help="only this topology (by file stem); repeatable")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-rca-data", action="store_true", help="skip the real Sock Shop cases")
    args = ap.parse_args(argv)
    started = time.perf_counter()

    paths = sorted(TOPOLOGIES.glob("*.yaml"))
    if args.topology:
        paths = [p for p in paths if p.stem in args.topology]
        if not paths:
            print(f"no topology named {args.topology} in {TOPOLOGIES}", file=sys.stderr)
            return 2
    runs = [r for p in paths for r in build_runs(load_topology(p), seed=args.seed, quick=args.quick)]
    # Longest first, so the pool's workers finish together.
    order = sorted(range(len(runs)), key=lambda i: -len(runs[i].cases) * len(runs[i].topology.services))
    rca_variants = [] if args.no_rca_data or not rca_data.DEFAULT_DATA.exists() else [False, True]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {i: pool.submit(evaluate_run, runs[i], args.seed) for i in order}
        rca_futs = [pool.submit(_rca_job, v) for v in rca_variants]
        done = {i: f.result() for i, f in futs.items()}
        rca = [f.result() for f in rca_futs]
    outs = [done[i] for i in range(len(runs))]

    by_topo: dict[str, list[dict]] = {}
    for o in outs:
        by_topo.setdefault(o["topology"], []).append(o)

    def summary_of(items: list[dict]) -> dict:
        results = [r for o in items for r in o["results"]]
        false = [f for o in items for f in o["false"]]
        return summarize(results, false, sum(o["hours"] for o in items))

    rows = [(t, summary_of(items)) for t, items in by_topo.items()]
    overall = summary_of(outs)
    rows.append(("OVERALL", overall))
    all_results = [r for o in outs for r in o["results"]]
    cats: dict[str, list[FaultResult]] = {}
    for r in all_results:
        cats.setdefault(r.fault.category, []).append(r)
    cat_rows = [(c, summarize(rs, [], math.nan)) for c, rs in cats.items()]
    noise_false = [f for o in outs for f in o["false"] if f.get("_where") == "noise spike"]

    lines = [f"aiops evaluation: {len(runs)} simulated runs on {len(by_topo)} topologies, seed {args.seed}"
             + (" (quick)" if args.quick else ""), ""]
    lines += _table(rows)
    lines += ["  (AC@k, Avg@5: root cause in the final incident record; 'AC@1/3 first': in the first notification;",
              "   delay: fault start -> incident opened_at (earliest anomaly onset); notify: -> first notification)",
              "", "targets (overall; per topology in brackets):"]
    ok = verdicts(overall)
    for name, key, op, target in TARGETS:
        per = ", ".join(f"{t} {'PASS' if verdicts(s)[name] else 'FAIL'}" for t, s in rows[:-1])
        lines.append(f"  {name:20} {op} {target:<5} {_fmt(overall[key], 'x' if key.endswith(('hour', 'fault')) else 'ratio'):>7}"
                     f"  {'PASS' if ok[name] else 'FAIL'}   [{per}]")
    lines += ["", "by category (all topologies):"]
    lines.append(f"  {'category':16} {'faults':>6} {'recall':>7} {'AC@1':>6} {'AC@3':>6} {'Avg@5':>6} {'inc/fault':>9}"
                 f" {'AC@1 first':>10}")
    for c, s in sorted(cat_rows):
        lines.append(f"  {c:16} {s['faults']:>6} {_fmt(s['recall']):>7} {_fmt(s['ac1']):>6} {_fmt(s['ac3']):>6} "
                     f"{_fmt(s['avg5']):>6} {_fmt(s['incidents_per_fault'], 'x'):>9} {_fmt(s['ac1_first']):>10}")
    kinds: dict[str, list[FaultResult]] = {}
    for r in all_results:
        kinds.setdefault(r.fault.kind, []).append(r)
    lines += ["", "by expected root-cause kind (all topologies):",
              f"  {'kind':16} {'faults':>6} {'recall':>7} {'AC@1':>6} {'AC@3':>6} {'Avg@5':>6} {'inc/fault':>9} {'AC@1 first':>10}"]
    for k, rs in sorted(kinds.items()):
        s = summarize(rs, [], math.nan)
        lines.append(f"  {k:16} {s['faults']:>6} {_fmt(s['recall']):>7} {_fmt(s['ac1']):>6} {_fmt(s['ac3']):>6} "
                     f"{_fmt(s['avg5']):>6} {_fmt(s['incidents_per_fault'], 'x'):>9} {_fmt(s['ac1_first']):>10}")
    n_noise = sum(1 for r in runs for c in r.cases if c.category == "noise")
    lines.append(f"  noise spikes: {n_noise}, incidents opened for them: {len(noise_false)}")
    edges = _edge_totals([o["edges"] for o in outs])
    lines += ["", "suspected missing calls (correlation.suspect_edges):",
              f"  missing-edge faults whose dropped call was suspected: {edges['found']}/{edges['missing_edge_faults']}"
              f" ({_fmt(edges['found_fraction'])})",
              f"  false suspicions (a declared or non-existent call): {edges['false']}"
              + (" (" + ", ".join(f"{c} {n}" for c, n in sorted(edges["false_by_category"].items())) + ")"
                 if edges["false"] else "")]
    for o in outs:
        for e in o["edges"]["false_edges"]:
            lines.append(f"    {o['run']}: {e}")
    lines += ["", "faults whose root cause was not ranked first:"]
    for r in all_results:
        if r.rank != 1:
            lines.append(f"  {r.fault.id}: truth {r.fault.service} ({r.fault.kind}), "
                         + (f"rank {r.rank} (first notification: {r.rank_first}), first {r.top} ({r.top_kind}), "
                            f"{len(r.incidents)} incident(s)"
                            if r.detected else "NOT DETECTED"))
    lines += ["", "false incidents:"]
    for o in outs:
        for inc in o["false"]:
            lines.append(f"  {o['run']}: {inc['opened_at']} [{inc.get('_where')}] {inc['title']} "
                         f"(services: {', '.join(inc['services'])})")
    for v in rca:
        lines += ["", f"real Sock Shop faults ({rca_data.DEFAULT_DATA.name}, {v['variant']}: {v['settings']}):",
                  f"  AC@1 {v['ac1']:.2f}  AC@3 {v['ac3']:.2f}  Avg@5 {v['avg5']:.2f}  detected {v['detected']}/"
                  f"{len(v['cases'])}  incidents opened in the normal segments: {v['false_incidents_normal_segment']}"]
        for c in v["cases"]:
            lines.append(f"  {c['name']:14} truth {c['truth']:10} rank {c['rank'] or '-':>2}  ranked: {', '.join(c['ranked']) or '(no incident)'}")
    elapsed = time.perf_counter() - started
    lines += ["", f"done in {elapsed:.0f}s ({args.jobs} jobs); "
              f"{sum(o['messages'] for o in outs)} messages, {sum(o['hours'] for o in outs):.1f} simulated hours"]
    print("\n".join(lines))

    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "seed": args.seed, "quick": args.quick, "seconds": round(elapsed, 1),
        "targets": [{"name": n, "key": k, "op": op, "target": t, "value": overall[k], "pass": ok[n]}
                    for n, k, op, t in TARGETS],
        "overall": overall, "topologies": dict(rows[:-1]), "categories": dict(cat_rows), "suspected_edges": edges,
        "runs": [{k: v for k, v in o.items() if k not in ("results", "false")} for o in outs],
        "faults": [_fault_row(r) for r in all_results],
        "false_incidents": [_false_row(inc, o["run"]) for o in outs for inc in o["false"]],
        "rca_data": rca,
    }
    (args.out / "results.json").write_bytes(
        orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS) + b"\n")
    (args.out / "results.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
