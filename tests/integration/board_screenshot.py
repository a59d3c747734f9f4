"""The README's screenshot of the incident board, reproducible:

    .venv/bin/python -m tests.integration.board_screenshot docs/board.png

An embedded broker and one worker; the incidents, actions and tickets that `aiops replay`
computes for the three shipped scenarios (two of them cut while their fault is on, so they are
open), produced to the worker's topics; then headless Chromium's screenshots of ``GET /`` once it is live, and of the page of the
incident whose action awaits approval (``<name>-incident.png``).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson
import yaml

from streams import simulate as sim
from streams.broker import EmbeddedBroker
from streams.config import load_topology
from streams.replay import replay
from tests.browser import Browser, find_chromium
from tests.integration.harness import REPO, _first_point_time, private_topology, worker_process
from tests.integration.test_board_kafka import Board, produce_keyed

SCENARIOS = {"flash-sale-db-pool": None, "bad-gateway-node": 600.0, "disk-full": 900.0}  # cut this long into the fault


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker(log_path=Path(d) / "tansu.log") as broker:
        tmp = Path(d)
        doc = yaml.safe_load((REPO / "topology.yaml").read_text())
        doc["remediation"]["dry_run"] = False
        doc["remediation"]["policies"][0]["steps"][0]["risky"] = True
        (tmp / "base.yaml").write_text(yaml.safe_dump(doc))
        topo_path = private_topology(tmp, base=tmp / "base.yaml")
        topo = load_topology(topo_path)
        records: list[tuple[str, str, dict]] = []
        for name, cut_after in SCENARIOS.items():
            result = sim.simulate(topo, sim.load_scenarios([name]))
            requests = result.requests
            if cut_after is not None:
                onset = result.truth[0]["start"]
                requests = [r for r in requests if _first_point_time(r) <= onset + cut_after]
            (tmp / "t.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in requests))
            paths = {k: tmp / f"{name}-{k}.jsonl" for k in ("incidents", "actions", "tickets")}
            replay(topo, tmp / "t.jsonl", paths["incidents"], actions=paths["actions"], tickets=paths["tickets"],
                   progress=None)
            t = topo.topics
            for kind, topic, key in (("incidents", t.incidents, "id"), ("actions", t.actions, "id"),
                                     ("tickets", t.tickets, "ticket_key")):
                records += [(topic, r[key], r) for r in map(orjson.loads, paths[kind].read_bytes().splitlines())]
        with worker_process(topo_path, broker.bootstrap, tmp) as proc:
            produce_keyed(broker.bootstrap, records)
            board = Board(broker.bootstrap, topo_path, topo, proc, {}, [])
            ids = {r["id"] for _, _, r in records if "version" in r and "title" in r}
            board.until("/", lambda s, body: s == 200 and all(f'data-id="{i}"' in body for i in ids))
            binary = find_chromium()
            if binary is None:
                raise SystemExit("no Chromium: apt-get install chromium")
            with Browser(binary) as browser:
                browser.goto(board.url + "/")
                browser.wait_for("document.getElementById('live').textContent === 'live'")
                browser.screenshot(out)
                awaiting = next(r["incident_id"] for _, _, r in records if r.get("decision") == "awaiting_approval")
                browser.goto(f"{board.url}/incidents/{awaiting}")
                browser.wait_for("(i => i.complete && i.naturalWidth > 0)(document.querySelector('.rca img'))")
                browser.screenshot(out.with_name(out.stem + "-incident.png"))
    print(f"wrote {out} and {out.with_name(out.stem + '-incident.png')}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/board.png"))
