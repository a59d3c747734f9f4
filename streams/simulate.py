"""Telemetry with injected faults, and the ground truth to score the pipeline against.

:func:`simulate` turns a topology and scenarios into OTLP/JSON ``ExportMetricsServiceRequest``
dicts, one per observed service per time step, shaped exactly as the OpenTelemetry Collector's
kafka exporter writes them with ``encoding: otlp_json``, plus one ground-truth record per
scenario. It is pure and deterministic: the same topology, scenarios and seed give the same output.

The model is structural, so a fault on any service of any topology shows where it would in
production:

- requests enter at entrypoints (a daily cycle and bursty noise) and flow down the call edges,
  each edge carrying a fixed share (``fanout``) of its caller's requests;
- a service's latency is its own work, slower under load, plus the latency of the calls it
  makes; its errors are its own plus most of its callees' errors;
- so a fault reaches the callers of its service through those sums, ``HOP_DELAY`` later per hop
  (timeouts and queues take a while to fill) and attenuated by each edge's fanout, while a
  traffic surge reaches the callees as load.

Every random draw comes from a generator seeded by ``(seed, service, purpose)``, so adding a
fault or a service leaves the other services' baselines unchanged.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Literal

import networkx as nx
import numpy as np
import orjson
import yaml
from pydantic import Field, ValidationError

from detectors.config import Duration, Frozen, parse_duration
from detectors.records import rfc3339, stable_hash
from remediators.config import Priority
from streams.config import ConfigError, Topology, format_path

FaultKind = Literal["latency", "errors", "saturation", "traffic_surge", "crash"]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__
# magnitude: latency = times slower; errors = share of requests failing; saturation = utilization
# reached; traffic_surge = request multiplier; crash = share of the callers' calls that fail.
DEFAULT_MAGNITUDE = {"latency": 5.0, "errors": 0.3, "saturation": 1.0, "traffic_surge": 3.0, "crash": 1.0}
# Seconds to full effect: a pool or a disk fills up, a crash is instant.
DEFAULT_RAMP = {"latency": 30.0, "errors": 10.0, "saturation": 120.0, "traffic_surge": 60.0, "crash": 0.0}
# The root-cause kind correlators.rca should name for each fault kind (a crashed service goes silent).
CAUSE = {"latency": "latency", "errors": "errors", "saturation": "saturation", "traffic_surge": "traffic",
         "crash": "unobserved"}

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds, OTel's HTTP defaults
MOUNTPOINTS = ("/", "/var/log")
HOP_DELAY = (20.0, 40.0)  # seconds for a fault to show one hop further upstream
RECOVERY_TAU = 20.0  # seconds: after a fault ends its effect decays with this time constant
RHO = 0.15  # a service's utilization at its usual load; latency grows as 1 / (1 - utilization)
PASS_ERRORS = 0.8  # share of a callee's errors its caller cannot retry or absorb
POOL_WAIT = 0.8  # seconds a call waits for a connection from a saturated pool ...
POOL_TIMEOUTS = 0.15  # ... and the share of calls that time out waiting
DAY = 86400.0
SCOPE = {"name": "aiops.simulate", "version": "1"}


@dataclass(frozen=True)
class Fault:
    """One injected fault on ``service``, from ``start`` (seconds after the run's start; in a
    :class:`Scenario`, after its onset) for ``duration`` seconds.

    ``labels`` narrow it to one node (``host.name``) or one filesystem (``mountpoint``). See
    ``DEFAULT_MAGNITUDE`` for what ``magnitude`` means per kind.

    >>> Fault("orders-db", "saturation", 60, 600).magnitude
    1.0
    >>> Fault("payment-gateway", "errors", 0, 600, 0.5, {"host.name": "gw-2"}).labels
    (('host.name', 'gw-2'),)
    """

    service: str
    kind: FaultKind
    start: float
    duration: float
    magnitude: float | None = None
    labels: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    ramp: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault on {self.service}: unknown kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if not self.duration > 0:
            raise ValueError(f"fault on {self.service}: duration must be positive (got {self.duration})")
        set_ = object.__setattr__  # frozen: normalize once, here
        set_(self, "magnitude", float(DEFAULT_MAGNITUDE[self.kind] if self.magnitude is None else self.magnitude))
        set_(self, "ramp", float(DEFAULT_RAMP[self.kind] if self.ramp is None else self.ramp))
        set_(self, "labels", tuple(sorted(dict(self.labels).items())))

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Scenario:
    """Faults injected together, and what the pipeline should conclude about them.

    ``faults`` start relative to the scenario's onset. Run alone (or first), the onset comes after
    ``start`` seconds of normal data, long enough for the detectors to learn the baseline; a later
    scenario's onset comes ``recovery`` seconds after the previous one's faults end, so each becomes
    its own incident and resolves first. ``root_cause`` defaults to the first fault's service,
    ``kind`` to its root-cause kind (``CAUSE``) and ``labels`` to its labels.
    """

    name: str
    faults: tuple[Fault, ...]
    description: str = ""
    start: float = 2700.0
    duration: float = 600.0
    recovery: float = 1200.0
    root_cause: str | None = None
    kind: str | None = None
    labels: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    priority: str | None = None

    def __post_init__(self) -> None:
        if not self.faults:
            raise ValueError(f"scenario {self.name}: no faults")
        set_ = object.__setattr__
        set_(self, "faults", tuple(self.faults))
        first = self.faults[0]
        set_(self, "root_cause", self.root_cause or first.service)
        lead = next((f for f in self.faults if f.service == self.root_cause), first)
        set_(self, "kind", self.kind or CAUSE[lead.kind])
        set_(self, "labels", tuple(sorted(dict(self.labels or lead.labels).items())))


@dataclass(frozen=True)
class Simulation:
    requests: list[dict]  # OTLP/JSON ExportMetricsServiceRequest, in time order
    truth: list[dict]  # one record per scenario
    faults: tuple[Fault, ...] = ()  # every fault, with start in unix seconds
    logs: list[dict] = field(default_factory=list)  # OTLP/JSON ExportLogsServiceRequest, in time order


# --- scenario files ----------------------------------------------------------------------------


class _FaultDoc(Frozen):
    service: str
    kind: FaultKind
    magnitude: float | None = None
    at: Duration = parse_duration(0)  # after the scenario's onset
    duration: Duration | None = None  # default: until the scenario ends
    ramp: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class _ExpectDoc(Frozen):
    root_cause: str | None = None
    kind: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    priority: Priority | None = None


class _ScenarioDoc(Frozen):
    name: str
    description: str = ""
    start: Duration = parse_duration("45m")
    duration: Duration = parse_duration("10m")
    recovery: Duration = parse_duration("20m")
    faults: list[_FaultDoc] = Field(min_length=1)
    expect: _ExpectDoc = Field(default_factory=_ExpectDoc)


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    """Validate a parsed scenario document. Raises :class:`~streams.config.ConfigError`."""
    try:
        doc = _ScenarioDoc.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [(format_path(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    total = doc.duration.total_seconds()
    faults = tuple(
        Fault(f.service, f.kind, f.at.total_seconds(),
              f.duration.total_seconds() if f.duration else total - f.at.total_seconds(),
              f.magnitude, f.labels, f.ramp.total_seconds() if f.ramp is not None else None)
        for f in doc.faults)
    e = doc.expect
    return Scenario(doc.name, faults, doc.description.strip(), doc.start.total_seconds(), total,
                    doc.recovery.total_seconds(), e.root_cause, e.kind, e.labels, e.priority)


def _shipped() -> dict[str, object]:
    folder = resources.files("streams") / "scenarios"
    return {p.name.removesuffix(".yaml"): p for p in folder.iterdir() if p.name.endswith(".yaml")}


# In this order the disk scenario, on its own part of the graph, sits between the two shop scenarios,
# so their shared symptoms (frontend errors) are far enough apart never to reopen each other's incident.
ALL = ["flash-sale-db-pool", "disk-full", "bad-gateway-node"]


def load_scenarios(names: Iterable[str] | None = None) -> list[Scenario]:
    """Shipped scenarios by name (all of ``ALL`` for ``None``), or scenario YAML files by path."""
    shipped = _shipped()
    out = []
    for name in ALL if names is None else names:
        path = shipped.get(name)
        if path is None and Path(name).suffix in (".yaml", ".yml"):
            path = Path(name)
        if path is None:
            close = difflib.get_close_matches(name, list(shipped), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown scenario '{name}'{hint}; shipped: {', '.join(sorted(shipped))}")
        out.append(parse_scenario(yaml.safe_load(path.read_text()), str(name)))
    return out


# --- the model ---------------------------------------------------------------------------------


def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(stable_hash(*parts), 16)])


def _ar1(r: np.random.Generator, n: int, sd: float, phi: float) -> np.ndarray:
    """Stationary AR(1) noise: bursts that last a few steps, as real traffic and load have."""
    eps = r.normal(0.0, sd * np.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    x = r.normal(0.0, sd)
    for k in range(n):
        x = phi * x + eps[k]
        out[k] = x
    return out


@dataclass(frozen=True)
class _Svc:
    name: str
    kind: str
    instances: tuple[str | None, ...]
    own_rps: float  # requests/s arriving from outside the graph (users at an entrypoint, else jobs, probes)
    latency: float  # mean seconds of its own work per request
    sigma: float  # log-normal shape of its latency
    error: float  # usual share of failing requests
    cpu: float
    pool: float  # connection-pool utilization at the usual load (datastores)
    disk: tuple[float, ...]  # filesystem utilization per MOUNTPOINTS (hosts)
    disk_growth: float  # per hour
    uptime: float  # seconds the process has been up when the run starts

    @property
    def observed(self) -> bool:
        return self.kind != "external"


def _service(name: str, spec, seed: int) -> _Svc:
    r = _rng(seed, name, "params")
    lo, hi = {"datastore": (0.002, 0.006), "gateway": (0.03, 0.08), "external": (0.08, 0.2)}.get(spec.kind, (0.008, 0.03))
    return _Svc(
        name=name, kind=spec.kind, instances=tuple(spec.instances) or (None,),
        own_rps=0.0 if spec.kind == "host" else r.uniform(60, 100) if spec.entrypoint else r.uniform(4, 10),
        latency=r.uniform(lo, hi), sigma=r.uniform(0.35, 0.55), error=r.uniform(0.002, 0.006),
        cpu=r.uniform(0.15, 0.35), pool=r.uniform(0.25, 0.4), disk=tuple(r.uniform(0.35, 0.65, len(MOUNTPOINTS))),
        disk_growth=r.uniform(0.0005, 0.003), uptime=r.uniform(1, 10) * DAY)


class _Model:
    """Fault-free parameters of a topology: services, edges, the order to evaluate them in."""

    def __init__(self, topology: Topology, seed: int, t: np.ndarray, step: float):
        self.t, self.step, self.seed = t, step, seed
        self.svc = {n: _service(n, s, seed) for n, s in sorted(topology.services.items())}
        g = topology.graph()
        # Calls inside a dependency cycle carry no load or fault here, so a cycle cannot feed itself.
        comp = {n: i for i, c in enumerate(nx.strongly_connected_components(g)) for n in c}
        self.dag = nx.DiGraph()
        self.dag.add_nodes_from(sorted(g))
        self.dag.add_edges_from(sorted((u, v) for u, v in g.edges if comp[u] != comp[v]))
        self.order = list(nx.lexicographical_topological_sort(self.dag))  # callers first
        self.fanout, self.delay = {}, {}
        for u, v in self.dag.edges:
            r = _rng(seed, u, v, "edge")
            self.fanout[u, v], self.delay[u, v] = r.uniform(0.5, 1.0), r.uniform(*HOP_DELAY)
        phi = float(np.exp(-step / 60.0))
        self.burst = {n: _ar1(_rng(seed, n, "traffic"), len(t), 0.03, phi) for n in self.svc}
        self.base_load = {}
        for n in self.order:
            self.base_load[n] = self.svc[n].own_rps + sum(self.fanout[u, n] * self.base_load[u]
                                                          for u in self.dag.predecessors(n))
        hours = (t % DAY) / 3600.0
        self.daily = 1.0 + 0.3 * np.cos(2 * np.pi * (hours - 14.0) / 24.0)  # busiest mid-afternoon UTC


@dataclass
class _State:
    """Expected values (before sampling noise) over time: (T,) per service or (T, instances)."""

    load: np.ndarray
    latency: np.ndarray
    error: np.ndarray
    cpu: np.ndarray
    pool: np.ndarray
    disk: np.ndarray
    down: np.ndarray


def _activation(f: Fault, t: np.ndarray) -> np.ndarray:
    """0 before the fault, ramping to 1, then decaying back once it ends."""
    rel = t - f.start
    a = np.clip(rel / f.ramp, 0.0, 1.0) if f.ramp > 0 else (rel >= 0).astype(float)
    a = np.where(rel < 0, 0.0, a)
    peak = min(1.0, f.duration / f.ramp) if f.ramp > 0 else 1.0
    return np.where(t >= f.end, peak * np.exp(-(t - f.end) / RECOVERY_TAU), a)


def _instance_mask(svc: _Svc, f: Fault) -> np.ndarray:
    host = dict(f.labels).get("host.name")
    if host is None:
        return np.ones(len(svc.instances), bool)
    if host not in svc.instances:
        raise ValueError(f"fault on {svc.name}: no instance host.name={host!r} "
                         f"(instances: {', '.join(i for i in svc.instances if i) or 'none declared'})")
    return np.array([i == host for i in svc.instances])


def _expected(model: _Model, faults: Iterable[Fault]) -> dict[str, _State]:
    t, T = model.t, len(model.t)
    ones = lambda s: np.ones((T, len(model.svc[s].instances)))  # noqa: E731
    surge = {s: np.ones(T) for s in model.svc}
    slow = {s: ones(s) for s in model.svc}
    err = {s: 0 * ones(s) for s in model.svc}
    down = {s: 0 * ones(s) for s in model.svc}
    fail = {s: 0 * ones(s) for s in model.svc}  # what callers of a crashed instance get
    cpu_sat = {s: 0 * ones(s) for s in model.svc}
    pool_sat = {s: np.zeros(T) for s in model.svc}
    disk_sat = {s: np.zeros((T, len(MOUNTPOINTS))) for s in model.svc}
    for f in faults:
        svc, a = model.svc[f.service], _activation(f, t)
        mask, col = _instance_mask(svc, f), a[:, None]
        if f.kind == "traffic_surge":
            surge[f.service] *= 1.0 + (f.magnitude - 1.0) * a
        elif f.kind == "latency":
            slow[f.service][:, mask] *= 1.0 + (f.magnitude - 1.0) * col
        elif f.kind == "errors":
            err[f.service][:, mask] += f.magnitude * col
        elif f.kind == "crash":
            down[f.service][:, mask] = np.maximum(down[f.service][:, mask], col)
            fail[f.service][:, mask] = np.maximum(fail[f.service][:, mask], f.magnitude * col)
        elif svc.kind == "datastore":
            pool_sat[f.service] = np.maximum(pool_sat[f.service], f.magnitude * a)
        elif svc.kind == "host":
            mount = dict(f.labels).get("mountpoint", MOUNTPOINTS[0])
            if mount not in MOUNTPOINTS:
                raise ValueError(f"fault on {f.service}: unknown mountpoint {mount!r} (have {', '.join(MOUNTPOINTS)})")
            j = MOUNTPOINTS.index(mount)
            disk_sat[f.service][:, j] = np.maximum(disk_sat[f.service][:, j], f.magnitude * a)
        else:
            cpu_sat[f.service][:, mask] = np.maximum(cpu_sat[f.service][:, mask], f.magnitude * col)

    load: dict[str, np.ndarray] = {}
    for s in model.order:  # callers first: load flows down the calls
        inflow = sum((model.fanout[u, s] * load[u] * (1.0 - down[u].mean(axis=1)) for u in model.dag.predecessors(s)),
                     np.zeros(T))
        own = model.svc[s].own_rps * model.daily * (1.0 + model.burst[s])
        load[s] = (own + inflow) * surge[s]

    out: dict[str, _State] = {}
    seen_lat: dict[str, np.ndarray] = {}  # what a caller sees per call: latency, errors
    seen_err: dict[str, np.ndarray] = {}
    hours = (t - t[0]) / 3600.0
    for s in reversed(model.order):  # callees first: latency and errors flow up
        p = model.svc[s]
        m = np.where(model.base_load[s] > 0, load[s] / max(model.base_load[s], 1e-9), 1.0)
        cpu = np.maximum(np.clip(p.cpu * (0.4 + 0.6 * m), 0.0, 1.0)[:, None], cpu_sat[s])
        queue = (1.0 - RHO) / (1.0 - np.minimum(RHO * m, 0.9))
        own = p.latency * queue[:, None] * slow[s] * (1.0 + 3.0 * np.clip((cpu - 0.85) / 0.15, 0.0, 1.0))
        calls_lat, calls_err = np.zeros(T), np.zeros(T)
        for c in model.dag.successors(s):
            d, w = model.delay[s, c], model.fanout[s, c]
            calls_lat += w * np.interp(t - d, t, seen_lat[c])
            calls_err += w * PASS_ERRORS * np.interp(t - d, t, seen_err[c])
        latency = own + calls_lat[:, None]
        error = np.clip(p.error + err[s] + calls_err[:, None], 0.0, 1.0)
        # Little's law: connections in use grow with the request rate and the time each query holds one.
        pool = np.maximum(np.clip(p.pool * m * own.mean(axis=1) / p.latency, 0.0, 1.0), pool_sat[s])
        disk = np.maximum(np.array(p.disk)[None, :] + p.disk_growth * hours[:, None], disk_sat[s])
        out[s] = _State(load[s], latency, error, cpu, pool, np.clip(disk, 0.0, 1.0), down[s])
        pool_pressure = np.clip((pool - 0.9) / 0.1, 0.0, 1.0) if p.kind == "datastore" else 0.0
        disk_full = np.clip((disk.max(axis=1) - 0.97) / 0.03, 0.0, 1.0) if p.kind == "host" else 0.0
        seen_lat[s] = latency.mean(axis=1) + POOL_WAIT * pool_pressure
        seen_err[s] = np.clip(error.mean(axis=1) + fail[s].mean(axis=1) + POOL_TIMEOUTS * pool_pressure + disk_full,
                              0.0, 1.0)
    return out


# --- sampling and OTLP/JSON --------------------------------------------------------------------


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (error < 1.5e-7), to avoid a scipy dependency for one function."""
    s, x = np.sign(x), np.abs(x)
    k = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - ((((1.061405429 * k - 1.453152027) * k + 1.421413741) * k - 0.284496736) * k + 0.254829592) * k * np.exp(-x * x)
    return s * y


def _bucket_probs(mean: np.ndarray, sigma: float) -> np.ndarray:
    """Share of log-normal latencies with this mean in each bucket of ``BOUNDS`` (last: overflow)."""
    mu = np.log(np.maximum(mean, 1e-6)) - sigma * sigma / 2.0
    z = (np.log(np.array(BOUNDS))[None, :] - mu[:, None]) / (sigma * np.sqrt(2.0))
    cdf = np.concatenate([np.zeros((len(mean), 1)), 0.5 * (1.0 + _erf(z)), np.ones((len(mean), 1))], axis=1)
    probs = np.clip(np.diff(cdf, axis=1), 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


def _cumulate(x: np.ndarray, seg: np.ndarray, initial) -> np.ndarray:
    """Running totals of ``x`` along time that restart at 0 in each new ``seg`` (a process
    restart); the first segment starts from ``initial``, the process' totals before the run."""
    c = np.cumsum(x, axis=0)
    first = np.r_[0, np.flatnonzero(np.diff(seg)) + 1]
    before = np.concatenate([np.zeros_like(c[:1]), c[first[1:] - 1]])
    out = c - before[seg]
    out[seg == 0] += initial
    return out


@dataclass
class _Series:
    """Sampled, OTLP-ready values of one instance over time."""

    alive: np.ndarray
    start_ns: np.ndarray
    requests: np.ndarray
    errors: np.ndarray
    buckets: np.ndarray
    total: np.ndarray
    cpu: np.ndarray
    pool: np.ndarray
    disk: np.ndarray


def _sample(model: _Model, s: str, st: _State, i: int, start_ns: int, step_ns: int) -> _Series:
    p, t, T = model.svc[s], model.t, len(model.t)
    r = _rng(model.seed, s, str(p.instances[i]), "sample")
    phi = float(np.exp(-model.step / 60.0))
    alive = st.down[:, i] < 0.5
    restarts = np.r_[False, alive[1:] & ~alive[:-1]]
    seg = np.cumsum(restarts)
    starts = np.r_[start_ns - int(p.uptime * 1e9), start_ns + (np.flatnonzero(restarts) - 1) * step_ns]
    share = 1.0 / len(p.instances)
    n = np.where(alive, r.poisson(st.load * share * model.step), 0)
    mean = st.latency[:, i]
    e = r.binomial(n, st.error[:, i])
    b = r.multinomial(n, _bucket_probs(mean, p.sigma))
    cv = np.sqrt(np.expm1(p.sigma * p.sigma))
    total = np.maximum(n * mean + np.sqrt(n) * mean * cv * r.standard_normal(T), 0.0)
    n0 = int(model.base_load[s] * share * p.uptime * 0.8)  # the process' counts before the run
    b0 = r.multinomial(n0, _bucket_probs(np.array([p.latency * 2]), p.sigma)[0])
    return _Series(
        alive=alive, start_ns=starts[seg], requests=_cumulate(n, seg, n0), errors=_cumulate(e, seg, int(n0 * p.error)),
        buckets=_cumulate(b, seg, b0), total=_cumulate(total, seg, n0 * p.latency * 2),
        cpu=np.clip(st.cpu[:, i] + _ar1(r, T, 0.015, phi), 0.005, 1.0),
        pool=np.clip(st.pool + _ar1(r, T, 0.012, phi), 0.0, 1.0),
        disk=np.clip(st.disk + r.normal(0.0, 0.0004, st.disk.shape), 0.0, 1.0))


def _attr(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def _sum(name: str, start: str, now: str, value) -> dict:
    point = {"startTimeUnixNano": start, "timeUnixNano": now, "asInt": str(int(value))}
    return {"name": name, "unit": "{request}", "sum": {"aggregationTemporality": 2, "isMonotonic": True,
                                                      "dataPoints": [point]}}


def _gauge(name: str, now: str, value: float, attrs: list | None = None) -> dict:
    point = {"timeUnixNano": now, "asDouble": round(float(value), 6)}
    if attrs:
        point["attributes"] = attrs
    return {"name": name, "unit": "1", "gauge": {"dataPoints": [point]}}


def _resource_metrics(p: _Svc, i: int, x: _Series, k: int, now: str) -> dict:
    attrs = [_attr("service.name", p.name)]
    if p.instances[i] is not None:
        attrs.append(_attr("host.name", p.instances[i]))
    if p.kind == "host":
        metrics = [_gauge("system.filesystem.utilization", now, x.disk[k, j], [_attr("mountpoint", m)])
                   for j, m in enumerate(MOUNTPOINTS)]
    else:
        start = str(int(x.start_ns[k]))
        histogram = {"startTimeUnixNano": start, "timeUnixNano": now, "count": str(int(x.requests[k])),
                     "sum": round(float(x.total[k]), 6), "bucketCounts": [str(int(v)) for v in x.buckets[k]],
                     "explicitBounds": list(BOUNDS)}
        metrics = [
            _sum("http.server.requests", start, now, x.requests[k]),
            _sum("http.server.errors", start, now, x.errors[k]),
            {"name": "http.server.request.duration", "unit": "s",
             "histogram": {"aggregationTemporality": 2, "dataPoints": [histogram]}},
            _gauge("process.cpu.utilization", now, x.cpu[k]),
        ]
        if p.kind == "datastore":
            metrics.append(_gauge("db.client.connections.utilization", now, x.pool[k]))
    return {"resource": {"attributes": attrs}, "scopeMetrics": [{"scope": SCOPE, "metrics": metrics}]}


def generate(topology: Topology, faults: Iterable[Fault], *, duration: float, seed: int = 7, step: float = 10.0,
             start: float = 1_767_225_600.0) -> list[dict]:
    """OTLP/JSON requests for ``duration`` seconds with ``faults`` (``start`` relative to the run's).

    The building block of :func:`simulate`, for benchmarks that place faults themselves.
    """
    return _generate(topology, [replace(f, start=start + f.start) for f in faults], duration, seed, step, start)[0]


def _generate(topology: Topology, faults: list[Fault], duration: float, seed: int, step: float,
              start: float) -> tuple[list[dict], _Model]:
    for f in faults:
        if f.service not in topology.services:
            close = difflib.get_close_matches(f.service, list(topology.services), n=1)
            raise ValueError(f"fault on unknown service '{f.service}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    n_steps = int(round(duration / step)) + 1
    start_ns, step_ns = int(round(start * 1e9)), int(round(step * 1e9))
    model = _Model(topology, seed, start + step * np.arange(n_steps), step)
    state = _expected(model, faults)
    series = {s: [_sample(model, s, state[s], i, start_ns, step_ns) for i in range(len(p.instances))]
              for s, p in model.svc.items() if p.observed}
    requests = []
    for k in range(n_steps):
        now = str(start_ns + k * step_ns)
        for s, xs in series.items():
            rms = [_resource_metrics(model.svc[s], i, x, k, now) for i, x in enumerate(xs) if x.alive[k]]
            if rms:
                requests.append({"resourceMetrics": rms})
    return requests, model


# --- logs --------------------------------------------------------------------------------------
# OTLP/JSON ExportLogsServiceRequest, one per observed service per step, from their own random
# streams so the metrics above are the same with or without logs. INFO/WARN noise at a steady
# rate, and ERROR lines for a share of the failing requests, worded by their cause: the service's
# own usual failures, an injected fault on it, or the errors of a service it calls.

LOG_SHARE = 0.25  # share of failing requests that log an ERROR line
MAX_ERROR_LINES = 20.0  # mean ERROR lines per cause, instance and step, at most
INFO_LINES, WARN_LINES = 1.2, 0.15  # mean lines per instance and step
LOG_SCOPE = {"name": "aiops.simulate.logs", "version": "1"}
_INFO = {
    "service": ("request completed method=GET route=/api/{svc} status=200 duration_ms={n}",
                "cache refreshed entries={n} took={n}ms"),
    "gateway": ("request completed method=POST route=/v1/charges status=200 duration_ms={n}",
                "connection pool to card-network healthy active={n} idle={n}"),
    "datastore": ("checkpoint complete: wrote {n} buffers", "connection authorized user=app database={svc}"),
    "queue": ("consumer group rebalanced members={n}",),
    "host": ("logrotate rotated /var/log/app.log size={n}", "accepted publickey for deploy from {ip} port {n}"),
}
_WARN = "slow request route=/api/{svc} took {n}ms threshold=500ms"
_OWN_ERROR = "internal error handling request id={uuid}: deadline exceeded"
_FAULT_ERROR = {
    "gateway": "upstream card-network connection reset by peer node={host} txn={hex}",
    "datastore": "could not serialize access due to concurrent update xid={n}",
}
_FAULT_ERROR_DEFAULT = "unhandled exception in request handler: RuntimeError trace={hex}"


def _callee_error(callee_kind: str) -> str:
    return {"gateway": "charge failed: gateway 502 bad gateway from {callee} txn={hex}",
            "datastore": "query on {callee} failed: timeout acquiring connection after {n}ms conn={hex}",
            "external": "call to {callee} failed: connect timeout after {n}ms",
            }.get(callee_kind, "call to {callee} failed: HTTP 503 request_id={hex}")


def _error_parts(model: _Model, state: dict[str, _State], s: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A service's error share split by cause: its own beyond its usual share, (T, instances), and
    per callee, (T,). Mirrors :func:`_expected`'s sums."""
    t = model.t
    seen = {}
    for c, st in state.items():
        p = model.svc[c]
        pressure = np.clip((st.pool - 0.9) / 0.1, 0.0, 1.0) if p.kind == "datastore" else 0.0
        full = np.clip((st.disk.max(axis=1) - 0.97) / 0.03, 0.0, 1.0) if p.kind == "host" else 0.0
        seen[c] = np.clip(st.error.mean(axis=1) + st.down.mean(axis=1) + POOL_TIMEOUTS * pressure + full, 0.0, 1.0)
    calls = {c: model.fanout[s, c] * PASS_ERRORS * np.interp(t - model.delay[s, c], t, seen[c])
             for c in model.dag.successors(s)}
    own = np.clip(state[s].error - model.svc[s].error - sum(calls.values(), np.zeros(len(t)))[:, None], 0.0, None)
    return own, calls


def _log_requests(model: _Model, state: dict[str, _State], start_ns: int, step_ns: int) -> list[dict]:
    T = len(model.t)
    per_step: list[list[dict]] = [[] for _ in range(T)]
    for s, p in model.svc.items():
        if not p.observed:
            continue
        own, calls = _error_parts(model, state, s)
        share = 1.0 / len(p.instances)
        lines_by_step: list[list[dict]] = [[] for _ in range(T)]
        for i, host in enumerate(p.instances):
            r = _rng(model.seed, s, str(host), "logs")
            alive = state[s].down[:, i] < 0.5
            n = state[s].load * share * model.step
            lam = lambda x: np.minimum(LOG_SHARE * n * x, MAX_ERROR_LINES)  # noqa: E731
            causes = [(r.poisson(INFO_LINES, T), 9, None), (r.poisson(WARN_LINES, T), 13, _WARN),
                      (r.poisson(lam(p.error)) if p.kind != "host" else np.zeros(T, int), 17, _OWN_ERROR),
                      (r.poisson(lam(own[:, i])), 17, _FAULT_ERROR.get(p.kind, _FAULT_ERROR_DEFAULT))]
            causes += [(r.poisson(lam(calls[c])), 17, _callee_error(model.svc[c].kind).replace("{callee}", c))
                       for c in sorted(calls)]
            attrs = [_attr("service.name", s)] + ([_attr("host.name", host)] if host is not None else [])
            for k in np.flatnonzero(alive):
                recs = []
                for counts, sev, text in causes:
                    for _ in range(int(counts[k])):
                        tpl = text or _INFO[p.kind][int(r.integers(len(_INFO[p.kind])))]
                        recs.append((int(r.integers(step_ns)), sev, _fill(tpl, r, s, host)))
                if not recs:
                    continue
                base = start_ns + (k - 1) * step_ns  # the step's lines fall in (now - step, now]
                recs.sort()
                log_records = [{"timeUnixNano": str(base + dt + 1), "observedTimeUnixNano": str(base + dt + 1),
                                "severityNumber": sev, "severityText": _SEV_TEXT[sev], "body": {"stringValue": body}}
                               for dt, sev, body in recs]
                lines_by_step[k].append({"resource": {"attributes": attrs},
                                         "scopeLogs": [{"scope": LOG_SCOPE, "logRecords": log_records}]})
        for k, rls in enumerate(lines_by_step):
            if rls:
                per_step[k].append({"resourceLogs": rls})
    return [req for reqs in per_step for req in reqs]


_SEV_TEXT = {9: "INFO", 13: "WARN", 17: "ERROR"}


def _fill(tpl: str, r: np.random.Generator, svc: str, host: str | None) -> str:
    out = tpl.replace("{svc}", svc).replace("{host}", host or svc)
    while "{n}" in out:
        out = out.replace("{n}", str(int(r.integers(1, 5000))), 1)
    if "{hex}" in out:
        out = out.replace("{hex}", f"{int(r.integers(1 << 40)):010x}")
    if "{uuid}" in out:
        h = f"{int(r.integers(1 << 62)):016x}{int(r.integers(1 << 62)):016x}"
        out = out.replace("{uuid}", f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}")
    if "{ip}" in out:
        out = out.replace("{ip}", f"10.{int(r.integers(256))}.{int(r.integers(256))}.{int(r.integers(1, 255))}")
    return out


# --- layout and ground truth -------------------------------------------------------------------


def _layout(scenarios: list[Scenario]) -> tuple[list[float], float]:
    """Onset of each scenario (seconds after the run's start) and the run's length."""
    onsets, t = [], 0.0
    for k, sc in enumerate(scenarios):
        onset = sc.start if k == 0 else t
        onsets.append(onset)
        t = onset + sc.duration + sc.recovery
    return onsets, t if scenarios else 3600.0


def _signal_metric(kind: str, cause: str) -> str:
    """The metric that carries a root cause's evidence, for matching remediation policies."""
    if cause == "saturation":
        return {"datastore": "db.client.connections.utilization",
                "host": "system.filesystem.utilization"}.get(kind, "process.cpu.utilization")
    return {"errors": "http.server.errors.rate", "latency": "http.server.request.duration.p95",
            "traffic": "http.server.requests.rate"}.get(cause, "")


def expected_policy(topology: Topology, service: str, cause: str, labels: Mapping[str, str],
                    priority: str | None = None) -> str | None:
    """The first remediation policy that should answer this root cause, or ``None``."""
    metric = _signal_metric(topology.services[service].kind, cause)
    for pol in topology.remediation.policies:
        m = pol.match
        if (fnmatch.fnmatchcase(service, m.root_cause_service) and fnmatch.fnmatchcase(cause, m.cause)
                and fnmatch.fnmatchcase(metric, m.metric)
                and all(k in labels and fnmatch.fnmatchcase(labels[k], v) for k, v in m.labels.items())
                and (priority is None or priority in m.priority)):
            return pol.name
    return None


def _affected(model: _Model, base: dict[str, _State], hit: dict[str, _State], lo: float, hi: float) -> list[str]:
    """Observed services whose expected telemetry the faults change materially in ``[lo, hi]``."""
    w = (model.t >= lo) & (model.t <= hi)
    out = []
    for s, p in model.svc.items():
        a, b = base[s], hit[s]
        changed = (
            np.any(np.abs(b.load[w] - a.load[w]) > 0.1 * np.maximum(a.load[w], 1e-9))
            or np.any(b.latency[w] > 1.2 * a.latency[w]) or np.any(b.error[w] - a.error[w] > 0.01)
            or np.any(b.cpu[w] - a.cpu[w] > 0.1) or np.any(b.down[w] > 0.5)
            or (p.kind == "datastore" and np.any(b.pool[w] - a.pool[w] > 0.1))
            or (p.kind == "host" and np.any(b.disk[w] - a.disk[w] > 0.05)))
        if changed and p.observed:
            out.append(s)
    return out


def simulate(topology: Topology, scenarios: list[Scenario], *, seed: int = 7, step: float = 10.0,
             start: float = 1_767_225_600.0) -> Simulation:
    """Telemetry for ``scenarios`` run one after another on ``topology``, and their ground truth.

    >>> from streams.config import parse_topology
    >>> topo = parse_topology({"services": {"web": {"depends_on": ["db"], "entrypoint": True},
    ...                                     "db": {"kind": "datastore", "owner": "team-db"}}})
    >>> sim = simulate(topo, [Scenario("db-full", (Fault("db", "saturation", 0, 600),), start=600)])
    >>> len(sim.requests), sim.truth[0]["root_cause"], sim.truth[0]["kind"], sim.truth[0]["team"]
    (482, 'db', 'saturation', 'team-db')
    """
    onsets, length = _layout(scenarios)
    faults = [replace(f, start=onset + f.start) for sc, onset in zip(scenarios, onsets) for f in sc.faults]
    requests, model = _generate(topology, [replace(f, start=start + f.start) for f in faults], length, seed, step, start)
    base = _expected(model, [])
    truth = []
    for sc, onset in zip(scenarios, onsets):
        if sc.root_cause not in topology.services:
            raise ValueError(f"scenario {sc.name}: unknown root cause '{sc.root_cause}'")
        mine = [replace(f, start=start + onset + f.start) for f in sc.faults]
        t0, t1 = start + onset, start + onset + max(sc.duration, max(f.end for f in sc.faults))
        labels = dict(sc.labels)
        spec = topology.services[sc.root_cause]
        truth.append({
            "scenario": sc.name, "description": sc.description,
            "root_cause": sc.root_cause, "kind": sc.kind, "labels": labels,
            "start": t0, "end": t1, "start_at": rfc3339(t0), "end_at": rfc3339(t1),
            "affected": _affected(model, base, _expected(model, mine), t0, t1 + 300.0),
            "policy": expected_policy(topology, sc.root_cause, sc.kind, labels, sc.priority),
            "team": spec.owner or topology.tickets.default_team,
            "priority": sc.priority,
            "faults": [{"service": f.service, "kind": f.kind, "start": f.start, "end": f.end,
                        "magnitude": f.magnitude, "labels": dict(f.labels)} for f in mine],
        })
    abs_faults = [replace(f, start=start + f.start) for f in faults]
    logs = _log_requests(model, _expected(model, abs_faults), int(round(start * 1e9)), int(round(step * 1e9)))
    return Simulation(requests, truth, tuple(abs_faults), logs)


def write(sim: Simulation, out_dir: str | Path) -> None:
    """``out_dir/telemetry.jsonl`` (one request per line), ``out_dir/logs.jsonl`` (OTLP/JSON logs,
    one request per line) and ``out_dir/truth.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "telemetry.jsonl", "wb") as fh:
        for req in sim.requests:
            fh.write(orjson.dumps(req) + b"\n")
    with open(out / "logs.jsonl", "wb") as fh:
        for req in sim.logs:
            fh.write(orjson.dumps(req) + b"\n")
    (out / "truth.json").write_bytes(orjson.dumps(sim.truth, option=orjson.OPT_INDENT_2) + b"\n")
