"""The compression the pipeline reports: anomalous points -> alerts -> incidents."""
import orjson
from prometheus_client import REGISTRY

from streams import metrics as m
from streams.config import parse_topology
from streams.pipeline import DetectStage

T0 = 1_767_225_600.0


def batch(t, value):
    return orjson.dumps({"schema_version": 1, "service": "api", "points": [["process.cpu.utilization", t, value]]})


def test_anomalous_points_are_counted_and_reach_the_metrics_page():
    stage = DetectStage(parse_topology({"services": {"api": {}}}))
    values = [0.3 + 0.01 * (i % 3) for i in range(60)] + [0.95] * 15  # 150 s: longer than fire_after
    results = [stage.process(batch(T0 + 10 * i, v)) for i, v in enumerate(values)]
    anomalous = sum(r.anomalous_points for r in results)
    assert anomalous >= 2 and stage.stats["anomalous_points"] == anomalous
    fired = sum(1 for r in results for e in r.events if getattr(e, "status", "") == "firing")
    assert 1 <= fired < anomalous  # hysteresis: several anomalous points make one alert
    m.observe_compression(stage.stats, {"alerts": fired, "incidents": 1})
    got = REGISTRY.get_sample_value("aiops_compression_ratio", {"stage": "anomalous_points_per_alert"})
    assert got == anomalous / fired
