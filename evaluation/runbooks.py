"""Runbook search as operators phrase it: MRR and hit@1 of BM25 alone, embeddings alone and
their fusion, on ``evaluation/runbook_queries.yaml`` against the shipped ``runbooks/``.

    .venv/bin/python -m evaluation.runbooks [--verbose]

Each query has one runbook that handles it; its reciprocal rank is 1/rank in the method's full
ranking (0 when the method does not rank it at all, as BM25 does not when no word is shared).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

from remediators.runbooks import RunbookIndex, load_runbooks

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "evaluation" / "runbook_queries.yaml"


@dataclass(frozen=True)
class Score:
    method: str
    mrr: float
    hit1: float
    ranks: tuple[int | None, ...]  # per query, 1-based; None when not ranked


def rank_of(ids: list[str], want: str) -> int | None:
    return ids.index(want) + 1 if want in ids else None


def evaluate(index: RunbookIndex, queries: list[dict]) -> list[Score]:
    """The three methods on ``queries`` (``query``, ``want``); ``index`` must have an embedder."""
    n = len(index.runbooks)
    methods = {
        "BM25": lambda q: [h.runbook.id for h in index.search_text(q, n)],
        "embeddings": lambda q: [h.runbook.id for h in index.by_meaning(q, n)],
        "BM25 + embeddings (RRF)": lambda q: [h.runbook.id for h in index.search(q, n)],
    }
    out = []
    for name, ranked in methods.items():
        ranks = tuple(rank_of(ranked(q["query"]), q["want"]) for q in queries)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        hit1 = sum(r == 1 for r in ranks) / len(ranks)
        out.append(Score(name, mrr, hit1, ranks))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verbose", action="store_true", help="each query's rank under each method")
    args = ap.parse_args(argv)
    from remediators.embedding import model

    queries = yaml.safe_load(QUERIES.read_text())
    index = load_runbooks(ROOT / "runbooks").with_embedder(model().embed)
    scores = evaluate(index, queries)
    print(f"{len(queries)} queries, {len(index.runbooks)} runbooks")
    print("| method | MRR | hit@1 |\n|---|---|---|")
    for s in scores:
        print(f"| {s.method} | {s.mrr:.3f} | {s.hit1:.3f} ({round(s.hit1 * len(queries))}/{len(queries)}) |")
    if args.verbose:
        for i, q in enumerate(queries):
            print(" ".join(f"{s.ranks[i] or '-':>2}" for s in scores), q["want"], "<-", q["query"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
