""":class:`detectors.log_match.FastDrain` gives exactly drain3's answers: after every line, the
same cluster id, template, change type and cluster size as drain3's own ``Drain`` (kept here as
the reference, unpatched), and the same state: every cluster (id, template, size) in the same
LRU order, the same id counter and the same prefix tree; so also the same evictions.

The lines are drawn to sit on drain3's edges: few and many templates over a small vocabulary (so
lines half-match several clusters and similarity ties happen), numeric tokens and drain3's own
``<*>`` as a token, lines of 0 to 14 tokens with odd whitespace, a small cluster budget (eviction
on most new lines) or none, and the settings drain3 takes: ``sim_th``, ``depth``,
``max_children`` (small, so the tree's ``<*>`` children are made), ``parametrize_numeric_tokens``
and ``extra_delimiters``. Then the detector end to end: the pipeline's miner (behind the masked-line
cache of :func:`detectors.logs.mine`) against drain3's plain ``TemplateMiner`` on every line, on
the long seeded streams of the template-cache test; a snapshot; and the ASCII masks against
drain3's masker on lines made of what they catch.
"""
from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.log_match import FastDrain, upgrade
from detectors.logs import LogSettings, LogTemplateDetector, make_miner, mask
from drain3.drain import Drain
from tests.property.test_log_template_cache import SETTINGS, Uncached, drain_state, mask_as_before, run, stream

VOCAB = ["a", "b", "c", "GET", "POST", "user", "id", "<*>", "<NUM>", "<IP>", "12", "x1", "1.5", "=", "k=v", "a,b",
         "ERROR", "INFO"]


def lru(drain: Drain) -> list:
    """The clusters, least recently used first (cachetools' order, read without touching them;
    a plain dict when there is no budget), with their templates and sizes."""
    store = drain.id_to_cluster
    if isinstance(store, dict):
        return [(cid, c.log_template_tokens, c.size) for cid, c in store.items()]
    data = store._Cache__data
    return [(cid, data[cid].log_template_tokens, data[cid].size) for cid in store._LRUCache__order]


def tree(node) -> tuple:
    return (list(node.cluster_ids), [(k, tree(child)) for k, child in node.key_to_child_node.items()])


def same_state(fast: Drain, ref: Drain) -> None:
    assert lru(fast) == lru(ref)
    assert fast.clusters_counter == ref.clusters_counter
    assert tree(fast.root_node) == tree(ref.root_node)


def pair(**kw) -> tuple[FastDrain, Drain]:
    return FastDrain(**kw), Drain(**kw)


def feed(fast: Drain, ref: Drain, lines: list[str]) -> None:
    """Both drains, line by line: the same answer after every line and the same state."""
    for line in lines:
        c1, change1 = fast.add_log_message(line)
        c2, change2 = ref.add_log_message(line)
        assert (c1.cluster_id, c1.log_template_tokens, c1.size, change1) == \
               (c2.cluster_id, c2.log_template_tokens, c2.size, change2), line
        assert lru(fast) == lru(ref)
    same_state(fast, ref)


templates = st.lists(st.lists(st.sampled_from(VOCAB), min_size=0, max_size=14), min_size=1, max_size=40)


@st.composite
def streams(draw):
    """Lines from a few or many templates, each line a template with some tokens replaced."""
    shapes = draw(templates)
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    n = draw(st.integers(1, 120))
    change = draw(st.sampled_from([0.0, 0.1, 0.4]))
    lines = []
    for _ in range(n):
        words = list(rng.choice(shapes))
        for i in range(len(words)):
            if rng.random() < change:
                words[i] = rng.choice(VOCAB + [str(rng.randrange(100)), "v" + str(rng.randrange(3))])
        if words and rng.random() < 0.1:
            words.insert(rng.randrange(len(words)), rng.choice(VOCAB))  # a longer line
        if words and rng.random() < 0.1:
            del words[rng.randrange(len(words))]  # a shorter one
        sep = rng.choice([" ", " ", "  ", "\t", " \u3000"])
        lines.append(rng.choice(["", " ", "\n"]) + sep.join(words) + rng.choice(["", " ", "\t"]))
    return lines


drains = st.fixed_dictionaries({
    "sim_th": st.sampled_from([0.4, 0.4, 0.0, 0.3, 0.5, 0.75, 1.0, float("nan")]),
    "depth": st.sampled_from([4, 4, 3, 5, 6]),
    "max_children": st.sampled_from([100, 2, 3, 4]),
    "max_clusters": st.sampled_from([None, 1, 2, 3, 5, 200]),
    "parametrize_numeric_tokens": st.booleans(),
    "extra_delimiters": st.sampled_from([(), (), ("=",), ("=", ","), (" x",)]),
})

PROPERTY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(drains, streams())
def test_fast_drain_gives_drain3s_answers_after_every_line(kw, lines):
    feed(*pair(**kw), lines)


@PROPERTY
@given(st.sampled_from([1, 2, 4, 50, None]), streams())
def test_fast_drain_as_the_pipeline_configures_it(max_clusters, lines):
    fast = make_miner(max_clusters or 200).drain
    assert type(fast) is FastDrain
    cfg = dict(depth=fast.log_cluster_depth, sim_th=fast.sim_th, max_children=fast.max_children,
               max_clusters=max_clusters or 200, extra_delimiters=fast.extra_delimiters, param_str=fast.param_str,
               parametrize_numeric_tokens=fast.parametrize_numeric_tokens)
    feed(fast, Drain(**cfg), lines)


def test_ties_go_to_the_first_cluster_then_to_the_one_with_more_wildcards():
    """Three clusters of one leaf that a line matches equally (2 of 4 tokens): drain3 takes the
    first of those with the most <*>."""
    fast, ref = pair(max_clusters=None, sim_th=0.5)
    feed(fast, ref, ["s a b c", "s d e f", "s g h i", "s a b c", "s a x y", "s d e q", "s d r q", "s a z z",
                     "s g h i", "s g w w", "s <*> b <*>", "s <*> <*> <*>", "s a <*> c"])


@pytest.mark.parametrize("seed, templates, services, max_templates", [
    (11, 300, 3, 50), (12, 300, 3, 2), (13, 40, 2, 50), (14, 400, 1, 100)])
def test_the_detector_gives_what_drain3s_own_drain_gives(seed, templates, services, max_templates, monkeypatch):
    """End to end, the pipeline's miner (a FastDrain behind the masked-line cache) against
    drain3's plain ``TemplateMiner`` on every line (drain3's masker, its ``Drain``, no cache)."""
    batches = stream(seed, 10_000, templates, services)
    cfg = LogSettings(max_templates=max_templates)
    fast = LogTemplateDetector(SETTINGS, cfg)
    out = run(fast, batches)
    import detectors.logs as logs

    monkeypatch.setattr(logs, "upgrade", lambda drain: drain)  # make_miner leaves drain3's Drain
    ref = Uncached(SETTINGS, cfg)
    assert run(ref, batches) == out
    assert all(type(s.miner.drain) is FastDrain for s in fast._services.values())
    assert all(type(s.miner.drain) is Drain for s in ref._services.values())
    assert drain_state(fast) == drain_state(ref)


def test_a_snapshot_holds_drain3s_plain_drain_and_restores_a_fast_one():
    batches = stream(15, 4_000, 60, 2)
    a = LogTemplateDetector(SETTINGS)
    run(a, batches[: len(batches) // 2])
    blob = pickle.dumps(a, protocol=5)
    assert b"log_match" not in blob and b"FastDrain" not in blob  # readable without this module
    b = pickle.loads(blob)
    assert all(type(s.miner.drain) is FastDrain for s in b._services.values())
    assert run(a, batches[len(batches) // 2:]) == run(b, batches[len(batches) // 2:])
    assert drain_state(a) == drain_state(b)


def test_upgrade_leaves_anything_but_a_plain_drain_alone():
    class Mine(Drain):
        pass

    d, m = Drain(), Mine()
    assert type(upgrade(d)) is FastDrain and type(upgrade(m)) is Mine


def test_the_remembered_wildcard_counts_forget_evicted_clusters():
    """Hundreds of templates in one leaf with a budget of three clusters: drain3 evicts on most
    lines, the counts of clusters it no longer holds are dropped, and the answers stay drain3's."""
    rng = random.Random(7)
    shapes = [["s"] + [rng.choice(VOCAB[:7]) for _ in range(6)] for _ in range(300)]
    lines = [" ".join(rng.choice(shapes)) for _ in range(3000)]
    fast, ref = pair(max_clusters=3)
    feed(fast, ref, lines)
    assert len(fast._params) <= 2 * 3 + 64


# Lines as the masks see them: numbers with signs, units and dots, IPs with ports, hex with and
# without "0x", six-character hex runs next to digits, UUIDs, "-" and "." and "_" joined to them,
# placeholders, and the odd non-ASCII digit or letter (the masks' other path).
PIECES = ["0", "7", "42", "-3", "+5", "1.5", "2.", ".5", "250ms", "3s", "9%", "10.0.0.7", "10.0.0.7:443",
          "300.1.2.3", "1.2.3.4.5", "0x1f", "0X1F", "5x", "0xg", "deadbeef", "cafe12", "a1b2c3", "abcdef", "12abcd",
          "3f2a6c1e-0b1d-4e8a-9c3f-5a6b7c8d9e0f", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "-", ".", "_", ":", "=", "/",
          "v1", "gw-2", "id=", "<NUM>", "<IP>", "<*>", "x", "s", "ms", "%", "\u0663", "\u00e9"]
masked_lines = st.lists(st.one_of(st.sampled_from(PIECES), st.text("0123456789abcdefx.-:_=/ ", max_size=8)),
                        max_size=16).flatmap(lambda parts: st.lists(st.sampled_from(["", " ", "  ", "\t"]),
                                                                    min_size=len(parts), max_size=len(parts))
                                             .map(lambda seps: "".join(p + q for p, q in zip(parts, seps))))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masked_lines)
def test_masking_is_drain3s_on_lines_made_of_what_the_masks_catch(line):
    assert mask(line) == mask_as_before(line) == make_miner().masker.mask(line)
