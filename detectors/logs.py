"""Log lines to per-service rate series, so logs are scored by the same detectors as metrics.

Each service's error lines (severity ERROR or worse) are counted in fixed event-time buckets.
A bucket is emitted as a point of ``log.errors.rate`` (lines per second) once the service's
logs have moved past it, including empty buckets, so the detector learns what "no errors"
looks like. Lines are counted at most once: a bucket already emitted ignores late or
redelivered lines.

:class:`LogTemplateDetector` (what the pipeline runs) adds drain3 templates: per-template rates
``log.template.rate{template_id=...}`` and alerts for new and rising error templates, with the
template and a sample line as evidence. :class:`LogRateCounter` is the template-free counter.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from operator import attrgetter

from drain3 import TemplateMiner
from drain3.drain import LogCluster
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from detectors.config import DetectorSettings
from detectors.log_match import upgrade
from detectors.records import Alert, LogRecord, Point, SeriesKey, stable_hash

ERROR_SEVERITY = 17  # OTLP severityNumber: 17..20 ERROR, 21..24 FATAL
ERROR_RATE_METRIC = "log.errors.rate"
RECORD_RATE_METRIC = "log.records.rate"


class LogRateCounter:
    """Per-service log rates in event-time buckets.

    Examples
    --------
    >>> c = LogRateCounter(bucket_seconds=60)
    >>> c.add([LogRecord("api", 10.0, 17, "db timeout"), LogRecord("api", 20.0, 9, "ok")])
    []
    >>> [(p.series.metric, p.t, p.value) for p in c.add([LogRecord("api", 65.0, 9, "ok")])]
    [('log.errors.rate', 60.0, 0.016666666666666666), ('log.records.rate', 60.0, 0.03333333333333333)]
    """

    def __init__(self, bucket_seconds: float = 60.0, max_gap_buckets: int = 60):
        self._width = bucket_seconds
        self._max_gap = max_gap_buckets
        # service -> (start of the open bucket, errors in it, records in it)
        self._open: dict[str, tuple[float, int, int]] = {}

    def add(self, records: Iterable[LogRecord]) -> list[Point]:
        out: list[Point] = []
        for rec in sorted(records, key=lambda r: (r.service, r.t)):
            start = rec.t - rec.t % self._width
            cur = self._open.get(rec.service)
            if cur is None:
                cur = (start, 0, 0)
            elif start < cur[0]:
                continue  # that bucket was already emitted
            elif start > cur[0]:
                out += self._close(rec.service, cur, start)
                cur = (start, 0, 0)
            errors = cur[1] + (1 if rec.severity >= ERROR_SEVERITY else 0)
            self._open[rec.service] = (cur[0], errors, cur[2] + 1)
        return out

    def _close(self, service: str, cur: tuple[float, int, int], next_start: float) -> list[Point]:
        start, errors, total = cur
        end = start + self._width
        pts = [Point(SeriesKey(service, ERROR_RATE_METRIC), end, errors / self._width),
               Point(SeriesKey(service, RECORD_RATE_METRIC), end, total / self._width)]
        # Empty buckets between this one and the next are real zeros, up to a bound: a long
        # silence is a gap, not hours of zeros.
        gap = int(round((next_start - end) / self._width))
        for k in range(min(gap, self._max_gap)):
            t = end + (k + 1) * self._width
            pts += [Point(SeriesKey(service, ERROR_RATE_METRIC), t, 0.0),
                    Point(SeriesKey(service, RECORD_RATE_METRIC), t, 0.0)]
        return pts


# --- templates ---------------------------------------------------------------------------------

TEMPLATE_RATE_METRIC = "log.template.rate"
NEW_TEMPLATE_METRIC = "log.template.new"
OTHER_TEMPLATE = "other"
WARN_SEVERITY = 13
EVIDENCE_CHARS = 240  # template text and sample line, each, in an alert's evidence

# Variable parts of a line, masked before drain3 sees it, most specific first. Numbers only mask
# whole tokens (``gw-2`` stays ``gw-2``: a node name is what an operator needs to read).
MASKS: tuple[tuple[str, str], ...] = (
    ("UUID", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    ("IP", r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.])"),
    ("HEX", r"(?<![\w-])(?:0x[0-9a-fA-F]+|(?=[0-9a-fA-F]{6,}(?![\w-]))(?=[0-9a-fA-F]*\d)[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*)(?![\w-])"),
    # A number: (?<![\w.-])[-+]?\d+(?:\.\d+)?(?:ms|s|%)?(?![\w.-]), written so that it starts with
    # its first character, which lets ``re`` skip to the signs and digits instead of trying the
    # lookbehind at every position (twice as fast). The same matches: the lookbehind is checked
    # one character later, and a digit's remaining digits are tried longest first as before.
    ("NUM", r"[-+\d](?<![\w.-].)(?:(?<=\d)\d*|\d+)(?:\.\d+)?(?:ms|s|%)?(?![\w.-])"),
)


def make_miner(max_clusters: int = 200) -> TemplateMiner:
    """A drain3 miner configured in memory (no ini file, no persistence, no profiling), so two
    processes fed the same lines in the same order mine the same templates. Its drain is a
    :class:`~detectors.log_match.FastDrain`: drain3's answers, found with less Python per line."""
    cfg = TemplateMinerConfig()
    cfg.profiling_enabled = False
    cfg.drain_sim_th = 0.4
    cfg.drain_depth = 4
    cfg.drain_max_children = 100
    cfg.drain_max_clusters = max_clusters
    cfg.parametrize_numeric_tokens = True
    cfg.masking_instructions = [MaskingInstruction(p, name) for name, p in MASKS]
    miner = TemplateMiner(persistence_handler=None, config=cfg)
    upgrade(miner.drain)
    return miner


# Before each mask's scan, a test of something every match of it contains, on the text as that
# mask sees it (after the masks before it): a scan costs some microseconds per line even when
# nothing matches, these tests a fraction of one. A mask that cannot match leaves the line as it
# is, so the output is the same with or without them. (One alternation of the four would not be:
# each mask sees the placeholders of the ones before, "<UUID>-5" masks the "-5" where the original
# "...9e0f-5" does not.) The tests read the line's UTF-8 bytes with ASCII digits as "0", hex
# letters as "a", dots kept and every other byte a space (UTF-8 writes ASCII characters, and only
# them, as bytes below 0x80). ``\d`` also matches non-ASCII digits: for a non-ASCII line, IP and
# NUM are tested with a regex instead.
_CLASSES = bytes(0x30 if 0x30 <= c <= 0x39 else 0x61 if c in b"abcdefABCDEF" else c if c == 0x2E else 0x20
                 for c in range(256))
_IP_HINT = re.compile(r"\d\.\d")
_DIGIT = re.compile(r"\d")


def _classes(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass").translate(_CLASSES)


def _may_be_ip(s: str) -> bool:
    if "." not in s:
        return False
    return b"0.0" in _classes(s) if s.isascii() else _IP_HINT.search(s) is not None


def _may_be_hex(s: str) -> bool:
    """"0x", or an ASCII digit next to a hex letter: a HEX match is a run of hex characters
    that holds both."""
    if "0x" in s:
        return True
    c = _classes(s)
    return b"0a" in c or b"a0" in c


def _may_be_number(s: str) -> bool:
    return b"0" in _classes(s) if s.isascii() else _DIGIT.search(s) is not None


_MASKS = tuple((re.compile(pattern), f"<{name}>", hint)
               for (name, pattern), hint in zip(MASKS, (lambda s: "-" in s, _may_be_ip, _may_be_hex, _may_be_number)))

# The masks for an ASCII line, which is most lines: the same matches, found faster. On ASCII text
# ``\d`` is [0-9] and ``\w`` is [A-Za-z0-9_] (as with re.ASCII); written out as ranges they let
# ``re`` skip to a match's first character by a table lookup instead of a Unicode category lookup
# per character (on the bench's lines NUM takes about half the time, IP a third). IP starts with
# its first digit, as NUM does (the lookbehind checked one character later; the same three, two or
# one digits tried in the same order). UUID and HEX, whose tests seldom pass, are the patterns of
# MASKS in ASCII mode. The tests read the classes as above once, and again only after a mask
# changed the line (placeholders are ASCII: the line stays ASCII), with "x" kept so that one search
# tests HEX: a digit before "x" (which "0x" is) or next to a hex letter. IP, HEX and NUM all need
# a digit.
_UUID_ASCII = re.compile(MASKS[0][1], re.ASCII)
_IP_ASCII = re.compile(r"[0-9](?<![A-Za-z0-9_.].)[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?::[0-9]{1,5})?(?![A-Za-z0-9_.])")
_HEX_ASCII = re.compile(MASKS[2][1], re.ASCII)
_NUM_ASCII = re.compile(r"[-+0-9](?<![A-Za-z0-9_.-].)(?:(?<=[0-9])[0-9]*|[0-9]+)(?:\.[0-9]+)?(?:ms|s|%)?(?![A-Za-z0-9_.-])")
_ASCII_CLASSES = bytes(0x78 if c == 0x78 else k for c, k in enumerate(_CLASSES))
_HEX_HINT = re.compile(rb"0(?:[xa]|(?<=a0))")


def mask(line: str) -> str:
    """The line with its variable parts masked, as the miner sees it (drain3's masker, applying
    :data:`MASKS` in order, gives the same).

    >>> mask("upstream reset node=gw-2 txn=8f3a2b91c0 from 10.0.0.7:443 after 250ms id=3f2a6c1e-0b1d-4e8a-9c3f-5a6b7c8d9e0f")
    'upstream reset node=gw-2 txn=<HEX> from <IP> after <NUM> id=<UUID>'
    """
    if not line.isascii():
        for rx, placeholder, hint in _MASKS:
            if hint(line):
                line = rx.sub(placeholder, line)
        return line
    if "-" in line:
        line = _UUID_ASCII.sub("<UUID>", line)
    c = line.encode("ascii").translate(_ASCII_CLASSES)
    if b"0" not in c:
        return line
    if "." in line and b"0.0" in c:
        masked = _IP_ASCII.sub("<IP>", line)
        if masked is not line:
            line, c = masked, masked.encode("ascii").translate(_ASCII_CLASSES)
    if _HEX_HINT.search(c) is not None:
        masked = _HEX_ASCII.sub("<HEX>", line)
        if masked is not line:
            line, c = masked, masked.encode("ascii").translate(_ASCII_CLASSES)
    if b"0" in c:
        line = _NUM_ASCII.sub("<NUM>", line)
    return line


def record_id(rec: LogRecord) -> str:
    """The identity of one log line: a redelivered line has the same id and is counted once.
    ``stable_hash(rec.service, repr(rec.t), str(rec.severity), rec.body, repr(rec.labels))``, in
    one encode and one update (the same bytes: each part's UTF-8 and a 0x1f after it).

    >>> r = LogRecord("api", 10.5, 17, "db timeout", (("host.name", "h1"),))
    >>> record_id(r) == stable_hash(r.service, repr(r.t), str(r.severity), r.body, repr(r.labels))
    True
    """
    data = "\x1f".join((rec.service, repr(rec.t), str(rec.severity), rec.body, repr(rec.labels), "")).encode()
    return blake2b(data, digest_size=16).hexdigest()[:16]


def poisson_sf(k: int, lam: float) -> float:
    """``P(X >= k)`` for ``X ~ Poisson(lam)``, without scipy.

    >>> round(poisson_sf(0, 2.0), 6), round(poisson_sf(3, 0.5), 6)
    (1.0, 0.014388)
    """
    if k <= 0:
        return 1.0
    if lam <= 0.0:
        return 0.0
    if k <= lam:  # the upper tail from below the mean: sum the lower terms instead
        return max(0.0, 1.0 - sum(math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1)) for j in range(k)))
    total, j = 0.0, k
    while True:
        term = math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1))
        total += term
        j += 1
        if term < 1e-17 * max(total, 1e-300) or j > k + 1000:
            return min(1.0, total)


def _short(text: str, limit: int = EVIDENCE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _level(severity: int) -> str:
    return "ERROR" if severity >= ERROR_SEVERITY else "WARN" if severity >= WARN_SEVERITY else "INFO"


@dataclass(frozen=True)
class LogSettings:
    """Knobs of :class:`LogTemplateDetector`; the alert state machine comes from the detectors' settings."""

    bucket_seconds: float = 60.0
    max_gap_buckets: int = 60
    max_templates: int = 50  # per service; later templates fold into "other"
    p_value: float = 1e-4  # a bucket whose count is this unlikely under the learned rate is anomalous
    min_rate: float = 0.5  # lines per bucket: floor of the expected count, so a template seen rarely
    # does not alert on two lines
    learn_rate: float = 0.05  # EWMA of the count per bucket (a running mean during warm-up)
    disturbed_gain: float = 0.1  # an anomalous bucket teaches the rate this much slower


@dataclass
class _Template:
    id: str
    text: str
    error: bool
    sample: str = ""
    host: str = ""
    n: int = 0  # buckets scored since first seen
    lam: float = 0.0
    hi: int = 0
    lo: int = 0
    firing: bool = False
    starts: float = 0.0
    new_firing: bool = False
    new_starts: float = 0.0
    quiet: int = 0


@dataclass
class _Service:
    miner: TemplateMiner
    first: float  # start of the service's first bucket (warm-up counts from here)
    start: float  # start of the open bucket
    lines: dict[str, tuple[str, bool]] = field(default_factory=dict)  # record id -> (template id, error)
    clusters: dict[int, str] = field(default_factory=dict)  # drain cluster id -> template id
    templates: dict[str, _Template] = field(default_factory=dict)
    # masked line -> (drain3 cluster, its template) for lines drain3 last matched without a change
    # (see :func:`mine`). Only remembered answers: not part of the state a snapshot keeps.
    mined: dict[str, tuple[LogCluster, str]] = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["mined"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("mined", {})  # a snapshot from before the cache
        upgrade(self.miner.drain)  # a FastDrain is kept as a plain drain3 Drain in a snapshot


MINED_LINES = 4096  # masked lines remembered per service; the cache is emptied when full


def mine(svc: _Service, line: str) -> tuple[int, str]:
    """drain3's cluster id and template for ``line``, as ``svc.miner.add_log_message(line)`` gives
    them, with the same effect on the miner, at the cost of a dictionary lookup for a line whose
    masked text drain3 has already matched, unchanged, since its clusters last changed.

    drain3's answer for a masked line depends only on its clusters and templates and on which
    clusters it still holds, and those change only when it reports a change ("cluster_created",
    which is also when its LRU evicts, or "cluster_template_changed"). So an answer it gave with
    change "none" holds until it next reports a change, and the cache is emptied then. A hit
    does what drain3 does on such a match: the cluster's size grows by one and the cluster is
    touched in drain3's LRU (which decides what it evicts next). The TemplateMiner around drain3
    adds only masking (:func:`mask`, the same masks), profiling and persistence (both off here).
    """
    masked = mask(line)
    hit = svc.mined.get(masked)
    drain = svc.miner.drain
    if hit is not None:
        cluster, text = hit
        cluster.size += 1
        # The LRU touch drain3 does on a match (make_miner, and a restored snapshot, give a FastDrain).
        drain.touch(cluster)
        return cluster.cluster_id, text
    cluster, change = drain.add_log_message(masked)
    text = cluster.get_template()
    if change != "none":
        svc.mined.clear()
    else:
        if len(svc.mined) >= MINED_LINES:
            svc.mined.clear()
        svc.mined[masked] = (cluster, text)
    return cluster.cluster_id, text


@dataclass(frozen=True)
class LogBatch:
    """What one batch of log records produced."""

    points: list[Point]  # log.errors.rate and log.records.rate, for the DetectionEngine
    template_points: list[Point]  # log.template.rate per template (error templates are scored here)
    alerts: list[Alert]  # new error templates and error templates whose rate rose


_ORDER = attrgetter("service", "t", "severity", "body", "labels")  # the order a batch's records are taken in


class LogTemplateDetector:
    """Log lines to templates (drain3), per-template rates, and log alerts with evidence.

    Per service, each line is masked and mined into a template. Lines are counted per template
    in event-time buckets, and a bucket is emitted once the service's logs move past it:

    - ``log.errors.rate`` and ``log.records.rate`` (for the production engine, as before);
    - ``log.template.rate{template_id=...}`` for every template of the service, at most
      ``max_templates`` of them; templates beyond the cap share ``template_id="other"``.

    Two kinds of alert, both carrying the template text and one sample line in ``evidence``
    and ``summary`` (an incident's evidence shows the summary):

    - a **new error template**: an ERROR line whose template the service never logged before,
      once the service is past ``warmup_points`` buckets. It fires at once, at the line's time, and
      resolves after ``resolve_after_points`` buckets without that template;
    - a **rising error template**: the template's count in a bucket is improbable under a
      Poisson law with the rate learned so far (``p_value``), in buckets in a row that span
      ``fire_after``. Counts of one template per minute are small integers, mostly 0; the
      robust z-score of the metric detectors has no useful scale there (one extra line is a
      huge z), while a Poisson tail is the right measure of surprise for small counts.

    Idempotency: the open bucket holds its lines as a set keyed by :func:`record_id`, and counts
    are the sizes of those sets, never increments, so a redelivered batch changes nothing; lines
    for an already emitted bucket are ignored (as are redelivered ones).

    Template ids: ``stable_hash(service, template text)`` of the masked template when drain3
    first mines it, never drain3's cluster counter. Later generalization of the same drain cluster
    keeps the id (one series does not split in two), so the same input gives the same ids in any
    process, and after a restart a template whose variable parts the masks capture gets its old id.

    Examples
    --------
    >>> d = LogTemplateDetector(DetectorSettings(warmup_points=1))
    >>> out = d.add([LogRecord("api", 10.0, 9, "user 42 logged in"), LogRecord("api", 20.0, 9, "user 7 logged in")])
    >>> out = d.add([LogRecord("api", 70.0, 17, "db timeout after 30s host=db-1")])
    >>> [(a.metric, a.status, dict(a.evidence)["template"]) for a in out.alerts]
    [('log.template.new', 'firing', 'ERROR db timeout after <NUM> host=db-1')]
    >>> [(p.t, p.value * 60) for p in out.template_points]
    [(60.0, 2.0)]
    """

    _mine = staticmethod(mine)  # the tests put drain3 uncached here, to hold the cache to it

    def __init__(self, settings: DetectorSettings | None = None, logs: LogSettings | None = None):
        self.settings = settings or DetectorSettings()
        self.cfg = logs or LogSettings()
        self._services: dict[str, _Service] = {}

    def add(self, records: Iterable[LogRecord]) -> LogBatch:
        points: list[Point] = []
        tpoints: list[Point] = []
        alerts: list[Alert] = []
        width = self.cfg.bucket_seconds
        for rec in sorted(records, key=_ORDER):
            start = rec.t - rec.t % width
            svc = self._services.get(rec.service)
            if svc is None:
                svc = _Service(make_miner(4 * self.cfg.max_templates), first=start, start=start)
                self._services[rec.service] = svc
            elif start < svc.start:
                continue  # that bucket was already emitted
            elif start > svc.start:
                self._close(rec.service, svc, start, points, tpoints, alerts)
            rid = record_id(rec)
            if rid in svc.lines:
                continue  # redelivered
            error = rec.severity >= ERROR_SEVERITY
            tpl, is_new = self._template(svc, rec)
            if error:
                tpl.sample, tpl.host = _short(rec.body), dict(rec.labels).get("host.name", "")
            svc.lines[rid] = (tpl.id, error)
            warm = start >= svc.first + self.settings.warmup_points * width
            if is_new and error and warm and not tpl.new_firing:
                tpl.new_firing, tpl.new_starts, tpl.quiet = True, rec.t, 0
                alerts.append(self._alert(rec.service, tpl, "firing", NEW_TEMPLATE_METRIC, rec.t, rec.t, 1.0, 1.0 / width, 0.0))
        return LogBatch(points, tpoints, alerts)

    def _template(self, svc: _Service, rec: LogRecord) -> tuple[_Template, bool]:
        """The record's template and whether the service never had it before."""
        cid, text = self._mine(svc, f"{_level(rec.severity)} {rec.body}")
        tid = svc.clusters.get(cid)
        if tid is not None:
            tpl = svc.templates[tid]
            if tid != OTHER_TEMPLATE:
                tpl.text = text  # drain3 generalized it: same cluster, same id, better text
            return tpl, False
        tid = stable_hash(rec.service, text)
        is_new = tid not in svc.templates
        if is_new and len(svc.templates) - (OTHER_TEMPLATE in svc.templates) >= self.cfg.max_templates:
            tid = OTHER_TEMPLATE
        if len(svc.clusters) >= 8 * self.cfg.max_templates:  # forget clusters drain3 evicted
            live = svc.miner.drain.id_to_cluster
            svc.clusters = {c: t for c, t in svc.clusters.items() if c in live}
        svc.clusters[cid] = tid
        tpl = svc.templates.get(tid)
        if tpl is None:
            tpl = _Template(tid, text, rec.severity >= ERROR_SEVERITY)
            svc.templates[tid] = tpl
        elif tid == OTHER_TEMPLATE:
            tpl.text, tpl.error = text, tpl.error or rec.severity >= ERROR_SEVERITY
        return tpl, is_new

    def _close(self, service: str, svc: _Service, next_start: float, points: list[Point], tpoints: list[Point],
               alerts: list[Alert]) -> None:
        width = self.cfg.bucket_seconds
        counts: dict[str, int] = {}
        errors = 0
        for tid, error in svc.lines.values():
            counts[tid] = counts.get(tid, 0) + 1
            errors += error
        buckets = [(svc.start + width, errors, len(svc.lines), counts)]
        # Empty buckets up to the next one are real zeros, up to a bound: a long silence is a gap.
        gap = int(round((next_start - svc.start) / width)) - 1
        buckets += [(svc.start + (k + 2) * width, 0, 0, {}) for k in range(min(gap, self.cfg.max_gap_buckets))]
        for end, n_err, n_all, cnt in buckets:
            points += [Point(SeriesKey(service, ERROR_RATE_METRIC), end, n_err / width),
                       Point(SeriesKey(service, RECORD_RATE_METRIC), end, n_all / width)]
            for tid in sorted(svc.templates):
                tpl = svc.templates[tid]
                k = cnt.get(tid, 0)
                tpoints.append(Point(self._key(service, TEMPLATE_RATE_METRIC, tid), end, k / width))
                if tpl.error:
                    alerts += self._score(service, tpl, end, k)
        svc.start = next_start
        svc.lines = {}

    def _score(self, service: str, tpl: _Template, end: float, k: int) -> list[Alert]:
        """Advance the template's new-template and rate alerts by one bucket of ``k`` lines."""
        cfg, st, width = self.cfg, self.settings, self.cfg.bucket_seconds
        out = []
        if tpl.new_firing:
            tpl.quiet = tpl.quiet + 1 if k == 0 else 0
            if tpl.quiet >= st.resolve_after_points:
                tpl.new_firing = False
                out.append(self._alert(service, tpl, "resolved", NEW_TEMPLATE_METRIC, tpl.new_starts, end, 0.0,
                                       k / width, 0.0))
        tpl.n += 1
        lam = max(tpl.lam, cfg.min_rate)
        p = poisson_sf(k, lam)
        anom = tpl.n > st.warmup_points and p < cfg.p_value
        if anom:
            tpl.hi += 1
            if tpl.hi == 1 and not tpl.firing:
                tpl.starts = end - width
            tpl.lo = 0
        else:
            tpl.hi = 0
            tpl.lo = tpl.lo + 1 if tpl.firing else 0
        if not tpl.firing and tpl.hi > 0 and tpl.hi * width >= st.fire_after.total_seconds():
            tpl.firing = True
            out.append(self._alert(service, tpl, "firing", TEMPLATE_RATE_METRIC, tpl.starts, end, 1.0 - p, k / width,
                                   lam / width))
        elif tpl.firing and tpl.lo >= st.resolve_after_points:
            tpl.firing, tpl.hi, tpl.lo = False, 0, 0
            out.append(self._alert(service, tpl, "resolved", TEMPLATE_RATE_METRIC, tpl.starts, end, 1.0 - p, k / width,
                                   lam / width))
        rate = max(1.0 / tpl.n, cfg.learn_rate) * (cfg.disturbed_gain if anom else 1.0)
        tpl.lam += rate * (k - tpl.lam)
        return out

    @staticmethod
    def _key(service: str, metric: str, tid: str) -> SeriesKey:
        return SeriesKey(service, metric, (("template_id", tid),))

    def _alert(self, service: str, tpl: _Template, status: str, metric: str, starts: float, at: float, score: float,
               value: float, expected: float) -> Alert:
        key = self._key(service, metric, tpl.id)
        text = _short(tpl.text)
        if metric == NEW_TEMPLATE_METRIC:
            what = "new error log template"
        else:
            what = f"error log template at {value * 60:.3g}/min (expected {expected * 60:.2g}/min)"
        host = f" on {tpl.host}" if tpl.host else ""
        evidence = (("template", text), ("sample", tpl.sample)) + ((("host.name", tpl.host),) if tpl.host else ())
        return Alert(
            fingerprint=key.fingerprint, status=status, service=service, metric=metric, series=key.id,
            labels=key.labels, score=float(min(max(score, 0.0), 1.0)), value=value, expected=expected,
            starts_at=starts, at=at, severity="warning", source="logs",
            summary=f"{service} {what}{host}: template {text!r}; sample {tpl.sample!r}",
            evidence=evidence,
        )
