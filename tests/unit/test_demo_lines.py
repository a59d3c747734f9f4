"""What `make run` prints for an incident record."""
from streams.demo import describe_incident


def record(**kw):
    rec = {"id": "inc-1", "version": 1, "status": "open", "reason": "opened", "priority": "P3", "title": "db saturated",
           "updated_at": "2026-01-01T00:00:00Z", "resolved_at": None, "services": ["db"], "alerts": {"count": 1},
           "root_causes": [], "notification": "silent"}
    return {**rec, **kw}


def test_a_held_opening_says_it_is_silent_and_the_page_says_paged():
    assert "OPENED" in describe_incident(record())[0] and "silent" in describe_incident(record())[0]
    page = describe_incident(record(version=2, reason="hold_elapsed", notification="page"))[0]
    assert page.startswith("PAGED") and "pages" in page
    worse = describe_incident(record(version=3, reason="alerts_added", priority="P1", notification="update"))[0]
    assert worse.startswith("UPDATED") and "notifies" in worse
    assert describe_incident(record(version=4, status="resolved", reason="resolved"))[0].startswith("RESOLVED")


def test_log_evidence_shows_the_template_and_sample_line_and_metric_evidence_its_value():
    log = {"series": 'payment-gateway/log.template.new{template_id="54243254c6dd4ed8"}', "metric": "log.template.new",
           "value": 0.01667, "expected": 0.0, "score": 1.0, "at": "2026-01-01T00:00:00Z", "labels": {},
           "detail": "payment-gateway new error log template on gw-2: template 'ERROR upstream <*> reset host=gw-2'; "
                     "sample 'ERROR upstream card-network reset host=gw-2'"}
    metric = {"series": 'payment-gateway/http.server.errors.rate{host.name="gw-2"}', "metric": "http.server.errors.rate",
              "value": 9.0, "expected": 0.09138, "score": 1.0, "at": "2026-01-01T00:00:00Z", "labels": {},
              "detail": "payment-gateway http.server.errors.rate 9 (expected 0.0914)"}
    rc = {"service": "payment-gateway", "score": 0.55, "kind": "errors", "path": ["payment-gateway"], "reason": "",
          "evidence": [metric, log]}
    lines = describe_incident(record(priority="P1", notification="page", root_causes=[rc]))
    assert any("http.server.errors.rate" in line and "= 9 (expected 0.09138)" in line for line in lines)
    assert any("on gw-2: template 'ERROR upstream <*> reset host=gw-2'; sample 'ERROR upstream card-network" in line
               for line in lines)
