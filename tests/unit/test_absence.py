"""A service that goes silent while the rest keeps reporting."""
from detectors.absence import METRIC, AbsenceDetector


def feed(d, services, times, watermark_services=None):
    out = []
    for t in times:
        out += d.observe({s: t for s in services}, watermark=t)
    return out


def test_silence_fires_once_after_the_limit_and_resolves_on_return():
    d = AbsenceDetector(min_silence=60.0, factor=6.0, warmup_reports=5)
    assert feed(d, ["api", "db"], [10.0 * i for i in range(10)]) == []
    # db keeps reporting every 10 s, api stops after t=90
    alerts = feed(d, ["db"], [100.0 + 10 * i for i in range(10)])
    firing = [a for a in alerts if a.status == "firing"]
    assert [(a.service, a.metric, a.starts_at) for a in firing] == [("api", METRIC, 90.0)]
    assert firing[0].at == 160.0  # 70 s > max(60, 6 x 10 s)
    back = d.observe({"api": 200.0, "db": 200.0}, watermark=200.0)
    assert [(a.service, a.status) for a in back] == [("api", "resolved")]


def test_no_alert_during_warm_up_or_for_a_service_seen_once():
    d = AbsenceDetector(min_silence=60.0, warmup_reports=30)
    feed(d, ["api", "db"], [10.0 * i for i in range(5)])
    assert feed(d, ["db"], [100.0 + 10 * i for i in range(30)]) == []


def test_a_pipeline_pause_is_not_an_outage():
    # nobody reports for ten minutes: the watermark does not move, so nothing is silent relative to it
    d = AbsenceDetector(min_silence=60.0, warmup_reports=5)
    feed(d, ["api", "db"], [10.0 * i for i in range(10)])
    assert d.observe({}, watermark=90.0) == []
    assert feed(d, ["api", "db"], [700.0, 710.0]) == []


def test_redelivered_reports_change_nothing():
    d = AbsenceDetector(min_silence=60.0, warmup_reports=5)
    feed(d, ["api"], [10.0 * i for i in range(10)])
    assert d.observe({"api": 50.0}, watermark=90.0) == []
