"""remediators.picture: incident and topology pictures (SVG, PNG), and the CLI options that write them.

The SVG is inspected by the ids the module gives its artists: ``node-NAME`` (a text whose box is
the node), ``fault-FROM-TO`` (a propagation arrow, in the fault's direction) and
``call-CALLER-CALLEE``.
"""
from __future__ import annotations

import json
import random
import re
import struct
import xml.etree.ElementTree as ET
from itertools import combinations
from pathlib import Path

import matplotlib
import networkx as nx
import pytest

from correlators.records import Evidence, Incident, RootCause
from remediators.picture import draw_incident, draw_topology, picture_format, render_incident
from streams import codec
from streams.cli import main as aiops
from streams.config import load_topology
from streams.knowledge_cli import write_pictures

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topology.yaml"
TRAIN_TICKET = REPO / "evaluation" / "topologies" / "train-ticket-observed.yaml"
SVG = "{http://www.w3.org/2000/svg}"
RED, PINK, YELLOW, GREY = "#d62728", "#ff9896", "#ffe08a", "#f4f4f4"


def _ev(series: str, host: str | None = None) -> Evidence:
    return Evidence(series=series, metric=series.split("/", 1)[1], score=0.99, value=0.9, expected=0.2,
                    at=1767228310.0, labels=(("host.name", host),) if host else ())


# The flash-sale incident: orders-db saturates, the fault climbs orders -> checkout -> frontend;
# payment-gateway is a second candidate; catalog-db alerts too.
INCIDENT = Incident(
    id="inc-79ad8ff5ba74", version=3, status="resolved", reason="resolved", opened_at=1767228384.0,
    updated_at=1767229500.0, resolved_at=1767229500.0,
    title="orders-db saturated: orders-db -> orders -> checkout -> frontend", priority="P1", severity="critical",
    services=("catalog-db", "checkout", "frontend", "orders", "orders-db", "payment-gateway", "payments"),
    alert_count=28, firing_count=0, fingerprints=(),
    root_causes=(
        RootCause("orders-db", 0.2, "saturation", ("orders-db", "orders", "checkout", "frontend"),
                  (_ev("orders-db/db.client.connections.utilization"), _ev("orders-db/process.cpu.utilization"))),
        RootCause("payment-gateway", 0.19, "resource", ("payment-gateway", "payments", "checkout", "frontend"),
                  (_ev("payment-gateway/process.cpu.utilization", "gw-2"),)),
    ),
)
RECORD = codec.incident_dict(INCIDENT)
PATH = list(INCIDENT.root_causes[0].path)


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return load_topology(TOPOLOGY).graph()


@pytest.fixture(scope="module")
def svg(graph) -> bytes:
    return draw_incident(RECORD, graph)


def _style(el: ET.Element) -> dict[str, str]:
    return dict(kv.split(": ", 1) for kv in el.get("style", "").split("; ") if ": " in kv)


def _groups(svg: bytes) -> dict[str, ET.Element]:
    return {g.get("id"): g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("id")}


def _paths(group: ET.Element) -> list[ET.Element]:
    return list(group.iter(f"{SVG}path"))


def _points(path: ET.Element) -> list[tuple[float, float]]:
    nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", path.get("d", ""))]
    return list(zip(nums[::2], nums[1::2]))


def _box(group: ET.Element) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a node's box: the first path in its group."""
    pts = _points(_paths(group)[0])
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def _node_ids(groups) -> set[str]:
    return {i.removeprefix("node-") for i in groups if i.startswith("node-")}


def test_svg_is_xml_with_every_affected_service_and_its_neighbours(svg, graph):
    groups = _groups(svg)
    involved = set(INCIDENT.services) | set(PATH)
    neighbours = {n for s in involved for n in nx.all_neighbors(graph, s)} - involved
    assert neighbours == {"catalog", "card-network"}
    assert _node_ids(groups) == involved | neighbours  # log-host, unrelated, is not drawn
    text = svg.decode()
    for name in involved | neighbours:  # matplotlib writes each text line as a comment before its glyphs
        assert f"<!-- {name} -->" in text
    assert "<!-- root cause: saturation -->" in text
    assert "<!-- candidate #2: resource -->" in text
    assert "<!-- process.cpu.utilization (gw-2) -->" in text  # the alerting metric, with its node
    assert "<!-- db.client.connections.utilization -->" in text


def test_nodes_are_coloured_by_their_part_in_the_incident(svg):
    groups = _groups(svg)
    fill = {n: _style(_paths(groups[f"node-{n}"])[0]) for n in _node_ids(groups)}
    assert fill["orders-db"]["fill"] == RED
    assert float(fill["orders-db"]["stroke-width"]) > float(fill["orders"]["stroke-width"])
    assert {n for n, s in fill.items() if s["fill"] == PINK} == {"orders", "checkout", "frontend"}
    assert {n for n, s in fill.items() if s["fill"] == YELLOW} == {"catalog-db", "payments", "payment-gateway"}
    assert {n for n, s in fill.items() if s["fill"] == GREY} == {"catalog", "card-network"}
    dashed = {n for n, s in fill.items() if "stroke-dasharray" in s}
    assert dashed == {"card-network"}  # external: no telemetry


def test_the_propagation_path_is_thick_red_arrows_in_the_direction_the_fault_travelled(svg):
    groups = _groups(svg)
    boxes = {n: _box(groups[f"node-{n}"]) for n in _node_ids(groups)}

    def centre(n):
        x0, y0, x1, y1 = boxes[n]
        return (x0 + x1) / 2, (y0 + y1) / 2

    for a, b in zip(PATH, PATH[1:]):
        line, head = _paths(groups[f"fault-{a}-{b}"])
        assert _style(line)["stroke"] == RED and float(_style(line)["stroke-width"]) >= 3
        tip = _points(head)[1]  # the arrowhead's point
        da, db = (((tip[0] - c[0]) ** 2 + (tip[1] - c[1]) ** 2) ** 0.5 for c in (centre(a), centre(b)))
        assert db < da, f"the arrow {a} -> {b} points the wrong way"
        x0, y0, x1, y1 = boxes[b]  # and it touches b's box: it neither stops short nor runs under it
        gap = max(x0 - tip[0], tip[0] - x1, y0 - tip[1], tip[1] - y1)
        assert 0 < gap < 6, (a, b, gap)
        assert f"call-{b}-{a}" not in groups  # the call it travelled against is drawn once, as the fault
    calls = [g for i, g in groups.items() if i.startswith("call-")]
    assert {i for i in groups if i.startswith("call-")} >= {"call-frontend-catalog", "call-checkout-payments",
                                                             "call-payment-gateway-card-network"}
    assert all(float(_style(_paths(g)[0])["stroke-width"]) < 3 and _style(_paths(g)[0])["stroke"] != RED
               for g in calls)


def test_same_incident_gives_the_same_bytes_whatever_the_local_matplotlib_settings(svg, graph):
    with matplotlib.rc_context({"font.size": 20, "svg.hashsalt": None, "lines.linewidth": 4,
                                "axes.facecolor": "black", "svg.fonttype": "none"}):
        again = draw_incident(RECORD, graph)
    assert again == svg
    assert b"<dc:date>" not in svg
    assert draw_incident(RECORD, graph, fmt="png") == draw_incident(RECORD, graph, fmt="png")


def test_the_record_and_the_dataclass_draw_the_same_picture(svg, graph):
    assert draw_incident(INCIDENT, graph) == svg


def test_png_is_a_png_of_a_readable_size(graph):
    png = draw_incident(RECORD, graph, fmt="png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert 1000 < width < 4000 and 300 < height < 2000, (width, height)
    assert len(png) > 20_000


def test_without_a_graph_the_path_and_alerting_services_are_drawn(graph):
    groups = _groups(draw_incident(RECORD, None))
    assert _node_ids(groups) == set(INCIDENT.services) | set(PATH)
    assert {i for i in groups if i.startswith("fault-")} == {f"fault-{a}-{b}" for a, b in zip(PATH, PATH[1:])}
    assert not any(i.startswith("call-") for i in groups)


def test_calls_between_two_unaffected_neighbours_are_left_out():
    g = nx.DiGraph([("web", "api"), ("web", "cache"), ("api", "db"), ("api", "cache"), ("cache", "disk")])
    inc = {"id": "inc-1", "services": ["api", "db"],
           "root_causes": [{"service": "db", "kind": "latency", "path": ["db", "api"]}]}
    groups = _groups(draw_incident(inc, g))
    assert _node_ids(groups) == {"web", "api", "db", "cache"}  # disk is two hops away
    assert {i for i in groups if i.startswith(("call-", "fault-"))} == {"call-web-api", "call-api-cache", "fault-db-api"}


@pytest.mark.parametrize("topology", [TOPOLOGY, TRAIN_TICKET], ids=["demo", "train-ticket-28"])
def test_topology_picture_has_every_service_and_no_two_boxes_overlap(topology):
    g = load_topology(topology).graph()
    svg = draw_topology(g)
    root = ET.fromstring(svg)
    groups = _groups(svg)
    assert _node_ids(groups) == set(g.nodes)
    assert {i for i in groups if i.startswith("call-") and not re.search(r"-part\d+$", i)} == {
        f"call-{u}-{v}" for u, v in g.edges}
    boxes = {n: _box(groups[f"node-{n}"]) for n in g.nodes}
    for (a, ba), (b, bb) in combinations(sorted(boxes.items()), 2):
        apart = ba[2] + 4 <= bb[0] or bb[2] + 4 <= ba[0] or ba[3] + 4 <= bb[1] or bb[3] + 4 <= ba[1]
        assert apart, f"{a} and {b} overlap"
    _, _, w, h = (float(x) for x in root.get("viewBox").split())
    assert all(0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h for x0, y0, x1, y1 in boxes.values())


def test_format_comes_from_the_suffix_and_unknown_formats_are_refused(tmp_path):
    assert picture_format(tmp_path / "a.svg") == "svg"
    with pytest.raises(ValueError, match=r"^x\.jpg: picture format must be one of svg, png \(got 'jpg'\)$"):
        picture_format("x.jpg")
    with pytest.raises(ValueError, match=r"^picture format must be one of svg, png \(got 'pdf'\)$"):
        draw_topology(nx.DiGraph([("a", "b")]), fmt="pdf")
    out = render_incident(RECORD, None, tmp_path / "inc.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


# --- the CLI -------------------------------------------------------------------------------

def _write_versions(path: Path) -> None:
    """v1 blames payment-gateway; v2, the last word, blames orders-db."""
    v1 = dict(RECORD, version=1, status="open", reason="opened", resolved_at=None,
              title="payment-gateway resource", root_causes=RECORD["root_causes"][::-1])
    v2 = dict(RECORD, version=2)
    path.write_text("\n".join(json.dumps(r) for r in (v2, v1)) + "\n")  # order on disk does not matter


def test_report_writes_svg_and_png_of_the_last_version_and_still_the_markdown(tmp_path, capsys):
    incidents = tmp_path / "incidents.jsonl"
    _write_versions(incidents)
    svg, png = tmp_path / "inc.svg", tmp_path / "inc.png"
    assert aiops(["report", RECORD["id"], "--topology", str(TOPOLOGY), "--incidents", str(incidents),
                  "--no-runbooks", "--svg", str(svg), "--png", str(png)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# Incident {RECORD['id']}") and "```mermaid" in out
    assert f"wrote the picture of {RECORD['id']} v2 to {svg}" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    groups = _groups(svg.read_bytes())
    assert _style(_paths(groups["node-orders-db"])[0])["fill"] == RED  # v2's root cause, not v1's
    assert "fault-orders-db-orders" in groups and "fault-payment-gateway-payments" not in groups


def test_report_names_a_picture_it_cannot_write(tmp_path, capsys):
    incidents = tmp_path / "incidents.jsonl"
    _write_versions(incidents)
    bad = tmp_path / "missing" / "inc.svg"
    assert aiops(["report", RECORD["id"], "--topology", str(TOPOLOGY), "--incidents", str(incidents),
                  "--no-runbooks", "--out", str(tmp_path / "r.md"), "--svg", str(bad)]) == 2
    assert f"aiops report: cannot write {bad}: No such file or directory" in capsys.readouterr().err


def test_topology_show_draws_the_graph_and_still_prints_mermaid(tmp_path, capsys):
    svg, png = tmp_path / "topology.svg", tmp_path / "topology.png"
    assert aiops(["topology", "show", "--topology", str(TOPOLOGY), "--svg", str(svg), "--png", str(png)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("flowchart LR")
    assert f"wrote the topology picture to {svg}" in err
    assert _node_ids(_groups(svg.read_bytes())) == set(load_topology(TOPOLOGY).services)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_pictures_draws_each_incidents_last_version(tmp_path, graph):
    incidents = tmp_path / "incidents.jsonl"
    _write_versions(incidents)
    other = dict(RECORD, id="inc-000000000001", version=1, services=["log-host"],
                 root_causes=[{"service": "log-host", "kind": "saturation", "path": ["log-host"], "evidence": []}])
    with incidents.open("a") as f:
        f.write(json.dumps(other) + "\n")
    assert write_pictures(incidents, tmp_path / "pics", graph, quiet=True) == 2
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["inc-000000000001.svg", "inc-79ad8ff5ba74.svg"]
    assert (tmp_path / "pics" / "inc-79ad8ff5ba74.svg").read_bytes() == draw_incident(dict(RECORD, version=2), graph)


def test_replay_pictures_writes_one_svg_per_incident(tmp_path, capsys):
    """A saturating pool on orders-db, as native batches: one incident, one picture."""
    rnd = random.Random(1)
    lines = [json.dumps({"schema_version": 1, "service": "orders-db", "points": [
        ["db.client.connections.utilization", 1767225600 + 10 * i, 0.5 + rnd.uniform(-0.01, 0.01) if i < 90 else 0.99]]})
        for i in range(120)]
    telemetry = tmp_path / "telemetry.jsonl"
    telemetry.write_text("\n".join(lines) + "\n")
    out = tmp_path / "incidents.jsonl"
    assert aiops(["replay", "--topology", str(TOPOLOGY), "--input", str(telemetry), "--output", str(out),
                  "--drain", "--pictures", str(tmp_path / "pics")]) == 0
    ids = sorted({json.loads(line)["id"] for line in out.read_text().splitlines()})
    assert len(ids) == 1
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == [f"{ids[0]}.svg"]
    assert "wrote 1 incident picture to" in capsys.readouterr().err
    groups = _groups((tmp_path / "pics" / f"{ids[0]}.svg").read_bytes())
    assert _style(_paths(groups["node-orders-db"])[0])["fill"] == RED
