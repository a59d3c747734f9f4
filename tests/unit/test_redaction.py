"""PII redaction at ingest: the rules, table-driven, and where the decoders apply them."""
from __future__ import annotations

import orjson
import pytest

from streams import codec
from streams.config import ConfigError, parse_topology
from streams.ingest import decode_logs, decode_metrics
from streams.ingest.redact import DEFAULT, Redactor, luhn_valid

ALL = Redactor(["email", "pan", "token", "ip"])


@pytest.mark.parametrize("text, expected", [
    # email
    ("mail jane.doe+shop@mail.example.co.uk now", "mail <email> now"),
    ('{"to":"ops@example.com"}', '{"to":"<email>"}'),
    ("lodash@4.17.21 and user@localhost stay", "lodash@4.17.21 and user@localhost stay"),
    # card numbers: Luhn-valid, 13..19 digits, spaces or dashes between groups
    ("card 4111111111111111.", "card <pan>."),
    ("card 4111 1111 1111 1111 exp", "card <pan> exp"),
    ("card 5555-5555-5555-4444", "card <pan>"),
    ("amex 378282246310005", "amex <pan>"),
    ("pan=4111111111111111&x", "pan=<pan>&x"),
    ("card 4111 1111 1111 1111 2026", "card <pan> 2026"),  # a grouped card number inside a longer run
    ("order 4111111111111112 id", "order 4111111111111112 id"),  # fails Luhn
    ("ts 1700000000123", "ts 1700000000123"),  # 13 digits, fails Luhn
    ("id 41111111111111110000", "id 41111111111111110000"),  # one unbroken run of 20 digits
    ("uuid 3fa2d7b7-3506-49b7-a3cf-3939af620654", "uuid 3fa2d7b7-3506-49b7-a3cf-3939af620654"),
    ("short 4111 1111 1111", "short 4111 1111 1111"),  # 12 digits
    # tokens
    ("Authorization: Bearer abc.DEF-123_x==", "Authorization: <token>"),
    ("authorization=Basic dXNlcjpwYXNz, next", "authorization=<token>, next"),
    ("sent bearer eyJhbGciOi.x rest", "sent bearer <token> rest"),
    ("GET /x?api_key=abc123&page=2", "GET /x?api_key=<token>&page=2"),
    ("apikey: abc123 ok", "apikey: <token> ok"),
    ('{"access_token": "zz9", "n": 1}', '{"access_token": "<token>", "n": 1}'),
    ("token=t1 secret=s2 password='p3'", "token=<token> secret=<token> password='<token>'"),
    ("my_token=abc", "my_token=<token>"),
    ("tokens=5 secretary=bob keyboard: 3", "tokens=5 secretary=bob keyboard: 3"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe <token>"),
    ("gh ghp_" + "a" * 36, "gh <token>"),
    ("slack xoxb-123456789012-abcdefABCDEF", "slack <token>"),
    ("aws AKIAIOSFODNN7EXAMPLE x", "aws <token> x"),
    ("aws AKIAIOSFODNN7EXAMPLEX stays", "aws AKIAIOSFODNN7EXAMPLEX stays"),  # 17 after AKIA: not a key
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_nature-1 ok", "jwt <token> ok"),
    ("password=jane@example.com", "password=<token>"),  # a credential first
    # ip is off in DEFAULT, on in ALL: see below
])
def test_default_rules(text, expected):
    assert DEFAULT.text(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("from 10.0.0.7:443 ok", "from <ip>:443 ok"),
    ("peer=192.168.1.255.", "peer=<ip>."),
    ("v 256.1.1.1 and 1.2.3.4.5", "v 256.1.1.1 and 1.2.3.4.5"),
    ("[2001:db8::1]:8080", "[<ip>]:8080"),
    ("addr fe80::1%eth0, ::ffff:10.0.0.1 and ::1.", "addr <ip>, <ip> and <ip>."),
    ("at 12:30:45 mac 00:1a:2b:3c:4d:5e std::vector", "at 12:30:45 mac 00:1a:2b:3c:4d:5e std::vector"),
])
def test_ip_rule(text, expected):
    assert ALL.text(text) == expected
    assert DEFAULT.text(text) == text  # off by default


def test_luhn():
    assert [luhn_valid(n) for n in ("4111111111111111", "4111111111111112", "79927398713", "0")] == \
        [True, False, True, True]


def test_disabled_rules_leave_text_alone():
    text = "jane@example.com 4111111111111111 token=abc 10.0.0.1"
    assert Redactor([]).text(text) == text
    assert not Redactor([]).active
    assert Redactor(["email"]).text(text) == "<email> 4111111111111111 token=abc 10.0.0.1"
    assert Redactor(["pan"]).text(text) == "jane@example.com <pan> token=abc 10.0.0.1"
    assert Redactor(["token"]).text(text) == "jane@example.com 4111111111111111 token=<token> 10.0.0.1"


def test_custom_rules_run_after_the_builtin_ones_with_their_replacement():
    r = Redactor(["email"], [("employee", r"EMP-[0-9]{6}", None), ("ticket", r"(?i)case #\d+", "[case]")])
    assert r.text("EMP-123456 on CASE #42 mailed a@b.io") == "<employee> on [case] mailed <email>"
    assert r.text(r"EMP-000001 \1") == r"<employee> \1"  # the replacement is literal


def test_unknown_or_unusable_rules_are_refused():
    with pytest.raises(ValueError, match="unknown redaction rule 'phone'"):
        Redactor(["email", "phone"])
    with pytest.raises(ValueError, match="redaction rule 'x': invalid regular expression"):
        Redactor([], [("x", "(", None)])
    with pytest.raises(ValueError, match="matches the empty string"):
        Redactor([], [("x", "a?", None)])


def test_redaction_is_idempotent():
    text = "Authorization: Bearer x1 token=y2 ghp_" + "b" * 36 + " a@b.io 4111 1111 1111 1111 10.0.0.1"
    once = ALL.text(text)
    assert ALL.text(once) == once
    assert "<token>" in once and "<email>" in once and "<pan>" in once and "<ip>" in once


def test_labels_redact_keys_values_and_secret_keys():
    labels = (("api_key", "plain"), ("http.request.header.authorization", "Basic x"), ("jane@example.com", "1"),
              ("token_count", "5"), ("user", "bob@example.org"))
    assert DEFAULT.labels(labels) == (("<email>", "1"), ("api_key", "<token>"),
                                      ("http.request.header.authorization", "<token>"),
                                      ("token_count", "5"), ("user", "<email>"))
    clean = (("host.name", "gw-2"), ("route", "/pay"))
    assert DEFAULT.labels(clean) is clean  # nothing to do: the same tuple, no copy per series
    assert Redactor(["email"]).labels((("api_key", "plain"),)) == (("api_key", "plain"),)


def test_keys_that_redact_alike_keep_one_value():
    assert DEFAULT.labels((("a@x.io", "1"), ("b@x.io", "2"))) == (("<email>", "2"),)


def test_prefix_redacts_across_the_cut():
    r = Redactor()
    line = "x" * 10 + " jane@example.com tail"
    assert r.prefix(line, 14) == "x" * 10 + " <em"  # never "jane"
    assert r.prefix("short a@b.io", 100) == "short <email>"


# --- the decoders --------------------------------------------------------------------------------

def _otlp(attrs: dict, res: dict | None = None, name: str = "http.requests") -> bytes:
    kv = lambda d: [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]  # noqa: E731
    return orjson.dumps({"resourceMetrics": [{
        "resource": {"attributes": kv({"service.name": "checkout", **(res or {})})},
        "scopeMetrics": [{"metrics": [{"name": name, "gauge": {"dataPoints": [
            {"timeUnixNano": "1700000000000000000", "asDouble": 1.0, "attributes": kv(attrs)}]}}]}]}]})


def test_otlp_labels_and_metric_names_are_redacted_but_the_service_is_not():
    d = decode_metrics(_otlp({"user": "jane@example.com"}, {"card": "4111 1111 1111 1111"}, name="logins:a@b.io"),
                       known_services=None)
    [s] = d.samples
    assert s.series.service == "checkout"
    assert s.series.metric == "logins:<email>"
    assert dict(s.series.labels) == {"card": "<pan>", "user": "<email>"}


def test_native_and_prometheus_labels_are_redacted():
    native = {"schema_version": 1, "service": "api", "labels": {"owner": "ops@example.com"},
              "points": [["cpu", 1.7e9, 0.5], ["cpu", 1.7e9, 0.6, {"auth": "Bearer abc"}]]}
    d = decode_metrics(orjson.dumps(native), known_services=None)
    assert [dict(s.series.labels) for s in d.samples] == [{"owner": "<email>"},
                                                          {"auth": "Bearer <token>", "owner": "<email>"}]
    prom = {"timestamp": "2026-08-20T12:00:00Z", "value": "1", "name": "up",
            "labels": {"__name__": "up", "job": "node", "instance": "10.0.0.1:9100", "user": "x@y.io"}}
    [s] = decode_metrics(orjson.dumps(prom), known_services=None).samples
    assert dict(s.series.labels) == {"instance": "10.0.0.1:9100", "user": "<email>"}
    [s] = decode_metrics(orjson.dumps(prom), known_services=None, redactor=ALL).samples
    assert dict(s.series.labels) == {"instance": "<ip>:9100", "user": "<email>"}


def test_keep_labels_selects_on_the_raw_key_then_redacts():
    d = decode_metrics(_otlp({"user": "jane@example.com", "other": "x"}), known_services=None,
                       keep_labels=frozenset({"user"}))
    assert d.samples[0].series.labels == (("user", "<email>"),)


def test_log_bodies_and_attributes_are_redacted():
    doc = {"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "checkout"}},
        {"key": "client", "value": {"stringValue": "jane@example.com"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": "1700000000000000000", "severityNumber": 17,
                                       "body": {"stringValue": "charge failed card=4111-1111-1111-1111 token=abc"},
                                       "attributes": [{"key": "password", "value": {"stringValue": "hunter2"}}]}]}]}]}
    [rec], _ = decode_logs(orjson.dumps(doc), known_services=None)
    assert rec.service == "checkout"
    assert rec.body == "charge failed card=<pan> token=<token>"
    assert dict(rec.labels) == {"client": "<email>", "password": "<token>"}
    [rec], _ = decode_logs(orjson.dumps(doc), known_services=None, redactor=Redactor([]))
    assert rec.body == "charge failed card=4111-1111-1111-1111 token=abc"


def test_dead_letters_redact_the_excerpt_and_the_reason():
    payload = b'{"user": "jane@example.com", "card": "4111 1111 1111 1111"' + b" " * 2000
    rec = orjson.loads(codec.dead_letter("unknown service 'bob@example.org'", "telemetry.metrics", 0, 1,
                                         payload, 64))
    assert rec["reason"] == "unknown service '<email>'"
    assert rec["excerpt"] == '{"user": "<email>", "card": "<pan>"' + " " * 29 + "…"
    # A card number straddling the cut is replaced whole, not shown in part.
    rec = orjson.loads(codec.dead_letter("x", "t", 0, 1, b"card 4111 1111 1111 1111", 12))
    assert rec["excerpt"] == "card <pan>…"
    rec = orjson.loads(codec.dead_letter("x", "t", 0, 1, b"a@b.io", 64, redactor=Redactor([])))
    assert rec["excerpt"] == "a@b.io"


# --- config ----------------------------------------------------------------------------------------

def test_redaction_config_defaults_and_from_settings():
    topo = parse_topology({"services": {"a": {}}})
    assert topo.ingest.redaction.rules == ["email", "pan", "token"]
    topo = parse_topology({"services": {"a": {}}, "ingest": {"redaction": {
        "rules": ["ip"], "custom": [{"name": "employee", "pattern": "EMP-[0-9]{6}"}]}}})
    r = Redactor.from_settings(topo.ingest.redaction)
    assert r.text("EMP-123456 at 10.0.0.1 a@b.io") == "<employee> at <ip> a@b.io"


def test_invalid_redaction_config_names_each_path():
    with pytest.raises(ConfigError) as exc:
        parse_topology({"services": {"a": {}}, "ingest": {"redaction": {
            "rules": ["email", "phone"],
            "custom": [{"name": "emp", "pattern": "EMP-("}, {"name": "Bad Name", "pattern": "x*"}],
            "enabled": True}}})
    assert str(exc.value) == (
        "topology.yaml: 5 problems\n"
        "  ingest.redaction.rules[1]: Input should be 'email', 'pan', 'token' or 'ip' (got 'phone')\n"
        "  ingest.redaction.custom[0].pattern: invalid regular expression: missing ), unterminated subpattern"
        " at position 4 (got 'EMP-(')\n"
        "  ingest.redaction.custom[1].name: String should match pattern '^[a-z][a-z0-9_-]*$' (got 'Bad Name')\n"
        "  ingest.redaction.custom[1].pattern: the pattern matches the empty string (got 'x*')\n"
        "  ingest.redaction.enabled: unknown key 'enabled'")
    with pytest.raises(ConfigError, match=r"ingest.redaction.custom: duplicate rule name 'emp'"):
        parse_topology({"services": {"a": {}}, "ingest": {"redaction": {"custom": [
            {"name": "emp", "pattern": "a"}, {"name": "emp", "pattern": "b"}]}}})


def test_the_detect_stage_applies_the_topology_rules():
    """What an operator configures is what the worker's stage applies: IPs redacted, emails kept."""
    from streams.pipeline import DetectStage

    topo = parse_topology({"services": {"checkout": {}}, "ingest": {"redaction": {
        "rules": ["ip"], "custom": [{"name": "employee", "pattern": "EMP-[0-9]{6}"}]}}})
    stage = DetectStage(topo)
    payload = _otlp({"peer": "10.1.2.3", "owner": "EMP-123456", "user": "jane@example.com"}, {})
    assert stage.process(payload).points == 1
    [key] = stage.engine._keys  # the series the detector now keeps state for
    assert dict(key.labels) == {"peer": "<ip>", "owner": "<employee>", "user": "jane@example.com"}
