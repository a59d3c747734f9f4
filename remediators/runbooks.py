"""Runbooks: Markdown files with YAML front matter, indexed for BM25 search.

A runbook is ``runbooks/<id>.md``::

    ---
    title: Database connection pool exhausted
    tags: [database, connection-pool]
    services: ["*db*"]                   # globs on the root-cause service (default: any)
    metrics: ["db.client.connections.*"] # globs on the evidence metrics (default: none)
    causes: [saturation]                 # root-cause kinds it treats (default: none)
    ---
    # Database connection pool exhausted
    ## Symptoms ...

:func:`load_runbooks` is the only function that reads files. Everything else is pure, and a
:class:`RunbookIndex` never changes once built, so one index can serve every incident.

Ranking is BM25 (``rank_bm25.BM25Okapi``) over the title, tags, globs and body, normalized to
[0, 1], plus boosts for front-matter matches: an evidence metric matching ``metrics`` (stronger
for the incident's leading evidence), the root-cause kind in ``causes``, the service matching a
specific ``services`` glob, and query words that are tags. Equal scores fall back to the runbook
id, so a ranking never depends on file-system order.

Examples
--------
>>> idx = RunbookIndex.build([
...     parse_runbook("---\\ntitle: Disk full\\ntags: [disk]\\nmetrics: [system.filesystem.*]\\n"
...                   "causes: [saturation]\\n---\\nCompress old logs.\\n", "runbooks/disk.md"),
...     parse_runbook("---\\ntitle: High CPU\\ntags: [cpu]\\n---\\nProfile the process.\\n", "runbooks/cpu.md"),
... ])
>>> [h.runbook.id for h in idx.search("disk full")]
['disk']
>>> idx.search("cpu")[0].runbook.path
'runbooks/cpu.md'
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rank_bm25 import BM25Okapi

from correlators.records import Incident

CAUSES = ("saturation", "errors", "latency", "resource", "traffic", "unobserved")
FRONT_MATTER_KEYS = ("title", "tags", "services", "metrics", "causes")

# Boosts added to the normalized BM25 score (in [0, 1]). A metric glob is the most specific
# evidence a runbook can claim, so it outweighs the text; a cause alone is shared by many runbooks.
METRIC_BOOST = 1.0
CAUSE_BOOST = 0.5
SERVICE_BOOST = 0.5
TAG_BOOST = 0.25  # per query word that is a tag, at most MAX_TAG_BOOSTS of them
MAX_TAG_BOOSTS = 2
# Field weights: a field's tokens are repeated this many times in the indexed document.
TITLE_WEIGHT = 3
TAG_WEIGHT = 2

_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were with "
    "after before into over under via not no than then when while what which who why how".split())


class RunbookError(ValueError):
    """Runbooks that cannot be loaded. ``problems`` lists ``(file, message)``; ``str()`` is the report.

    >>> print(RunbookError("runbooks", [("runbooks/a.md", "title: required key is missing")]))
    runbooks: 1 problem
      runbooks/a.md: title: required key is missing
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        n = len(problems)
        lines = [f"{source}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  {where}: {msg}" for where, msg in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class Runbook:
    """One runbook. ``id`` is the file name without ``.md``; ``path`` is where it was loaded from."""

    id: str
    path: str
    title: str
    tags: tuple[str, ...] = ()
    services: tuple[str, ...] = ("*",)
    metrics: tuple[str, ...] = ()
    causes: tuple[str, ...] = ()
    body: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: the runbook, its score and why it matched (front-matter matches)."""

    runbook: Runbook
    score: float
    why: tuple[str, ...] = ()


def tokenize(text: str) -> list[str]:
    """Lowercase words; dotted metric names and hyphenated names split into their parts.

    A plural ``s`` is dropped so "connections" finds "connection".

    >>> tokenize("orders-db: db.client.connections.utilization at 0.37 (the pool)")
    ['order', 'db', 'db', 'client', 'connection', 'utilization', '0', '37', 'pool']
    """
    out = []
    for w in _TOKEN.findall(text.lower()):
        if w in _STOPWORDS:
            continue
        if len(w) > 4 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.append(w)
    return out


# --- parsing ---------------------------------------------------------------------------------

def _string_list(fm: dict, key: str, problems: list[str], default: tuple[str, ...]) -> tuple[str, ...]:
    if key not in fm or fm[key] is None:
        return default
    v = fm[key]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        problems.append(f"{key}: expected a list of strings (got {type(v).__name__})")
        return default
    out = []
    for i, x in enumerate(v):
        if not isinstance(x, str):
            problems.append(f"{key}[{i}]: expected a string (got {type(x).__name__} {x!r}; quote it)")
        elif not x.strip():
            problems.append(f"{key}[{i}]: expected a non-empty string")
        else:
            out.append(x.strip())
    return tuple(out)


def _front_matter(text: str) -> tuple[str, str] | str:
    """Split ``---`` front matter from the body; a string result is the problem."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return "no YAML front matter (the file must start with a '---' line)"
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1:])
    return "front matter is not closed (no second '---' line)"


def parse_runbook(text: str, path: str) -> Runbook:
    """Parse one runbook's text. ``path`` names it in errors and gives its id.

    Raises :class:`RunbookError` listing every problem of the file.

    >>> parse_runbook("---\\ntitle: Disk full\\ncauses: [saturation]\\n---\\nbody\\n", "rb/disk.md").causes
    ('saturation',)
    >>> parse_runbook("---\\ntitle: X\\ncauses: [saturaton]\\nowner: me\\n---\\n", "rb/x.md")
    Traceback (most recent call last):
    ...
    remediators.runbooks.RunbookError: rb/x.md: 2 problems
      rb/x.md: unknown key 'owner' (expected one of title, tags, services, metrics, causes)
      rb/x.md: causes[0]: unknown cause 'saturaton' (did you mean 'saturation'?)
    """
    problems = _problems(text, path)
    if isinstance(problems, Runbook):
        return problems
    raise RunbookError(path, [(path, p) for p in problems])


def _problems(text: str, path: str) -> Runbook | list[str]:
    split = _front_matter(text)
    if isinstance(split, str):
        return [split]
    raw, body = split
    try:
        fm = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""  # +1 for 0-based, +1 for the '---' line
        return [f"front matter is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"]
    if not isinstance(fm, dict):
        return [f"front matter must be a mapping (got {type(fm).__name__})"]
    problems: list[str] = []
    for key in fm:
        if key not in FRONT_MATTER_KEYS:
            close = difflib.get_close_matches(str(key), FRONT_MATTER_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of {', '.join(FRONT_MATTER_KEYS)})"
            problems.append(f"unknown key '{key}'{hint}")
    title = fm.get("title")
    if title is None:
        problems.append("title: required key is missing")
    elif not isinstance(title, str) or not title.strip():
        problems.append(f"title: expected a non-empty string (got {title!r})")
    tags = _string_list(fm, "tags", problems, ())
    services = _string_list(fm, "services", problems, ("*",))
    metrics = _string_list(fm, "metrics", problems, ())
    causes = _string_list(fm, "causes", problems, ())
    for i, c in enumerate(causes):
        if c not in CAUSES:
            close = difflib.get_close_matches(c, CAUSES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of {', '.join(CAUSES)})"
            problems.append(f"causes[{i}]: unknown cause '{c}'{hint}")
    if problems:
        return problems
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return Runbook(id=name[:-3] if name.endswith(".md") else name, path=path, title=title.strip(),
                   tags=tuple(t.lower() for t in tags), services=services, metrics=metrics, causes=causes,
                   body=body.strip())


def load_runbooks(directory: str | Path) -> RunbookIndex:
    """Read every ``*.md`` in ``directory`` (not recursive) into an index.

    Raises :class:`RunbookError` listing every problem of every file, and never returns a
    partial index; a missing directory or one without runbooks is an error too.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RunbookError(str(directory), [(str(directory), "not a directory")])
    runbooks: list[Runbook] = []
    problems: list[tuple[str, str]] = []
    for f in sorted(directory.glob("*.md")):
        where = str(f)
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append((where, f"cannot read the file: {exc}"))
            continue
        got = _problems(text, where)
        if isinstance(got, Runbook):
            runbooks.append(got)
        else:
            problems += [(where, p) for p in got]
    if not runbooks and not problems:
        problems.append((str(directory), "no runbooks (*.md) found"))
    if problems:
        raise RunbookError(str(directory), problems)
    return RunbookIndex.build(runbooks)


# --- the index -------------------------------------------------------------------------------

def _document(rb: Runbook) -> list[str]:
    return (tokenize(rb.title) * TITLE_WEIGHT + tokenize(" ".join(rb.tags)) * TAG_WEIGHT
            + tokenize(" ".join(rb.metrics + rb.causes)) + tokenize(" ".join(s for s in rb.services if s != "*"))
            + tokenize(rb.body))


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """What a runbook search uses from an incident: its top root cause and the incident's title.

    ``metrics`` keep the evidence order (the correlator lists the leading evidence first).
    """

    service: str
    kind: str
    metrics: tuple[str, ...]
    details: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    title: str


def incident_facts(incident: Incident | Mapping[str, Any]) -> IncidentFacts | None:
    """The search facts of an :class:`Incident` or of its wire record (``streams.codec.incident_dict``).

    ``None`` when the incident has no root cause yet.
    """
    if isinstance(incident, Incident):
        if not incident.root_causes:
            return None
        rc = incident.root_causes[0]
        ev = [(e.metric, e.detail, e.labels) for e in rc.evidence]
        service, kind, title = rc.service, rc.kind, incident.title
    else:
        rcs = incident.get("root_causes") or []
        if not rcs:
            return None
        rc = rcs[0]
        ev = [(str(e.get("metric", "")), str(e.get("detail", "")), tuple(sorted((e.get("labels") or {}).items())))
              for e in rc.get("evidence") or []]
        service, kind, title = str(rc.get("service", "")), str(rc.get("kind", "")), str(incident.get("title", ""))
    metrics = tuple(dict.fromkeys(m for m, _, _ in ev if m))
    labels = tuple(sorted({kv for _, _, lab in ev for kv in lab}))
    return IncidentFacts(service=service, kind=kind, metrics=metrics, details=tuple(d for _, d, _ in ev if d),
                         labels=labels, title=title)


# Reciprocal rank fusion's constant (Cormack et al. 2009): a runbook's fused score is
# sum(1 / (RRF_K + rank)) over the rankings. 60 is the paper's value, kept, not tuned here.
RRF_K = 60
# Below this cosine similarity a runbook is not "about" the text for all-MiniLM-L6-v2: junk
# queries ("qqqq", "asdf", "lunch menu") reach 0.08-0.21 against the shipped runbooks. Set from
# those junk queries, not from the evaluation's queries (some of whose answers score lower).
MIN_SIMILARITY = 0.25
EMBED_CHARS = 1500  # of a runbook's text embedded: title, tags and the start of the body (256 tokens cap it)

Embedder = Callable[[list[str]], Any]  # texts -> unit vectors, one row each (numpy array)


def embedding_text(rb: Runbook) -> str:
    """What a runbook's vector is made of: its title and tags first, so truncation keeps them."""
    return f"{rb.title}. {', '.join(rb.tags)}. {rb.body}"[:EMBED_CHARS]


def fuse(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion of rankings (ids, best first): id -> fused score.

    >>> fuse([["a", "b", "c"], ["c", "b"]], k=1)
    {'a': 0.5, 'b': 0.6666666666666666, 'c': 0.75}
    """
    out: dict[str, float] = {}
    for ranking in rankings:
        for rank, rid in enumerate(ranking, 1):
            out[rid] = out.get(rid, 0.0) + 1.0 / (k + rank)
    return out


@dataclass(frozen=True)
class RunbookIndex:
    """An immutable index over runbooks: BM25, and by meaning when built with an ``embedder``
    (:func:`remediators.embedding.model`'s ``embed``). Build it with :meth:`build` or
    :func:`load_runbooks`.

    With an embedder, :meth:`search` and :meth:`for_incident` fuse the BM25 ranking (boosts
    included) with the ranking by cosine similarity (:func:`fuse`). The runbooks' vectors are
    computed on the first search, once."""

    runbooks: tuple[Runbook, ...]
    _bm25: BM25Okapi | None = field(default=None, repr=False, compare=False)
    embedder: Embedder | None = field(default=None, repr=False, compare=False)
    _vectors: dict = field(default_factory=dict, repr=False, compare=False)  # filled once, on first use

    @classmethod
    def build(cls, runbooks: Iterable[Runbook], embedder: Embedder | None = None) -> RunbookIndex:
        rbs = tuple(sorted(runbooks, key=lambda r: r.id))
        ids = [r.id for r in rbs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise RunbookError("runbooks", [(r.path, f"duplicate runbook id '{r.id}'") for r in rbs if r.id in dupes])
        return cls(runbooks=rbs, _bm25=BM25Okapi([_document(r) for r in rbs]) if rbs else None, embedder=embedder)

    def with_embedder(self, embedder: Embedder | None) -> RunbookIndex:
        """The same runbooks, ranked with ``embedder`` too (``None``: BM25 alone)."""
        return RunbookIndex(runbooks=self.runbooks, _bm25=self._bm25, embedder=embedder)

    def warm(self) -> None:
        """Embed the runbooks now, loading the embedder's model, rather than on the first search
        by meaning (a no-op without an embedder, or when done already)."""
        if self.embedder is not None and "runbooks" not in self._vectors:
            self._vectors["runbooks"] = self.embedder([embedding_text(r) for r in self.runbooks])

    def similarities(self, text: str) -> list[float]:
        """Cosine similarity of ``text`` to each runbook (the index's order). Needs an embedder."""
        if self.embedder is None:
            raise ValueError("this index has no embedder")
        self.warm()
        q = self.embedder([text])[0]
        return [float(x) for x in self._vectors["runbooks"] @ q]

    def by_meaning(self, text: str, n: int = 5) -> list[Hit]:
        """Runbooks by cosine similarity alone, best first (the evaluation's "embeddings alone")."""
        sims = self.similarities(text)
        hits = [Hit(rb, round(s, 6), ("meaning",)) for rb, s in zip(self.runbooks, sims, strict=True)]
        hits.sort(key=lambda h: (-h.score, h.runbook.id))
        return hits[:max(n, 0)]

    def _fused(self, text_hits: list[Hit], meaning_text: str, n: int, cutoff: float) -> list[Hit]:
        """BM25 hits (already cut) fused with the ranking by meaning. A runbook takes part when
        BM25 kept it, or its similarity is at least :data:`MIN_SIMILARITY` and ``cutoff`` of the
        best one's; the score is the fused one."""
        sims = self.similarities(meaning_text)
        best = max(sims, default=0.0)
        by_meaning = sorted(range(len(self.runbooks)), key=lambda i: (-sims[i], self.runbooks[i].id))
        meaning_ids = [self.runbooks[i].id for i in by_meaning if sims[i] >= MIN_SIMILARITY and sims[i] >= cutoff * best]
        text_ids = [h.runbook.id for h in text_hits]
        fused = fuse([text_ids, meaning_ids])
        why = {h.runbook.id: h.why for h in text_hits}
        hits = [Hit(self.get(rid), round(score, 6), why.get(rid, ()) + (("meaning",) if rid in meaning_ids else ()))
                for rid, score in fused.items()]
        hits.sort(key=lambda h: (-h.score, h.runbook.id))
        return hits[:max(n, 0)]

    def __len__(self) -> int:
        return len(self.runbooks)

    def get(self, runbook_id: str) -> Runbook | None:
        return next((r for r in self.runbooks if r.id == runbook_id), None)

    def _text_scores(self, query: list[str]) -> list[float]:
        if self._bm25 is None or not query:
            return [0.0] * len(self.runbooks)
        raw = [max(0.0, float(s)) for s in self._bm25.get_scores(query)]
        top = max(raw, default=0.0)
        return [s / top if top > 0 else 0.0 for s in raw]

    def _rank(self, text: list[float], boosts: Sequence[tuple[float, tuple[str, ...]]], n: int,
              cutoff: float) -> list[Hit]:
        hits = []
        for rb, t, (b, why) in zip(self.runbooks, text, boosts, strict=True):
            score = round(t + b, 6)  # rounded so float noise cannot reorder equal scores
            if score > 0:
                hits.append(Hit(rb, score, why))
        hits.sort(key=lambda h: (-h.score, h.runbook.id))
        if hits and cutoff > 0:
            hits = [h for h in hits if h.score >= cutoff * hits[0].score]
        return hits[:max(n, 0)]

    def search(self, query: str, n: int = 5, *, cutoff: float = 0.0) -> list[Hit]:
        """Free-text search. Query words that are tags, or a root-cause kind a runbook treats, boost it.

        ``cutoff`` drops hits scoring below that share of the best hit (0.5: at least half as good).
        With an embedder, BM25's hits and the ranking by meaning are fused (:meth:`_fused`).
        """
        if self.embedder is None:
            return self.search_text(query, n, cutoff=cutoff)
        return self._fused(self.search_text(query, len(self.runbooks), cutoff=cutoff), query, n, cutoff)

    def search_text(self, query: str, n: int = 5, *, cutoff: float = 0.0) -> list[Hit]:
        """:meth:`search` by BM25 and boosts alone."""
        tokens = tokenize(query)
        words = set(tokens) | {w.lower() for w in query.split()}
        boosts = []
        for rb in self.runbooks:
            tags = sorted(t for t in rb.tags if t in words or t.replace("-", "") in words)
            causes = sorted(c for c in rb.causes if c in words)
            b = TAG_BOOST * min(len(tags), MAX_TAG_BOOSTS) + (CAUSE_BOOST / 2 if causes else 0.0)
            boosts.append((b, tuple(f"tag {t}" for t in tags) + tuple(f"cause {c}" for c in causes)))
        return self._rank(self._text_scores(tokens), boosts, n, cutoff)

    def for_incident(self, incident: Incident | Mapping[str, Any], n: int = 5, *, cutoff: float = 0.0) -> list[Hit]:
        """Runbooks for an incident (an :class:`Incident` or its wire record), best first.

        The query is the top root cause's service, kind, evidence metrics, evidence details (log
        templates included), evidence label names and the title; front-matter matches boost.
        ``cutoff`` as in :meth:`search`.
        """
        facts = incident_facts(incident)
        if facts is None:
            return []
        text_hits = self._for_facts(facts, len(self.runbooks) if self.embedder is not None else n, cutoff)
        if self.embedder is None:
            return text_hits
        # By meaning: the incident as an operator would put it, title and evidence details first.
        said = ". ".join([facts.title, f"{facts.kind} on {facts.service}", *facts.details[:3], *facts.metrics[:3]])
        return self._fused(text_hits, said, n, cutoff)

    def _for_facts(self, facts: IncidentFacts, n: int, cutoff: float) -> list[Hit]:
        query = tokenize(" ".join([facts.service, facts.kind, *facts.metrics, *facts.details,
                                   *(k for k, _ in facts.labels), facts.title]))
        boosts = []
        for rb in self.runbooks:
            b, why = 0.0, []
            # The leading evidence weighs most: the first matching metric at position i gives 1/(1+i).
            pos = next((i for i, m in enumerate(facts.metrics)
                        if any(fnmatch.fnmatchcase(m, g) for g in rb.metrics)), None)
            if pos is not None:
                b += METRIC_BOOST / (1 + pos)
                why.append(f"metric {facts.metrics[pos]}")
            if facts.kind in rb.causes:
                b += CAUSE_BOOST
                why.append(f"cause {facts.kind}")
            glob = next((g for g in rb.services if g != "*" and fnmatch.fnmatchcase(facts.service, g)), None)
            if glob is not None:
                b += SERVICE_BOOST
                why.append(f"service {facts.service} ~ {glob}")
            boosts.append((b, tuple(why)))
        return self._rank(self._text_scores(query), boosts, n, cutoff)


RELEVANT = 0.5  # suggest a runbook only if it scores at least half as well as the best one


def runbook_refs(index: RunbookIndex | None, incident: Incident | Mapping[str, Any], n: int = 3) -> tuple[str, ...]:
    """The paths of the best ``n`` relevant runbooks for an incident, for ``TicketEvent.runbooks``.

    >>> runbook_refs(None, {"root_causes": []})
    ()
    """
    if index is None:
        return ()
    return tuple(h.runbook.path for h in index.for_incident(incident, n, cutoff=RELEVANT))


__all__ = ["CAUSES", "MIN_SIMILARITY", "RELEVANT", "RRF_K", "Embedder", "Hit", "embedding_text", "fuse", "IncidentFacts", "Runbook", "RunbookError", "RunbookIndex", "incident_facts",
           "load_runbooks", "parse_runbook", "runbook_refs", "tokenize"]
