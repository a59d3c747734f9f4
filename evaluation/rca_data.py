"""Real faults: the ten labelled Sock Shop cases of ``../shared/rca-data`` through the production core.

Each case directory ``<svc>-<fault>/1/`` holds ``normal.csv`` then ``anomalous.csv``, one row per
second, columns ``<container>_<metric>``. Every row becomes one OTLP/JSON
``ExportMetricsServiceRequest`` per container (``service.name`` = the container), all gauges,
named so ``correlators.rca.classify_metric`` reads them right:

======== ===================================== ==========================
column   OTLP metric                           RCA kind
======== ===================================== ==========================
cpu      process.cpu.utilization (% / 100)     resource
mem      process.memory.usage (bytes)          resource
lod      http.server.requests.rate (req/s)     traffic
lat_50   http.server.request.duration.p50 (s)  latency
lat_90   http.server.request.duration.p90 (s)  latency
lat_99   http.server.request.duration.p99 (s)  latency
======== ===================================== ==========================

The call graph is parsed from the data's README. The messages go through
:func:`evaluation.core.run_core` with the production settings (``topology.yaml`` defaults).
What the data forces:

- the two segments were recorded hours apart, so the anomalous one is shifted in time to follow
  the normal one by one step (the fault starts at its first row, as the README says);
- the detectors' warm-up (30 points) is well inside the normal segment (about 280 rows), so no
  setting changes. Every time-based detector setting (30-minute calm and re-baseline periods)
  is longer than a case, so those rules never act here.

Truth: the ``<svc>`` of the directory name. An incident belongs to the fault when it opened at
most 60 s before the fault's start (as for the simulated faults); its rank is the position of
the truth in the final version's root causes (best over such incidents). Incidents that open
in the normal segment are reported as false incidents.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from evaluation.core import run_core
from evaluation.metrics import MATCH_BEFORE, ac_at, avg_at_5, final_versions, rank_of
from detectors.records import parse_rfc3339
from streams.config import Topology, parse_topology

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "rca-data"
METRICS = {
    "cpu": ("process.cpu.utilization", 0.01),
    "mem": ("process.memory.usage", 1.0),
    "lod": ("http.server.requests.rate", 1.0),
    "lat_50": ("http.server.request.duration.p50", 1.0),
    "lat_90": ("http.server.request.duration.p90", 1.0),
    "lat_99": ("http.server.request.duration.p99", 1.0),
}
_COLUMN = re.compile(r"^(?P<container>.+?)_(?P<metric>cpu|mem|lod|lat_50|lat_90|lat_99)$")
SCOPE = {"name": "aiops.evaluation.rca_data", "version": "1"}


def readme_topology(readme: str) -> Topology:
    """The topology of the README's ``Call graph (caller -> callee ...): a -> b, c; d -> e.`` line.

    >>> t = readme_topology("- Call graph (caller -> callee): web -> api, web-db; api -> api-db.")
    >>> sorted(t.services["web"].depends_on), t.services["api-db"].kind, t.services["web"].entrypoint
    (['api', 'web-db'], 'datastore', True)
    """
    m = re.search(r"Call graph \([^)]*\):\s*(.+?)\.\s*$", readme, re.M)
    if not m:
        raise ValueError("rca-data README: no 'Call graph (...): caller -> callees; ...' line")
    deps: dict[str, list[str]] = {}
    for part in m.group(1).split(";"):
        caller, callees = (x.strip() for x in part.split("->"))
        deps.setdefault(caller, [])
        for c in (x.strip() for x in callees.split(",")):
            deps[caller].append(c)
            deps.setdefault(c, [])
    called = {c for cs in deps.values() for c in cs}
    services = {}
    for name, cs in deps.items():
        spec: dict = {"depends_on": cs}
        if name.endswith("-db"):
            spec["kind"] = "datastore"
        elif name == "rabbitmq":
            spec["kind"] = "queue"
        # The user-facing service: called by nobody and calling the most (queue-master, also
        # uncalled, is a consumer).
        services[name] = spec
    roots = [n for n in deps if n not in called]
    entry = max(roots, key=lambda n: (len(deps[n]), n))
    services[entry]["entrypoint"] = True
    return parse_topology({"name": "sock-shop-rcd", "services": services}, "rca-data README")


def _read(path: Path) -> tuple[list[str], list[list[float]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    return header, [[float(x) if x not in ("", "nan", "NaN") else float("nan") for x in r] for r in body if r]


def _normal_rows(case_dir: Path) -> int:
    with open(case_dir / "normal.csv") as fh:
        return sum(1 for line in fh if line.strip()) - 1


def _gauge(name: str, now: str, value: float) -> dict:
    return {"name": name, "unit": "1", "gauge": {"dataPoints": [{"timeUnixNano": now, "asDouble": value}]}}


def case_messages(case_dir: Path) -> tuple[list[dict], float]:
    """OTLP/JSON requests of one case (normal then anomalous, retimed to be contiguous) and the
    fault's start (unix seconds)."""
    h1, normal = _read(case_dir / "normal.csv")
    h2, anomalous = _read(case_dir / "anomalous.csv")
    if h1 != h2:
        raise ValueError(f"{case_dir}: normal.csv and anomalous.csv have different columns")
    step = (normal[-1][0] - normal[0][0]) / max(1, len(normal) - 1)
    shift = normal[-1][0] + round(step) - anomalous[0][0]
    rows = normal + [[r[0] + shift] + r[1:] for r in anomalous]
    fault_start = anomalous[0][0] + shift
    columns: dict[str, list[tuple[int, str, float]]] = {}
    for j, col in enumerate(h1):
        m = _COLUMN.match(col)
        if m:
            name, scale = METRICS[m["metric"]]
            columns.setdefault(m["container"], []).append((j, name, scale))
    out = []
    for r in rows:
        now = str(int(round(r[0] * 1e9)))
        for container in sorted(columns):
            metrics = [_gauge(name, now, r[j] * scale) for j, name, scale in columns[container] if r[j] == r[j]]
            if metrics:
                out.append({"resourceMetrics": [{
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": container}}]},
                    "scopeMetrics": [{"scope": SCOPE, "metrics": metrics}]}]})
    return out, fault_start


@dataclass(frozen=True)
class RcaCase:
    name: str
    truth: str
    rank: int | None
    ranked: tuple[str, ...]  # root causes of the incident that ranks the truth best (else the first)
    incidents: int  # incidents opened from the fault's start on
    false_before: int  # incidents opened in the normal segment
    delay: float | None  # first matched incident's opened_at - fault start


def _warmed_up_at(topology: Topology, points: int) -> Topology:
    det = topology.detectors.model_copy(update={"warmup_points": points})
    return topology.model_copy(update={"detectors": det})


def evaluate_case(case_dir: Path, topology: Topology, *, fault_time_given: bool = False) -> RcaCase:
    """One case through the core. ``fault_time_given``: the detectors' warm-up lasts exactly the
    normal segment, so nothing alerts before the fault (the setting of the RCAEval reference
    figures, which hand every method the fault's start)."""
    messages, t0 = case_messages(case_dir)
    if fault_time_given:
        topology = _warmed_up_at(topology, _normal_rows(case_dir))
    records = run_core(topology, messages).incidents
    incs = final_versions(records)
    after = sorted((i for i in incs.values() if parse_rfc3339(i["opened_at"]) >= t0 - MATCH_BEFORE),
                   key=lambda i: (i["opened_at"], i["id"]))
    name = case_dir.parent.name if case_dir.name == "1" else case_dir.name
    truth = name.split("-")[0]
    ranks = [(rank_of(truth, i), k) for k, i in enumerate(after)]
    best = min(ranks, key=lambda x: (x[0] or 99, x[1]), default=(None, None))
    lead = after[best[1]] if after else None
    return RcaCase(name=name, truth=truth, rank=best[0],
                   ranked=tuple(rc["service"] for rc in lead["root_causes"]) if lead else (),
                   incidents=len(after), false_before=len(incs) - len(after),
                   delay=parse_rfc3339(after[0]["opened_at"]) - t0 if after else None)


def case_dirs(data_dir: Path = DEFAULT_DATA) -> list[Path]:
    return sorted(p for p in data_dir.glob("*/*/1") if (p / "anomalous.csv").exists())


def evaluate(data_dir: Path = DEFAULT_DATA, *, fault_time_given: bool = False) -> dict:
    """All cases of ``data_dir`` (the folder holding README.md): per case results and AC@1/3, Avg@5."""
    topology = readme_topology((data_dir / "README.md").read_text())
    cases = [evaluate_case(d, topology, fault_time_given=fault_time_given) for d in case_dirs(data_dir)]
    ranks = [c.rank for c in cases]
    return {
        "variant": "fault-time-given" if fault_time_given else "production",
        "settings": ("warmup_points = rows of normal.csv (nothing alerts before the fault), else production defaults"
                     if fault_time_given else "production defaults (DetectorSettings(), CorrelationSettings())")
                    + "; anomalous segment retimed to follow the normal one",
        "cases": [c.__dict__ for c in cases],
        "detected": sum(1 for c in cases if c.incidents),
        "ac1": ac_at(ranks, 1), "ac3": ac_at(ranks, 3), "avg5": avg_at_5(ranks),
        "false_incidents_normal_segment": sum(c.false_before for c in cases),
    }
