"""The incident board on a real broker and in a real browser.

One worker serves the whole module. It reads the incidents, actions and tickets that `aiops
replay` computes for a scenario (produced to its topics as the worker's agents would), plus one
incident whose every text field holds markup. The HTTP tests read the pages as text; the browser
tests drive Debian's headless Chromium (:mod:`tests.browser`) and skip, saying why, without it.
"""
from __future__ import annotations

import asyncio
import time
import uuid
import urllib.error
import urllib.request

import orjson
import pytest
import yaml

from evaluation.metrics import final_versions
from detectors.records import rfc3339
from streams import codec
from streams import simulate as sim
from streams.broker import ensure_topics
from streams.config import load_topology
from streams.replay import replay
from tests.browser import Browser, chromium_or_skip
from tests.integration.harness import REPO, consume_until, private_topology, produce, worker_process

pytestmark = pytest.mark.integration

TOKEN = "board-test-token-of-alice"
HOSTILE = "<script>window.__pwned=1</script>"
T0 = 1_767_225_600.0


def hostile_incident(version: int = 1, title: str = f"{HOSTILE} checkout is down") -> dict:
    """An incident whose text fields (as telemetry could set them) all hold markup."""
    at = rfc3339(T0 + 3000 + version)
    return {"schema_version": 1, "id": "inc-hostile01", "version": version, "status": "open", "reason": "opened",
            "opened_at": rfc3339(T0 + 3000), "updated_at": at, "resolved_at": None, "title": title,
            "priority": "P1", "severity": "critical", "services": ["<img src=x onerror=window.__pwned=2>"],
            "alerts": {"count": 1, "firing": 1, "fingerprints": ["fp-1"]},
            "root_causes": [{"service": "<b>db</b>", "score": 0.9, "kind": "errors", "path": ["<b>db</b>", "api"],
                             "reason": "<iframe src=javascript:window.__pwned=3>",
                             "evidence": [{"series": "db/x", "metric": "x", "score": 0.9, "value": 1.0,
                                           "expected": 0.0, "at": at, "detail": "<script>window.__pwned=4</script>",
                                           "labels": {}}]}],
            "owner": None, "labels": {"note": HOSTILE}, "notification": "page", "suspected_edges": []}


class Board:
    def __init__(self, bootstrap, topo_path, topo, proc, want, actions):
        self.bootstrap, self.topo_path, self.topo, self.proc = bootstrap, topo_path, topo, proc
        self.want, self.actions = want, actions
        self.url = f"http://127.0.0.1:{proc.web_port}"

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, str]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def until(self, path: str, ok, timeout: float = 120.0, headers: dict | None = None) -> str:
        """GET ``path`` until ``ok(status, body)``; the body."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}")
            try:
                status, _, body = self.get(path, headers)
            except OSError:
                status, body = 0, ""
            if ok(status, body):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"GET {path}: condition not met after {timeout}s (last {status})")
            time.sleep(0.3)


def produce_keyed(bootstrap: str, records: list[tuple[str, str, dict]]) -> None:
    """``(topic, key, record)`` each, keyed as the worker's agents key them, through one producer."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        for topic, key, record in records:
            producer.send(topic, orjson.dumps(record), key=key.encode())
        producer.flush(30)
    finally:
        producer.close(5)


@pytest.fixture(scope="module")
def board(kafka_bootstrap, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    doc = yaml.safe_load((REPO / "topology.yaml").read_text())
    # The scenario's pool saturation plans a step; risky and out of dry run here, it waits for an
    # approval (nothing executes: the module runs no executor).
    doc["remediation"]["dry_run"] = False
    doc["remediation"]["policies"][0]["steps"][0]["risky"] = True
    # Delivery to Jira, so a ledger entry gives the incident's page a link to its issue.
    ledger = f"t{uuid.uuid4().hex[:8]}.ticket-ledger"
    doc["tickets"]["delivery"] = {"ledger_topic": ledger, "jira": {
        "base_url": "https://acme.atlassian.net", "project_key": "OPS", "email": "ops@acme.test"}}
    base = tmp / "base.yaml"
    base.write_text(yaml.safe_dump(doc))
    topo_path = private_topology(tmp, base=base)
    ensure_topics(kafka_bootstrap, [ledger], partitions=1)  # before the worker looks for it
    topo = load_topology(topo_path)
    result = sim.simulate(topo, sim.load_scenarios(["flash-sale-db-pool"]))
    telemetry = tmp / "telemetry.jsonl"
    telemetry.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in result.requests))
    paths = {k: tmp / f"{k}.jsonl" for k in ("incidents", "actions", "tickets")}
    replay(topo, telemetry, paths["incidents"], actions=paths["actions"], tickets=paths["tickets"], progress=None)
    recs = {k: [orjson.loads(x) for x in p.read_bytes().splitlines()] for k, p in paths.items()}
    want = final_versions(recs["incidents"])
    assert want and any(a["decision"] == "awaiting_approval" for a in recs["actions"]), recs["actions"]
    with worker_process(topo_path, kafka_bootstrap, tmp, env={"AIOPS_HTTP_TOKENS": f"alice={TOKEN}"}) as proc:
        t = topo.topics
        produce_keyed(kafka_bootstrap, [(t.incidents, r["id"], r) for r in recs["incidents"] + [hostile_incident()]]
                      + [(t.actions, r["id"], r) for r in recs["actions"]]
                      + [(t.tickets, r["ticket_key"], r) for r in recs["tickets"]])
        b = Board(kafka_bootstrap, topo_path, topo, proc, want, recs["actions"])
        b.until("/", lambda s, body: s == 200 and all(f'data-id="{i}"' in body for i in [*want, "inc-hostile01"]))
        yield b


# --- over HTTP ------------------------------------------------------------------------------

def test_the_board_lists_the_scenarios_incidents_with_their_chain(board):
    status, headers, body = board.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for iid, rec in board.want.items():
        assert f'href="/incidents/{iid}"' in body
        rc = rec["root_causes"][0]
        assert f'<span class="cause">{rc["service"]}</span>' in body
    assert "<script>window" not in body and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body


def test_an_incidents_page_shows_its_picture_causes_actions_and_runbooks(board):
    iid, rec = next(iter(board.want.items()))
    status, _, body = board.get(f"/incidents/{iid}")
    assert status == 200
    assert f'<img src="/incidents/{iid}/rca.svg?v={rec["version"]}"' in body
    assert rec["root_causes"][0]["service"] in body and "Recommended runbooks" in body
    awaiting = [a["id"] for a in board.actions if a["incident_id"] == iid and a["decision"] == "awaiting_approval"]
    assert awaiting and f'data-approve="{awaiting[0]}"' in body
    status, headers, svg = board.get(f"/incidents/{iid}/rca.svg")
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    assert f'id="node-{rec["root_causes"][0]["service"]}"' in svg
    assert board.get("/incidents/inc-nosuch")[0] == 404


def test_an_incidents_page_links_to_its_ticket_once_delivery_recorded_it(board):
    iid = next(iter(board.want))
    produce(board.bootstrap, board.topo.tickets.delivery.ledger_topic,
            [orjson.dumps({"ticket_id": "OPS-7", "version": 1, "event": "create", "sink": "jira"})], key=iid.encode())
    body = board.until(f"/incidents/{iid}", lambda s, b: "OPS-7" in b)
    assert '<a href="https://acme.atlassian.net/browse/OPS-7" rel="noopener noreferrer" target="_blank">' in body


def test_hostile_text_is_escaped_everywhere_on_the_incident_page(board):
    status, _, body = board.get("/incidents/inc-hostile01")
    assert status == 200
    for raw in ("<script>window", "<img src=x", "<b>db</b>", "<iframe"):
        assert raw not in body
    assert "&lt;b&gt;db&lt;/b&gt;" in body and "note=&lt;script&gt;" in body


def test_acting_without_a_token_is_refused(board):
    req = urllib.request.Request(board.url + "/control", method="POST",
                                 data=orjson.dumps({"type": "approve", "action_id": board.actions[0]["id"]}))
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=30)
    assert exc.value.code == 401


def test_a_new_version_is_announced_on_the_event_stream(board):
    import aiohttp

    async def run() -> list[str]:
        async with aiohttp.ClientSession() as s, s.get(board.url + "/events") as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            await resp.content.readline()  # the retry line: the stream is open, the listener registered
            await resp.content.readline()
            await asyncio.to_thread(produce, board.bootstrap, board.topo.topics.incidents,
                                    [orjson.dumps(hostile_incident(2, "checkout is down, version 2"))],
                                    b"inc-hostile01")
            lines: list[str] = []
            while '"inc-hostile01"' not in "".join(lines):
                lines.append((await asyncio.wait_for(resp.content.readline(), 120)).decode())
            return lines

    lines = asyncio.run(run())
    assert "event: incident\n" in lines and 'data: "inc-hostile01"\n' in lines
    assert "checkout is down, version 2" in board.get("/incidents/inc-hostile01")[2]


# --- in a real browser ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with Browser(chromium_or_skip()) as b:
        yield b


def test_browser_the_board_lists_the_scenarios_incidents(board, browser):
    browser.goto(board.url + "/")
    ids = browser.evaluate("[...document.querySelectorAll('#rows tr')].map(r => r.dataset.id)")
    assert set(board.want) <= set(ids)
    browser.wait_for("document.getElementById('live').textContent === 'live'")


def test_browser_an_incidents_page_shows_its_svg(board, browser):
    iid = next(iter(board.want))
    browser.goto(f"{board.url}/incidents/{iid}")
    # Decoded and drawn, not only requested: a broken image has no natural size.
    size = browser.wait_for("(() => { const i = document.querySelector('.rca img');"
                            " return i.complete && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight]; })()")
    assert size[0] > 100 and size[1] > 50


def test_browser_approving_from_the_page_puts_the_approval_on_aiops_control(board, browser):
    action = next(a for a in board.actions if a["decision"] == "awaiting_approval")
    browser.goto(f"{board.url}/incidents/{action['incident_id']}")
    browser.evaluate(f"document.querySelector('[data-approve=\"{action['id']}\"]').click()")
    assert "token" in browser.wait_for("document.getElementById('status').textContent")  # none typed yet
    browser.evaluate(f"(() => {{ const t = document.getElementById('token'); t.value = '{TOKEN}';"
                     " t.dispatchEvent(new Event('input')); })()")
    browser.evaluate(f"document.querySelector('[data-approve=\"{action['id']}\"]').click()")
    said = browser.wait_for("(s => s.startsWith('Approved') && s)(document.getElementById('status').textContent)")
    assert said == f"Approved {action['id']} as alice."
    records = consume_until(board.bootstrap, board.topo.topics.control,
                            lambda rs: any(r.get("action_id") == action["id"] for r in rs), proc=board.proc)
    approval = next(r for r in records if r.get("action_id") == action["id"])
    assert (approval["type"], approval["by"]) == ("approve", "alice")


def test_browser_a_silence_added_and_expired_from_the_page_goes_to_aiops_control(board, browser):
    iid = next(iter(board.want))
    browser.goto(f"{board.url}/incidents/{iid}")
    browser.evaluate(f"(() => {{ const t = document.getElementById('token'); t.value = '{TOKEN}';"
                     " t.dispatchEvent(new Event('input'));"
                     " const f = document.getElementById('silence-form');"
                     f" f.comment.value = {orjson.dumps(HOSTILE).decode()}; f.requestSubmit(); }})()")
    said = browser.wait_for("(s => s.startsWith('Silence') && s)(document.getElementById('status').textContent)")
    sid = said.split()[1]
    assert said.startswith(f"Silence {sid} added as alice")
    # The page learns of it from aiops.control like every worker, and offers to expire it.
    browser.wait_for(f"document.querySelector('[data-expire=\"{sid}\"]') !== null")
    assert HOSTILE in browser.evaluate("document.querySelector('#body table.silences').innerText")
    browser.evaluate(f"document.querySelector('[data-expire=\"{sid}\"]').click()")
    browser.wait_for("document.getElementById('status').textContent.startsWith('Expired')")
    browser.wait_for(f"document.querySelector('[data-expire=\"{sid}\"]') === null")
    records = consume_until(board.bootstrap, board.topo.topics.control,
                            lambda rs: any(r.get("type") == "expire_silence" and r.get("id") == sid for r in rs),
                            proc=board.proc)
    mine = [(r["type"], r["by"]) for r in records if r.get("id") == sid]
    assert mine == [("silence", "alice"), ("expire_silence", "alice")]
    assert browser.evaluate("typeof window.__pwned") == "undefined"


def test_browser_a_script_label_is_shown_as_text(board, browser):
    browser.goto(board.url + "/incidents/inc-hostile01")
    text = browser.evaluate("document.body.innerText")
    assert "note=<script>window.__pwned=1</script>" in text and "<b>db</b>" in text
    assert browser.evaluate("typeof window.__pwned") == "undefined"
    assert browser.evaluate("document.querySelectorAll('main script, main img:not(.rca img), main iframe').length") == 0
    browser.goto(board.url + "/")
    assert browser.evaluate("typeof window.__pwned") == "undefined"


def test_browser_the_board_updates_live(board, browser):
    browser.goto(board.url + "/")
    browser.wait_for("document.getElementById('live').textContent === 'live'")
    produce(board.bootstrap, board.topo.topics.incidents,
            [orjson.dumps(hostile_incident(3, f"{HOSTILE} version 3 arrived live"))], key=b"inc-hostile01")
    browser.wait_for("document.querySelector('tr[data-id=\"inc-hostile01\"]').textContent.includes('version 3')")
    assert browser.evaluate("typeof window.__pwned") == "undefined"


def test_browser_an_incidents_page_updates_live(board, browser):
    browser.goto(board.url + "/incidents/inc-hostile01")
    browser.wait_for("document.getElementById('live').textContent === 'live'")
    produce(board.bootstrap, board.topo.topics.incidents,
            [orjson.dumps(hostile_incident(4, "version 4 reached its page"))], key=b"inc-hostile01")
    browser.wait_for("document.querySelector('#body h1').textContent.includes('version 4 reached its page')")
    assert browser.evaluate("document.body.dataset.refreshed") is not None  # swapped in, not reloaded


# --- last: it turns reading auth on for the module's worker ---------------------------------

def test_reading_needs_a_token_once_topology_yaml_says_so(board):
    doc = yaml.safe_load(board.topo_path.read_text())
    doc["web"] = {"read_access": "token"}
    produce(board.bootstrap, board.topo.topics.config, [codec.encode_config(yaml.safe_dump(doc), "alice", time.time())],
            key=codec.CONFIG_KEY.encode())
    body = board.until("/", lambda s, _: s == 401)
    assert 'action="/login"' in body
    assert board.get("/events")[0] == 401 and board.get(f"/incidents/{next(iter(board.want))}/rca.svg")[0] == 401
    assert board.get("/", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert board.get("/", {"Authorization": "Bearer not-the-token-at-all"})[0] == 401

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(urllib.request.Request(board.url + "/login", data=f"token={TOKEN}".encode()), timeout=30)
    assert exc.value.code == 303
    cookie = exc.value.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert board.get("/", {"Cookie": cookie.split(";")[0]})[0] == 200
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(urllib.request.Request(board.url + "/login", data=b"token=wrong-token-entirely"), timeout=30)
    assert exc.value.code == 401
