"""The bounded run of every fuzz target (tests/property/fuzz.py) in ``make test``.

Each target gets mutated inputs from its corpus (``tests/property/corpus/<target>/``), drawn by
hypothesis so that a failure shrinks to a small input: the parser returns or raises only its
documented error, within ``HANG_SECONDS``, and lets out no secret that redaction would have
caught in the input. ``make fuzz`` runs the same targets for longer and reports.
``AIOPS_FUZZ_EXAMPLES`` scales the examples per target (default 300; topology: a fifth).
"""
from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings

from tests.property.fuzz import TARGETS, check, mutated

EXAMPLES = int(os.environ.get("AIOPS_FUZZ_EXAMPLES", "300"))


def test_every_parser_has_a_target_and_a_corpus():
    assert sorted(TARGETS) == sorted([
        "otlp_json_metrics", "otlp_json_logs", "otlp_json_traces", "otlp_proto_metrics", "otlp_proto_logs",
        "otlp_proto_traces", "native_batch", "prometheus_sample", "webhook_alertmanager", "webhook_datadog",
        "webhook_newrelic", "control", "change", "topology"])
    for target in TARGETS.values():
        assert target.corpus(), target.name


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_corpus_itself(name):
    target = TARGETS[name]
    for path in target.corpus():
        check(target, path.read_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name):
    target = TARGETS[name]
    seeds = [p.read_bytes() for p in target.corpus()]
    examples = max(5, EXAMPLES // 5) if name == "topology" else EXAMPLES

    @settings(max_examples=examples, deadline=timedelta(seconds=10), database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(seeds, target.tokens))
    def run(data):
        check(target, data)

    run()
