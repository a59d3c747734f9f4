"""The integration tests' broker: a real one, never a mock.

``KAFKA_BOOTSTRAP_SERVERS`` when set; else testcontainers' Kafka when a Docker engine
answers; else the embedded tansu broker on a free loopback port.
"""
from __future__ import annotations

import os

import pytest

from streams.broker import EmbeddedBroker, docker_engine_available


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if docker_engine_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log") as broker:
        yield broker.bootstrap
