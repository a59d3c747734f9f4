"""The template cache and the gated masks change nothing: the detector gives exactly the points,
template points and alerts it gives with drain3 called as it was (``TemplateMiner.add_log_message``
on every line, its own masker, no cache), and leaves drain3 in the same state (clusters, templates,
sizes, id counter, LRU order).

The streams are long and seeded, from hundreds of templates with numbers, hex ids, IPs, UUIDs
and free words in them (so drain3 creates clusters, generalizes templates and, with a small cluster
budget, evicts), across services and buckets, with redelivered lines; and short ones drawn by
hypothesis.
"""
from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import logs
from detectors.config import DetectorSettings
from detectors.logs import MASKS, LogSettings, LogTemplateDetector, make_miner, mask
from detectors.records import LogRecord

SETTINGS = DetectorSettings(warmup_points=3, fire_after="2m", resolve_after_points=2)
NUM_AS_DOCUMENTED = r"(?<![\w.-])[-+]?\d+(?:\.\d+)?(?:ms|s|%)?(?![\w.-])"


def drain3_as_before(svc, line: str) -> tuple[int, str]:
    mined = svc.miner.add_log_message(line)
    return mined["cluster_id"], mined["template_mined"]


class Uncached(LogTemplateDetector):
    _mine = staticmethod(drain3_as_before)


def mask_as_before(line: str) -> str:
    """drain3's masker on the documented patterns: each mask in order, no tests first."""
    for name, pattern in MASKS[:-1] + (("NUM", NUM_AS_DOCUMENTED),):
        line = re.sub(pattern, f"<{name}>", line)
    return line


WORDS = ("timeout acquiring connection from pool after request served cache miss for key retrying upstream returned "
         "status user session expired payment declined order shipped queue depth is high disk usage at GET POST "
         "/api/v1/orders slow query node=gw-2 cafe deadbeef").split()


def variable(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randint(1, 7)))
    if kind == 1:
        return f"{rng.randrange(2 ** 40):x}"
    if kind == 2:
        return ".".join(str(rng.randrange(256)) for _ in range(4)) + rng.choice(["", ":443", "."])
    if kind == 3:
        return "-".join(f"{rng.randrange(16 ** n):0{n}x}" for n in (8, 4, 4, 4, 12))
    if kind == 4:
        return f"{rng.choice('-+')}{rng.randrange(100)}.{rng.randrange(100)}{rng.choice(['ms', 's', '%', ''])}"
    if kind == 5:
        return f"0x{rng.randrange(2 ** 20):x}"
    if kind == 6:
        return rng.choice(WORDS)  # a free word: drain3 generalizes the position into <*>
    if kind == 7:
        return f"id={rng.randrange(1000)}-{rng.randrange(10)}"
    return rng.choice(["<*>", "٣.٤.٥.٦", "x٣", "", "v1.2.3"])


def stream(seed: int, n: int, templates: int, services: int) -> list[list[LogRecord]]:
    """Batches of records: ``templates`` shapes of words and variable slots, drawn with a skew
    (a few common templates, a long tail), a line every 0.25 s, one in 50 batches sent twice."""
    rng = random.Random(seed)
    shapes = [([rng.choice(WORDS) if rng.random() < 0.7 else None for _ in range(rng.randint(2, 14))],
               rng.choice([9, 9, 13, 17]), f"svc-{rng.randrange(services)}") for _ in range(templates)]
    out, batch, t = [], [], 1_700_000_000.0
    for _ in range(n):
        words, sev, service = shapes[min(int(rng.paretovariate(0.8)) - 1, templates - 1)]
        body = " ".join(w if w is not None else variable(rng) for w in words)
        t += 0.25
        batch.append(LogRecord(service, t, sev, body, (("host.name", f"h{rng.randrange(3)}"),)))
        if len(batch) >= rng.randint(1, 200):
            out.append(batch)
            if rng.random() < 0.02:
                out.append(list(batch))  # redelivered
            batch = []
    return out + [batch] if batch else out


def drain_state(det: LogTemplateDetector) -> dict:
    """Every service's clusters (id, template, size), id counter and LRU order. Destructive: the
    LRU order is read by evicting everything, least recently used first."""
    state = {}
    for name, svc in sorted(det._services.items()):
        drain = svc.miner.drain
        lru = []  # popped, not iterated: reading the values of an LRUCache touches each of them
        while len(drain.id_to_cluster):
            cid, c = drain.id_to_cluster.popitem()
            lru.append((cid, c.log_template_tokens, c.size))
        state[name] = (lru, drain.clusters_counter)
    return state


def run(det: LogTemplateDetector, batches: list[list[LogRecord]]) -> list:
    return [(b.points, b.template_points, b.alerts) for b in map(det.add, batches)]


class Counting(LogTemplateDetector):
    """Counts the lines the cache answers."""

    lines = hits = 0

    def _mine(self, svc, line):
        self.lines += 1
        self.hits += mask(line) in svc.mined
        return logs.mine(svc, line)


@pytest.mark.parametrize("seed, templates, services, max_templates", [
    (1, 300, 3, 50),   # a few hundred templates: drain3 at its cluster budget, evicting
    (2, 300, 3, 5),    # a small budget: eviction on most new lines
    (3, 40, 2, 50),    # few templates: about half the lines are cache hits
    (4, 400, 1, 100),
])
def test_the_cache_gives_what_drain3_gives_on_long_streams(seed, templates, services, max_templates):
    batches = stream(seed, 20_000, templates, services)
    cfg = LogSettings(max_templates=max_templates)
    cached, uncached = LogTemplateDetector(SETTINGS, cfg), Uncached(SETTINGS, cfg)
    assert run(cached, batches) == run(uncached, batches)
    assert drain_state(cached) == drain_state(uncached)


def test_a_changed_template_can_send_a_remembered_line_elsewhere():
    """Why the cache is emptied on a template change too, not only on a new cluster: when a
    cluster generalizes, a line it matched can come to match another cluster better. All lines
    here share drain3's leaf (10 tokens, first "INFO"); similarity counts equal tokens, not <*>."""
    bodies = ["a b c d e f g h i",   # cluster C
              "a b c d p p p p p",   # C becomes "a b c d <*> <*> <*> <*> <*>"
              "q r s t u v w x y",   # cluster E (similarity 0.1 with C)
              "a b c d u v w x z",   # 0.5 with C and with E: C, first of the two; no change, remembered
              "a b c Q k k k k k",   # 0.4 with C: C becomes "a b c <*> ...", so the line above is 0.4
              "a b c d u v w x z"]   # with C and 0.5 with E: E now
    batches = [[LogRecord("api", 1_700_000_000.0 + i, 9, body)] for i, body in enumerate(bodies)]
    cached, uncached = LogTemplateDetector(SETTINGS), Uncached(SETTINGS)
    assert run(cached, batches) == run(uncached, batches)
    drain = uncached._services["api"].miner.drain
    assert [c.get_template() for c in drain.id_to_cluster.values()] == [
        "INFO a b c <*> <*> <*> <*> <*> <*>", "INFO <*> <*> <*> <*> u v w x <*>"]
    assert drain_state(cached) == drain_state(uncached)


def test_the_streams_do_exercise_the_cache():
    """Without hits the test above would prove nothing."""
    for cfg, batches, share in [(LogSettings(), stream(3, 20_000, 40, 2), 0.4),
                                (LogSettings(max_templates=5), stream(2, 20_000, 300, 3), 0.01)]:
        det = Counting(SETTINGS, cfg)
        run(det, batches)
        assert det.hits > share * det.lines


def test_a_snapshot_keeps_no_cache_and_restores_to_the_same_outputs():
    import pickle

    batches = stream(5, 6_000, 60, 2)
    a = LogTemplateDetector(SETTINGS)
    run(a, batches[: len(batches) // 2])
    assert any(svc.mined for svc in a._services.values())
    b = pickle.loads(pickle.dumps(a))
    assert not any(svc.mined for svc in b._services.values())
    assert run(a, batches[len(batches) // 2:]) == run(b, batches[len(batches) // 2:])


lines = st.lists(st.one_of(st.sampled_from(WORDS), st.from_regex(r"[-+]?[0-9]{1,4}(\.[0-9]{1,3}){0,3}(ms|s|%)?",
                                                                  fullmatch=True),
                           st.from_regex(r"[0-9a-fA-Fx.:-]{1,14}", fullmatch=True), st.text(max_size=6)),
                 max_size=12).map(" ".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_masking_is_drain3s(line):
    assert mask(line) == mask_as_before(line)
    assert mask(line) == make_miner().masker.mask(line)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 400), st.sampled_from([9, 17]), lines), max_size=120))
def test_the_cache_gives_what_drain3_gives_on_drawn_streams(items):
    records = [LogRecord(f"s{s}", 1_700_000_000.0 + t, sev, body) for s, t, sev, body in items]
    batches = [records[i:i + 7] for i in range(0, len(records), 7)]
    cfg = LogSettings(max_templates=2)
    cached, uncached = LogTemplateDetector(SETTINGS, cfg), Uncached(SETTINGS, cfg)
    assert run(cached, batches) == run(uncached, batches)
    assert drain_state(cached) == drain_state(uncached)
