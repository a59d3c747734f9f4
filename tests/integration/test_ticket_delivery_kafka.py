"""`aiops tickets deliver` on a real broker: ticket events from aiops.tickets reach a tracker
exactly once per incident, across a duplicate on the topic and a restart of the deliverer."""
from __future__ import annotations

import uuid

from streams import codec
from streams.config import load_topology
from streams.delivery import run_ticket_delivery
from tests.contract.test_ticket_sinks import CLICKUP_TOKEN, FakeClickUp, event, resolved, settings_for, tickets
from tests.integration.harness import private_topology, produce


def test_one_ticket_per_incident_across_duplicates_and_a_restart(kafka_bootstrap, tmp_path):
    topo = load_topology(private_topology(tmp_path))
    fake = FakeClickUp()
    try:
        unique = uuid.uuid4().hex[:8]
        settings = settings_for("clickup", fake.url).model_copy(
            update={"ledger_topic": f"t{unique}.ticket-ledger", "group_id": f"t{unique}-tickets"})
        env = {"CLICKUP_TOKEN": CLICKUP_TOKEN}
        stream = [event("create", 1), event("update", 2), event("update", 2), event("resolve", 3)]
        produce(kafka_bootstrap, topo.topics.tickets, [codec.encode_ticket(e) for e in stream], key=b"inc-42")

        rc = run_ticket_delivery(topo, kafka_bootstrap, settings=settings, environ=env, max_idle=5.0)
        assert rc == 0 and fake.errors == []
        assert tickets(fake) == 1 and resolved(fake)
        requests = len(fake.requests)

        # A restart re-reads nothing it committed; the same events delivered again are skipped
        # by the ledger on its compacted topic.
        produce(kafka_bootstrap, topo.topics.tickets, [codec.encode_ticket(e) for e in stream], key=b"inc-42")
        rc = run_ticket_delivery(topo, kafka_bootstrap, settings=settings, environ=env, max_idle=5.0)
        assert rc == 0 and fake.errors == []
        assert tickets(fake) == 1 and len(fake.requests) == requests
    finally:
        fake.close()
