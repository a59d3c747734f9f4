"""Ticket sinks against loopback servers that check every request the way each real API documents it.

One fake per API (ClickUp v2, Jira Cloud REST v3, PagerDuty Events v2, a generic webhook) runs
``http.server`` in a thread. Each fake checks auth header form, paths, content type and required
body fields, answering 400 and recording the problem when a request is wrong; the tests assert
no problem was recorded. Faults (429 with Retry-After, 5xx, a create whose answer is lost) are
scripted per request. The clock, sleep and RNG are injected: nothing really waits.

The property under test: exactly one ticket per incident across retries, duplicate deliveries,
a restart with a fresh ledger after a lost create answer, updates and resolve; and a delivery
that keeps failing lands in the dead-letter callback with its reason.
"""
from __future__ import annotations

import base64
import json
import random
import re
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from jsonschema import Draft202012Validator

from remediators.records import TicketEvent
from remediators.sink_config import DeliverySettings, RetrySettings, sink_problems
from remediators.sinks import build_sinks
from remediators.sinks.adf import markdown_to_adf
from streams import codec
from streams.config import ConfigError, parse_topology
from streams.delivery import (DeadLettered, Delivered, JsonFileLedger, MemoryLedger, Skipped, TicketDelivery,
                              TransportError, UrllibTransport, decode_ticket)

ROOT = Path(__file__).resolve().parents[2]
TICKET_SCHEMA = Draft202012Validator(json.loads((ROOT / "streams/schemas/ticket.schema.json").read_text()))

CLICKUP_TOKEN = "pk_4242_TESTTOKEN"
JIRA_EMAIL, JIRA_TOKEN = "ops@example.com", "jira-api-token"
PD_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, like a real integration key
HOOK_TOKEN = "hook-secret"
FIELD_ID = "0a52c486-5f05-403b-b4fd-c512ff05131c"

DESCRIPTION = """**checkout latency high**

- Priority: P1 (critical)
- Affected services: checkout, payments

**Root cause candidates**

1. `payments-db` (saturation, score 0.91): checkout -> payments -> payments-db
   - `payments-db/cpu` = 0.97 (expected 0.4)
2. `payments` (latency, score 0.40): checkout -> payments"""


def event(kind: str, version: int, *, key: str = "inc-42", sink: str = "clickup",
          priority: str = "P1") -> TicketEvent:
    return TicketEvent(ticket_key=key, event=kind, incident_id=key, incident_version=version, sink=sink,
                       team="payments", assignee="alice", priority=priority,
                       title=f"[{priority}] checkout latency high ({key})",
                       description=DESCRIPTION, tags=("aiops", priority.lower(), "service:checkout"),
                       at=1755700000.0 + version, runbooks=("https://runbooks.test/checkout",))


# --- a scripted loopback server ----------------------------------------------------------------

class Fake:
    """Base of the fake APIs. ``handle`` returns (status, headers, json body or None)."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.script: list[tuple[str, str, object]] = []  # (method, path regex, action)
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                url = urlsplit(self.path)
                with fake.lock:
                    fake.requests.append((self.command, url.path))
                    action = fake._scripted(self.command, url.path)
                    if action == "drop":  # lost before the server did anything
                        self.close_connection = True
                        return
                    if isinstance(action, tuple):
                        status, headers = action
                        result = (status, headers, {"err": "scripted"})
                    else:
                        result = fake._check_and_handle(self.command, url.path, parse_qs(url.query),
                                                        self.headers, body)
                    if action == "lose":  # done, but the answer never arrives
                        self.close_connection = True
                        return
                status, headers, payload = result
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def fault(self, method: str, path: str, *actions):
        """Answer the next matching requests with ``actions`` in order: (status, headers), "drop" or "lose"."""
        self.script += [(method, path, a) for a in actions]

    def _scripted(self, method, path):
        for i, (m, p, action) in enumerate(self.script):
            if m == method and re.fullmatch(p, path):
                del self.script[i]
                return action
        return None

    def _check_and_handle(self, method, path, query, headers, body):
        problems: list[str] = []
        try:
            result = self.handle(method, path, query, headers, body, problems)
        except Exception as exc:  # noqa: BLE001 - a malformed request the fake could not even read
            problems.append(f"{method} {path}: {type(exc).__name__}: {exc}")
        if problems:
            self.errors += problems
            return 400, {}, {"errors": problems}
        return result

    @staticmethod
    def json_body(method, path, headers, body, problems):
        if not (headers.get("Content-Type") or "").startswith("application/json"):
            got = headers.get("Content-Type")
            problems.append(f"{method} {path}: Content-Type must be application/json (got {got!r})")
        return json.loads(body)


class FakeClickUp(Fake):
    STATUSES = ("to do", "in progress", "complete")

    def __init__(self):
        super().__init__()
        self.tasks: dict[str, dict] = {}

    def handle(self, method, path, query, headers, body, problems):
        if headers.get("Authorization") != CLICKUP_TOKEN:  # the token itself, no "Bearer"
            problems.append(f"Authorization must be the bare pk_ token (got {headers.get('Authorization')!r})")
            return None
        if m := re.fullmatch(r"/api/v2/list/901/task", path):
            if method == "GET":
                tasks = list(self.tasks.values())
                if query.get("include_closed") != ["true"]:
                    tasks = [t for t in tasks if t["status"]["status"] != "complete"]
                for f in json.loads(query.get("custom_fields", ["[]"])[0]):
                    if set(f) != {"field_id", "operator", "value"} or f["operator"] not in ("=", "=="):
                        problems.append(f"bad custom_fields filter {f}")
                    tasks = [t for t in tasks if any(c["id"] == f["field_id"] and f["value"] in (c["value"] or "")
                                                     for c in t["custom_fields"])]
                for tag in query.get("tags[]", []):
                    tasks = [t for t in tasks if tag in [x["name"] for x in t["tags"]]]
                return 200, {}, {"tasks": tasks}
            if method == "POST":
                b = self.json_body(method, path, headers, body, problems)
                if not isinstance(b.get("name"), str) or not b["name"]:
                    problems.append("name is required")
                if b.get("priority") not in (1, 2, 3, 4, None):
                    problems.append(f"priority must be 1..4 (got {b.get('priority')!r})")
                if "description" in b:
                    problems.append("use markdown_description, not description")
                if not isinstance(b.get("markdown_description"), str):
                    problems.append("markdown_description missing")
                if not all(isinstance(a, int) for a in b.get("assignees", [])):
                    problems.append("assignees must be user ids (integers)")
                if not all(isinstance(t, str) for t in b.get("tags", [])):
                    problems.append("tags must be names")
                for c in b.get("custom_fields", []):
                    if set(c) != {"id", "value"}:
                        problems.append(f"custom_fields items are {{id, value}} (got {c})")
                if problems:
                    return None
                tid = f"86a{len(self.tasks) + 1:04d}"
                self.tasks[tid] = {
                    "id": tid, "name": b["name"], "markdown_description": b["markdown_description"],
                    "status": {"status": "to do"}, "priority": b.get("priority"),
                    "assignees": b.get("assignees", []), "tags": [{"name": t.lower()} for t in b.get("tags", [])],
                    "custom_fields": [{"id": c["id"], "value": c["value"]} for c in b.get("custom_fields", [])]}
                return 200, {}, self.tasks[tid]
        if (m := re.fullmatch(r"/api/v2/task/([^/]+)", path)) and method == "PUT":
            b = self.json_body(method, path, headers, body, problems)
            task = self.tasks.get(m.group(1))
            if task is None:
                return 404, {}, {"err": "Task not found", "ECODE": "ITEM_015"}
            if "status" in b and b["status"] not in self.STATUSES:
                problems.append(f"status {b['status']!r} does not exist in the list")
            if "assignees" in b and set(b["assignees"]) != {"add", "rem"}:
                problems.append("update takes assignees as {add, rem}")
            if problems:
                return None
            task.update({k: v for k, v in b.items() if k in ("name", "markdown_description", "priority")})
            if "status" in b:
                task["status"] = {"status": b["status"]}
            return 200, {}, task
        problems.append(f"no such endpoint {method} {path}")
        return None


class FakeJira(Fake):
    PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")

    def __init__(self):
        super().__init__()
        self.issues: dict[str, dict] = {}

    @staticmethod
    def _check_adf(node, problems, where="description"):
        if not isinstance(node, dict) or "type" not in node:
            problems.append(f"{where}: ADF nodes are objects with a type")
            return
        if node["type"] == "text" and not node.get("text"):
            problems.append(f"{where}: ADF text nodes must not be empty")
        for child in node.get("content", []):
            FakeJira._check_adf(child, problems, where)

    def _check_fields(self, f, problems, create):
        if create:
            if f.get("project") != {"key": "OPS"}:
                problems.append(f"fields.project must be {{key: OPS}} (got {f.get('project')})")
            if not (f.get("issuetype") or {}).get("name"):
                problems.append("fields.issuetype.name is required")
            if not f.get("summary"):
                problems.append("fields.summary is required")
        if "summary" in f and ("\n" in f["summary"] or len(f["summary"]) > 255):
            problems.append("summary is one line of at most 255 characters")
        if "description" in f:
            d = f["description"]
            if not isinstance(d, dict) or d.get("type") != "doc" or d.get("version") != 1:
                problems.append("v3 description must be an ADF doc (type doc, version 1), not a string")
            else:
                self._check_adf(d, problems)
        if "priority" in f and (f["priority"] or {}).get("name") not in self.PRIORITIES:
            problems.append(f"unknown priority {f['priority']}")
        if any(" " in label for label in f.get("labels", [])):
            problems.append("labels cannot contain spaces")

    def handle(self, method, path, query, headers, body, problems):
        want = "Basic " + base64.b64encode(f"{JIRA_EMAIL}:{JIRA_TOKEN}".encode()).decode()
        if headers.get("Authorization") != want:
            problems.append(f"Authorization must be Basic email:api_token (got {headers.get('Authorization')!r})")
            return None
        if path == "/rest/api/3/issue" and method == "POST":
            f = self.json_body(method, path, headers, body, problems).get("fields") or {}
            self._check_fields(f, problems, create=True)
            if problems:
                return None
            n = len(self.issues) + 1
            key = f"OPS-{n}"
            self.issues[key] = {"id": str(10000 + n), "key": key, "fields": {**f, "status": "To Do"}}
            return 201, {}, {"id": str(10000 + n), "key": key, "self": f"{self.url}/rest/api/3/issue/{10000 + n}"}
        if path == "/rest/api/3/search/jql" and method == "POST":
            b = self.json_body(method, path, headers, body, problems)
            if not isinstance(b.get("jql"), str) or not isinstance(b.get("fields"), list):
                problems.append("search/jql needs jql and an explicit fields list")
                return None
            m = re.fullmatch(r'project = "OPS" AND labels = "([^"]+)"', b["jql"])
            if not m:
                problems.append(f"unexpected JQL {b['jql']!r}")
                return None
            hits = [{"id": i["id"], "key": i["key"]} for i in self.issues.values()
                    if m.group(1) in i["fields"]["labels"]]
            return 200, {}, {"issues": hits, "isLast": True}
        if m := re.fullmatch(r"/rest/api/3/issue/(OPS-\d+)(/transitions)?", path):
            issue = self.issues.get(m.group(1))
            if issue is None:
                return 404, {}, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
            done = issue["fields"]["status"] == "Done"
            if m.group(2) and method == "GET":
                offered = [{"id": "11", "name": "Reopen", "to": {"name": "To Do"}}] if done else [
                    {"id": "21", "name": "Start", "to": {"name": "In Progress"}},
                    {"id": "31", "name": "Done", "to": {"name": "Done"}}]
                return 200, {}, {"transitions": offered}
            if m.group(2) and method == "POST":
                b = self.json_body(method, path, headers, body, problems)
                tid = (b.get("transition") or {}).get("id")
                if tid != "31" or done:
                    return 400, {}, {"errorMessages": [f"Transition id '{tid}' is not valid for this issue."]}
                issue["fields"]["status"] = "Done"
                return 204, {}, None
            if method == "PUT":
                f = self.json_body(method, path, headers, body, problems).get("fields") or {}
                self._check_fields(f, problems, create=False)
                if problems:
                    return None
                issue["fields"].update(f)
                return 204, {}, None
            if method == "GET":
                status = issue["fields"]["status"]
                return 200, {}, {"key": issue["key"], "fields": {"status": {
                    "name": status, "statusCategory": {"key": "done" if status == "Done" else "new"}}}}
        problems.append(f"no such endpoint {method} {path}")
        return None


class FakePagerDuty(Fake):
    SEVERITIES = ("critical", "error", "warning", "info")

    def __init__(self):
        super().__init__()
        self.alerts: list[dict] = []  # PagerDuty opens a new alert for a trigger once the last one resolved

    def handle(self, method, path, query, headers, body, problems):
        if (method, path) != ("POST", "/v2/enqueue"):
            problems.append(f"no such endpoint {method} {path}")
            return None
        if "Authorization" in headers:
            problems.append("Events API v2 takes no Authorization header: the routing_key is in the body")
        b = self.json_body(method, path, headers, body, problems)
        if b.get("routing_key") != PD_KEY:
            problems.append("routing_key missing or wrong")
        action, key = b.get("event_action"), b.get("dedup_key")
        if action not in ("trigger", "acknowledge", "resolve"):
            problems.append(f"event_action must be trigger|acknowledge|resolve (got {action!r})")
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            problems.append("dedup_key must be 1..255 characters")
        if action == "trigger":
            p = b.get("payload") or {}
            if not p.get("summary") or len(p["summary"]) > 1024 or not p.get("source"):
                problems.append("payload.summary (<= 1024) and payload.source are required")
            if p.get("severity") not in self.SEVERITIES:
                problems.append(f"payload.severity must be one of {self.SEVERITIES}")
        if problems:
            return None
        open_ = [a for a in self.alerts if a["dedup_key"] == key and a["status"] == "triggered"]
        if action == "trigger" and not open_:
            self.alerts.append({"dedup_key": key, "status": "triggered", "summary": b["payload"]["summary"]})
        elif action == "resolve":
            for a in open_:
                a["status"] = "resolved"
        return 202, {}, {"status": "success", "message": "Event processed", "dedup_key": key}


class FakeWebhook(Fake):
    def __init__(self):
        super().__init__()
        self.seen: dict[str, dict] = {}  # Idempotency-Key -> record (a receiver that drops duplicates)
        self.tickets: dict[str, str] = {}  # ticket_key -> last event

    def handle(self, method, path, query, headers, body, problems):
        if (method, path) != ("POST", "/hooks/aiops"):
            problems.append(f"no such endpoint {method} {path}")
            return None
        if headers.get("Authorization") != f"Bearer {HOOK_TOKEN}":
            problems.append("Authorization must be Bearer <token>")
        if headers.get("X-Team") != "sre":
            problems.append("the configured static header is missing")
        record = self.json_body(method, path, headers, body, problems)
        problems += [f"schema: {e.message}" for e in TICKET_SCHEMA.iter_errors(record)]
        want = f"{record.get('ticket_key')}:{record.get('event')}:{record.get('incident_version')}"
        if headers.get("Idempotency-Key") != want:
            problems.append(f"Idempotency-Key must be {want!r} (got {headers.get('Idempotency-Key')!r})")
        if problems:
            return None
        if want not in self.seen:
            self.seen[want] = record
            if record["event"] == "create" or record["ticket_key"] not in self.tickets:
                self.tickets.setdefault(record["ticket_key"], "create")
            self.tickets[record["ticket_key"]] = record["event"]
        return 200, {}, {"id": f"WH-{record['ticket_key']}"}


# --- wiring -----------------------------------------------------------------------------------

FAKES = {"clickup": FakeClickUp, "jira": FakeJira, "pagerduty": FakePagerDuty, "webhook": FakeWebhook}


def settings_for(name: str, url: str, **retry) -> DeliverySettings:
    per_sink = {
        "clickup": {"base_url": url, "list_id": "901", "token": "env:CLICKUP_TOKEN", "incident_field_id": FIELD_ID,
                    "assignees": {"alice": 183}},
        "jira": {"base_url": url, "project_key": "OPS", "issue_type": "Incident", "email": JIRA_EMAIL,
                 "api_token": "env:JIRA_API_TOKEN", "assignees": {"alice": "5b10ac8d82e05b22cc7d4ef5"}},
        "pagerduty": {"url": f"{url}/v2/enqueue", "routing_key": "env:PAGERDUTY_ROUTING_KEY", "source": "aiops.test"},
        "webhook": {"url": f"{url}/hooks/aiops", "token": "env:AIOPS_HOOK_TOKEN", "headers": {"X-Team": "sre"}},
    }
    return DeliverySettings.model_validate({name: per_sink[name], "retry": {"max_attempts": 4, **retry}})


def tickets(fake) -> int:
    """How many tickets the fake tracker holds."""
    if isinstance(fake, FakeClickUp):
        return len(fake.tasks)
    if isinstance(fake, FakeJira):
        return len(fake.issues)
    if isinstance(fake, FakePagerDuty):
        return len(fake.alerts)
    return len(fake.tickets)


def resolved(fake, key="inc-42") -> bool:
    if isinstance(fake, FakeClickUp):
        return [t["status"]["status"] for t in fake.tasks.values()] == ["complete"]
    if isinstance(fake, FakeJira):
        return [i["fields"]["status"] for i in fake.issues.values()] == ["Done"]
    if isinstance(fake, FakePagerDuty):
        return [a["status"] for a in fake.alerts] == ["resolved"]
    return fake.tickets == {key: "resolve"}


class Clock:
    def __init__(self, now=1_755_700_000.0):
        self.now = now
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def secrets(monkeypatch):
    monkeypatch.setenv("CLICKUP_TOKEN", CLICKUP_TOKEN)
    monkeypatch.setenv("JIRA_API_TOKEN", JIRA_TOKEN)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", PD_KEY)
    monkeypatch.setenv("AIOPS_HOOK_TOKEN", HOOK_TOKEN)


@pytest.fixture(params=list(FAKES))
def api(request):
    fake = FAKES[request.param]()
    fake.sink = request.param
    yield fake
    fake.close()


def engine(fake, ledger=None, *, transport=None, dead=None, clock=None, **retry):
    import os

    settings = settings_for(fake.sink, fake.url, **retry)
    clock = clock or Clock()
    return TicketDelivery(
        build_sinks(settings), ledger if ledger is not None else MemoryLedger(),
        transport or UrllibTransport(timeout=5, proxies={}), environ=dict(os.environ), retry=settings.retry,
        sleep=clock.sleep, clock=clock, rng=random.Random(7),
        on_dead_letter=(lambda ev, reason: dead.append((ev, reason))) if dead is not None else None)


def ev(fake, kind, version, **kw):
    return event(kind, version, sink=fake.sink, **kw)


# --- exactly one ticket per incident ---------------------------------------------------------

def test_lifecycle_with_rate_limits_errors_and_duplicates_makes_one_ticket(api):
    clock = Clock()
    eng = engine(api, clock=clock)
    write = {"clickup": ("POST", r"/api/v2/list/901/task"), "jira": ("POST", r"/rest/api/3/issue"),
             "pagerduty": ("POST", r"/v2/enqueue"), "webhook": ("POST", r"/hooks/aiops")}[api.sink]
    api.fault(*write, (429, {"Retry-After": "3"}), (503, {}))

    first = eng.deliver(ev(api, "create", 1))
    assert isinstance(first, Delivered) and first.created
    assert eng.deliver(ev(api, "create", 1)) == Skipped("inc-42", "create", f"already delivered up to version 1 "
                                                         f"(create) as {first.ticket_id}")
    assert isinstance(eng.deliver(ev(api, "update", 2, priority="P2")), Delivered)
    assert isinstance(eng.deliver(ev(api, "update", 2, priority="P2")), Skipped)
    assert isinstance(eng.deliver(ev(api, "resolve", 3)), Delivered)
    assert isinstance(eng.deliver(ev(api, "resolve", 3)), Skipped)

    assert api.errors == []
    assert tickets(api) == 1
    assert resolved(api)
    assert clock.sleeps[0] == 3.0  # Retry-After honoured exactly
    assert 0.5 <= clock.sleeps[1] <= 2.0  # then backoff: 2nd attempt, base 1s doubled, jittered into [half, full]


def test_redelivery_to_a_restarted_engine_with_the_same_ledger_sends_nothing(api, tmp_path):
    path = tmp_path / "ledger.json"
    eng = engine(api, JsonFileLedger(path))
    assert isinstance(eng.deliver(ev(api, "create", 1)), Delivered)
    n = len(api.requests)
    again = engine(api, JsonFileLedger(path))
    assert isinstance(again.deliver(ev(api, "create", 1)), Skipped)
    assert len(api.requests) == n
    assert json.loads(path.read_text())["inc-42"]["version"] == 1


class Crash(BaseException):
    """The process dies: not an error the engine may catch."""


def test_restart_with_fresh_ledger_after_lost_create_answer_makes_one_ticket(api):
    real = UrllibTransport(timeout=5, proxies={})

    def crash_after_create(req):
        resp = real(req)
        if req.method == "POST" and (req.url.endswith("/task") or req.url.endswith("/issue")
                                     or api.sink in ("pagerduty", "webhook")):
            raise Crash  # the tracker created it; the ledger never heard
        return resp

    with pytest.raises(Crash):
        engine(api, transport=crash_after_create).deliver(ev(api, "create", 1))
    assert tickets(api) == 1

    fresh = engine(api, MemoryLedger())
    out = fresh.deliver(ev(api, "create", 1))
    assert isinstance(out, Delivered)
    assert tickets(api) == 1
    assert fresh.deliver(ev(api, "resolve", 2)) and resolved(api)
    assert tickets(api) == 1 and api.errors == []


def test_lost_create_answer_within_one_run_searches_before_creating_again(api):
    write = {"clickup": ("POST", r"/api/v2/list/901/task"), "jira": ("POST", r"/rest/api/3/issue"),
             "pagerduty": ("POST", r"/v2/enqueue"), "webhook": ("POST", r"/hooks/aiops")}[api.sink]
    api.fault(*write, "lose", "drop")
    out = engine(api).deliver(ev(api, "create", 1))
    assert isinstance(out, Delivered)
    assert tickets(api) == 1 and api.errors == []
    if api.sink in ("clickup", "jira"):
        searches = [r for r in api.requests if r[0] == "GET" or r[1].endswith("/search/jql")]
        assert len(searches) >= 2  # searched again after the lost answer, found it, did not create


def test_update_or_resolve_without_ledger_entry_finds_the_ticket(api):
    engine(api).deliver(ev(api, "create", 1))
    fresh = engine(api, MemoryLedger())
    assert isinstance(fresh.deliver(ev(api, "update", 2)), Delivered)
    assert isinstance(fresh.deliver(ev(api, "resolve", 3)), Delivered)
    assert tickets(api) == 1 and resolved(api) and api.errors == []


def test_resolve_redelivered_after_its_answer_was_lost_is_not_an_error(api):
    eng = engine(api)
    eng.deliver(ev(api, "create", 1))
    if api.sink == "jira":
        api.fault("POST", r"/rest/api/3/issue/OPS-1/transitions", "lose")
    else:
        api.fault("PUT" if api.sink == "clickup" else "POST", r".*", "lose")
    dead = []
    out = engine(api, eng.ledger, dead=dead).deliver(ev(api, "resolve", 2))
    assert isinstance(out, Delivered), dead
    assert tickets(api) == 1 and resolved(api) and api.errors == []


# --- dead letters --------------------------------------------------------------------------------

def test_persistent_5xx_is_dead_lettered_after_n_attempts_then_delivered_once(api):
    dead: list = []
    clock = Clock()
    path = {"clickup": r"/api/v2/list/901/task", "jira": r"/rest/api/3/(issue|search/jql)",
            "pagerduty": r"/v2/enqueue", "webhook": r"/hooks/aiops"}[api.sink]
    method = "GET" if api.sink == "clickup" else "POST"
    api.fault(method, path, *[(503, {})] * 50)
    eng = engine(api, dead=dead, clock=clock, max_attempts=3, backoff_initial="1s", backoff_max="1.5s")
    out = eng.deliver(ev(api, "create", 1))
    assert isinstance(out, DeadLettered)
    assert dead == [(ev(api, "create", 1), out.reason)]
    assert "gave up after 3 attempts: HTTP 503" in out.reason and f"{api.sink} create of inc-42 v1" in out.reason
    assert all(s <= 1.5 for s in clock.sleeps)  # capped
    assert eng.ledger.get("inc-42") is None  # not recorded as delivered: a redelivery tries again
    api.script.clear()
    assert isinstance(eng.deliver(ev(api, "create", 1)), Delivered)
    assert tickets(api) == 1


def test_connection_refused_is_retried_then_dead_lettered(api):
    dead: list = []
    clock = Clock()
    eng = engine(api, dead=dead, clock=clock, max_attempts=2)
    api.close()  # nothing listens any more
    out = eng.deliver(ev(api, "create", 1))
    assert isinstance(out, DeadLettered) and "connection error" in out.reason
    assert len(dead) == 1 and len(clock.sleeps) >= 1
    api.__init__()  # so the fixture's close() has a server to close


def test_a_permanent_4xx_is_dead_lettered_without_retrying():
    jira = FakeJira()
    jira.sink = "jira"
    try:
        dead: list = []
        clock = Clock()
        jira.fault("POST", r"/rest/api/3/issue", (400, {}))
        out = engine(jira, dead=dead, clock=clock).deliver(event("create", 1, sink="jira"))
        assert isinstance(out, DeadLettered)
        assert "POST /rest/api/3/issue: HTTP 400" in out.reason and clock.sleeps == []
    finally:
        jira.close()


def test_a_missing_secret_is_dead_lettered_naming_the_variable(api, monkeypatch):
    env = {"clickup": "CLICKUP_TOKEN", "jira": "JIRA_API_TOKEN", "pagerduty": "PAGERDUTY_ROUTING_KEY",
           "webhook": "AIOPS_HOOK_TOKEN"}[api.sink]
    monkeypatch.delenv(env)
    dead: list = []
    out = engine(api, dead=dead).deliver(ev(api, "create", 1))
    assert isinstance(out, DeadLettered) and f"environment variable {env} is not set" in out.reason
    assert api.requests == []


def test_retry_after_as_an_http_date_uses_the_injected_clock():
    cu = FakeClickUp()
    cu.sink = "clickup"
    try:
        clock = Clock(now=1445412480.0)
        cu.fault("GET", r"/api/v2/list/901/task", (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}),
                 (429, {"X-RateLimit-Reset": str(1445412480 + 10 + 4)}))
        out = engine(cu, clock=clock, retry_after_max="1m").deliver(event("create", 1))
        assert isinstance(out, Delivered)
        assert clock.sleeps == [10.0, 4.0]
    finally:
        cu.close()


def test_unknown_sink_and_undecodable_records_are_dead_lettered():
    dead: list = []
    eng = TicketDelivery({}, MemoryLedger(), lambda req: (_ for _ in ()).throw(TransportError("no")), environ={},
                         on_dead_letter=lambda ev, reason: dead.append(reason))
    assert isinstance(eng.deliver(event("create", 1, sink="jira")), DeadLettered)
    assert isinstance(eng.deliver(event("create", 1, sink="topic")), Skipped)
    assert isinstance(eng.deliver_payload(b"{not json"), DeadLettered)
    assert dead[0] == "sink 'jira' is not configured (tickets.delivery.jira)"
    assert dead[1].startswith("invalid ticket record: invalid JSON")


# --- records and settings -------------------------------------------------------------------------

def test_decode_ticket_inverts_the_codec():
    e = event("resolve", 3)
    assert decode_ticket(codec.encode_ticket(e)) == e
    with pytest.raises(ValueError, match="event: expected create, update, escalate or resolve"):
        decode_ticket(codec.encode_ticket(replace(e, event="reopen")))


def test_webhook_body_is_the_ticket_record_on_the_topic():
    hook = FakeWebhook()
    hook.sink = "webhook"
    try:
        e = event("create", 1, sink="webhook")
        engine(hook).deliver(e)
        assert hook.seen["inc-42:create:1"] == orjson.loads(codec.encode_ticket(e))
    finally:
        hook.close()


def test_dispatch_markdown_becomes_valid_adf():
    doc = markdown_to_adf(DESCRIPTION)
    problems: list[str] = []
    FakeJira._check_adf(doc, problems)
    assert problems == []
    types = [n["type"] for n in doc["content"]]
    assert types == ["paragraph", "bulletList", "paragraph", "orderedList"]
    nested = doc["content"][3]["content"][0]["content"]
    assert [n["type"] for n in nested] == ["paragraph", "bulletList"]


def test_settings_refuse_inline_secrets_and_name_unconfigured_sinks():
    with pytest.raises(ValueError, match="must be 'env:VARIABLE_NAME'"):
        DeliverySettings.model_validate({"clickup": {"list_id": "1", "token": "pk_123"}})
    topo_yaml = {"services": {"checkout": {}},
                 "tickets": {"sink": "jira", "teams": {"db": {"sink": "pagerduty"}}}}
    topo = parse_topology(topo_yaml)
    assert sink_problems(topo.tickets, DeliverySettings()) == [
        ("tickets.sink", "sink 'jira' has no settings: add tickets.delivery.jira"),
        ("tickets.teams.db.sink", "sink 'pagerduty' has no settings: add tickets.delivery.pagerduty"),
    ]
    # The topology's own secret scan refuses an inline token wherever the section lands.
    with pytest.raises(ConfigError, match="secrets must not be written in topology.yaml"):
        parse_topology({"services": {"checkout": {}}, "tickets": {"delivery": {"clickup": {"token": "pk_1"}}}})


def test_an_escalation_of_a_delivered_version_is_delivered_once(api):
    """The dispatcher escalates with the incident's current version, already sent as an update."""
    eng = engine(api)
    assert isinstance(eng.deliver(ev(api, "create", 1)), Delivered)
    assert isinstance(eng.deliver(ev(api, "update", 2)), Delivered)
    n = len(api.requests)
    assert isinstance(eng.deliver(ev(api, "escalate", 2)), Delivered)
    assert len(api.requests) > n
    n = len(api.requests)
    assert isinstance(eng.deliver(ev(api, "escalate", 2)), Skipped)
    assert len(api.requests) == n and api.errors == [] and tickets(api) == 1
