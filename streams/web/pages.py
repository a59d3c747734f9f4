"""The board's pages, rendered from a :class:`~streams.web.board.Board`: pure functions, no I/O.

Every value goes through :mod:`streams.web.html`, which escapes it; the only markup is the
templates' and :func:`~streams.web.html.tag`'s. Buttons carry what they act on in ``data-``
attributes and ``static/board.js`` posts it to ``POST /control``: no inline script, so the
pages can be served under a Content-Security-Policy that forbids any.

>>> from streams.web.board import Board
>>> b = Board()
>>> _ = b.apply("incidents", {"id": "inc-1", "version": 1, "status": "open", "priority": "P2",
...     "title": "<script>alert(1)</script>", "services": ["api"], "opened_at": "2026-01-01T00:00:00.000Z",
...     "updated_at": "2026-01-01T00:10:00.000Z", "notification": "page", "root_causes": []})
>>> html = board_rows(b, resolved_for=3600)
>>> "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streams.web.board import Board, IncidentState, parse_time
from streams.web.html import Markup, escape, join, render, tag

NOTIFICATION_TEXT = {"page": "paged", "update": "paged, update sent", "resolve": "resolved, receivers told",
                     "silent": "silent",
                     None: "notified"}  # records of earlier builds carry none: every record notified


def fmt_duration(seconds: float) -> str:
    """A duration the way an operator reads it.

    >>> fmt_duration(42), fmt_duration(150), fmt_duration(7380), fmt_duration(200000)
    ('42s', '2m 30s', '2h 3m', '2d 7h')
    """
    s = max(0, int(seconds))
    for unit, n, sub, m in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= n:
            rest = (s % n) // m
            return f"{s // n}{unit}" + (f" {rest}{sub}" if rest else "")
    return f"{s}s"


def fmt_time(value: Any) -> str:
    """An RFC 3339 time as ``YYYY-MM-DD HH:MM:SS UTC`` (the text as it is if it does not parse)."""
    t = parse_time(value)
    if t is None:
        return str(value or "")
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(v: Any) -> str:
    if type(v) in (int, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "—" if v is None else str(v)


def _top(rec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rcs = rec.get("root_causes")
    return rcs[0] if isinstance(rcs, list) and rcs and isinstance(rcs[0], Mapping) else None


def _strings(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def chain(rec: Mapping[str, Any]) -> Markup:
    """The top root cause's path, from the cause to the most upstream affected service."""
    rc = _top(rec)
    if rc is None:
        return tag("span", "not ranked yet", class_="muted")
    path = _strings(rc.get("path")) or [str(rc.get("service", ""))]
    head = tag("span", path[0], class_="cause")
    return Markup(head + (escape(" → ") + join(path[1:], " → ") if len(path) > 1 else "")
                  + " " + tag("span", f"({rc.get('kind', '')})", class_="muted"))


def _priority(rec: Mapping[str, Any]) -> Markup:
    p = str(rec.get("priority", "P?"))
    return tag("span", p, class_=f"prio {p if p in ('P1', 'P2', 'P3', 'P4') else ''}".strip())


def _age(rec: Mapping[str, Any], clock: float) -> str:
    opened = parse_time(rec.get("opened_at"))
    if opened is None:
        return ""
    if rec.get("status") == "resolved":
        resolved = parse_time(rec.get("resolved_at")) or parse_time(rec.get("updated_at")) or opened
        return f"resolved {fmt_duration(clock - resolved)} ago, lasted {fmt_duration(resolved - opened)}"
    return fmt_duration(clock - opened)


def notification_state(versions: Sequence[Mapping[str, Any]]) -> str:
    """What receivers were last told of an incident: most updates are ``silent`` (nobody is
    notified), so the latest version's own field would say "silent" of an incident that paged.

    >>> notification_state([{"notification": "page"}, {"notification": "silent"}])
    'paged'
    >>> notification_state([{"notification": "silent"}])
    'not notified (held or below the paging threshold)'
    """
    told = [v.get("notification") for v in versions if v.get("notification") != "silent"]
    if not told:
        return "not notified (held or below the paging threshold)"
    return NOTIFICATION_TEXT.get(told[-1], str(told[-1]))


def row(rec: Mapping[str, Any], clock: float, awaiting: int = 0, note: str | None = None) -> Markup:
    """One ``<tr>`` of the board; ``note`` is :func:`notification_state` (default: this record's)."""
    iid = str(rec.get("id", ""))
    status = str(rec.get("status", ""))
    if note is None:
        note = notification_state([rec])
    extra = tag("span", f"{awaiting} awaiting approval", class_="await") if awaiting else Markup("")
    cells = [
        tag("td", tag("a", iid, href=f"/incidents/{iid}", class_="iid")),
        tag("td", _priority(rec) + " " + escape(rec.get("title", "")) + (" " + extra if awaiting else "")),
        tag("td", join(_strings(rec.get("services")), ", ")),
        tag("td", _age(rec, clock), title=f"opened {fmt_time(rec.get('opened_at'))}"),
        tag("td", note),
        tag("td", chain(rec)),
    ]
    return tag("tr", join(cells), class_=status, data_id=iid)


def board_rows(board: Board, *, resolved_for: float) -> Markup:
    """The board's ``<tbody>`` content (what a live update swaps in)."""
    rows = []
    for rec in board.visible(resolved_for=resolved_for):
        st = board.incidents[rec["id"]]
        rows.append(row(rec, board.clock, len(st.awaiting()), notification_state(st.versions)))
    if not rows:
        return tag("tr", tag("td", "No incidents.", colspan="6", class_="muted"))
    return join(rows, "\n")


def silences_table(silences: Sequence[Mapping[str, Any]], clock: float) -> Markup:
    """Silences with a button to expire each one."""
    if not silences:
        return tag("p", "No active silences.", class_="muted")
    head = tag("tr", join(tag("th", h) for h in ("Silence", "Matches", "Ends", "By", "Comment", "")))
    rows = []
    for s in silences:
        sid = str(s.get("id", ""))
        labels = s.get("labels") if isinstance(s.get("labels"), Mapping) else {}
        match = f"service={s.get('service', '*')} metric={s.get('metric', '*')}" + "".join(
            f" {k}={v}" for k, v in sorted(labels.items()))
        ends = parse_time(s.get("ends_at"))
        left = f" (in {fmt_duration(ends - clock)})" if ends is not None else ""
        rows.append(tag("tr", join([
            tag("td", tag("code", sid)), tag("td", tag("code", match)), tag("td", fmt_time(s.get("ends_at")) + left),
            tag("td", s.get("by", "")), tag("td", s.get("comment", "")),
            tag("td", tag("button", "Expire", type="button", data_expire=sid)),
        ])))
    return tag("table", tag("thead", head) + tag("tbody", join(rows)), class_="silences")


def page(title: str, content: Markup, *, page_name: str, incident_id: str = "") -> Markup:
    return render("layout.html", title=title, page=page_name, incident_id=incident_id, content=content)


def board_page(board: Board, *, resolved_for: float) -> Markup:
    silences = board.active_silences()
    section = tag("section", tag("h2", "Silences") + silences_table(silences, board.clock), id="silences")
    content = render("board.html", rows=board_rows(board, resolved_for=resolved_for),
                     resolved_for=fmt_duration(resolved_for), silences=section)
    return page("Incidents", content, page_name="board")


def _evidence(rc: Mapping[str, Any]) -> Markup:
    ev = [e for e in rc.get("evidence") or [] if isinstance(e, Mapping)]
    if not ev:
        return tag("p", "No evidence recorded.", class_="muted")
    head = tag("tr", join(tag("th", h) for h in ("Series", "Score", "Value", "Expected", "At", "Detail")))
    rows = [tag("tr", join([
        tag("td", tag("code", e.get("series", ""))), tag("td", _num(e.get("score"))), tag("td", _num(e.get("value"))),
        tag("td", _num(e.get("expected"))), tag("td", fmt_time(e.get("at"))), tag("td", e.get("detail", "")),
    ])) for e in ev]
    return tag("table", tag("thead", head) + tag("tbody", join(rows)), class_="evidence")


def causes(rec: Mapping[str, Any]) -> Markup:
    """The ranked root-cause candidates, each with its path, reason and evidence."""
    rcs = [rc for rc in rec.get("root_causes") or [] if isinstance(rc, Mapping)]
    if not rcs:
        return tag("p", "No root cause ranked yet.", class_="muted")
    items = []
    for rc in rcs:
        path = _strings(rc.get("path"))
        items.append(tag("li", join([
            tag("strong", rc.get("service", "")), " ", tag("span", rc.get("kind", ""), class_="kind"),
            " ", tag("span", f"score {_num(rc.get('score'))}", class_="muted"),
            tag("div", join(path, " → "), class_="path") if path else "",
            tag("div", rc.get("reason", ""), class_="reason") if rc.get("reason") else "",
            _evidence(rc),
        ])))
    return tag("ol", join(items), class_="causes")


def actions(st: IncidentState, approvals: Mapping[str, str]) -> Markup:
    """Each action's latest decision, its history, and an Approve button while it awaits one."""
    if not st.actions:
        return tag("p", "No actions.", class_="muted")
    head = tag("tr", join(tag("th", h) for h in ("Action", "Step", "Mode", "Decision", "Reason", "History", "")))
    rows = []
    for aid, recs in sorted(st.actions.items(), key=lambda kv: (str(kv[1][0].get("at", "")), kv[0])):
        last = recs[-1]
        params = last.get("params") if isinstance(last.get("params"), Mapping) else {}
        step = f"{last.get('policy', '')}[{last.get('step', '')}]: {last.get('kind', '')} {last.get('target', '')}"
        step += "".join(f" {k}={v}" for k, v in sorted(params.items()))
        decision = str(last.get("decision", ""))
        if last.get("approved_by"):
            decision += f" by {last['approved_by']}"
        elif aid in approvals and decision == "awaiting_approval":
            decision += f" (approved by {approvals[aid]}; releasing)"
        history = join((tag("li", f"{fmt_time(r.get('at'))}: {r.get('decision', '')}"
                               + (f" → {r['result']}" if r.get("result") else "")) for r in recs))
        button = (tag("button", "Approve", type="button", data_approve=aid)
                  if decision == "awaiting_approval" else Markup(""))
        rows.append(tag("tr", join([
            tag("td", tag("code", aid)), tag("td", tag("code", step)), tag("td", last.get("mode", "")),
            tag("td", decision, class_=f"decision {last.get('decision', '')}"), tag("td", last.get("reason", "")),
            tag("td", tag("ul", history, class_="history")), tag("td", button),
        ]), data_action=aid))
    return tag("table", tag("thead", head) + tag("tbody", join(rows)), class_="actions")


def tickets(st: IncidentState, links: Mapping[str, str] | None = None) -> Markup:
    """The ticket events; ``links`` maps a ticket key to the ticket's URL where the sink gives one."""
    if not st.tickets:
        return tag("p", "No ticket events.", class_="muted")
    head = tag("tr", join(tag("th", h) for h in ("At", "Event", "Sink", "Team", "Assignee", "Priority", "Title")))
    rows = [tag("tr", join([
        tag("td", fmt_time(t.get("at"))), tag("td", t.get("event", "")), tag("td", t.get("sink", "")),
        tag("td", t.get("team", "")), tag("td", t.get("assignee") or "—"), tag("td", t.get("priority", "")),
        tag("td", t.get("title", "")),
    ])) for t in st.tickets]
    link = (links or {}).get(str(st.tickets[-1].get("ticket_key", "")))
    out = tag("table", tag("thead", head) + tag("tbody", join(rows)), class_="tickets")
    if link and link.lower().startswith(("https://", "http://")):  # never javascript: or data:
        out = Markup(tag("p", tag("a", "Open the ticket", href=link, rel="noopener noreferrer", target="_blank"))
                     + out)
    return out


def runbook_list(hits: Sequence[Any]) -> Markup:
    """Runbook hits (:class:`remediators.runbooks.Hit`), best first."""
    if not hits:
        return tag("p", "No runbook matches this incident.", class_="muted")
    items = [tag("li", join([tag("strong", h.runbook.title), " ", tag("code", h.runbook.path), " ",
                             tag("span", f"score {h.score:.2f}" + (f"; {', '.join(h.why)}" if h.why else ""),
                                 class_="muted")])) for h in hits]
    return tag("ol", join(items), class_="runbooks")


def timeline(st: IncidentState) -> Markup:
    head = tag("tr", join(tag("th", h) for h in ("Version", "Updated", "Status", "Reason", "Priority",
                                                 "Notification", "Alerts firing", "Top cause")))
    rows = []
    for v in reversed(st.versions):
        alerts = v.get("alerts") if isinstance(v.get("alerts"), Mapping) else {}
        rc = _top(v)
        rows.append(tag("tr", join([
            tag("td", v.get("version", "")), tag("td", fmt_time(v.get("updated_at"))), tag("td", v.get("status", "")),
            tag("td", v.get("reason", "")), tag("td", v.get("priority", "")),
            tag("td", NOTIFICATION_TEXT.get(v.get("notification"), str(v.get("notification")))),
            tag("td", f"{alerts.get('firing', '?')} of {alerts.get('count', '?')}"),
            tag("td", f"{rc.get('service', '')} ({rc.get('kind', '')})" if rc else "—"),
        ])))
    return tag("table", tag("thead", head) + tag("tbody", join(rows)), class_="timeline")


def incident_body(board: Board, incident_id: str, *, runbooks: Sequence[Any] = (),
                  links: Mapping[str, str] | None = None) -> Markup | None:
    """The live part of an incident's page (what an update swaps in); ``None`` when unknown."""
    st = board.incidents.get(incident_id)
    rec = st.latest if st is not None else None
    if st is None or rec is None:
        return None
    clock = board.clock
    status = str(rec.get("status", ""))
    status_text = (f"open for {_age(rec, clock)}" if status != "resolved" else _age(rec, clock))
    services = set(_strings(rec.get("services")))
    relevant = [s for s in board.active_silences()
                if any(_glob(str(s.get("service", "*")), name) for name in services) or not services]
    p = str(rec.get("priority", ""))
    labels = rec.get("labels") if isinstance(rec.get("labels"), Mapping) else {}
    label_text = (Markup(" · labels: ") + join((tag("code", f"{k}={v}", class_="label") for k, v in sorted(labels.items())),
                                                " ")) if labels else ""
    return render("incident_body.html", services=join(_strings(rec.get("services")), ", "), labels=label_text, id=incident_id, version=rec.get("version", ""),
                  priority=p if p in ("P1", "P2", "P3", "P4") else "", title=rec.get("title", ""),
                  status_text=status_text, opened=fmt_time(rec.get("opened_at")),
                  notification=notification_state(st.versions), owner=rec.get("owner") or "unknown", causes=causes(rec), actions=actions(st, board.approvals),
                  runbooks=runbook_list(runbooks), tickets=tickets(st, links),
                  silences=silences_table(relevant, clock), timeline=timeline(st))


def _glob(pattern: str, name: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def incident_page(board: Board, incident_id: str, *, runbooks: Sequence[Any] = (),
                  links: Mapping[str, str] | None = None) -> Markup | None:
    body = incident_body(board, incident_id, runbooks=runbooks, links=links)
    if body is None:
        return None
    rec = board.incidents[incident_id].latest or {}
    rc = _top(rec)
    service = str(rc.get("service", "")) if rc else ",".join(_strings(rec.get("services"))[:1])
    content = render("incident.html", body=body, service=service or "*",
                     comment=f"while {incident_id} is handled")
    return page(f"{incident_id} {rec.get('title', '')}", content, page_name="incident", incident_id=incident_id)


def login_page(error: str = "") -> Markup:
    return page("Sign in", render("login.html", error=tag("strong", error) if error else ""), page_name="login")


__all__ = ["board_page", "board_rows", "causes", "chain", "fmt_duration", "fmt_time", "incident_body",
           "incident_page", "login_page", "row", "silences_table", "unknown_page"]


def unknown_page(incident_id: str) -> Markup:
    """The 404 page of an incident this worker has no record of (yet)."""
    content = tag("h1", "Unknown incident") + tag(
        "p", join(["No record of ", tag("code", incident_id), " on aiops.incidents here. ",
                   tag("a", "All incidents", href="/")]))
    return page("Unknown incident", content, page_name="unknown")
