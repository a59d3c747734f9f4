"""topology.yaml written carelessly or with intent: validation never crashes, never hangs, and
refuses (with the path and the reason) what it used to accept without a word.

Each test goes through the public entry points (``parse_topology_text``, ``load_topology``,
``aiops validate``, ``POST /control``), so it runs unchanged against an older loader, and fails
there."""
from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest

from streams import codec
from streams.app import control_from_http
from streams.cli import main
from streams.config import ConfigError, load_topology, parse_topology_text

OK = "services:\n  web: {depends_on: [db]}\n  db: {kind: datastore}\n"


@contextmanager
def finishes_within(seconds: float):
    """A hang guard, not a speed test: each file here validates in well under a second, and the
    old loader took minutes (or forever). SIGALRM interrupts pure-Python loops, which is where
    the old hangs were."""
    def hung(*_):
        raise TimeoutError(f"validation still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def problems_of(text: str | bytes) -> list[tuple[str, str]]:
    with finishes_within(20), pytest.raises(ConfigError) as exc:
        parse_topology_text(text, "t.yaml")
    return exc.value.problems


def test_the_base_document_is_valid():
    assert set(parse_topology_text(OK).services) == {"web", "db"}


# --- crashes: each was a traceback -------------------------------------------------------------

DEEP_FLOW = "services: {a: {}}\nx: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_BLOCK = "services: {a: {}}\nx:\n" + "".join("  " * (i + 1) + "-\n" for i in range(40))


@pytest.mark.parametrize("text, problem", [
    (OK + "correlation: {group_wait: 99999999999999d}\n",
     ("correlation.group_wait", "expected a duration of at most 3650d (got '99999999999999d')")),
    (OK.encode() + b"  cache: {description: \"\xff\xfe\"}\n",
     ("", "line 4, column 25: not valid UTF-8 (byte 0xff); save the file as UTF-8")),
    ("a: &a [*a]\n" + OK, ("a[0]", "line 1, column 8: aliases are not allowed (*a); write the value out")),
    (DEEP_FLOW, ("", "line 2, column 1003: invalid YAML: exceeded maximum nesting depth")),
    (DEEP_BLOCK, ("x[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]",
                  "line 35, column 67: nested more than 32 levels deep")),
    (OK + "name: !!python/object/apply:os.system [true]\n",
     ("name", "line 4, column 7: tag !!python/object/apply:os.system is not allowed")),
    (OK + "x: 2026-13-45\n", ("x", "line 4, column 4: cannot read !!timestamp '2026-13-45': month must be in 1..12")),
    (OK + "version: " + "9" * 5000 + "\n",
     ("version", "line 4, column 10: cannot read !!int '" + "9" * 40 + "': Exceeds the limit (4300 digits) for "
                 "integer string conversion: value has 5000 digits; use sys.set_int_max_str_digits() t")),
])
def test_what_crashed_is_a_problem_with_its_path_and_reason(text, problem):
    assert problem in problems_of(text)


@pytest.mark.parametrize("content", [
    (OK + "correlation: {group_wait: 99999999999999d}\n").encode(), OK.encode() + b"  x: \xff\n",
    ("a: &a [*a]\n" + OK).encode(), DEEP_FLOW.encode()])
def test_aiops_validate_reports_instead_of_raising(tmp_path, capsys, content):
    path = tmp_path / "t.yaml"
    path.write_bytes(content)
    with finishes_within(20), pytest.raises(SystemExit) as exc:
        main(["validate", "--topology", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: ") and "Traceback" not in err


def test_a_file_over_1_mib_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(OK + "# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError) as exc:
        load_topology(path)
    assert exc.value.problems == [("", "the file is larger than 1048576 bytes (1 MiB), the limit")]


# --- hangs ---------------------------------------------------------------------------------------

def billion_laughs() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n" + OK


def test_billion_laughs_is_refused_not_expanded():
    problems = problems_of(billion_laughs())
    aliases = [p for p in problems if "aliases are not allowed" in p[1]]
    assert len(aliases) == 81  # each alias once, none expanded
    assert aliases[0] == ("l1[0]", "line 2, column 10: aliases are not allowed (*l0); write the value out")


def test_twenty_thousand_unknown_services_are_all_reported_without_a_quadratic_did_you_mean():
    names = [f"svc{i:05d}" for i in range(2000)]
    text = ("services:\n  a: {depends_on: [" + ", ".join(n + "x" for n in names * 10) + "]}\n"
            + "".join(f"  {n}: {{}}\n" for n in names))
    problems = problems_of(text)
    assert len(problems) == 20_000
    assert problems[0] == ("services.a.depends_on[0]", "unknown service 'svc00000x' (did you mean 'svc00000'?)")
    assert all(msg.startswith("unknown service 'svc") for _, msg in problems)


# --- accepted without a word -----------------------------------------------------------------

@pytest.mark.parametrize("text, problem", [
    (OK + "correlation: {group_wait: 30s}\ncorrelation: {group_wait: 1m}\n",
     ("correlation", "line 5, column 1: duplicate key 'correlation' (first at line 4)")),
    ("services:\n  web: {tier: 1, tier: 2}\n", ("services.web.tier", "line 2, column 18: duplicate key 'tier' (first at line 2)")),
    (OK.replace("db: {kind: datastore}", "db: {tier: true}"), ("services.db.tier", "Input should be a valid integer (got True)")),
    (OK + "remediation: {dry_run: 'no'}\n", ("remediation.dry_run", "Input should be a valid boolean (got 'no')")),
    (OK + "correlation: {group_wait: 30}\n",
     ("correlation.group_wait", "expected a duration with a unit, such as '30s' or '5m' (got 30)")),
    (OK + "topics: {alerts: 'aiops/../alerts'}\n",
     ("topics.alerts", "expected a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-', not '.' or '..' "
                       "(got 'aiops/../alerts')")),
    (OK + "topics: {metrics: aiops.alerts}\n",
     ("topics.alerts", "'aiops.alerts' is already the topic of topics.metrics; every role needs a topic of its own")),
    (OK + "topics: {logs: aiops_alerts}\n",
     ("topics.alerts", "'aiops.alerts' is already the topic of topics.logs as 'aiops_alerts', which Kafka cannot "
                       "tell apart ('.' vs '_'); every role needs a topic of its own")),
    (OK + "tickets: {delivery: {ledger_topic: aiops.incidents}}\n",
     ("tickets.delivery.ledger_topic", "'aiops.incidents' is already the topic of topics.incidents; every role "
                                       "needs a topic of its own")),
    (OK + "remediation: {executors: {kafka: {allowed_topics: [aiops.control]}}}\n",
     ("remediation.executors.kafka.allowed_topics[0]", "'aiops.control' is the pipeline's own topic (topics.control); "
                                                       "an executor must not write to it")),
    (OK + "correlation:\n  silences:\n  - {id: m1, starts_at: 2026-08-20T12:00:00Z, ends_at: 2026-08-20T11:00:00Z, "
          "created_by: alice}\n",
     ("correlation.silences[0]", "ends_at (2026-08-20T11:00:00+00:00) must be after starts_at (2026-08-20T12:00:00+00:00)")),
    (OK + "correlation:\n  silences:\n  - {id: m1, starts_at: '2026-08-20T12:00:00', ends_at: '2026-08-20T13:00:00Z', "
          "created_by: alice}\n",
     ("correlation.silences[0].starts_at", "expected a time with a UTC offset, such as '2026-08-20T12:00:00Z' "
                                           "(got '2026-08-20T12:00:00')")),
    (OK + "  '': {}\n", ("services['']", "expected a name of letters, digits, '.', '_' and '-' (at most 128, starting "
                                         "with a letter or digit) (got '')")),
    (OK + "  \"pay\\nments\": {}\n", ("services['pay\\nments']", "expected a name of letters, digits, '.', '_' and '-' "
                                                                 "(at most 128, starting with a letter or digit) (got 'pay\\nments')")),
    (OK + "  '<img src=x onerror=alert(1)>': {}\n",
     ("services['<img src=x onerror=alert(1)>']", "expected a name of letters, digits, '.', '_' and '-' (at most 128, "
                                                  "starting with a letter or digit) (got '<img src=x onerror=alert(1)>')")),
    (OK.replace("db: {kind: datastore}", "db: {instances: ['db 1<br>']}"),
     ("services.db.instances[0]", "expected a name of letters, digits, '.', '_' and '-' (at most 128, starting with a "
                                  "letter or digit) (got 'db 1<br>')")),
])
def test_what_was_accepted_silently_is_refused(text, problem):
    assert problem in problems_of(text)


def test_every_problem_of_every_kind_is_reported_at_once():
    text = ("services:\n  web: {tier: true, depends_on: [dbb]}\n  db: {}\n  db: {}\n"
            "correlation: {group_wait: 30, window: *w}\ntopics: {metrics: aiops.alerts}\n")
    paths = {path for path, _ in problems_of(text)}
    assert paths == {"services.web.tier", "services.web.depends_on[0]", "services.db", "correlation.group_wait",
                     "correlation.window", "topics.alerts"}


def test_a_report_line_is_one_line_whatever_the_names_hold():
    with pytest.raises(ConfigError) as exc:
        parse_topology_text(OK + "  \"a\\nINFO all good\": {}\ncorrelation: {\"x\\ny\": 1}\n", "t.yaml")
    lines = str(exc.value).splitlines()
    assert len(lines) == 1 + len(exc.value.problems)


def test_a_cycle_in_depends_on_is_a_warning(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text("services:\n  a: {depends_on: [b]}\n  b: {depends_on: [c]}\n  c: {depends_on: [a]}\n  d: {}\n")
    assert main(["validate", "--topology", str(path)]) == 0
    out = capsys.readouterr()
    assert out.err == (f"{path}: services.a.depends_on: a -> b -> c -> a is a cycle; a declared call is often "
                       "reversed (warning)\n")
    assert out.out.startswith(f"{path}: ok (4 services")


# --- inline secrets ------------------------------------------------------------------------------

ENV = "use 'env:VARIABLE_NAME' and set the variable in the environment"
INLINE = "secrets must not be written in topology.yaml; " + ENV


def step(params: str = "{}", target: str = "https://lb.example/api") -> str:
    return (OK + "remediation:\n  policies:\n  - name: p\n    steps:\n"
            f"    - {{kind: http, target: '{target}', params: {params}}}\n")


@pytest.mark.parametrize("text, problem", [
    (step("{secret_key: wJalrXUtnFEMI}"), ("remediation.policies[0].steps[0].params.secret_key", INLINE)),
    (step("{access_key: AKIAIOSFODNN7}"), ("remediation.policies[0].steps[0].params.access_key", INLINE)),
    (step("{private_key: '-----BEGIN KEY-----'}"), ("remediation.policies[0].steps[0].params.private_key", INLINE)),
    (step("{passphrase: hunter2}"), ("remediation.policies[0].steps[0].params.passphrase", INLINE)),
    (step("{auth: 'Bearer eyJhbGciOi.abc'}"), ("remediation.policies[0].steps[0].params.auth", INLINE)),
    (step("{header: 'Bearer eyJhbGciOi.abc'}"),
     ("remediation.policies[0].steps[0].params.header", "this is a credential (an Authorization value); " + ENV)),
    (OK + "remediation: {executors: {http: {auth: 'Bearer eyJhbGciOi.abc'}}}\n",
     ("remediation.executors.http.auth", INLINE)),
    (step("{password: 3.14159}"), ("remediation.policies[0].steps[0].params.password", INLINE)),
    (OK + "tickets: {teams: {t: {api_token: 31337}}}\n", ("tickets.teams.t.api_token", INLINE)),
    (step("{password: !!binary aGVsbG8=}"),
     ("remediation.policies[0].steps[0].params.password", "line 8, column 73: tag !!binary is not allowed")),
    (step(target="https://admin:s3cret@lb.example/api"),
     ("remediation.policies[0].steps[0].target", "a URL must not carry a user or password (user:pass@host); " + ENV)),
    (OK + "tickets: {delivery: {webhook: {url: 'https://hooks.example/in?token=abc123'}}}\n",
     ("tickets.delivery.webhook.url", "a URL must not carry a credential in its query (token=); " + ENV)),
    (OK + "tickets: {delivery: {webhook: {url: 'https://hooks.example/in', headers: {Proxy-Authorization: 'Basic dTpw'}}}}\n",
     ("tickets.delivery.webhook.headers.Proxy-Authorization", INLINE)),
    (OK + "tickets: {delivery: {webhook: {url: 'https://hooks.example/in', headers: {Cookie: 'session=abc'}}}}\n",
     ("tickets.delivery.webhook.headers.Cookie", INLINE)),
    (OK + "tickets: {delivery: {webhook: {url: 'https://hooks.example/in', headers: {Cookie: 'env:COOKIE'}}}}\n",
     ("tickets.delivery.webhook", "headers: 'Cookie' carries a credential; static headers are sent as written, so only "
                                  "`token: env:VAR` (sent as Authorization) may authenticate")),
    (OK + "tickets: {delivery: {webhook: {url: 'https://hooks.example/in', token: 'env:MY TOKEN'}}}\n",
     ("tickets.delivery.webhook.token", INLINE)),
    (step("{note: 'env:1abc'}"),
     ("remediation.policies[0].steps[0].params.note",
      "'env:' must be followed by a variable name (letters, digits and _, not starting with a digit)")),
])
def test_inline_secrets_are_refused(text, problem):
    assert problem in problems_of(text)


def test_no_report_echoes_a_secret():
    text = step("{password: 'hunter2-s3cret'}", "https://admin:hunter2-s3cret@lb.example/api") \
        + "  executors: {http: {auth: 'Bearer hunter2-s3cret'}}\n"
    with pytest.raises(ConfigError) as exc:
        parse_topology_text(text)
    assert "hunter2" not in str(exc.value)


def test_env_references_are_accepted():
    text = step("{token: 'env:LB_TOKEN'}") + "  executors: {http: {auth: 'env:LB_ADMIN_TOKEN'}}\n" \
        + "tickets: {delivery: {webhook: {url: 'https://hooks.example/in?team=sre', token: 'env:HOOK_TOKEN'}}}\n"
    assert parse_topology_text(text).remediation.executors.http.auth == "env:LB_ADMIN_TOKEN"


# --- POST /control and aiops.control -------------------------------------------------------------

NOW = 1.7e9


@pytest.mark.parametrize("body, reason", [
    (b'{"type": "silence", "starts_at": "2026-08-20T12:00:00Z", "ends_at": "2026-08-20T11:00:00Z"}',
     "silence: ends_at (2026-08-20T11:00:00+00:00) must be after starts_at (2026-08-20T12:00:00+00:00)"),
    (b'{"type": "silence", "duration": "0s"}',
     "silence: ends_at (2023-11-14T22:13:20+00:00) must be after starts_at (2023-11-14T22:13:20+00:00)"),
    (b'{"type": "approve", "action_id": "act-1\\nINFO approved act-2 by admin"}',
     "action_id: expected an id of letters, digits and . _ : @ - (at most 128, no spaces or newlines) "
     "(got 'act-1\\nINFO approved act-2 by admin')"),
    (b'{"type": "expire_silence", "id": "sil-1\\r\\n"}',
     "id: expected an id of letters, digits and . _ : @ - (at most 128, no spaces or newlines) (got 'sil-1\\r\\n')"),
    (b'{"type": "silence", "id": "<b>x</b>", "duration": "1h"}',
     "id: expected an id of letters, digits and . _ : @ - (at most 128, no spaces or newlines) (got '<b>x</b>')"),
    (b'{"type": "silence", "duration": "1h", "comment": "ok\\u001b[2K"}',
     "comment: control characters (newline, tab, escape...) are not allowed (got 'ok\\x1b[2K')"),
])
def test_control_refuses_what_it_accepted_with_202(body, reason):
    with pytest.raises(codec.RecordError) as exc:
        control_from_http(body, "alice", NOW)
    assert str(exc.value) == reason


@pytest.mark.parametrize("record", [
    {"type": "approve", "action_id": "act-1\nforged", "by": "alice"},
    {"type": "approve", "action_id": "act-1", "by": "alice\nINFO approved by admin"},
    {"type": "silence", "id": "s1", "by": "alice", "starts_at": "2026-08-20T12:00:00Z", "ends_at": "2026-08-20T12:00:00Z"},
])
def test_the_worker_refuses_them_on_the_control_topic_too(record):
    import orjson

    with pytest.raises(codec.RecordError):
        codec.decode_control(orjson.dumps({"schema_version": 1, "at": "2026-08-20T12:00:00Z", **record}))


@pytest.mark.parametrize("text, problem", [
    (DEEP_FLOW, ("", "nested more than 32 levels deep")),
    (billion_laughs(), ("l1[0]", "line 2, column 10: aliases are not allowed (*l0); write the value out")),
    ("a: &a [*a]\n" + OK, ("a[0]", "line 1, column 8: aliases are not allowed (*a); write the value out")),
    (OK + "correlation: {group_wait: 30s}\ncorrelation: {group_wait: 1m}\n",
     ("correlation", "line 5, column 1: duplicate key 'correlation' (first at line 4)")),
])
def test_without_libyaml_the_pure_python_parser_is_held_to_the_same(monkeypatch, text, problem):
    import yaml

    # PyYAML's own scanner is quadratic in flow nesting: 5,000 levels took 30 s before the check.
    monkeypatch.setattr("streams.safe_yaml._Loader", yaml.SafeLoader)
    assert problem in problems_of(text)
