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
