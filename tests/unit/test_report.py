"""remediators.report over real replay output, and the knowledge CLI (runbook, report, topology)."""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import networkx as nx
import pytest

from remediators.report import render_mermaid, render_report
from remediators.runbooks import load_runbooks
from streams.cli import main as aiops
from streams.config import load_topology
from streams.knowledge_cli import add_subcommands

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topology.yaml"
SECTIONS = ["## Summary", "## Impact", "## Timeline", "## Root cause", "## Propagation graph", "## Actions",
            "## Runbooks", "## Follow-ups"]
# What each shipped scenario's report must name: the runbook and a concrete follow-up.
EXPECT = {
    "orders-db": ("db-connection-pool-exhausted.md", "Capacity review of the `orders-db` connection pool"),
    "log-host": ("disk-usage-high.md", "Log retention on `log-host` `/`"),
    "payment-gateway": ("gateway-node-bad.md", "Find why node `gw-2` of `payment-gateway` failed"),
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """Simulate the shipped scenarios and replay them, as an operator would (about 5 s)."""
    d = tmp_path_factory.mktemp("replay")
    assert aiops(["simulate", "--topology", str(TOPOLOGY), "--out", str(d / "sim")]) == 0
    assert aiops(["replay", "--topology", str(TOPOLOGY), "--input", str(d / "sim" / "telemetry.jsonl"),
                  "--output", str(d / "incidents.jsonl"), "--actions", str(d / "actions.jsonl"),
                  "--tickets", str(d / "tickets.jsonl"), "--drain", "--quiet"]) == 0
    return d


@pytest.fixture(scope="module")
def records(replayed):
    incidents = _jsonl(replayed / "incidents.jsonl")
    by_id: dict[str, list[dict]] = {}
    for r in incidents:
        by_id.setdefault(r["id"], []).append(r)
    truth = json.loads((replayed / "sim" / "truth.json").read_text())
    return by_id, _jsonl(replayed / "actions.jsonl"), _jsonl(replayed / "tickets.jsonl"), truth


@pytest.fixture(scope="module")
def reports(records):
    by_id, actions, tickets, _ = records
    topo, index = load_topology(TOPOLOGY), load_runbooks(REPO / "runbooks")
    return {i: (versions, render_report(versions, actions, tickets, index, topo)) for i, versions in by_id.items()}


def _section(report: str, title: str) -> str:
    return report.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_injected_fault_gets_a_report_naming_its_root_cause(records, reports):
    truth = records[3]
    tops = {versions[-1]["root_causes"][0]["service"]: report for versions, report in reports.values()}
    assert {t["root_cause"] for t in truth} <= set(tops)
    for t in truth:
        report = tops[t["root_cause"]]
        assert f"**`{t['root_cause']}`: {t['kind']}**" in _section(report, "## Root cause")
        assert f"Most likely root cause: `{t['root_cause']}` ({t['kind']})" in _section(report, "## Summary")


def test_reports_have_every_section_in_order(reports):
    for _, report in reports.values():
        positions = [report.index(f"\n{s}\n") for s in SECTIONS]
        assert positions == sorted(positions)
        assert report.startswith("# Incident inc-")


def test_report_of_each_scenario(reports):
    for versions, report in reports.values():
        last, rc = versions[-1], versions[-1]["root_causes"][0]
        runbook, follow_up = EXPECT[rc["service"]]
        assert f"# Incident {last['id']}: {last['title']}" in report
        # Impact: priority and duration from the records.
        impact = _section(report, "## Impact")
        assert re.search(rf"- Priority: (P\d → )*{last['priority']} ", impact)  # the chain ends at the last
        assert re.search(r"- Duration: \d+m \d\ds", impact)
        # Timeline: every version with its reason, and every action.
        timeline = _section(report, "## Timeline")
        for r in versions:
            assert f"v{r['version']} {r['reason']}:" in timeline
        # Evidence: the root cause's series with value and expected.
        rc_section = _section(report, "## Root cause")
        assert "| Series | Value | Expected | Change |" in rc_section
        for e in rc["evidence"]:
            assert f"`{e['series']}`" in rc_section
        # Runbooks and follow-ups.
        assert runbook in _section(report, "## Runbooks").strip().splitlines()[0]  # the first suggestion
        assert follow_up in _section(report, "## Follow-ups")


def test_actions_appear_with_their_decision_and_result(records, reports):
    _, actions, _, _ = records
    assert actions
    for a in actions:
        _, report = reports[a["incident_id"]]
        table = _section(report, "## Actions")
        assert f"`{a['target']}`" in table
        assert f"{a['decision']} ({a['mode']})" in table
        assert "not executed (dry run)" in table  # the shipped topology runs every policy dry
        assert f"action {a['policy']} step {a['step']}" in _section(report, "## Timeline")


def test_the_mermaid_block_highlights_the_root_cause_and_its_path(reports):
    for versions, report in reports.values():
        rc = versions[-1]["root_causes"][0]
        block = re.search(r"```mermaid\n(.*?)\n```", report, re.S)
        assert block, "no Mermaid block"
        mermaid = block.group(1)
        assert mermaid.startswith("flowchart LR\n")
        node = "s_" + rc["service"].replace("-", "_")
        assert f"  class {node} rootcause" in mermaid
        assert "classDef rootcause" in mermaid
        path = rc["path"]
        for callee, caller in zip(path, path[1:]):  # the path runs against the calls
            assert f"s_{caller.replace('-', '_')} ==> s_{callee.replace('-', '_')}" in mermaid
        if len(path) > 1:
            assert "linkStyle" in mermaid


def test_reports_are_deterministic_whatever_the_input_order(records, reports):
    by_id, actions, tickets, _ = records
    topo, index = load_topology(TOPOLOGY), load_runbooks(REPO / "runbooks")
    rng = random.Random(3)
    for inc_id, (versions, report) in reports.items():
        shuffled = versions + versions[:2]  # a redelivered version counts once
        rng.shuffle(shuffled)
        acts, tks = actions[:], tickets[:]
        rng.shuffle(acts)
        rng.shuffle(tks)
        assert render_report(shuffled, acts, tks, index, topo) == report
        assert render_report(versions, actions, tickets, index, topo) == report


def test_report_without_runbooks_or_topology_still_renders(records):
    by_id, actions, tickets, _ = records
    versions = next(iter(by_id.values()))
    report = render_report(versions, actions, tickets, None, None)
    assert "## Runbooks" not in report
    assert "```mermaid" in report and "## Follow-ups" in report


def test_report_inputs_are_checked(records):
    by_id, _, _, _ = records
    with pytest.raises(ValueError, match="no incident records"):
        render_report([], [], [], None, None)
    ids = sorted(by_id)[:2]
    with pytest.raises(ValueError, match=f"more than one incident: {ids[0]}, {ids[1]}"):
        render_report(by_id[ids[0]] + by_id[ids[1]], [], [], None, None)


def test_render_mermaid_does_not_modify_the_graph():
    g = nx.DiGraph([("web", "api"), ("api", "db")])
    before = (list(g.nodes(data=True)), list(g.edges))
    render_mermaid(g, root_cause="db", path=["db", "api", "web"], nodes=["db", "api"])
    assert (list(g.nodes(data=True)), list(g.edges)) == before


# --- the CLI --------------------------------------------------------------------------------

def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aiops")
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_report_writes_what_render_report_renders(replayed, reports, monkeypatch):
    monkeypatch.chdir(REPO)  # the default runbook directory is ./runbooks
    inc_id, (_, report) = sorted(reports.items())[0]
    out = replayed / "report.md"
    assert _cli(["report", inc_id, "--topology", str(TOPOLOGY), "--incidents", str(replayed / "incidents.jsonl"),
                 "--actions", str(replayed / "actions.jsonl"), "--tickets", str(replayed / "tickets.jsonl"),
                 "--out", str(out)]) == 0
    assert out.read_text() == report.replace(str(REPO) + "/", "")


def test_cli_report_names_an_unknown_incident(replayed, capsys):
    assert _cli(["report", "inc-nope", "--topology", str(TOPOLOGY),
                 "--incidents", str(replayed / "incidents.jsonl"), "--no-runbooks"]) == 2
    assert f"no incident 'inc-nope' in {replayed / 'incidents.jsonl'}" in capsys.readouterr().err


def test_cli_report_names_a_bad_line(tmp_path, capsys):
    bad = tmp_path / "incidents.jsonl"
    bad.write_text('{"id": "a"}\nnot json\n')
    assert _cli(["report", "a", "--incidents", str(bad), "--topology", str(TOPOLOGY)]) == 2
    assert f"{bad}:2: invalid JSON" in capsys.readouterr().err


def test_cli_runbook_search_and_topology_show(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert _cli(["runbook", "search", "pod CrashLoopBackOff", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. ") and "runbooks/pod-crashloopbackoff.md" in out and "\n2. " not in out
    assert _cli(["runbook", "search", "qqqq"]) == 1
    assert _cli(["topology", "show", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("```mermaid\nflowchart LR\n") and "s_payments --> s_payment_gateway" in out
