"""How every Kafka client of aiops authenticates and encrypts, read from the environment.

Secrets never come from topology.yaml: a password is taken from ``KAFKA_SASL_PASSWORD`` or from
the file named by ``KAFKA_SASL_PASSWORD_FILE`` (a mounted Kubernetes secret, say), and is kept
out of ``repr`` and logs. One :class:`KafkaSecurity` feeds all three client libraries the worker
uses, so the Faust worker, the recovery reader, the admin client and the ticket and action
processes all connect the same way.

==========================  ===========================================================
variable                    meaning
==========================  ===========================================================
KAFKA_SECURITY_PROTOCOL     PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
KAFKA_SASL_MECHANISM        PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default PLAIN)
KAFKA_SASL_USERNAME         the SASL user
KAFKA_SASL_PASSWORD         its password, or KAFKA_SASL_PASSWORD_FILE: a file holding it
KAFKA_SSL_CAFILE            CA bundle that signed the brokers' certificates (default: system CAs)
KAFKA_SSL_CERTFILE          client certificate, for mTLS (with KAFKA_SSL_KEYFILE)
KAFKA_SSL_KEYFILE           client private key, for mTLS
KAFKA_SSL_KEY_PASSWORD      the key's passphrase, or KAFKA_SSL_KEY_PASSWORD_FILE
KAFKA_SSL_CHECK_HOSTNAME    true (default) or false: verify the broker's name in its certificate
==========================  ===========================================================

>>> s = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
...     "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "aiops",
...     "KAFKA_SASL_PASSWORD": "hunter2"})
>>> s
KafkaSecurity(protocol='SASL_SSL', mechanism='SCRAM-SHA-512', username='aiops', password=<set>, cafile=None, certfile=None, check_hostname=True)
>>> s.kafka_python_kwargs()["sasl_plain_password"]
'hunter2'
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SecurityConfigError(ValueError):
    """The Kafka security variables are inconsistent; the message names the variable."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    def __repr__(self) -> str:
        parts = [f"protocol={self.protocol!r}"]
        if self.sasl:
            parts += [f"mechanism={self.mechanism!r}", f"username={self.username!r}", "password=<set>"]
        if self.tls:
            parts += [f"cafile={self.cafile!r}", f"certfile={self.certfile!r}", f"check_hostname={self.check_hostname}"]
        return f"KafkaSecurity({', '.join(parts)})"

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "KafkaSecurity":
        """Read and check the ``KAFKA_*`` variables. Raises :class:`SecurityConfigError` naming
        every variable that is wrong, all at once."""
        env = os.environ if env is None else env
        problems: list[str] = []
        protocol = env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper() or "PLAINTEXT"
        if protocol not in PROTOCOLS:
            problems.append(f"KAFKA_SECURITY_PROTOCOL: expected one of {', '.join(PROTOCOLS)} (got {protocol!r})")
        mechanism = env.get("KAFKA_SASL_MECHANISM", "PLAIN").strip().upper() or "PLAIN"
        if mechanism not in MECHANISMS:
            problems.append(f"KAFKA_SASL_MECHANISM: expected one of {', '.join(MECHANISMS)} (got {mechanism!r})")
        username = env.get("KAFKA_SASL_USERNAME") or None
        password = _secret(env, "KAFKA_SASL_PASSWORD", problems)
        if protocol.startswith("SASL_"):
            if not username:
                problems.append(f"KAFKA_SASL_USERNAME: required with KAFKA_SECURITY_PROTOCOL={protocol}")
            if password is None:
                problems.append(f"KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE: required with "
                                f"KAFKA_SECURITY_PROTOCOL={protocol}")
        files = {}
        for var in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"):
            value = env.get(var) or None
            if value and not Path(value).is_file():
                problems.append(f"{var}: no such file {value!r}")
            files[var] = value
        if bool(files["KAFKA_SSL_CERTFILE"]) != bool(files["KAFKA_SSL_KEYFILE"]):
            problems.append("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE: mTLS needs both, or neither")
        if any(files.values()) and not protocol.endswith("SSL"):
            problems.append(f"KAFKA_SECURITY_PROTOCOL: KAFKA_SSL_* files are set but the protocol is {protocol}; "
                            "use SSL or SASL_SSL")
        raw_check = env.get("KAFKA_SSL_CHECK_HOSTNAME", "true").strip().lower()
        if raw_check not in _TRUE | _FALSE:
            problems.append(f"KAFKA_SSL_CHECK_HOSTNAME: expected true or false (got {raw_check!r})")
        key_password = _secret(env, "KAFKA_SSL_KEY_PASSWORD", problems)
        if problems:
            raise SecurityConfigError("Kafka security settings from the environment:\n  " + "\n  ".join(problems))
        return cls(protocol=protocol, mechanism=mechanism, username=username, password=password,
                   cafile=files["KAFKA_SSL_CAFILE"], certfile=files["KAFKA_SSL_CERTFILE"],
                   keyfile=files["KAFKA_SSL_KEYFILE"], key_password=key_password,
                   check_hostname=raw_check in _TRUE)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        ctx.check_hostname = self.check_hostname
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile, password=self.key_password)
        return ctx

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producers, consumers and admin client."""
        if self.protocol == "PLAINTEXT":
            return {}
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kw["ssl_context"] = self.ssl_context()
        if self.sasl:
            kw.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                      sasl_plain_password=self.password)
        return kw

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's producer, consumer and admin client."""
        if self.protocol == "PLAINTEXT":
            return {}
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kw.update(ssl_cafile=self.cafile, ssl_certfile=self.certfile, ssl_keyfile=self.keyfile,
                      ssl_password=self.key_password, ssl_check_hostname=self.check_hostname)
        if self.sasl:
            kw.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                      sasl_plain_password=self.password)
        return kw

    def faust_credentials(self):
        """The ``broker_credentials`` setting of the Faust app, or None for PLAINTEXT."""
        if self.protocol == "PLAINTEXT":
            return None
        import faust

        if self.sasl:
            return faust.SASLCredentials(username=self.username, password=self.password,
                                         mechanism=self.mechanism, ssl_context=self.ssl_context())
        return faust.SSLCredentials(self.ssl_context())


def _secret(env: Mapping[str, str], var: str, problems: list[str]) -> str | None:
    inline, path = env.get(var), env.get(var + "_FILE")
    if inline and path:
        problems.append(f"{var} and {var}_FILE: set one, not both")
        return None
    if path:
        try:
            return Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            problems.append(f"{var}_FILE: cannot read {path!r}: {exc.strerror}")
            return None
    return inline or None


_current: KafkaSecurity | None = None


def current() -> KafkaSecurity:
    """The process's settings, read from the environment once."""
    global _current
    if _current is None:
        _current = KafkaSecurity.from_env()
    return _current


__all__ = ["KafkaSecurity", "SecurityConfigError", "current", "PROTOCOLS", "MECHANISMS"]
