"""Kafka security settings from the environment: checked up front, mapped the same way for
Faust, aiokafka and kafka-python, and never printed."""
from __future__ import annotations

import ssl

import pytest

from streams.kafka_security import KafkaSecurity, SecurityConfigError


def test_plaintext_by_default_adds_nothing():
    s = KafkaSecurity.from_env({})
    assert s.protocol == "PLAINTEXT"
    assert s.aiokafka_kwargs() == {} and s.kafka_python_kwargs() == {} and s.faust_credentials() is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_maps_to_every_client(mechanism):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_SASL_MECHANISM": mechanism,
                                "KAFKA_SASL_USERNAME": "aiops", "KAFKA_SASL_PASSWORD": "pw"})
    want = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
            "sasl_plain_username": "aiops", "sasl_plain_password": "pw"}
    assert s.kafka_python_kwargs() == want
    assert s.aiokafka_kwargs() == want
    # What Faust hands to aiokafka from our credentials is the same.
    faust_kw = credentials_to_aiokafka_auth(s.faust_credentials())
    assert {k: faust_kw[k] for k in want} == want and faust_kw["ssl_context"] is None


def test_sasl_ssl_carries_a_verifying_context(tmp_path):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                                "KAFKA_SASL_USERNAME": "aiops", "KAFKA_SASL_PASSWORD": "pw"})
    ctx = s.aiokafka_kwargs()["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    faust_kw = credentials_to_aiokafka_auth(s.faust_credentials())
    assert faust_kw["security_protocol"] == "SASL_SSL" and faust_kw["sasl_mechanism"] == "SCRAM-SHA-512"


def test_password_from_a_file_and_never_in_repr(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-from-file\n")
    s = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "aiops",
                                "KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert s.password == "s3cret-from-file"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)


def test_every_problem_is_reported_at_once_naming_the_variable(tmp_path):
    with pytest.raises(SecurityConfigError) as err:
        KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI",
                                "KAFKA_SSL_CERTFILE": str(tmp_path / "missing.pem"),
                                "KAFKA_SSL_CHECK_HOSTNAME": "maybe"})
    text = str(err.value)
    for var in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CERTFILE",
                "KAFKA_SSL_KEYFILE", "KAFKA_SSL_CHECK_HOSTNAME"):
        assert var in text


def test_ssl_files_with_a_plaintext_protocol_are_refused(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(SecurityConfigError, match="KAFKA_SECURITY_PROTOCOL"):
        KafkaSecurity.from_env({"KAFKA_SSL_CAFILE": str(ca)})


def test_inline_and_file_secret_together_is_ambiguous(tmp_path):
    f = tmp_path / "pw"
    f.write_text("a")
    with pytest.raises(SecurityConfigError, match="set one, not both"):
        KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u",
                                "KAFKA_SASL_PASSWORD": "a", "KAFKA_SASL_PASSWORD_FILE": str(f)})
