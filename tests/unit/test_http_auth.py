"""Bearer tokens for the endpoints that accept data or commands, and the /control body."""
from __future__ import annotations

import hmac

import orjson
import pytest

from detectors.records import parse_rfc3339
from streams import codec
from streams.app import control_from_http
from streams.http_auth import UNCONFIGURED, AuthConfigError, Authenticator

ALICE = "alice-token-0123456789abcdef"
BOT = "ci-bot-token-fedcba9876543210"


def auth() -> Authenticator:
    return Authenticator.from_env({"AIOPS_HTTP_TOKENS": f"alice={ALICE}, ci-bot={BOT}"})


@pytest.mark.parametrize("header, principal", [
    (f"Bearer {ALICE}", "alice"),
    (f"bearer {BOT}", "ci-bot"),
    (f"  Bearer   {ALICE}  ", "alice"),
    (None, None),
    ("", None),
    ("Bearer", None),
    ("Bearer ", None),
    (f"Basic {ALICE}", None),
    (ALICE, None),
    (f"Bearer {ALICE[:-1]}", None),
    (f"Bearer {ALICE}x", None),
    (f"Bearer {ALICE},{BOT}", None),
])
def test_authenticate(header, principal):
    assert auth().authenticate(header) == principal


def test_every_token_is_compared_even_after_a_match(monkeypatch):
    calls = []
    compare = hmac.compare_digest

    def spy(a, b):
        calls.append(1)
        return compare(a, b)

    monkeypatch.setattr("streams.http_auth.hmac.compare_digest", spy)
    a = auth()
    assert a.authenticate(f"Bearer {ALICE}") == "alice"  # alice sorts first: a short circuit would stop at 1
    assert len(calls) == 2


def test_no_tokens_configured_refuses_everyone():
    a = Authenticator.from_env({})
    assert not a.configured
    assert a.authenticate(f"Bearer {ALICE}") is None
    assert "AIOPS_HTTP_TOKENS" in UNCONFIGURED and "refuses" in UNCONFIGURED


def test_tokens_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# who may post\nalice={ALICE}\n\n  ci-bot = {BOT}\n")
    a = Authenticator.from_env({"AIOPS_HTTP_TOKENS_FILE": str(path)})
    assert a.principals == ("alice", "ci-bot")
    assert a.authenticate(f"Bearer {BOT}") == "ci-bot"


def test_tokens_from_the_variable_and_the_file_together(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"ci-bot={BOT}\n")
    a = Authenticator.from_env({"AIOPS_HTTP_TOKENS": f"alice={ALICE}", "AIOPS_HTTP_TOKENS_FILE": str(path)})
    assert a.principals == ("alice", "ci-bot")


@pytest.mark.parametrize("env, message", [
    ({"AIOPS_HTTP_TOKENS": "alice"}, "AIOPS_HTTP_TOKENS entry 1: expected name=token"),
    ({"AIOPS_HTTP_TOKENS": f"alice={ALICE},alice={BOT}"}, "AIOPS_HTTP_TOKENS entry 2: principal 'alice' is defined twice"),
    ({"AIOPS_HTTP_TOKENS": "alice=abc123"}, "the token of 'alice' is too short (at least 16 characters)"),
    ({"AIOPS_HTTP_TOKENS": f"bob smith={ALICE}"},
     "principal name 'bob smith': letters, digits and ._@:- only, at most 64"),
    ({"AIOPS_HTTP_TOKENS": f"alice={ALICE},bob={ALICE}"},
     "'bob' and 'alice' have the same token: each principal needs its own"),
    ({"AIOPS_HTTP_TOKENS_FILE": "/nonexistent/tokens"},
     "AIOPS_HTTP_TOKENS_FILE /nonexistent/tokens: cannot read it (No such file or directory)"),
])
def test_bad_configuration_names_the_entry_never_the_token(env, message):
    with pytest.raises(AuthConfigError) as exc:
        Authenticator.from_env(env)
    assert str(exc.value) == message
    assert ALICE not in str(exc.value) and BOT not in str(exc.value) and "abc123" not in str(exc.value)


def test_the_authenticator_holds_no_token():
    a = auth()
    assert ALICE not in repr(a) and ALICE.encode() not in repr(a).encode()


# --- POST /control bodies -------------------------------------------------------------------

NOW = parse_rfc3339("2026-08-20T12:00:00Z")


def test_control_approval_records_the_caller_not_the_body():
    key, value = control_from_http(b'{"type": "approve", "action_id": "act-1", "by": "mallory"}', "alice", NOW)
    assert key == "act-1"
    msg = codec.decode_control(value)
    assert (msg["type"], msg["action_id"], msg["by"], msg["at"]) == ("approve", "act-1", "alice", NOW)
    assert value == codec.encode_approval("act-1", "alice", NOW)  # exactly what `aiops approve` writes


def test_control_silence_with_a_duration():
    body = orjson.dumps({"type": "silence", "service": "orders*", "duration": "2h", "comment": "db upgrade"})
    key, value = control_from_http(body, "alice", NOW)
    msg = codec.decode_control(value)
    s = msg["silence"]
    assert key.startswith("sil-") and s.id == key
    assert (s.service, s.created_by, s.comment) == ("orders*", "alice", "db upgrade")
    assert s.starts_at.timestamp() == NOW and s.ends_at.timestamp() == NOW + 7200
    # The same request again is the same silence (an id derived from data, not random).
    assert control_from_http(body, "alice", NOW) == (key, value)


def test_control_silence_with_its_own_id_and_times_and_its_early_end():
    body = orjson.dumps({"type": "silence", "id": "sil-db", "starts_at": "2026-08-20T12:00:00Z",
                         "ends_at": "2026-08-20T13:00:00Z", "labels": {"env": "prod"}})
    key, value = control_from_http(body, "ci-bot", NOW)
    assert key == "sil-db" and dict(codec.decode_control(value)["silence"].labels) == {"env": "prod"}
    key, value = control_from_http(b'{"type": "expire_silence", "id": "sil-db"}', "alice", NOW + 60)
    assert (key, codec.decode_control(value)["by"]) == ("sil-db", "alice")


@pytest.mark.parametrize("body, reason", [
    (b"nope", "invalid JSON: invalid literal, expected 'null': line 1 column 1 (char 0)"),
    (b"[]", "expected a JSON object"),
    (b'{"type": "reboot"}', "type: expected 'approve', 'silence' or 'expire_silence' (got 'reboot')"),
    (b'{"type": "approve"}', "action_id: expected a string (got NoneType)"),
    (b'{"type": "silence", "duration": "forever"}', "duration: expected a duration such as '30s', '5m' or '1h' (got 'forever')"),
    (b'{"type": "silence", "duration": "1h", "starts_at": "2026-08-20T12:00:00"}',
     "starts_at: expected an RFC 3339 time with a UTC offset (got '2026-08-20T12:00:00')"),
    (b'{"type": "approve", "action_id": "a", "at": "noon"}', "at: invalid RFC 3339 time 'noon'"),
])
def test_control_bad_bodies(body, reason):
    with pytest.raises(codec.RecordError) as exc:
        control_from_http(body, "alice", NOW)
    assert str(exc.value) == reason
