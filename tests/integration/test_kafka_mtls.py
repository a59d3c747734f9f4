"""mTLS to Kafka with the settings `KAFKA_SSL_*` give, through both client libraries aiops uses.

The embedded broker speaks plaintext only, so the test puts a TLS terminator in front of it
that demands a client certificate signed by the test CA, and has the broker advertise the
terminator's port: every connection a client makes, bootstrap and after, goes through TLS.
Certificates are made with the openssl command line for each run.
"""
from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, free_port
from streams.kafka_security import KafkaSecurity

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command line")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> dict[str, Path]:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=aiops-test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class TlsTerminator:
    """Accepts mTLS on ``port`` and pipes the plaintext to ``upstream``; runs in its own thread."""

    def __init__(self, port: int, upstream: int, pki: dict[str, Path]):
        self.port, self.upstream = port, upstream
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca.pem"]))
        self.ctx.load_cert_chain(str(pki["server.pem"]), str(pki["server.key"]))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        if writer.get_extra_info("peercert") is None:
            self.refused += 1
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def serve():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ctx)
            self.ready.set()

        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_mtls_round_trip_with_both_client_libraries(tmp_path):
    pki = make_pki(tmp_path)
    tls_port = free_port()
    security = KafkaSecurity.from_env({
        "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pki["ca.pem"]),
        "KAFKA_SSL_CERTFILE": str(pki["client.pem"]), "KAFKA_SSL_KEYFILE": str(pki["client.key"])})
    topic = "mtls-" + uuid.uuid4().hex[:8]
    with EmbeddedBroker(advertised_port=tls_port, log_path=tmp_path / "tansu.log") as broker, \
            TlsTerminator(tls_port, broker.port, pki):
        bootstrap = f"127.0.0.1:{tls_port}"
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **security.kafka_python_kwargs())
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **security.kafka_python_kwargs())
        for i in range(5):
            producer.send(topic, f"m{i}".encode())
        producer.flush(30)
        producer.close()

        async def consume() -> list[bytes]:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                        group_id=None, **security.aiokafka_kwargs())
            await consumer.start()
            try:
                got: list[bytes] = []
                for _ in range(40):
                    for msgs in (await consumer.getmany(timeout_ms=500)).values():
                        got += [m.value for m in msgs]
                    if len(got) >= 5:
                        break
                return got
            finally:
                await consumer.stop()

        assert asyncio.run(consume()) == [f"m{i}".encode() for i in range(5)]


def test_a_client_without_its_certificate_is_refused(tmp_path):
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    pki = make_pki(tmp_path)
    tls_port = free_port()
    no_cert = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pki["ca.pem"])})

    async def connect() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{tls_port}", **no_cert.aiokafka_kwargs())
        try:
            await producer.start()
        finally:
            await producer.stop()

    with EmbeddedBroker(advertised_port=tls_port, log_path=tmp_path / "tansu.log") as broker, \
            TlsTerminator(tls_port, broker.port, pki):
        with pytest.raises(KafkaConnectionError):
            asyncio.run(connect())
