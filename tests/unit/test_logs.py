"""Log templates (drain3), per-template rates and log alerts: table-driven, no I/O."""
from __future__ import annotations

import pytest

from detectors.config import DetectorSettings
from detectors.logs import (NEW_TEMPLATE_METRIC, OTHER_TEMPLATE, TEMPLATE_RATE_METRIC, LogSettings,
                            LogTemplateDetector, mask, poisson_sf)
from detectors.records import LogRecord

W = 60.0
SETTINGS = DetectorSettings(warmup_points=5, fire_after="2m", resolve_after_points=2)


def rec(t: float, body: str, sev: int = 9, svc: str = "api", host: str | None = None) -> LogRecord:
    return LogRecord(svc, t, sev, body, (("host.name", host),) if host else ())


def calm(minutes: int, svc: str = "api", errors_every: int = 2) -> list[LogRecord]:
    """INFO lines every minute and a known error template every few minutes."""
    out = []
    for m in range(minutes):
        out.append(rec(m * W + 1, f"user {m} logged in from 10.0.0.{m % 250}", svc=svc))
        out.append(rec(m * W + 2, f"request id={m:08x}ab served in {m + 3}ms", svc=svc))
        if m % errors_every == 0:
            out.append(rec(m * W + 3, f"db timeout after {m + 10}ms conn=0x{m:x}", 17, svc=svc))
    return out


def template_points(det, records):
    out = det.add(records)
    return out, {p.series.labels[0][1]: p.value * W for p in out.template_points}


@pytest.mark.parametrize("line, masked", [
    ("user 42 logged in from 10.1.2.3:8080", "user <NUM> logged in from <IP>"),
    ("txn=8f3a2b91c0 failed", "txn=<HEX> failed"),
    ("trace 0xdeadbeef", "trace <HEX>"),
    ("id=3f2a6c1e-0b1d-4e8a-9c3f-5a6b7c8d9e0f done", "id=<UUID> done"),
    ("upstream reset node=gw-2 after 250ms", "upstream reset node=gw-2 after <NUM>"),
    ("cafe is open", "cafe is open"),  # a word of hex letters is not an id
])
def test_masking(line, masked):
    assert mask(line) == masked


def test_varied_lines_mine_into_few_templates_with_stable_ids():
    lines = calm(10)
    a, b = LogTemplateDetector(SETTINGS), LogTemplateDetector(SETTINGS)
    out_a = a.add(lines + [rec(11 * W, "tick")])
    out_b = b.add(list(reversed(lines)) + [rec(11 * W, "tick")])  # order within a batch does not matter
    ids_a = {p.series.labels for p in out_a.template_points}
    assert len(ids_a) == 3  # login, request served, db timeout
    assert ids_a == {p.series.labels for p in out_b.template_points}
    texts = {t.text for t in a._services["api"].templates.values()}
    assert "ERROR db timeout after <NUM> conn=<HEX>" in texts
    assert "INFO user <NUM> logged in from <IP>" in texts


def test_template_ids_derive_from_text_not_from_drain_counters():
    # Another process that saw other templates first still names the shared template the same.
    a, b = LogTemplateDetector(SETTINGS), LogTemplateDetector(SETTINGS)
    a.add([rec(1, "db timeout after 10ms conn=0x1", 17)])
    b.add([rec(1, "disk warning usage 91%", 13), rec(2, "cache miss key 7"), rec(3, "db timeout after 99ms conn=0xff", 17)])
    ids = lambda d: {t.id for t in d._services["api"].templates.values() if t.error}  # noqa: E731
    assert ids(a) == ids(b)


def test_template_cap_folds_the_rest_into_other():
    det = LogTemplateDetector(SETTINGS, LogSettings(max_templates=3))
    # Different lengths, so drain3 cannot merge them into one template.
    lines = [" ".join(["step"] * (i + 1)) + " done" for i in range(6)]
    out, counts = template_points(det, [rec(i, line, svc="api") for i, line in enumerate(lines)]
                                  + [rec(W + 1, "tick")])
    tids = {p.series.labels[0][1] for p in out.template_points}
    assert len(tids) == 4 and OTHER_TEMPLATE in tids
    assert sum(counts.values()) == 6


def test_rising_error_template_fires_then_resolves():
    det = LogTemplateDetector(SETTINGS)
    det.add(calm(30))
    burst = [rec(30 * W + m * W + 3 + i * 0.1, f"db timeout after {i}ms conn=0x{i:x}", 17)
             for m in range(3) for i in range(30)]
    out = det.add(burst + [rec(33 * W + 1, "user 1 logged in from 10.0.0.1")])
    fired = [a for a in out.alerts if a.metric == TEMPLATE_RATE_METRIC]
    assert [a.status for a in fired] == ["firing"]
    a = fired[0]
    assert a.at == 32 * W and a.starts_at == 30 * W and a.source == "logs"
    assert dict(a.evidence)["template"] == "ERROR db timeout after <NUM> conn=<HEX>"
    assert dict(a.evidence)["sample"].startswith("db timeout after")
    assert "db timeout after <NUM>" in a.summary and "sample" in a.summary
    back = det.add(calm(5, errors_every=100)[:0] + [rec(t * W + 1, "user 2 logged in from 10.0.0.2") for t in range(34, 38)])
    assert [(x.metric, x.status) for x in back.alerts] == [(TEMPLATE_RATE_METRIC, "resolved")]


def test_calm_error_template_never_fires():
    det = LogTemplateDetector(SETTINGS)
    out = det.add(calm(120))
    assert out.alerts == []


def test_new_error_template_alerts_after_warm_up_only():
    det = LogTemplateDetector(SETTINGS)
    during = det.add(calm(3) + [rec(3 * W + 5, "kernel panic on cpu 3", 17)])
    assert during.alerts == []  # warm-up: every template is new
    det.add(calm(10)[4:])
    line = "upstream card-network connection reset by peer node=gw-2 txn=8f3a2b91c0"
    after = det.add([rec(10 * W + 7, line, 17, host="gw-2")])
    (a,) = after.alerts
    assert (a.metric, a.status, a.at, a.starts_at) == (NEW_TEMPLATE_METRIC, "firing", 10 * W + 7, 10 * W + 7)
    ev = dict(a.evidence)
    assert ev["template"] == "ERROR upstream card-network connection reset by peer node=gw-2 txn=<HEX>"
    assert ev["sample"] == line and ev["host.name"] == "gw-2"
    assert "gw-2" in a.summary and "new error log template" in a.summary
    # A known INFO template is not news, nor is the same template again.
    again = det.add([rec(10 * W + 9, line.replace("8f3a2b91c0", "77aa00bb11"), 17, host="gw-2"),
                     rec(10 * W + 10, "brand new info line about nothing")])
    assert again.alerts == []
    quiet = det.add([rec(t * W + 1, "user 3 logged in from 10.0.0.3") for t in range(11, 15)])
    assert [(x.metric, x.status) for x in quiet.alerts] == [(NEW_TEMPLATE_METRIC, "resolved")]


def test_redelivery_counts_once():
    lines = calm(4)
    once, twice = LogTemplateDetector(SETTINGS), LogTemplateDetector(SETTINGS)
    once.add(lines)
    out_once = once.add([rec(5 * W, "tick")])
    for batch in (lines[:5], lines[:5], lines[3:], lines):  # overlapping redeliveries
        twice.add(batch)
    out_twice = twice.add([rec(5 * W, "tick"), rec(5 * W, "tick")])
    key = lambda out: sorted((p.series.id, p.t, p.value) for p in out.points + out.template_points)  # noqa: E731
    assert key(out_once) == key(out_twice)
    # A line for a bucket already emitted changes nothing.
    assert twice.add(lines).points == [] and twice.add(lines).alerts == []


def test_evidence_is_bounded():
    det = LogTemplateDetector(DetectorSettings(warmup_points=1))
    det.add([rec(1, "hello")])
    (a,) = det.add([rec(2 * W, "boom " + "x" * 5000, 17)]).alerts
    assert all(len(v) <= 240 for _, v in a.evidence)


@pytest.mark.parametrize("k, lam, want", [(0, 1.0, 1.0), (1, 0.0, 0.0), (5, 0.5, 1.7e-4), (2, 3.0, 0.80085)])
def test_poisson_tail(k, lam, want):
    assert poisson_sf(k, lam) == pytest.approx(want, rel=0.02)
