"""The Grafana dashboard in docker/grafana cannot drift from the metrics the code registers.

Every PromQL expression may only name metrics that a module registers with prometheus_client
(read from the registry, not from a list kept here), and every metric ``streams.metrics``
registers has a panel. The provisioning files and the compose mounts must agree on paths."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import streams.app  # noqa: F401 - every module that may register metrics is imported
import streams.delivery  # noqa: F401
import streams.executors  # noqa: F401
import streams.metrics  # noqa: F401
import streams.pipeline  # noqa: F401

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "aiops.json"

# PromQL's functions, aggregations and keywords (https://prometheus.io/docs/prometheus/latest/querying/).
PROMQL_WORDS = frozenset("""
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week day_of_year
    days_in_month delta deriv exp floor histogram_count histogram_sum histogram_fraction histogram_quantile
    histogram_avg histogram_stddev histogram_stdvar holt_winters double_exponential_smoothing hour idelta
    increase irate label_join label_replace ln log2 log10 minute month predict_linear rate resets round
    scalar sgn sort sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector year
    avg_over_time min_over_time max_over_time sum_over_time count_over_time quantile_over_time
    stddev_over_time stdvar_over_time last_over_time present_over_time
    by without on ignoring group_left group_right bool offset and or unless inf nan
""".split())


def series_of(fam) -> set[str]:
    """The sample names a metric family exposes, whether or not it has a value yet."""
    if fam.type == "counter":
        return {fam.name + "_total", fam.name + "_created"}
    if fam.type in ("histogram", "gaugehistogram"):
        return {fam.name + s for s in ("_bucket", "_count", "_sum", "_created")}
    if fam.type == "summary":
        return {fam.name, fam.name + "_count", fam.name + "_sum", fam.name + "_created"}
    return {fam.name}


def registered_series() -> set[str]:
    return {name for fam in REGISTRY.collect() for name in series_of(fam)}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping clauses, numbers, functions and keywords are taken out. Raises on a word
    it cannot place, so a typo in a function name fails as loudly as one in a metric name."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", e):
        word, rest = m.group(0), e[m.end():].lstrip()
        if word in PROMQL_WORDS:
            continue
        if rest.startswith("("):
            raise AssertionError(f"{expr!r}: unknown PromQL function {word!r}")
        names.add(word)
    return names


def test_the_expression_parser_finds_metric_names_and_only_them():
    assert metric_names('sum by (le) (increase(aiops_anomaly_score_bucket{job=~"$job",le!="0.5"}[$__rate_interval]))') \
        == {"aiops_anomaly_score_bucket"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) / on(job) b_total > 1e3") \
        == {"a_bucket", "b_total"}
    with pytest.raises(AssertionError, match="unknown PromQL function 'rat'"):
        metric_names("rat(aiops_input_points_total[1m])")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])  # a collapsed row holds its panels
    return out


def test_every_expression_names_only_registered_metrics():
    known = registered_series()
    unknown = {}
    for p in panels(load_dashboard()):
        for t in p.get("targets", []):
            missing = metric_names(t["expr"]) - known
            if missing:
                unknown[f"{p['title']} ({t['refId']})"] = sorted(missing)
    assert not unknown, f"the dashboard plots metrics nothing registers: {unknown}"


def test_every_aiops_metric_has_a_panel():
    plotted = {name for p in panels(load_dashboard()) for t in p.get("targets", []) for name in metric_names(t["expr"])}
    ours = [fam for fam in REGISTRY.collect() if fam.name.startswith("aiops_")]
    assert len(ours) >= 15, "streams.metrics registered fewer metrics than the README lists"
    unplotted = sorted(fam.name for fam in ours if not series_of(fam) & plotted)
    assert not unplotted, f"metrics with no panel in {DASHBOARD.name}: {unplotted}"


def test_dashboard_shape_for_grafana_10_and_11():
    dash = load_dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied = set()
    for p in panels(dash):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{p['title']}: wider than the 24-column grid"
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"{p['title']}: overlaps another panel"
        occupied |= cells
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]
            assert 'job=~"$job"' in t["expr"], f"{p['title']}: not filtered by the job variable"
    heatmaps = [p for p in panels(dash) if p["type"] == "heatmap"]
    assert heatmaps and all(t.get("format") == "heatmap" for p in heatmaps for t in p["targets"])


def test_provisioning_matches_the_compose_mounts():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/aiops.yaml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./grafana/dashboards"]]
    sources = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    [prom] = sources
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"] and "9090:9090" in compose["services"]["prometheus"]["ports"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{mounts['./grafana/dashboards']}/{DASHBOARD.name}"
