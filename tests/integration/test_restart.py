"""kill -9 a worker mid-stream and start another: no incident lost, none duplicated, one ticket
and one planned action per incident step, the same final incidents as `aiops replay`."""
from __future__ import annotations

from tests.integration.harness import assert_each_output_once, consume_until, fault_midway, produce, worker_process
from tests.integration.test_pipeline_kafka import essence, final_state


def test_kill_9_mid_stream_then_restart(kafka_bootstrap, tmp_path):
    # Cut a few minutes into the fault: the incident is open, its ticket and action are out.
    topo_path, topo, lines, cut, want = fault_midway(tmp_path)

    with worker_process(topo_path, kafka_bootstrap, tmp_path) as first:
        produce(kafka_bootstrap, topo.topics.metrics, lines[:cut])
        consume_until(kafka_bootstrap, topo.topics.tickets, lambda recs: any(r["event"] == "create" for r in recs),
                      timeout=120, proc=first)
        first.kill()  # SIGKILL: no shutdown, no final commit
        first.wait()

    with worker_process(topo_path, kafka_bootstrap, tmp_path) as second:
        produce(kafka_bootstrap, topo.topics.metrics, lines[cut:])
        got = consume_until(kafka_bootstrap, topo.topics.incidents,
                            lambda recs: essence(final_state(recs)) == essence(want), timeout=180, proc=second)
        tickets = consume_until(kafka_bootstrap, topo.topics.tickets, lambda recs: True, timeout=10)
        actions = consume_until(kafka_bootstrap, topo.topics.actions, lambda recs: True, timeout=10)

    assert essence(final_state(got)) == essence(want)
    assert_each_output_once(got, tickets, actions)
