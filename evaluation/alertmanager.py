"""Notifications per fault: the real Alertmanager against our incidents, on the same alerts (issue 4).

    python -m evaluation.alertmanager [--out DIR] [--topology NAME] [--max-faults N] [--speedup K]

One evaluation run (``<topology>/base`` of :mod:`evaluation.cases`, default ``online-boutique``)
is simulated and pushed through the production core as ``make eval`` does, keeping the alert
stream our detectors produce (:class:`~detectors.records.Alert`, firing and resolved, in event
time). The same alerts go to Debian's ``prometheus-alertmanager`` on loopback, posted to
``POST /api/v2/alerts`` as Prometheus would post them (:func:`prometheus_sends`), with the route
a team would start from::

    route: {group_by: [service], group_wait: 30s, group_interval: 1m, repeat_interval: 4h}

(the pipeline's own ``correlation.group_wait`` / ``group_interval`` / ``repeat_interval``, read
from the topology, which are these defaults), ``resolve_timeout: 5m`` and one webhook receiver
with ``send_resolved: true``: a local HTTP server that records every POST.

Time. Alertmanager's timers run on the wall clock and it compares ``endsAt`` with the wall clock,
so replaying event time faster than real time would be wrong for it. Each case (a fault, or a
noise spike) is instead replayed as a bounded *slice* in real time scaled down by ``K``
(``--speedup``, default 20): every duration Alertmanager sees is divided by ``K`` (its
``group_wait``, ``group_interval``, ``repeat_interval``, ``resolve_timeout`` and alert GC, and
Prometheus' evaluation interval, resend delay and ``endsAt`` horizon), and every timestamp is
mapped ``wall = W0 + (event - E0) / K``. Alertmanager's behaviour only depends on the order of
its timers and the alerts' timestamps, which the affine map preserves; see
``docs/alertmanager-comparison.md`` for the argument and what it does not cover. Slices of one
run go to separate Alertmanager processes (own port, storage, no cluster) side by side.

Counting, per fault, with :mod:`evaluation.metrics`' window: an Alertmanager notification
belongs to a fault when one of its alerts started (``startsAt``) between ``MATCH_BEFORE``
seconds before the fault's start and its end on a related service; a fault is detected when
at least one of its notifications is a firing one. Ours: the incidents :func:`metrics.match`
credits to the fault, every record of them that notifies (``notification`` not ``silent``, as
``correlation.notify`` decides: pages and re-notifications while open, resolved records apart);
silent records reach no receiver and are reported apart.
Exits 0 whatever the figures; the target (>= 5x fewer notifications per fault than
Alertmanager, at equal or better recall) is reported, not enforced.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from detectors.records import Alert, rfc3339
from evaluation.core import CoreRun, run_core
from evaluation.metrics import MATCH_BEFORE, FaultTruth, final_versions, first_notified, match, notifies, quantile
from streams import codec
from streams.config import Topology

SKIPPED = "skipped: alertmanager not installed"
BINARIES = ("alertmanager", "prometheus-alertmanager")
DEBIAN_BINARY = "/usr/bin/prometheus-alertmanager"
TARGET_RATIO = 5.0
# Mapping a wall-clock timestamp back to event time is exact to about a millisecond times the
# speedup; alert onsets sit on 10 s sample boundaries, so half a second of slack cannot move
# an alert across a window edge by more than rounding.
EPS = 0.5


def find_alertmanager() -> str | None:
    """The Alertmanager binary: ``alertmanager`` or ``prometheus-alertmanager`` on PATH, or Debian's path."""
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None


def alertmanager_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


@dataclass(frozen=True)
class Settings:
    """Alertmanager's route and Prometheus' sending, in event-time seconds, and the speedup."""

    group_wait: float = 30.0
    group_interval: float = 60.0
    repeat_interval: float = 4 * 3600.0
    resolve_timeout: float = 300.0  # Alertmanager's default; unused while every alert carries endsAt
    alerts_gc_interval: float = 1800.0  # Alertmanager's --alerts.gc-interval default
    eval_interval: float = 10.0  # Prometheus evaluates its rules each sample step of the simulator
    resend_delay: float = 60.0  # Prometheus' --rules.alert.resend-delay default
    resolved_retention: float = 900.0  # Prometheus keeps re-sending a resolved alert for 15 m
    speedup: float = 20.0

    @classmethod
    def of(cls, topology: Topology, **kw) -> Settings:
        """The route timers of ``topology``'s ``correlation:`` section (30s / 1m / 4h by default)."""
        c = topology.correlation
        return cls(group_wait=c.group_wait.total_seconds(), group_interval=c.group_interval.total_seconds(),
                   repeat_interval=c.repeat_interval.total_seconds(), **kw)

    @property
    def valid_for(self) -> float:
        """How far ahead a firing alert's ``endsAt`` lies: Prometheus' ``4 * max(resend_delay, interval)``."""
        return 4 * max(self.resend_delay, self.eval_interval)


# --- what Prometheus posts (pure) ----------------------------------------------------------------

@dataclass(frozen=True)
class Postable:
    """One alert as Prometheus posts it to ``/api/v2/alerts``, times in event seconds."""

    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    starts_at: float
    ends_at: float


@dataclass(frozen=True)
class Send:
    """One evaluation's batch of alerts to send, at event time ``at``."""

    at: float
    alerts: tuple[Postable, ...]


_BAD = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """A Prometheus label name for an OpenTelemetry attribute (``host.name`` -> ``host_name``).

    >>> label_name("host.name"), label_name("9lives")
    ('host_name', '_9lives')
    """
    out = _BAD.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


def am_labels(alert: Alert, severity: str | None = None) -> tuple[tuple[str, str], ...]:
    """The label set of ``alert`` as an alerting rule would emit it, sorted.

    ``alertname`` is the metric, ``service`` and ``severity`` as usual, the node
    (``host.name``) becomes ``instance`` and any other label keeps a sanitized name.

    >>> a = Alert("f", "firing", "cart", "http.server.duration.p95", "s", (("host.name", "n1"),), 1, 1, 0, 0, 0)
    >>> am_labels(a)
    (('alertname', 'http.server.duration.p95'), ('instance', 'n1'), ('service', 'cart'), ('severity', 'warning'))
    """
    labels = {"instance" if k == "host.name" else label_name(k): v for k, v in alert.labels}
    labels.update(alertname=alert.metric, service=alert.service, severity=severity or alert.severity)
    return tuple(sorted(labels.items()))


@dataclass
class _Active:  # Prometheus' per-rule alert state; local to prometheus_sends
    postable: Postable
    resolved_at: float | None = None
    last_sent: float | None = None


def prometheus_sends(alerts: Iterable[Alert], *, start: float, until: float, settings: Settings = Settings()) -> list[Send]:
    """What Prometheus would post to Alertmanager for this alert stream, evaluation by evaluation.

    Our detectors play the alerting rules: an alert becomes active at the evaluation after its
    firing event (``startsAt`` = its onset ``starts_at``, Prometheus' ``ActiveAt``) and inactive
    at its resolved event. At each evaluation (every ``eval_interval`` from ``start`` to
    ``until``) Prometheus sends an active alert when it was never sent, when it resolved since
    its last send, or when ``resend_delay`` has passed since its last send; a firing alert
    carries ``endsAt = now + 4 * max(resend_delay, eval_interval)``, a resolved one its
    resolution time, and a resolved alert is re-sent for ``resolved_retention``. A firing event
    on an alert that is still active changes nothing (the rule's labels are fixed, so its
    severity is the first one of the episode); after a resolution it starts a new one.

    Examples
    --------
    >>> fire = Alert("f", "firing", "db", "db.cpu", "s", (), 1, 1, 0, starts_at=90.0, at=100.0)
    >>> done = Alert("f", "resolved", "db", "db.cpu", "s", (), 0, 0, 0, starts_at=90.0, at=200.0)
    >>> [(s.at, s.alerts[0].starts_at, s.alerts[0].ends_at) for s in prometheus_sends([fire, done], start=100, until=230)]
    [(100.0, 90.0, 340.0), (170.0, 90.0, 410.0), (200.0, 90.0, 200.0)]
    """
    cfg = settings
    events = sorted((a for a in alerts if isinstance(a, Alert)), key=lambda a: a.at)  # stable: ties keep order
    state: dict[str, _Active] = {}
    out: list[Send] = []
    i = 0
    n = int(math.floor((until - start) / cfg.eval_interval + 1e-9))
    for k in range(n + 1):
        tick = start + k * cfg.eval_interval
        while i < len(events) and events[i].at <= tick + 1e-6:
            ev = events[i]
            i += 1
            cur = state.get(ev.fingerprint)
            if ev.status == "firing":
                if cur is None or cur.resolved_at is not None:
                    state[ev.fingerprint] = _Active(Postable(
                        am_labels(ev), (("summary", ev.summary),) if ev.summary else (), ev.starts_at, math.inf))
            elif cur is not None and cur.resolved_at is None:
                cur.resolved_at = ev.at
        batch = []
        for fp in list(state):
            a = state[fp]
            if a.resolved_at is not None and tick - a.resolved_at > cfg.resolved_retention:
                del state[fp]
                continue
            due = (a.last_sent is None or (a.resolved_at is not None and a.resolved_at > a.last_sent)
                   or a.last_sent + cfg.resend_delay < tick)
            if due:
                a.last_sent = tick
                ends = a.resolved_at if a.resolved_at is not None else tick + cfg.valid_for
                batch.append(Postable(a.postable.labels, a.postable.annotations, a.postable.starts_at, ends))
        if batch:
            out.append(Send(tick, tuple(batch)))
    return out


def _wall_rfc3339(t: float) -> str:
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}Z"


def postable_json(p: Postable, to_wall: Callable[[float], float], generator: str = "http://127.0.0.1:9090/graph") -> dict:
    """The JSON object Prometheus posts for ``p``, its times mapped to the wall clock by ``to_wall``.

    >>> p = Postable((("alertname", "x"), ("service", "db")), (), starts_at=10.0, ends_at=250.0)
    >>> postable_json(p, lambda t: 1_767_225_600.0 + t / 10)
    ... # doctest: +NORMALIZE_WHITESPACE
    {'labels': {'alertname': 'x', 'service': 'db'}, 'annotations': {}, 'startsAt': '2026-01-01T00:00:01.000000Z',
     'endsAt': '2026-01-01T00:00:25.000000Z', 'generatorURL': 'http://127.0.0.1:9090/graph'}
    """
    return {"labels": dict(p.labels), "annotations": dict(p.annotations), "startsAt": _wall_rfc3339(to_wall(p.starts_at)),
            "endsAt": _wall_rfc3339(to_wall(p.ends_at)), "generatorURL": generator}


# --- what reaches the receiver, and counting (pure) ------------------------------------------------

def parse_time(s: str) -> float:
    """An RFC 3339 time as Go prints it (up to nanoseconds, ``Z`` or an offset), in unix seconds.

    >>> round(parse_time("2026-01-01T00:00:01.123456789Z") - 1_767_225_600, 6)
    1.123456
    """
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {s!r}")
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").timestamp()


@dataclass(frozen=True)
class Notified:
    """One alert inside a notification: its service, status and onset in event time."""

    service: str | None
    status: str
    starts_at: float
    alertname: str = ""


@dataclass(frozen=True)
class Notification:
    """One webhook POST Alertmanager made, in event time."""

    slice: str
    at: float
    status: str  # "firing" (some alert firing) | "resolved"
    group_key: str
    alerts: tuple[Notified, ...]

    @property
    def services(self) -> frozenset[str]:
        return frozenset(a.service for a in self.alerts if a.service)


def notification_of(payload: dict, received: float, to_event: Callable[[float], float], slice_name: str = "") -> Notification:
    """A webhook payload (version 4) received at wall time ``received``, back in event time.

    >>> pl = {"status": "firing", "groupKey": '{}:{service="db"}', "alerts": [{"status": "firing",
    ...       "labels": {"alertname": "x", "service": "db"}, "startsAt": "1970-01-01T00:00:10Z"}]}
    >>> n = notification_of(pl, 12.0, lambda w: (w - 10.0) * 20)
    >>> n.at, n.status, n.alerts[0].starts_at, sorted(n.services)
    (40.0, 'firing', 0.0, ['db'])
    """
    alerts = tuple(Notified(a.get("labels", {}).get("service"), a.get("status", ""),
                            round(to_event(parse_time(a["startsAt"])), 3), a.get("labels", {}).get("alertname", ""))
                   for a in payload.get("alerts", ()))
    return Notification(slice_name, round(to_event(received), 3), payload.get("status", ""), payload.get("groupKey", ""), alerts)


def belongs(fault: FaultTruth, n: Notification) -> bool:
    """Did one of ``n``'s alerts start in ``fault``'s window on a related service (as :func:`metrics.matches`)?"""
    if fault.is_noise:
        return False
    related = fault.related | {fault.service}
    return any(fault.start - MATCH_BEFORE - EPS <= a.starts_at <= fault.end + EPS and a.service in related
               for a in n.alerts)


def match_notifications(faults: Sequence[FaultTruth], notifications: Sequence[Notification]) -> dict[str, list[int]]:
    """Fault id -> indices of the notifications that belong to it.

    A notification belonging to several concurrent faults (through a caller of both) goes only
    to those whose own service it names, if any, as :func:`metrics.match` credits incidents.
    """
    out: dict[str, list[int]] = {f.id: [] for f in faults}
    for i, n in enumerate(notifications):
        fs = [f for f in faults if belongs(f, n)]
        if len(fs) > 1:
            fs = [f for f in fs if f.service in n.services] or fs
        for f in fs:
            out[f.id].append(i)
    return out


@dataclass(frozen=True)
class FaultCount:
    fault: str
    category: str
    service: str
    am_firing: int  # webhook POSTs with status firing
    am_resolved: int  # webhook POSTs with status resolved
    am_groups: int  # distinct groups that notified: the pages an on-call gets first
    am_delay: float | None  # fault start -> first firing notification, event seconds
    ours_open: int  # notifying records while open: pages + re-notifications (correlation.notify)
    ours_resolved: int  # notifying resolved records
    ours_incidents: int  # first notifications
    ours_delay: float | None
    ours_silent: int = 0  # records published on aiops.incidents that notify nobody (not counted above)

    @property
    def am_detected(self) -> bool:
        return self.am_firing > 0

    @property
    def ours_detected(self) -> bool:
        # As for Alertmanager, a fault counts as detected when a firing notification reached the
        # receiver: an incident held by correlation.notify.hold that recovered unpaged does not.
        return self.ours_open > 0


def count(faults: Sequence[FaultTruth], notifications: Sequence[Notification], records: Sequence[dict]) -> list[FaultCount]:
    """Per real fault: Alertmanager's notifications and our incident records credited to it."""
    real = [f for f in faults if not f.is_noise]
    am = match_notifications(real, notifications)
    incidents = final_versions(records)
    ours = match(real, incidents)
    notified = first_notified(records)
    by_id: dict[str, list[dict]] = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
    out = []
    for f in real:
        ns = [notifications[i] for i in am[f.id]]
        firing = [n for n in ns if n.status == "firing"]
        recs = [r for i in ours[f.id] for r in by_id[i]]
        first = min((notified[i] for i in ours[f.id] if i in notified), default=None)
        out.append(FaultCount(
            f.id, f.category, f.service,
            am_firing=len(firing), am_resolved=sum(1 for n in ns if n.status == "resolved"),
            am_groups=len({(n.slice, n.group_key) for n in firing}),
            am_delay=min(n.at for n in firing) - f.start if firing else None,
            ours_open=sum(1 for r in recs if r["status"] != "resolved" and notifies(r)),
            ours_resolved=sum(1 for r in recs if r["status"] == "resolved" and notifies(r)),
            ours_incidents=len(ours[f.id]), ours_delay=first - f.start if first is not None else None,
            ours_silent=sum(1 for r in recs if not notifies(r))))
    return out


def unmatched(faults: Sequence[FaultTruth], notifications: Sequence[Notification]) -> list[Notification]:
    """Notifications no real fault claims (noise spikes, unrelated services): false notifications."""
    real = [f for f in faults if not f.is_noise]
    claimed = {i for ids in match_notifications(real, notifications).values() for i in ids}
    return [n for i, n in enumerate(notifications) if i not in claimed]


def _per(xs: Sequence[int], over: int) -> float:
    return sum(xs) / over if over else math.nan


def summarize(rows: Sequence[FaultCount]) -> dict:
    """Recall and notifications per detected fault for both, the ratios and the verdict.

    Headline ratio: Alertmanager's firing notifications per detected fault over our notifying
    records while open (pages + re-notifications) per detected fault; resolved notifications are
    reported beside it. Silent records (published, notifying nobody) are counted apart.

    >>> r = FaultCount("f", "single", "db", 10, 2, 1, 30.0, 2, 1, 1, 30.0)
    >>> s = summarize([r]); s["ratio"], s["pass"]
    (5.0, True)
    """
    am = [r for r in rows if r.am_detected]
    ours = [r for r in rows if r.ours_detected]
    n = len(rows)
    s = {
        "faults": n,
        "am_recall": len(am) / n if n else math.nan,
        "ours_recall": len(ours) / n if n else math.nan,
        "am_firing_per_fault": _per([r.am_firing for r in am], len(am)),
        "am_all_per_fault": _per([r.am_firing + r.am_resolved for r in am], len(am)),
        "am_groups_per_fault": _per([r.am_groups for r in am], len(am)),
        "ours_open_per_fault": _per([r.ours_open for r in ours], len(ours)),
        "ours_all_per_fault": _per([r.ours_open + r.ours_resolved for r in ours], len(ours)),
        "ours_first_per_fault": _per([r.ours_incidents for r in ours], len(ours)),
        "ours_silent_per_fault": _per([r.ours_silent for r in ours], len(ours)),
        "am_delay_p50": quantile([r.am_delay for r in am], 0.5),
        "ours_delay_p50": quantile([r.ours_delay for r in ours if r.ours_delay is not None], 0.5),
    }
    s["ratio"] = s["am_firing_per_fault"] / s["ours_open_per_fault"] if s["ours_open_per_fault"] else math.nan
    s["ratio_all"] = s["am_all_per_fault"] / s["ours_all_per_fault"] if s["ours_all_per_fault"] else math.nan
    s["ratio_first"] = s["am_groups_per_fault"] / s["ours_first_per_fault"] if s["ours_first_per_fault"] else math.nan
    s["pass"] = bool(not math.isnan(s["ratio"]) and s["ratio"] >= TARGET_RATIO and s["ours_recall"] >= s["am_recall"])
    return s


# --- the shell: alerts from the core, Alertmanager processes, the receiver ------------------------

def core_with_alerts(topology: Topology, messages: Iterable[dict | bytes]) -> tuple[CoreRun, list[Alert]]:
    """:func:`evaluation.core.run_core`, also keeping every alert event after the wire codec."""
    alerts: list[Alert] = []
    return run_core(topology, messages, alerts=alerts), alerts


@dataclass(frozen=True)
class Slice:
    """A bounded stretch of event time replayed into its own Alertmanager."""

    name: str
    start: float  # the first evaluation
    end: float  # when the replay stops: the last alert event plus a tail
    alerts: tuple[Alert, ...] = field(repr=False)


def make_slice(name: str, alerts: Sequence[Alert], *, window: tuple[float, float], settings: Settings,
               tail: float) -> Slice:
    """The alerts whose events fall in ``window``, evaluated from just before the first to ``tail`` after the last."""
    lo, hi = window
    mine = tuple(a for a in alerts if lo <= a.at <= hi)
    step = settings.eval_interval
    if not mine:
        return Slice(name, lo, lo, ())
    start = math.floor(min(a.at for a in mine) / step) * step - step
    return Slice(name, start, max(a.at for a in mine) + tail, mine)


class Receiver:
    """A webhook receiver on loopback that records each POST: (path, wall time, payload)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, float, dict]] = []
        lock = threading.Lock()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"_unparsed": body.decode(errors="replace")}
                with lock:
                    posts.append((self.path, at, payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def tie_break(sl: Slice, settings: Settings) -> float:
    """Event seconds added to ``group_wait`` and ``group_interval`` so no group timer expires on an evaluation.

    Both timers are whole multiples of Prometheus' evaluation interval, and a group's timer starts
    when an evaluation's alerts arrive, so a flush and the next evaluations' sends fall on the
    same instants: which Alertmanager sees first is a matter of milliseconds, on loopback as in
    production. Lengthening both timers by a fraction of the interval makes every such tie go to
    the alert (the flush sees the evaluation's resolution or new alert), deterministically; the
    offset grows by this much per interval, so it is kept small enough never to reach the next
    evaluation within the slice. Ties going to the alert can only merge or drop Alertmanager
    notifications, so the comparison stays conservative.

    >>> round(tie_break(Slice("s", 0.0, 1000.0, ()), Settings()), 3)
    0.526
    >>> round(tie_break(Slice("s", 0.0, 2400.0, ()), Settings()), 3)
    0.238
    """
    intervals = math.ceil((sl.end - sl.start) / settings.group_interval)
    return min(settings.eval_interval / 2, settings.eval_interval / (intervals + 2))


def am_config(settings: Settings, webhook_url: str, nudge: float = 0.0) -> dict:
    """The Alertmanager configuration, every duration divided by the speedup (JSON is valid YAML).

    ``nudge``: event seconds added to the group timers (:func:`tie_break`).

    >>> am_config(Settings(speedup=10), "http://127.0.0.1:1/x")["route"]
    ... # doctest: +NORMALIZE_WHITESPACE
    {'receiver': 'webhook', 'group_by': ['service'], 'group_wait': '3000ms', 'group_interval': '6000ms',
     'repeat_interval': '1440000ms'}
    """
    k = settings.speedup
    return {
        "global": {"resolve_timeout": _ms(settings.resolve_timeout / k)},
        "route": {"receiver": "webhook", "group_by": ["service"], "group_wait": _ms((settings.group_wait + nudge) / k),
                  "group_interval": _ms((settings.group_interval + nudge) / k),
                  "repeat_interval": _ms(settings.repeat_interval / k)},
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }


@dataclass
class SliceRun:
    slice: Slice
    w0: float = 0.0  # wall time of the slice's event time start
    posts: int = 0  # POSTs to /api/v2/alerts
    alerts_posted: int = 0
    late: float = 0.0  # the largest lag of a send behind its scheduled wall time, seconds
    nudge: float = 0.0  # event seconds added to the group timers (tie_break)
    error: str | None = None


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> int:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def run_slice(binary: str, sl: Slice, settings: Settings, receiver_url: str, workdir: Path) -> SliceRun:
    """Start an Alertmanager, replay ``sl``'s Prometheus sends in scaled real time, stop it."""
    k = settings.speedup
    out = SliceRun(sl)
    port = _free_port()
    d = workdir / re.sub(r"[^A-Za-z0-9_.-]", "_", sl.name)
    (d / "data").mkdir(parents=True)
    cfg = d / "alertmanager.yml"
    out.nudge = tie_break(sl, settings)
    cfg.write_text(json.dumps(am_config(settings, f"{receiver_url}/{sl.name}", out.nudge)))
    base = f"http://127.0.0.1:{port}"
    log = open(d / "alertmanager.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={cfg}", f"--storage.path={d / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         f"--web.external-url={base}", "--cluster.listen-address=", f"--alerts.gc-interval={_ms(settings.alerts_gc_interval / k)}",
         "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while True:
            try:
                if _http("GET", f"{base}/-/ready", timeout=1) == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.time() > deadline:
                out.error = f"alertmanager did not become ready (see {d / 'alertmanager.log'})"
                return out
            time.sleep(0.05)
        out.w0 = time.time() + 0.2

        def to_wall(t: float) -> float:
            return out.w0 + (t - sl.start) / k

        for send in prometheus_sends(sl.alerts, start=sl.start, until=sl.end, settings=settings):
            due = to_wall(send.at)
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            out.late = max(out.late, time.time() - due)
            for i in range(0, len(send.alerts), 64):  # Prometheus' notifier batches at most 64 alerts
                chunk = [postable_json(p, to_wall) for p in send.alerts[i:i + 64]]
                _http("POST", f"{base}/api/v2/alerts", json.dumps(chunk).encode())
                out.posts += 1
                out.alerts_posted += len(chunk)
        pause = to_wall(sl.end) - time.time()
        if pause > 0:
            time.sleep(pause)
    except (urllib.error.URLError, OSError) as e:
        out.error = f"{sl.name}: {e}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return out


def run_slices(binary: str, slices: Sequence[Slice], settings: Settings) -> tuple[list[SliceRun], list[Notification]]:
    """Every slice in its own Alertmanager, side by side; the notifications back in event time."""
    runs: list[SliceRun | None] = [None] * len(slices)
    with tempfile.TemporaryDirectory(prefix="aiops-am-") as tmp, Receiver() as rx:
        def work(i: int) -> None:
            runs[i] = run_slice(binary, slices[i], settings, rx.url, Path(tmp))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(slices)) if slices[i].alerts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)  # a notification racing the last shutdown
        posts = list(rx.posts)
    done = [r or SliceRun(s) for r, s in zip(runs, slices)]
    by_name = {r.slice.name: r for r in done}
    k = settings.speedup
    notes = []
    for path, at, payload in posts:
        r = by_name.get(path.lstrip("/"))
        if r is None or "_unparsed" in payload:
            continue
        notes.append(notification_of(payload, at, lambda w, r=r: r.slice.start + (w - r.w0) * k, r.slice.name))
    notes.sort(key=lambda n: (n.slice, n.at))
    return done, notes


# --- the CLI ---------------------------------------------------------------------------------------

def pick(cases: Sequence, n: int | None) -> list[int]:
    """Indices of ``n`` of the fault cases, evenly spaced (deterministic), plus every noise case.

    >>> from types import SimpleNamespace as C
    >>> pick([C(roots=("a",)), C(roots=()), C(roots=("b",)), C(roots=("c",)), C(roots=("d",))], 2)
    [0, 1, 4]
    """
    faulty = [i for i, c in enumerate(cases) if c.roots]
    if n is not None and n < len(faulty):
        faulty = [faulty[round(j * (len(faulty) - 1) / max(1, n - 1))] for j in range(n)] if n > 0 else []
    keep = set(faulty) | {i for i, c in enumerate(cases) if not c.roots}
    return sorted(keep)


def _f(v, fmt: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render(rows: Sequence[FaultCount], s: dict, false_am: int, false_ours: int, header: str) -> list[str]:
    head = (f"{'fault':52} {'AM fire':>7} {'AM res':>6} {'AM grp':>6} {'ours open':>9} {'ours res':>8} "
            f"{'ours inc':>8} {'silent':>6} {'AM/ours':>7}")
    lines = [header, "", head, "-" * len(head)]
    for r in rows:
        ratio = r.am_firing / r.ours_open if r.ours_open else math.nan
        lines.append(f"{r.fault.split('#', 1)[-1][:52]:52} {r.am_firing:>7} {r.am_resolved:>6} {r.am_groups:>6} "
                     f"{r.ours_open:>9} {r.ours_resolved:>8} {r.ours_incidents:>8} {r.ours_silent:>6} {_f(ratio, '.1f'):>7}")
    lines += [
        "",
        f"{'':34} {'Alertmanager':>12} {'ours':>8} {'AM/ours':>8}",
        f"{'recall':34} {_f(s['am_recall'], '.3f'):>12} {_f(s['ours_recall'], '.3f'):>8}",
        f"{'firing notifications / fault':34} {_f(s['am_firing_per_fault']):>12} {_f(s['ours_open_per_fault']):>8} "
        f"{_f(s['ratio']):>8}   (ours: pages + re-notifications)",
        f"{'all notifications / fault':34} {_f(s['am_all_per_fault']):>12} {_f(s['ours_all_per_fault']):>8} "
        f"{_f(s['ratio_all']):>8}   (with resolved)",
        f"{'first notifications / fault':34} {_f(s['am_groups_per_fault']):>12} {_f(s['ours_first_per_fault']):>8} "
        f"{_f(s['ratio_first']):>8}   (AM: groups that paged; ours: incidents)",
        f"{'silent records / fault':34} {'':>12} {_f(s['ours_silent_per_fault']):>8}   (ours: published, not notified)",
        f"{'first notification delay p50 s':34} {_f(s['am_delay_p50'], '.0f'):>12} {_f(s['ours_delay_p50'], '.0f'):>8}",
        f"{'notifications matching no fault':34} {false_am:>12} {false_ours:>8}   (ours: notifying records of false incidents)",
        "",
        f"target: >= {TARGET_RATIO:g}x fewer firing notifications per fault than Alertmanager at equal or better "
        f"recall: {_f(s['ratio'])}x, recall {_f(s['ours_recall'], '.3f')} vs {_f(s['am_recall'], '.3f')}  "
        f"{'PASS' if s['pass'] else 'FAIL'}",
    ]
    return lines


def compare(topology_path: Path, *, max_faults: int | None, settings_kw: dict, seed: int, binary: str) -> dict:
    """Simulate ``<topology>/base``, run our core and Alertmanager on its alerts, count per fault."""
    import numpy as np

    from evaluation.cases import DURATION, RECOVERY, build_runs
    from evaluation.run import truths
    from streams import simulate as sim
    from streams.config import load_topology

    t0 = time.perf_counter()
    run = build_runs(load_topology(topology_path), seed=seed)[0]
    with np.errstate(over="ignore"):
        result = sim.simulate(run.topology, run.scenarios(), seed=seed)
    core, alerts = core_with_alerts(run.pipeline_topology, result.requests)
    t_core = time.perf_counter() - t0
    settings = Settings.of(run.pipeline_topology, **settings_kw)
    faults_all = truths(run, result.truth)
    keep = pick(run.cases, max_faults)
    c = run.pipeline_topology.correlation
    # Long enough after the last alert event for Alertmanager's resolved notification (next
    # group_interval tick) and for our incident's (resolve_after of quiet, then the update).
    tail = max(settings.group_wait + 2 * settings.group_interval,
               c.resolve_after.total_seconds() + c.group_interval.total_seconds()) + 60.0
    slices, faults = [], []
    for i in keep:
        case, rec = run.cases[i], result.truth[i]
        # From before the onset (a symptom may lead the injected start) to halfway through the
        # recovery, so the next case's alerts never reach this slice's Alertmanager.
        window = (rec["start"] - 300.0, rec["start"] + DURATION + RECOVERY / 2)
        slices.append(make_slice(f"case{i:02d}", alerts, window=window, settings=settings, tail=tail))
        faults += [f for f in faults_all if f.id.startswith(f"{run.name}#{i}:")]
    t1 = time.perf_counter()
    sruns, notes = run_slices(binary, slices, settings)
    t_am = time.perf_counter() - t1
    rows = count(faults, notes, core.incidents)
    s = summarize(rows)
    windows = [(sl.start, sl.end) for sl in slices if sl.alerts]
    real = [f for f in faults if not f.is_noise]
    credited = {i for ids in match(real, final_versions(core.incidents)).values() for i in ids}
    false_ours = [r for r in core.incidents if r["id"] not in credited and r["status"] != "resolved" and notifies(r)
                  and any(lo <= datetime.fromisoformat(r["opened_at"].replace("Z", "+00:00")).timestamp() <= hi
                          for lo, hi in windows)]
    false_am = [n for n in unmatched(faults, notes) if n.status == "firing"]
    return {
        "run": run.name, "seed": seed, "cases": [run.cases[i].name for i in keep],
        "settings": asdict(settings), "alerts": len(alerts), "incident_records": len(core.incidents),
        "rows": rows, "summary": s, "false_am": false_am, "false_ours": false_ours,
        "slices": sruns, "notifications": notes, "seconds_core": t_core, "seconds_alertmanager": t_am,
    }


def main(argv: list[str] | None = None) -> int:
    from evaluation.run import SEED, TOPOLOGIES

    ap = argparse.ArgumentParser(prog="python -m evaluation.alertmanager", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/alertmanager"), help="where results.json goes (default out/alertmanager)")
    ap.add_argument("--topology", default="online-boutique", help="topology file stem (default online-boutique)")
    ap.add_argument("--max-faults", type=int, default=None, help="at most N fault cases, evenly spaced (default all)")
    ap.add_argument("--speedup", type=float, default=20.0, help="event seconds per wall second (default 20)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    binary = find_alertmanager()
    if binary is None:
        print(SKIPPED)
        (args.out / "results.json").write_bytes(orjson.dumps({"skipped": SKIPPED}, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    path = TOPOLOGIES / f"{args.topology}.yaml"
    if not path.exists():
        print(f"no topology named {args.topology!r} in {TOPOLOGIES}", file=sys.stderr)
        return 2
    res = compare(path, max_faults=args.max_faults, settings_kw={"speedup": args.speedup}, seed=args.seed, binary=binary)
    version = alertmanager_version(binary)
    st = res["settings"]
    errors = [r.error for r in res["slices"] if r.error]
    header = (f"Alertmanager {version} ({binary}) vs aiops on {res['run']} (seed {res['seed']}): "
              f"{len(res['rows'])} faults in {len(res['cases'])} cases, {res['alerts']} alert events\n"
              f"route group_by [service], group_wait {st['group_wait']:g}s, group_interval {st['group_interval']:g}s, "
              f"repeat_interval {st['repeat_interval']:g}s; Prometheus eval {st['eval_interval']:g}s, resend "
              f"{st['resend_delay']:g}s; replayed {st['speedup']:g}x faster with every duration scaled")
    lines = render(res["rows"], res["summary"], len(res["false_am"]), len(res["false_ours"]), header)
    late = max((r.late for r in res["slices"]), default=0.0)
    elapsed = time.perf_counter() - started
    lines += [f"largest send lag {late * 1000:.1f} ms wall ({late * st['speedup']:.1f} s event)"]
    lines += [f"ERROR {e}" for e in errors]
    lines += [f"done in {elapsed:.0f}s (core {res['seconds_core']:.0f}s, alertmanager {res['seconds_alertmanager']:.0f}s)"]
    print("\n".join(lines))
    payload = {
        "alertmanager": {"binary": binary, "version": version}, "run": res["run"], "seed": res["seed"],
        "cases": res["cases"], "settings": st, "alerts": res["alerts"], "incident_records": res["incident_records"],
        "summary": res["summary"], "target_ratio": TARGET_RATIO,
        "faults": [asdict(r) for r in res["rows"]],
        "false_notifications_am": [asdict(n) for n in res["false_am"]],
        "false_records_ours": [{k: r[k] for k in ("id", "version", "status", "opened_at", "title", "services")}
                               for r in res["false_ours"]],
        "slices": [{"name": r.slice.name, "start": rfc3339(r.slice.start), "end": rfc3339(r.slice.end),
                    "alerts": len(r.slice.alerts), "posts": r.posts, "alerts_posted": r.alerts_posted,
                    "late_s": round(r.late, 3), "timer_nudge_s": round(r.nudge, 3), "error": r.error} for r in res["slices"]],
        "notifications": [asdict(n) for n in res["notifications"]],
        "errors": errors, "seconds": round(elapsed, 1),
    }
    (args.out / "results.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    (args.out / "results.txt").write_text("\n".join(lines) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
