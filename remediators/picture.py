"""Pictures of an incident's root cause and of the topology, as SVG or PNG.

:func:`draw_incident` draws the part of the dependency graph an incident touched: the root
cause (red, labelled "root cause"), the propagation path (pink nodes, thick red arrows in the
direction the fault travelled, from the cause up to the most upstream service), the other
alerting services (yellow), and their unaffected neighbours (grey) for context. External
services, which send no telemetry, have a dashed border. Each node is labelled with its name
and, where the record carries evidence for it, its most anomalous metrics.
:func:`draw_topology` draws the whole graph. Both return the file's bytes; :func:`render_incident`
and :func:`render_topology` write them.

The drawing is networkx's (``draw_networkx_labels`` for the nodes, ``draw_networkx_edges`` for
the arrows) on a matplotlib figure rendered by Agg (PNG) or the SVG backend. Matplotlib is
imported on the first picture, so nothing else pays for it. The layout is deterministic and
layered by call depth: callers on the left, the services they call to their right, each column
ordered to reduce crossings. The same input always gives the same bytes: the SVG hash salt is
fixed, no date is written and matplotlib's defaults are used whatever the local matplotlibrc says.

Every SVG node is a group with ``id="node-NAME"``; edges are ``id="call-CALLER-CALLEE"`` and
``id="fault-FROM-TO"`` (propagation, in the fault's direction), so the file can be inspected or
styled by id.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from remediators.report import PALETTE

FORMATS = ("svg", "png")
HASH_SALT = "aiops"  # a fixed svg.hashsalt makes matplotlib's generated SVG ids reproducible
PNG_DPI = 144
FONT = 9.0  # points
SMALL_FONT = 8.0
PAD = 0.5  # box padding, in font sizes
COL_GAP = 64.0  # points between the widest boxes of neighbouring columns: room for an arrow
ROW_GAP = 16.0
MARGIN = 18.0
MAX_METRICS = 2  # metric lines under a node's name
MAX_METRIC_CHARS = 34

# role -> (fill, border, text colour, border width, font weight)
STYLES: dict[str, tuple[str, str, str, float, str]] = {
    "root": (PALETTE["rootcause"][0], PALETTE["rootcause"][1], "#ffffff", 2.5, "bold"),
    "path": (PALETTE["path"][0], PALETTE["path"][1], "#000000", 1.8, "normal"),
    "affected": (PALETTE["affected"][0], PALETTE["affected"][1], "#000000", 1.2, "normal"),
    "neighbour": ("#f4f4f4", "#b4b4b4", "#7a7a7a", 0.8, "normal"),
    "plain": ("#dbe9f6", "#4a7ab5", "#000000", 1.0, "normal"),
}
LEGEND = {"root": "root cause", "path": "propagation path", "affected": "alerting or candidate",
          "neighbour": "not alerting (neighbour)"}
FAULT_COLOUR = PALETTE["rootcause"][0]
CALL_COLOUR = "#7f7f7f"
QUIET_CALL_COLOUR = "#c8c8c8"
# kind -> matplotlib box style: datastores and queues are told apart from services by shape
SHAPES = {"service": "round", "datastore": "round4", "queue": "roundtooth", "gateway": "square",
          "host": "square", "external": "round"}
ARC_RADII = (0.0, 0.2, -0.2, 0.35, -0.35)


@dataclass(frozen=True)
class _Cause:
    service: str
    kind: str
    path: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]  # (service the series belongs to, short metric text)


@dataclass(frozen=True)
class _Node:
    name: str
    role: str
    kind: str
    label: str
    external: bool
    entrypoint: bool = False


@dataclass
class _Box:
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    layer: int = 0


@dataclass(frozen=True)
class _Route:
    kind: str  # "call" | "fault"
    u: str
    v: str
    chain: list[str]  # u, the dummy nodes it passes, v
    rad: float  # the arc's curvature when it is a single segment


@dataclass
class _Scene:
    title: str
    nodes: list[_Node]
    calls: list[tuple[str, str]]  # caller -> callee, drawn thin
    faults: list[tuple[str, str]]  # the propagation path, in the fault's direction
    boxes: dict[str, _Box] = field(default_factory=dict)  # every node's and dummy node's
    routes: list[_Route] = field(default_factory=list)


# --- reading the incident ----------------------------------------------------------------------

def _get(obj: Any, key: str, default: Any = None) -> Any:
    """A field of a wire record (mapping) or of a :mod:`correlators.records` dataclass."""
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _short_metric(evidence: Any) -> tuple[str, str]:
    """(service of the series, ``metric (host)``), the metric shortened to fit under a node."""
    series = str(_get(evidence, "series", ""))
    metric = str(_get(evidence, "metric", "")) or series.split("/", 1)[-1]
    labels = dict(_get(evidence, "labels", ()) or ())
    where = labels.get("host.name") or labels.get("mountpoint")
    text = metric if len(metric) <= MAX_METRIC_CHARS else metric[:MAX_METRIC_CHARS - 1] + "…"
    return series.split("/", 1)[0], f"{text} ({where})" if where else text


def _causes(incident: Any) -> list[_Cause]:
    out = []
    for rc in _get(incident, "root_causes", ()) or ():
        out.append(_Cause(str(_get(rc, "service")), str(_get(rc, "kind", "")),
                          tuple(_get(rc, "path", ()) or ()),
                          tuple(_short_metric(e) for e in _get(rc, "evidence", ()) or ())))
    return out


def _metric_lines(service: str, causes: Sequence[_Cause]) -> list[str]:
    """The first distinct anomalous metrics of ``service`` in ranking order, at most two lines."""
    seen: list[str] = []
    for c in causes:
        for svc, text in c.metrics:
            if svc == service and text not in seen:
                seen.append(text)
    if len(seen) > MAX_METRICS:
        return seen[:MAX_METRICS - 1] + [f"{seen[MAX_METRICS - 1]}, +{len(seen) - MAX_METRICS} more"]
    return seen


def _kind(graph: nx.DiGraph, name: str) -> str:
    return (graph.nodes[name].get("kind") if name in graph else None) or "service"


def _incident_scene(incident: Any, graph: nx.DiGraph | None) -> _Scene:
    causes = _causes(incident)
    top = causes[0] if causes else None
    path = list(top.path) if top else []
    if top and (not path or path[0] != top.service):
        path = [top.service] + path
    fault_edges = [(path[i], path[i + 1]) for i in range(len(path) - 1)]
    if graph is None:  # no topology: the path is all that is known
        graph = nx.DiGraph([(b, a) for a, b in fault_edges])
        graph.add_nodes_from(path)
    services = [str(s) for s in _get(incident, "services", ()) or ()]
    involved = set(services) | set(path) | {c.service for c in causes}
    neighbours = set()
    for n in involved:
        if n in graph:
            neighbours |= set(graph.predecessors(n)) | set(graph.successors(n))
    neighbours -= involved
    shown = involved | neighbours
    rank = {}
    for i, c in enumerate(causes, 1):
        rank.setdefault(c.service, (i, c.kind))

    nodes = []
    for name in sorted(shown):
        kind = _kind(graph, name)
        if top and name == top.service:
            role = "root"
        elif name in path:
            role = "path"
        elif name in involved:
            role = "affected"
        else:
            role = "neighbour"
        lines = [name]
        if role == "root":
            lines.append(f"root cause: {top.kind}" if top.kind else "root cause")
        elif name in rank:
            lines.append(f"candidate #{rank[name][0]}: {rank[name][1]}")
        if role != "neighbour":
            lines += _metric_lines(name, causes)
        nodes.append(_Node(name, role, kind, "\n".join(lines), kind == "external"))

    faults = set(fault_edges)
    # Calls between two bystanders say nothing about the incident and clutter a dense graph.
    calls = sorted({(u, v) for u, v in graph.edges if u in shown and v in shown and u != v
                    and (u in involved or v in involved) and (v, u) not in faults})
    version = _get(incident, "version")
    head = " ".join(str(x) for x in (_get(incident, "id", "incident"), f"v{version}" if version else None,
                                      f"[{_get(incident, 'priority')}]" if _get(incident, "priority") else None)
                    if x)
    title = f"{head}: {_get(incident, 'title')}" if _get(incident, "title") else head
    status = _get(incident, "status")
    if status:
        title += f"\n{status}, {len(services)} alerting service{'' if len(services) == 1 else 's'}"
        if top:
            title += f", root cause {top.service}"
    return _Scene(title, nodes, calls, fault_edges)


def _topology_scene(graph: nx.DiGraph, title: str | None) -> _Scene:
    nodes = []
    for name in sorted(graph.nodes):
        attrs = graph.nodes[name]
        kind = attrs.get("kind") or "service"
        extra = [kind] if kind != "service" else []
        if attrs.get("entrypoint"):
            extra.append("entry point")
        label = name + (f"\n{', '.join(extra)}" if extra else "")
        nodes.append(_Node(name, "plain", kind, label, kind == "external", bool(attrs.get("entrypoint"))))
    calls = sorted((u, v) for u, v in graph.edges if u != v)
    n, m = graph.number_of_nodes(), len(calls)
    default = f"topology: {n} service{'' if n == 1 else 's'}, {m} dependenc{'y' if m == 1 else 'ies'}"
    return _Scene(title if title is not None else default, nodes, calls, [])


# --- layout ---------------------------------------------------------------------------------

def _layers(names: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering of the call graph: callers left of what they call. A cycle's
    services share a layer (on the condensation, which is acyclic)."""
    g = nx.DiGraph()
    g.add_nodes_from(sorted(names))
    g.add_edges_from(sorted(edges))
    cond = nx.condensation(g)
    depth: dict[int, int] = {}
    for c in nx.lexicographical_topological_sort(cond, key=lambda c: min(cond.nodes[c]["members"])):
        depth[c] = max((depth[p] + 1 for p in cond.predecessors(c)), default=0)
    return {n: depth[cond.graph["mapping"][n]] for n in g.nodes}


def _order(layers: Mapping[str, int], edges: Sequence[tuple[str, str]], sweeps: int = 8) -> list[list[str]]:
    """Nodes of each column, ordered by the barycentre heuristic to reduce crossings. Every
    edge joins neighbouring columns (long edges run through dummy nodes)."""
    cols: list[list[str]] = [[] for _ in range(max(layers.values(), default=-1) + 1)]
    for n in sorted(layers):
        cols[layers[n]].append(n)
    left: dict[str, list[str]] = {n: [] for n in layers}
    right: dict[str, list[str]] = {n: [] for n in layers}
    for u, v in edges:
        if layers[u] + 1 == layers[v]:
            left[v].append(u)
            right[u].append(v)

    for sweep in range(sweeps):
        down = sweep % 2 == 0
        for li in (range(1, len(cols)) if down else range(len(cols) - 2, -1, -1)):
            y = {n: i - (len(col) - 1) / 2 for col in cols for i, n in enumerate(col)}
            nbrs = left if down else right

            def key(item: tuple[int, str]) -> tuple[float, int]:
                i, n = item
                ys = [y[m] for m in nbrs[n]]
                return (sum(ys) / len(ys) if ys else y[n], i)

            cols[li] = [n for _, n in sorted(enumerate(cols[li]), key=key)]
    return cols


def _dummy(a: str, b: str, layer: int) -> str:
    return f"\0{a}\0{b}\0{layer}"  # NUL never occurs in a service name from YAML


def _place(scene: _Scene, sizes: Mapping[str, tuple[float, float]]) -> None:
    """Boxes for every node and routes for every edge, in points with y up.

    Long edges get a dummy node in every column they cross, so they are routed between the
    boxes instead of through them (the usual layered, Sugiyama-style drawing).
    """
    call_edges = sorted(set(scene.calls) | {(b, a) for a, b in scene.faults})  # lay out by call direction
    layers = _layers(sizes, call_edges)
    chains: dict[tuple[str, str], list[str]] = {}
    order_edges: list[tuple[str, str]] = []
    all_layers = dict(layers)
    for a, b in call_edges:
        between = range(layers[a] + 1, layers[b])
        all_layers.update({_dummy(a, b, li): li for li in between})
        chain = [a] + [_dummy(a, b, li) for li in between] + [b]
        chains[(a, b)] = chain
        order_edges += list(zip(chain, chain[1:]))
    cols = _order(all_layers, order_edges)
    size = {n: sizes.get(n, (0.0, 0.0)) for n in all_layers}
    widths = [max(size[n][0] for n in col) for col in cols]
    heights = [sum(size[n][1] for n in col) + ROW_GAP * (len(col) - 1) for col in cols]
    height = max(heights, default=0.0)
    x = 0.0
    for ci, col in enumerate(cols):
        cx = x + widths[ci] / 2
        y = (height + heights[ci]) / 2  # columns are centred vertically
        for n in col:
            w, h = size[n]
            scene.boxes[n] = _Box(cx, y - h / 2, w, h, ci)
            y -= h + ROW_GAP
        x += widths[ci] + COL_GAP
    for kind, pairs in (("call", scene.calls), ("fault", scene.faults)):
        for u, v in pairs:
            chain = chains[(u, v)] if kind == "call" else chains[(v, u)][::-1]
            rad = _arc(scene, u, v) if len(chain) == 2 else 0.0
            scene.routes.append(_Route(kind, u, v, chain, rad))


def _bezier(a: _Box, b: _Box, rad: float, steps: int = 24) -> list[tuple[float, float]]:
    """Points of matplotlib's ``arc3`` connection from ``a`` to ``b`` (a quadratic Bézier)."""
    dx, dy = b.x - a.x, b.y - a.y
    cx, cy = (a.x + b.x) / 2 + rad * dy, (a.y + b.y) / 2 - rad * dx
    pts = []
    for i in range(1, steps):
        t = i / steps
        pts.append(((1 - t) ** 2 * a.x + 2 * (1 - t) * t * cx + t * t * b.x,
                    (1 - t) ** 2 * a.y + 2 * (1 - t) * t * cy + t * t * b.y))
    return pts


def _hits(pts: Iterable[tuple[float, float]], boxes: Iterable[_Box], pad: float = 4.0) -> int:
    return sum(1 for bx in boxes
               if any(abs(px - bx.x) <= bx.w / 2 + pad and abs(py - bx.y) <= bx.h / 2 + pad for px, py in pts))


def _arc(scene: _Scene, u: str, v: str) -> float:
    """The first curvature whose arrow from ``u`` to ``v`` crosses no other node's box (else the
    one that crosses fewest); mutual calls bend apart."""
    a, b = scene.boxes[u], scene.boxes[v]
    others = [bx for n, bx in scene.boxes.items() if n not in (u, v) and bx.w > 0]
    mutual = (v, u) in set(scene.calls) | set(scene.faults)
    best, best_hits = ARC_RADII[0], None
    for rad in ARC_RADII:
        if mutual and rad == 0.0:
            continue
        pts = _bezier(a, b, rad)
        n = _hits(pts, others)
        if n == 0:
            return rad
        if best_hits is None or n < best_hits:
            best, best_hits = rad, n
    return best


def _margin(box: _Box, vx: float, vy: float) -> float:
    """Distance from a box's centre to its border along (vx, vy), plus a hair: where the arrow
    must start or end so it touches the box instead of running under it. None for a dummy."""
    if box.w == 0:
        return 0.0
    norm = math.hypot(vx, vy) or 1.0
    ux, uy = abs(vx) / norm, abs(vy) / norm
    t = min(box.w / 2 / ux if ux > 1e-9 else math.inf, box.h / 2 / uy if uy > 1e-9 else math.inf)
    return t + 2.0


def _margins(a: _Box, b: _Box, rad: float) -> tuple[float, float]:
    dx, dy = b.x - a.x, b.y - a.y
    start = (dx / 2 + rad * dy, dy / 2 - rad * dx)  # tangents of arc3 at its ends
    end = (-dx / 2 + rad * dy, -dy / 2 - rad * dx)
    return _margin(a, *start), _margin(b, *end)


# --- drawing --------------------------------------------------------------------------------

def _rc() -> dict[str, Any]:
    return {"svg.hashsalt": HASH_SALT, "svg.fonttype": "path", "font.family": "DejaVu Sans",
            "font.size": FONT, "path.simplify": True}


def _draw(scene: _Scene, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise ValueError(f"picture format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # The "default" style ignores the local matplotlibrc, so every machine draws the same picture.
    with matplotlib.style.context("default"), matplotlib.rc_context(_rc()):
        # The layout is in points, measured with the renderer that will draw the file: Agg hints
        # glyphs at its resolution, the SVG backend writes unhinted outlines, and the two differ
        # by several per cent, enough for an arrow to stop short of a box.
        fig = Figure(figsize=(4, 3), dpi=PNG_DPI if fmt == "png" else 72)
        canvas = FigureCanvasAgg(fig)
        if fmt == "svg":
            from matplotlib.backends.backend_svg import RendererSVG
            renderer = RendererSVG(288, 216, io.StringIO())
        else:
            renderer = canvas.get_renderer()
        px = fig.dpi / 72  # pixels per point
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()

        by_name = {n.name: n for n in scene.nodes}

        def font(node: _Node) -> tuple[float, str]:
            return (SMALL_FONT if node.role == "neighbour" else FONT), STYLES[node.role][4]

        sizes: dict[str, tuple[float, float]] = {}
        for node in scene.nodes:
            size, weight = font(node)
            t = ax.text(0, 0, node.label, fontsize=size, fontweight=weight, ha="center", va="center")
            ext = t.get_window_extent(renderer)
            t.remove()
            sizes[node.name] = (ext.width / px + 2 * PAD * size, ext.height / px + 2 * PAD * size)
        _place(scene, sizes)
        xs: list[float] = []
        ys: list[float] = []
        for bx in scene.boxes.values():
            xs += [bx.x - bx.w / 2, bx.x + bx.w / 2]
            ys += [bx.y - bx.h / 2, bx.y + bx.h / 2]
        for r in scene.routes:  # a bent arrow may leave the boxes' hull
            if r.rad:
                pts = _bezier(scene.boxes[r.u], scene.boxes[r.v], r.rad)
                xs += [p[0] for p in pts]
                ys += [p[1] for p in pts]
        x0, y0 = min(xs, default=0.0), min(ys, default=0.0)
        width, height = max(xs, default=0.0) - x0, max(ys, default=0.0) - y0

        title = ax.text(0, 0, scene.title, fontsize=FONT + 1, fontweight="bold", ha="left", va="top",
                        linespacing=1.4)
        ext = title.get_window_extent(renderer)
        title_w, title_h = ext.width / px, ext.height / px

        handles = []
        roles = {n.role for n in scene.nodes}
        for role, text in LEGEND.items():
            if role in roles:
                fill, edge, _, lw, _ = STYLES[role]
                handles.append(Patch(facecolor=fill, edgecolor=edge, linewidth=lw, label=text))
        if any(n.external for n in scene.nodes):
            handles.append(Patch(facecolor="#ffffff", edgecolor="#555555", linestyle="--", label="external (no telemetry)"))
        if scene.faults:
            handles.append(Line2D([], [], color=FAULT_COLOUR, linewidth=3, marker=">", markersize=6,
                                  label="fault propagation"))
        if scene.calls:
            handles.append(Line2D([], [], color=CALL_COLOUR, linewidth=1, marker=">", markersize=4,
                                  label="calls (caller → callee)"))
        legend = None
        legend_w = legend_h = 0.0
        if handles:
            for ncols in range(len(handles), 0, -1):
                legend = ax.legend(handles=handles, ncols=ncols, frameon=False, fontsize=SMALL_FONT,
                                   loc="lower center", handlelength=2.2, columnspacing=1.6)
                ext = legend.get_window_extent(renderer)
                legend_w, legend_h = ext.width / px, ext.height / px
                if legend_w <= max(width, title_w, 420.0) or ncols == 1:
                    break

        inner = max(width, title_w, legend_w)
        fig_w = inner + 2 * MARGIN
        top_band = title_h + 14.0
        bottom_band = legend_h + 10.0 if legend is not None else 0.0
        fig_h = height + top_band + bottom_band + 2 * MARGIN
        fig.set_size_inches(fig_w / 72, fig_h / 72)
        ax.set_xlim(0, fig_w)
        ax.set_ylim(0, fig_h)
        ax.set_autoscale_on(False)  # networkx autoscales after drawing; one data unit must stay one point
        dx = MARGIN + (inner - width) / 2 - x0
        dy = MARGIN + bottom_band - y0
        for box in scene.boxes.values():
            box.x += dx
            box.y += dy
        title.set_position((MARGIN, fig_h - MARGIN))
        if legend is not None:
            legend.set_bbox_to_anchor((fig_w / 2, MARGIN), transform=ax.transData)

        pos = {n: (b.x, b.y) for n, b in scene.boxes.items()}
        graph = nx.DiGraph()
        graph.add_nodes_from(pos)

        for r in scene.routes:
            quiet = by_name[r.u].role == "neighbour" or by_name[r.v].role == "neighbour"
            if r.kind == "fault":
                style: dict[str, Any] = {"edge_color": FAULT_COLOUR, "width": 3.0, "arrowsize": 16}
            else:
                style = {"edge_color": QUIET_CALL_COLOUR if quiet else CALL_COLOUR, "width": 0.8 if quiet else 1.1,
                         "arrowsize": 9}
            dashed = by_name[r.u].external or by_name[r.v].external
            segments = list(zip(r.chain, r.chain[1:]))
            for i, (a, b) in enumerate(segments, 1):
                last = i == len(segments)
                src, dst = _margins(scene.boxes[a], scene.boxes[b], r.rad)
                patches = nx.draw_networkx_edges(
                    graph, pos, edgelist=[(a, b)], ax=ax, arrows=True, arrowstyle="-|>" if last else "-",
                    node_size=0, style="--" if dashed else "-", connectionstyle=f"arc3,rad={r.rad}",
                    min_source_margin=src, min_target_margin=dst, **style)
                for patch in patches:
                    patch.set_gid(f"{r.kind}-{r.u}-{r.v}" if last else f"{r.kind}-{r.u}-{r.v}-part{i}")
                    patch.set_capstyle("round")  # joins the pieces of a long edge without notches
                    patch.set_zorder(2 if r.kind == "fault" else 1)

        groups: dict[tuple[str, str, bool, bool], list[_Node]] = {}
        for node in scene.nodes:
            groups.setdefault((node.role, node.kind, node.external, node.entrypoint), []).append(node)
        for (role, kind, external, entry), members in sorted(groups.items()):
            fill, edge, colour, lw, weight = STYLES[role]
            size = SMALL_FONT if role == "neighbour" else FONT
            bbox = {"boxstyle": f"{SHAPES.get(kind, 'round')},pad={PAD}", "facecolor": fill, "edgecolor": edge,
                    "linewidth": lw * (1.8 if entry else 1.0), "linestyle": "--" if external else "-"}
            texts = nx.draw_networkx_labels(graph, pos, labels={n.name: n.label for n in members}, ax=ax,
                                            font_size=size, font_color=colour, font_weight=weight, bbox=bbox)
            for name, t in texts.items():
                t.set_gid(f"node-{name}")
                t.set_zorder(3)  # above the arrows

        buf = io.BytesIO()
        if fmt == "svg":
            fig.savefig(buf, format="svg", metadata={"Date": None})
        else:
            fig.savefig(buf, format="png", dpi=PNG_DPI)
        return buf.getvalue()


# --- public API -----------------------------------------------------------------------------

def draw_incident(incident: Any, graph: nx.DiGraph | None = None, *, fmt: str = "svg") -> bytes:
    """The picture of one incident's affected subgraph, as SVG or PNG bytes.

    Parameters
    ----------
    incident
        One version of the incident: a record as written on ``aiops.incidents`` (a mapping) or a
        :class:`correlators.records.Incident`. The top root cause and its path are highlighted;
        the other candidates are labelled with their rank.
    graph
        The call graph (edge ``u -> v``: ``u`` calls ``v``), e.g. ``Topology.graph()``; it is
        not modified. ``None`` draws only the propagation path.
    fmt
        ``"svg"`` or ``"png"``.

    Raises
    ------
    ValueError
        An unknown format.

    Examples
    --------
    >>> g = nx.DiGraph([("web", "api"), ("api", "db"), ("web", "search")])
    >>> inc = {"id": "inc-1", "version": 2, "title": "db saturated", "services": ["web", "api", "db"],
    ...        "root_causes": [{"service": "db", "kind": "saturation", "path": ["db", "api", "web"]}]}
    >>> svg = draw_incident(inc, g)
    >>> b'id="node-db"' in svg and b'id="fault-db-api"' in svg and b'id="call-web-search"' in svg
    True
    """
    return _draw(_incident_scene(incident, graph), fmt)


def draw_topology(graph: nx.DiGraph, *, fmt: str = "svg", title: str | None = None) -> bytes:
    """The picture of the whole call graph, as SVG or PNG bytes. Nodes are labelled with their
    kind (unless ``service``) and whether they are entry points; externals have dashed borders.

    Raises
    ------
    ValueError
        An unknown format.

    Examples
    --------
    >>> draw_topology(nx.DiGraph([("web", "db")]))[:5]
    b'<?xml'
    """
    return _draw(_topology_scene(graph, title), fmt)


def picture_format(path: Path | str, fmt: str | None = None) -> str:
    """``fmt`` if given, else the file's suffix.

    >>> picture_format("out/inc.PNG"), picture_format("x", "svg")
    ('png', 'svg')
    """
    f = (fmt or Path(path).suffix.lstrip(".")).lower()
    if f not in FORMATS:
        raise ValueError(f"{path}: picture format must be one of {', '.join(FORMATS)} (got {f or 'no suffix'!r})")
    return f


def render_incident(incident: Any, graph: nx.DiGraph | None, path: Path | str, fmt: str | None = None) -> Path:
    """Write :func:`draw_incident`'s picture to ``path`` (format from ``fmt`` or the suffix)."""
    out = Path(path)
    out.write_bytes(draw_incident(incident, graph, fmt=picture_format(out, fmt)))
    return out


def render_topology(graph: nx.DiGraph, path: Path | str, fmt: str | None = None) -> Path:
    """Write :func:`draw_topology`'s picture to ``path`` (format from ``fmt`` or the suffix)."""
    out = Path(path)
    out.write_bytes(draw_topology(graph, fmt=picture_format(out, fmt)))
    return out


__all__ = ["FORMATS", "draw_incident", "draw_topology", "picture_format", "render_incident", "render_topology"]
