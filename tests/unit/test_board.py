"""The board's state (a fold of topic records) and its rendering, with no worker and no broker."""
from __future__ import annotations

import re

import pytest

from remediators.runbooks import Hit, Runbook
from streams.web import pages
from streams.web.board import SILENCES, Board
from streams.web.html import Markup, escape, render_string, tag

EVIL = '<script>alert("x")</script>'


def incident(iid="inc-1", version=1, status="open", priority="P2", opened=0, updated=60, resolved=None, **kw):
    def at(s):
        return f"2026-01-01T00:{s // 60:02d}:{s % 60:02d}.000Z"

    rec = {"schema_version": 1, "id": iid, "version": version, "status": status, "reason": "opened",
           "opened_at": at(opened), "updated_at": at(updated), "resolved_at": at(resolved) if resolved is not None else None,
           "title": f"{iid} title", "priority": priority, "severity": "warning", "services": ["api", "db"],
           "alerts": {"count": 2, "firing": 1, "fingerprints": []},
           "root_causes": [{"service": "db", "score": 0.8, "kind": "saturation", "path": ["db", "api"], "reason": "",
                            "evidence": []}], "owner": "team-db", "labels": {}, "notification": "page"}
    return rec | kw


def action(aid="act-1", iid="inc-1", decision="awaiting_approval", **kw):
    return {"id": aid, "incident_id": iid, "incident_version": 1, "policy": "p", "step": 0, "kind": "kubernetes",
            "target": "deployment/db-pooler", "params": {"operation": "scale"}, "mode": "execute",
            "decision": decision, "reason": "matched", "at": "2026-01-01T00:01:00.000Z", "approved_by": None,
            "result": None} | kw


# --- the fold ----------------------------------------------------------------------------------

def test_a_redelivered_version_changes_nothing_and_versions_keep_their_order():
    b = Board()
    assert b.apply("incidents", incident(version=2, updated=120)) == {"inc-1"}
    assert b.apply("incidents", incident(version=1)) == {"inc-1"}
    assert b.apply("incidents", incident(version=2, updated=120)) == frozenset()
    assert [v["version"] for v in b.incidents["inc-1"].versions] == [1, 2]
    assert b.incidents["inc-1"].latest["version"] == 2


@pytest.mark.parametrize("kind, record", [
    ("incidents", {"id": 5, "version": 1}), ("incidents", {"id": "inc-1", "version": "1"}),
    ("incidents", []), ("actions", {"id": "a"}), ("tickets", {"event": "create"}),
    ("control", {"type": "approve"}), ("control", {"type": "nonsense", "id": "x"}), ("alerts", {"id": "x"}),
])
def test_records_lacking_what_the_board_needs_are_ignored(kind, record):
    b = Board()
    assert b.apply(kind, record) == frozenset()
    assert b.incidents == {} and b.silences == {}


def test_open_incidents_come_first_by_priority_then_resolved_ones_within_the_window():
    b = Board()
    b.apply("incidents", incident("inc-p3", priority="P3", opened=0))
    b.apply("incidents", incident("inc-p1", priority="P1", opened=10))
    b.apply("incidents", incident("inc-old", status="resolved", opened=0, updated=100, resolved=100))
    b.apply("incidents", incident("inc-new", status="resolved", opened=0, updated=3000, resolved=3000))
    b.apply("incidents", incident("inc-p1b", priority="P1", opened=20, updated=3500))
    assert [r["id"] for r in b.visible(resolved_for=3600)] == ["inc-p1b", "inc-p1", "inc-p3", "inc-new", "inc-old"]
    # The window is event time: the latest record's time, not the wall clock.
    assert [r["id"] for r in b.visible(resolved_for=1000)] == ["inc-p1b", "inc-p1", "inc-p3", "inc-new"]
    assert b.forget(resolved_for=1000) == ["inc-old"] and "inc-old" not in b.incidents


def test_actions_before_their_incident_wait_and_awaiting_is_the_latest_decision():
    b = Board()
    assert b.apply("actions", action()) == {"inc-1"}
    assert b.visible(resolved_for=60) == []  # no incident record yet: not listed
    b.apply("incidents", incident())
    assert b.incidents["inc-1"].awaiting() == ["act-1"]
    b.apply("actions", action(decision="approved", approved_by="alice"))
    assert b.incidents["inc-1"].awaiting() == []


def test_silences_come_and_go_and_approvals_touch_their_incident():
    b = Board()
    b.apply("incidents", incident())
    b.apply("actions", action())
    sil = {"type": "silence", "id": "sil-1", "by": "bob", "service": "db", "metric": "*", "labels": {},
           "starts_at": "2026-01-01T00:00:00.000Z", "ends_at": "2026-01-01T02:00:00.000Z", "comment": ""}
    assert b.apply("control", sil) == {SILENCES}
    assert [s["id"] for s in b.active_silences()] == ["sil-1"]
    assert b.apply("control", {"type": "expire_silence", "id": "sil-1", "by": "bob"}) == {SILENCES}
    assert b.active_silences() == []
    assert b.apply("control", {"type": "approve", "action_id": "act-1", "by": "alice"}) == {"inc-1"}


def test_ledger_entries_name_the_trackers_ticket():
    b = Board()
    entry = {"ticket_id": "OPS-7", "version": 1, "event": "create", "sink": "jira"}
    assert b.apply_ledger("inc-1", entry) == {"inc-1"}
    assert b.apply_ledger("inc-1", entry) == frozenset()
    assert b.apply_ledger("inc-2", {"ticket_id": 7}) == frozenset()
    assert b.delivered == {"inc-1": ("jira", "OPS-7")}


# --- escaping ----------------------------------------------------------------------------------

def test_escape_and_markup():
    assert escape(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert escape(Markup("<b>ok</b>")) == "<b>ok</b>"
    assert escape(None) == ""
    assert tag("a", "x", href='" onclick="evil()') == '<a href="&quot; onclick=&quot;evil()">x</a>'
    assert render_string("<p title=\"$t\">$t</p>", t=EVIL).count("<script") == 0
    with pytest.raises(KeyError):
        render_string("$missing")


def hostile_board() -> Board:
    """Every text field the pages show holds markup."""
    b = Board()
    rec = incident(iid="inc-evil", title=EVIL, services=[EVIL], owner=EVIL, labels={EVIL: EVIL}, notification=EVIL,
                   priority=EVIL,
                   root_causes=[{"service": EVIL, "score": EVIL, "kind": EVIL, "path": [EVIL, EVIL], "reason": EVIL,
                                 "evidence": [{"series": EVIL, "metric": EVIL, "score": None, "value": EVIL,
                                               "expected": 1, "at": EVIL, "detail": EVIL, "labels": {EVIL: EVIL}}]}])
    b.apply("incidents", rec)
    b.apply("incidents", incident(iid="inc-evil", version=2, reason=EVIL, title=EVIL, services=[EVIL], labels={EVIL: EVIL},
                                  root_causes=rec["root_causes"]))
    b.apply("actions", action(iid="inc-evil", aid="act-evil", target=EVIL, params={EVIL: EVIL}, reason=EVIL,
                              policy=EVIL, mode=EVIL, result=EVIL))
    b.apply("tickets", {"ticket_key": "inc-evil", "event": EVIL, "incident_id": "inc-evil", "sink": EVIL, "team": EVIL,
                        "assignee": EVIL, "priority": EVIL, "title": EVIL, "at": EVIL})
    b.apply("control", {"type": "silence", "id": "sil-evil", "by": EVIL, "service": "*", "metric": EVIL,
                        "labels": {EVIL: EVIL}, "starts_at": "2026-01-01T00:00:00.000Z",
                        "ends_at": "2030-01-01T00:00:00.000Z", "comment": EVIL})
    return b


def test_no_text_from_a_record_becomes_markup_on_any_page():
    b = hostile_board()
    hit = Hit(Runbook(id="rb", path=EVIL, title=EVIL, tags=(), services=(), metrics=(), causes=(), body=EVIL), 1.0,
              (EVIL,))
    rendered = {
        "board": pages.board_page(b, resolved_for=3600),
        "incident": pages.incident_page(b, "inc-evil", runbooks=[hit], links={"inc-evil": "javascript:alert(1)"}),
        "unknown": pages.unknown_page(EVIL),
        "login": pages.login_page(EVIL),
    }
    for name, html in rendered.items():
        assert "<script>" not in html and 'alert("x")' not in html, name
        # The only script tag is our own, in the head.
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/board.js" defer>'], name
    assert rendered["incident"].count("&lt;script&gt;") > 20
    assert "javascript:" not in rendered["incident"]


def test_the_incident_page_shows_what_it_promises():
    b = Board()
    b.apply("incidents", incident())
    b.apply("incidents", incident(version=2, updated=120, reason="alerts_added"))
    b.apply("actions", action())
    b.apply("actions", action(aid="act-2", decision="planned"))
    b.apply("tickets", {"ticket_key": "inc-1", "event": "create", "incident_id": "inc-1", "sink": "jira",
                        "team": "team-db", "assignee": None, "priority": "P2", "title": "t",
                        "at": "2026-01-01T00:01:00.000Z"})
    html = pages.incident_page(b, "inc-1", links={"inc-1": "https://jira.example/browse/OPS-1"})
    assert '<img src="/incidents/inc-1/rca.svg?v=2"' in html
    assert html.count("data-approve=") == 1 and 'data-approve="act-1"' in html  # only the awaiting one
    assert 'href="https://jira.example/browse/OPS-1"' in html
    assert "alerts_added" in html and "db → api" in html
    assert pages.incident_page(b, "inc-nosuch") is None


def test_a_board_row_shows_priority_title_services_age_notification_and_chain():
    b = Board()
    b.apply("incidents", incident(opened=0, updated=150))
    b.apply("actions", action())
    row = pages.board_rows(b, resolved_for=60)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[0] == '<a href="/incidents/inc-1" class="iid">inc-1</a>'
    assert cells[1].startswith('<span class="prio P2">P2</span> inc-1 title') and "1 awaiting approval" in cells[1]
    assert cells[2:5] == ["api, db", "2m 30s", "paged"]
    assert cells[5] == '<span class="cause">db</span> → api <span class="muted">(saturation)</span>'
