"""Load and validate topology.yaml, all of it up front.

Invalid config never half-loads: every problem is collected and reported with the file,
the path inside it and what was expected, and nothing is returned.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from correlators.config import CorrelationSettings, ServiceName, ServiceSpec, dependency_graph
from detectors.config import FROM_FILE, DidYouMean, Duration, Frozen, TopicName, parse_duration, show
from remediators.config import RemediationSettings, TicketSettings
from streams.ingest.redact import DEFAULT_RULES, check_custom_pattern
from streams.safe_yaml import MAX_BYTES, YamlSyntaxError, format_path, load_yaml


class TopicSettings(Frozen):
    metrics: TopicName = "telemetry.metrics"
    logs: TopicName = "telemetry.logs"
    traces: TopicName = "telemetry.traces"  # OTLP/JSON spans: request, error and duration series, the learned call graph
    alerts: TopicName = "aiops.alerts"
    incidents: TopicName = "aiops.incidents"
    actions: TopicName = "aiops.actions"
    tickets: TopicName = "aiops.tickets"
    deadletter: TopicName = "aiops.deadletter"
    control: TopicName = "aiops.control"  # approvals from operators (and, later, silences)
    changes: TopicName = "telemetry.changes"  # deploys, config changes, scaling: candidate causes
    config: TopicName = "aiops.config"  # live config: topology.yaml pushed by `aiops config push` (compacted, one key)
    checkpoints: TopicName = "aiops.checkpoints"  # state snapshots per input partition (compacted; streams/checkpoint.py)
    # Webhook payloads of other alerting tools, exactly as they were POSTed (streams/ingest/external.py).
    alerts_alertmanager: TopicName = "alerts.alertmanager"
    alerts_datadog: TopicName = "alerts.datadog"
    alerts_newrelic: TopicName = "alerts.newrelic"
    partitions: int = Field(default=1, ge=1)

    def all(self) -> list[str]:
        return [self.metrics, self.logs, self.traces, self.alerts, self.incidents, self.actions, self.tickets, self.deadletter,
                self.control, self.changes, self.config, self.checkpoints, *self.external().values()]

    def external(self) -> dict[str, str]:
        """The topic of each external alert source, by source name."""
        return {"alertmanager": self.alerts_alertmanager, "datadog": self.alerts_datadog,
                "newrelic": self.alerts_newrelic}


class RedactionRule(Frozen):
    """An operator's own redaction rule: every match of ``pattern`` becomes ``replacement``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    pattern: str
    replacement: str | None = None  # None: "<name>"

    @field_validator("pattern")
    @classmethod
    def _usable(cls, v: str) -> str:
        problem = check_custom_pattern(v)
        if problem is not None:
            raise ValueError(problem)
        return v


class RedactionSettings(Frozen):
    """PII redaction at ingest (streams/ingest/redact.py): built-in rules and the operator's own."""

    rules: list[Literal["email", "pan", "token", "ip"]] = Field(default_factory=lambda: list(DEFAULT_RULES))
    custom: list[RedactionRule] = Field(default_factory=list)
    # Label keys and values, metric and span names longer than this are cut before matching
    # (reported in the dead-letter reason); log bodies are cut at 2,048, dead-letter excerpts
    # at ingest.max_excerpt_bytes.
    max_value_chars: int = Field(default=1024, ge=64, le=65536)

    @field_validator("custom")
    @classmethod
    def _distinct_names(cls, v: list[RedactionRule]) -> list[RedactionRule]:
        names = [r.name for r in v]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate rule name '{dups[0]}'")
        return v


def _positive_duration(v):
    if v.total_seconds() <= 0:
        raise ValueError("must be a positive duration such as '1m'")
    return v


class IngestSettings(Frozen):
    # Prometheus samples name their service by this label, else by `job`.
    prometheus_service_label: str = "service"
    # Series labels kept from OTLP attributes; others are dropped to bound cardinality. Empty: keep all.
    keep_labels: list[str] = Field(default_factory=list)
    max_excerpt_bytes: int = Field(default=1024, ge=64, le=65536)
    # Caps per telemetry message (streams/ingest/limits.py): a message over one is dead-lettered
    # whole with the reason, before it is parsed (size) or decoded (counts), so memory stays bounded.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_series_per_message: int = Field(default=50_000, ge=1)  # data points, log records or spans
    max_buckets_per_histogram: int = Field(default=1024, ge=1)
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    # A point, log record, span or webhook alert dated further than this past the wall clock
    # (in replay: past event time and the next message's time) is dead-lettered with the reason
    # and moves no clock: one bad clock must not blind the pipeline (a 2099 point would make
    # every later point look old, and hold every incident open).
    max_ahead: Duration = parse_duration("5m")
    # ... and one further than this behind its partition's event time: a Collector's retry
    # queue holds minutes, not hours.
    max_behind: Duration = parse_duration("1h")

    _positive = field_validator("max_ahead", "max_behind")(classmethod(lambda cls, v: _positive_duration(v)))


class TraceSettings(Frozen):
    """Spans (``telemetry.traces``): the series they give and the call graph learned from them."""

    # Learned calls join the declared graph for grouping and root-cause ranking (false: they are
    # only reported as drift).
    learned_graph: bool = True
    # A declared call between two services seen in spans, with no span showing it for this long, is drift.
    stale_after: Duration = parse_duration("1h")
    # Request, error and duration series per bucket of this width ...
    bucket: Duration = parse_duration("1m")
    # ... emitted once the spans' event time is this far past the bucket's end (later spans are ignored).
    lateness: Duration = parse_duration("30s")
    # Operations (span names) with series of their own per service; later ones share operation="other". 0: none.
    max_operations: int = Field(default=20, ge=0, le=1000)
    # Span ids remembered to find a span's parent (and skip duplicates), and for how long (event time).
    max_spans: int = Field(default=200_000, ge=1000)
    span_ttl: Duration = parse_duration("10m")

    _positive = field_validator("bucket", "stale_after")(classmethod(lambda cls, v: _positive_duration(v)))

    def span_settings(self):
        """The settings of :class:`detectors.spans.SpanSignals`."""
        from detectors.spans import SpanSettings

        return SpanSettings(bucket_seconds=self.bucket.total_seconds(), lateness_seconds=self.lateness.total_seconds(),
                            max_operations=self.max_operations, max_spans=self.max_spans,
                            span_ttl_seconds=self.span_ttl.total_seconds())


class WorkerSettings(Frozen):
    """The Faust worker's consumer group and its timings."""

    # The consumer group (and Faust app id) the workers of one pipeline share; two pipelines on
    # one Kafka need two names.
    group_id: str = Field(default="aiops", pattern=r"^[A-Za-z0-9._-]+$")
    # The address the HTTP endpoints (/metrics, /ingest/*, /control) listen on; `aiops worker
    # --web-bind` overrides it. This host only by default; 0.0.0.0 (every interface) in a container.
    web_bind: str = Field(default="127.0.0.1", pattern=r"^(?:[0-9A-Za-z.-]{1,253}|[0-9A-Fa-f:.]{2,45})$")

    # A join waits up to this long for the group's other members, so it bounds start-up and rebalances.
    rebalance_timeout: Duration = parse_duration("10s")
    # Also how long a join waits for a member that died without leaving; a restarted worker
    # removes its own dead predecessor (recovery.leave_for_dead_member), so this bounds the
    # restart only where that fails. Kafka's default before 3.0; heartbeats run in the
    # consumer's own thread, so a busy event loop does not miss them.
    session_timeout: Duration = parse_duration("10s")
    heartbeat_interval: Duration = parse_duration("3s")
    commit_interval: Duration = parse_duration("1s")
    # How often each state shard is snapshotted (streams/checkpoint.py): a restart replays at
    # most this much input (plus the last commit interval) instead of the partition's history.
    # 0 turns checkpoints off (every restart rebuilds from the first offset).
    checkpoint_interval: Duration = parse_duration("30s")
    # With several input partitions, correlation follows the event time of the slowest metrics
    # partition, so alerts from a lagging worker are not late. A partition this far behind the
    # fastest is taken as idle (it stopped sending) and not waited for.
    partition_idle_after: Duration = parse_duration("1m")


class WebSettings(Frozen):
    """The incident board the worker serves at ``GET /`` (:mod:`streams.web`)."""

    # Acting from the board (approve, silence) always needs a bearer token; reading it needs one
    # only with "token", for boards whose incident titles or labels are not for every viewer.
    # (Not a boolean named *_token: topology.yaml refuses keys that look like they hold secrets.)
    read_access: Literal["open", "token"] = "open"
    # Resolved incidents stay on the board this long after they resolved (in event time).
    show_resolved_for: Duration = parse_duration("6h")


class Topology(Frozen):
    version: int = 1
    name: str = "default"
    services: dict[ServiceName, ServiceSpec]
    topics: TopicSettings = Field(default_factory=TopicSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    traces: TraceSettings = Field(default_factory=TraceSettings)
    detectors: "DetectorSettings" = Field(default_factory=lambda: DetectorSettings())
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    remediation: RemediationSettings = Field(default_factory=RemediationSettings)
    tickets: TicketSettings = Field(default_factory=TicketSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    def graph(self):
        return dependency_graph(self.services)


from detectors.config import DetectorSettings  # noqa: E402  (forward ref above keeps section order readable)

Topology.model_rebuild()


def _reference_problems(data: dict) -> list[tuple[str, str]]:
    """Cross-references that field validation cannot see; run on the raw mapping so they are
    reported together with field errors instead of after them are fixed."""
    problems: list[tuple[str, str]] = []
    services = data.get("services")
    if not isinstance(services, dict):
        return problems
    hints = DidYouMean(str(n) for n in services)
    for name, spec in services.items():
        deps = spec.get("depends_on") if isinstance(spec, dict) else None
        if not isinstance(deps, list):
            continue
        for i, dep in enumerate(deps):
            if not isinstance(dep, str):
                continue
            if dep not in services:
                problems.append((format_path(("services", name, "depends_on", i)),
                                 f"unknown service {show(dep)}{hints.suggest(dep)}"))
            elif dep == name:
                problems.append((format_path(("services", name, "depends_on", i)), "a service cannot depend on itself"))
    policies = (data.get("remediation") or {}).get("policies") if isinstance(data.get("remediation"), dict) else None
    if isinstance(policies, list):
        seen: set[str] = set()
        for i, pol in enumerate(policies):
            pname = pol.get("name") if isinstance(pol, dict) else None
            if isinstance(pname, str):
                if pname in seen:
                    problems.append((format_path(("remediation", "policies", i, "name")), f"duplicate policy name '{pname}'"))
                seen.add(pname)
    return problems


# Keys whose value is a credential: the settings' own (token, api_token, routing_key, auth) and
# anything an operator might add under params or headers (secret_key, access_key, private_key,
# passphrase, client_secret, Authorization, Proxy-Authorization, Cookie, X-Api-Key...).
_SECRET_KEY = re.compile(r"(password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
                         r"|secret[_-]?key|routing[_-]?key|credential|authorization|cookie)s?$|(^|[_-])(auth|pwd|pw|pass)$", re.I)
ENV_REF = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*")
# A value that is itself a credential, whatever its key: an Authorization header's value ...
_AUTH_VALUE = re.compile(r"\s*(bearer|basic|digest)\s+[A-Za-z0-9._~+/=:-]{6,}\s*", re.I)
# ... a URL with a user (and password) in it: https://user:pass@host, https://TOKEN@host ...
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s@]*@")
# ... or a URL whose query carries a credential: ?token=..., &api_key=..., X-Amz-Signature=...
_URL_SECRET_PARAM = re.compile(r"[?&;]([A-Za-z0-9_.-]*(token|key|secret|password|passwd|pwd|auth|signature|sig|"
                               r"credential|session)[A-Za-z0-9_.-]*)=", re.I)
_USE_ENV = "use 'env:VARIABLE_NAME' and set the variable in the environment"


def _topic_problems(data: dict) -> list[tuple[str, str]]:
    """Topics shared between roles, on the raw mapping so they are reported with field errors.

    Each topic has one role: metrics written to the alerts topic would be read back as alerts, and
    an executor allowed to write to the control topic could approve its own risky steps. Kafka
    also refuses two names that differ only in '.' against '_' (their metrics collide), so those
    clash too."""
    section = data.get("topics") if isinstance(data.get("topics"), dict) else {}
    defaults = TopicSettings()
    roles = [(("topics", name), section.get(name, getattr(defaults, name)))
             for name in TopicSettings.model_fields if name != "partitions"]
    delivery = _dig(data, "tickets", "delivery")
    if isinstance(delivery, dict):
        roles.append((("tickets", "delivery", "ledger_topic"), delivery.get("ledger_topic", "aiops.ticket-ledger")))
    else:
        roles.append((("tickets", "delivery", "ledger_topic"), "aiops.ticket-ledger"))
    problems = []
    seen: dict[str, tuple[tuple, str]] = {}
    for where, topic in roles:
        if not isinstance(topic, str):
            continue  # reported by the field itself
        key = topic.replace(".", "_")
        if key in seen:
            other, other_topic = seen[key]
            same = "" if other_topic == topic else f" as {show(other_topic)}, which Kafka cannot tell apart ('.' vs '_')"
            problems.append((format_path(where), f"{show(topic)} is already the topic of {format_path(other)}{same}; "
                                                 "every role needs a topic of its own"))
        else:
            seen[key] = (where, topic)
    allowed = _dig(data, "remediation", "executors", "kafka", "allowed_topics")
    if isinstance(allowed, list):
        for i, topic in enumerate(allowed):
            if isinstance(topic, str) and topic.replace(".", "_") in seen:
                problems.append((format_path(("remediation", "executors", "kafka", "allowed_topics", i)),
                                 f"{show(topic)} is the pipeline's own topic ({format_path(seen[topic.replace('.', '_')][0])}); "
                                 "an executor must not write to it"))
    return problems


def _dig(data: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(k)
    return data


def topology_warnings(topo: Topology) -> list[tuple[str, str]]:
    """What is valid but probably wrong, as ``(path, message)``: for now, cycles in ``depends_on``.

    Two services can call each other, so a cycle is not an error; but a declared cycle is more
    often a reversed edge, and root-cause ranking cannot order the services on it by the calls.
    One cycle is named per group of services that reach each other (strongly connected
    components, linear in the graph's size: listing every cycle could be exponential).

    >>> topology_warnings(parse_topology({"services": {"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}}}))
    [('services.a.depends_on', 'a -> b -> a is a cycle; a declared call is often reversed (warning)')]
    """
    import networkx as nx

    g = topo.graph()
    out = []
    for component in sorted((sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1)):
        start = component[0]
        h = nx.DiGraph(g.subgraph(component))  # a plain copy: views are slow on big components
        # The shortest cycle through `start`: one breadth-first search, linear in the component.
        paths = nx.single_source_shortest_path(h, start)
        back = min((p for p in h.predecessors(start)), key=lambda p: (len(paths[p]), p))
        names = paths[back] + [start]
        shown = " -> ".join(names) if len(names) <= 8 else \
            " -> ".join(names[:4]) + f" -> … ({len(names) - 5} more) -> " + " -> ".join(names[-1:])
        out.append((format_path(("services", start, "depends_on")),
                    f"{shown} is a cycle; a declared call is often reversed (warning)"))
    return out


def _one_line(line: str) -> str:
    return "\\n".join(line.splitlines())  # every line boundary Python knows, not only LF


class ConfigError(Exception):
    """topology.yaml is invalid. ``problems`` lists ``(path, message)``; ``str()`` is the report."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        n = len(problems)
        lines = [f"{source}: {n} problem{'s' if n != 1 else ''}"]
        # One line per problem, whatever a message quotes from the file: a newline in a name must
        # not break the report or forge a line of it.
        lines += [_one_line(f"  {path}: {msg}" if path else f"  {msg}") for path, msg in problems]
        super().__init__("\n".join(lines))


def _describe(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key {show(err['loc'][-1])}"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and "(got " not in msg and kind not in ("model_type", "dict_type") and not isinstance(err["input"], (dict, list)):
        # Never a value under a secret-looking key: that is what the report would leak.
        shown = "a value" if _SECRET_KEY.search(str(err["loc"][-1])) else show(err["input"])
        msg += f" (got {shown})"
    return msg


def _find_inline_secrets(node: Any, loc: tuple = ()) -> list[tuple[str, str]]:
    """Credentials written into the file. Secrets come from the environment, never from
    topology.yaml: the file is versioned, pushed to the config topic and shown to operators.

    A key that names a secret may hold only ``env:VARIABLE_NAME`` (or nothing): a string,
    number, float or ``!!binary`` value is refused. Any other value is refused when it is a
    credential by its shape (``Bearer ...``, a URL with ``user:pass@`` or ``?token=``) or an
    ``env:`` reference that does not name a variable. The value itself is never echoed."""
    found = []
    stack = [(node, loc)]
    while stack:  # iterative: the reader bounds the depth, but parse_topology also takes Python dicts
        node, loc = stack.pop()
        children = []
        if isinstance(node, dict):
            for k, v in node.items():
                where = loc + (k,)
                if isinstance(k, str) and _SECRET_KEY.search(k) and not isinstance(v, (dict, list)):
                    if v is not None and not (isinstance(v, str) and ENV_REF.fullmatch(v)):
                        found.append((format_path(where), "secrets must not be written in topology.yaml; " + _USE_ENV))
                    continue
                children.append((v, where))
        elif isinstance(node, list):
            children = [(v, loc + (i,)) for i, v in enumerate(node)]
        elif isinstance(node, str):
            problem = _credential_shape(node)
            if problem:
                found.append((format_path(loc), problem))
        stack.extend(reversed(children))  # document order
    return found


def _credential_shape(value: str) -> str | None:
    """Why a string value, under any key, is a credential or a broken ``env:`` reference."""
    if value.startswith("env:") and not ENV_REF.fullmatch(value):
        return "'env:' must be followed by a variable name (letters, digits and _, not starting with a digit)"
    if _AUTH_VALUE.fullmatch(value):
        return "this is a credential (an Authorization value); " + _USE_ENV
    if "://" in value:
        if _URL_USERINFO.search(value):
            return "a URL must not carry a user or password (user:pass@host); " + _USE_ENV
        m = _URL_SECRET_PARAM.search(value)
        if m:
            return f"a URL must not carry a credential in its query ({m.group(1)}=); " + _USE_ENV
    return None


def parse_topology(data: Any, source: str = "topology.yaml", *, yaml_problems: list[tuple[str, str]] = (),
                   refused: list[tuple] = ()) -> Topology:
    """Validate already-parsed YAML. Raises :class:`ConfigError` listing every problem.

    ``yaml_problems`` and ``refused`` come from :func:`streams.safe_yaml.load_yaml`: what the
    reader refused is reported with the rest, and a refused node (read as null) is not reported a
    second time by the fields under it."""
    if not isinstance(data, dict):
        raise ConfigError(source, [*yaml_problems, ("", f"expected a mapping at the top level (got {type(data).__name__})")])
    secrets = _find_inline_secrets(data)
    secret_paths = {path for path, _ in secrets}
    problems: list[tuple[str, str]] = []
    try:
        # strict: YAML already typed every scalar, so `tier: true` is a mistake, not a 1.
        topo = Topology.model_validate(data, strict=True, context=FROM_FILE)
    except ValidationError as exc:
        problems = [(format_path(err["loc"]), _describe(err)) for err in exc.errors()
                    if not _under_any(err["loc"], refused)]
        # A field that holds an inline secret is reported once, as a secret.
        problems = [p for p in problems if p[0] not in secret_paths]
        topo = None
    problems = [*yaml_problems, *secrets, *_reference_problems(data), *_topic_problems(data), *problems]
    if problems:
        raise ConfigError(source, problems)
    return topo


def _under_any(loc: tuple, prefixes: list[tuple]) -> bool:
    return any(loc[:len(p)] == p for p in prefixes)


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file. Raises :class:`ConfigError`; never returns a partial config."""
    path = Path(path)
    try:
        data = read_capped(path)
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read the file: {exc.strerror}")]) from None
    return parse_topology_text(data, str(path))


def read_capped(path: Path) -> bytes:
    """The file's bytes, reading at most one byte past :data:`MAX_BYTES` (enough to refuse it):
    a 10 GB file or /dev/zero is refused, not read into memory."""
    with open(path, "rb") as f:
        return f.read(MAX_BYTES + 1)


def parse_topology_text(text: str | bytes, source: str = "topology.yaml") -> Topology:
    """Validate a topology file's text or bytes (the same checks as :func:`load_topology`; the
    live config topic carries the text). Raises :class:`ConfigError`."""
    try:
        doc = load_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError(source, [exc.problem]) from None
    return parse_topology(doc.data, source, yaml_problems=doc.problems, refused=doc.refused)
