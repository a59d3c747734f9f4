"""The ``remediation.executors:`` section of topology.yaml: what an executor may run, and how.

Everything here is an allowlist. A planned action that names a script, URL prefix or topic not
listed here is refused, whatever the policy says: policies are templated with telemetry labels,
and telemetry is not trusted.

>>> s = ExecutorSettings.model_validate({"exec": {"allow": ["compress-old-logs.sh"]},
...                                      "kafka": {"allowed_topics": ["ops.traffic-control"]}})
>>> s.exec.allow["compress-old-logs.sh"].timeout is None, s.exec.timeout.total_seconds()
(True, 300.0)
>>> s.exec.pattern_for("compress-old-logs.sh", "host")
'^[A-Za-z0-9_./:@=-]{1,256}$'
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator

from detectors.config import Duration, Frozen, TopicName, parse_duration

# No spaces, quotes, globs, `$`, `;`, `|`, `&`, backticks, redirections or newlines. A value may
# still start with '-' under this pattern; that is refused separately, whatever the pattern.
SAFE_ARG = r"^[A-Za-z0-9_./:@=-]{1,256}$"
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _env_ref(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", value):
        # A secret never sits in topology.yaml: only the name of the variable that holds it.
        # The value is not echoed: it is probably the secret itself.
        raise ValueError("expected 'env:VARIABLE_NAME': secrets never go in topology.yaml")
    return value


Regex = Annotated[str, BeforeValidator(_regex)]
EnvRef = Annotated[str | None, BeforeValidator(_env_ref)]


class ScriptSpec(Frozen):
    """One allowlisted runbook script."""

    # Per-parameter patterns. When given, only these parameters are accepted; others are refused.
    params: dict[str, Regex] = Field(default_factory=dict)
    timeout: Duration | None = None  # None: exec.timeout

    @field_validator("params")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _PARAM_NAME.match(k)]
        if bad:
            raise ValueError(f"invalid parameter name {bad[0]!r} (expected {_PARAM_NAME.pattern})")
        return v


def _allow_list(value: Any) -> Any:
    """``allow`` may be a plain list of script names when no script needs its own settings."""
    if isinstance(value, list):
        return {name: {} for name in value}
    return value


class ExecSettings(Frozen):
    # Script names relative to runbooks_dir, e.g. "compress-old-logs.sh". Nothing else runs.
    allow: Annotated[dict[str, ScriptSpec], BeforeValidator(_allow_list)] = Field(default_factory=dict)
    arg_pattern: Regex = SAFE_ARG  # every parameter value must match this (or its script's own pattern)
    timeout: Duration = parse_duration("5m")  # then the script's process group is killed

    @field_validator("allow")
    @classmethod
    def _relative(cls, v: dict[str, ScriptSpec]) -> dict[str, ScriptSpec]:
        for name in v:
            p = PurePosixPath(name)
            if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
                raise ValueError(f"script {name!r}: expected a path relative to runbooks_dir, without '..'")
        return v

    def pattern_for(self, script: str, param: str) -> str | None:
        """The pattern a parameter's value must match, or None when the script does not accept it."""
        spec = self.allow.get(script)
        if spec is None:
            return None
        if spec.params:
            return spec.params.get(param)
        return self.arg_pattern


class HttpSettings(Frozen):
    # A target URL must have the scheme and host of one prefix and a path under its path.
    allowed_prefixes: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=lambda: ["POST", "PUT", "PATCH", "DELETE"])
    timeout: Duration = parse_duration("10s")
    auth: EnvRef = None  # e.g. "env:LB_ADMIN_TOKEN"; read when a request is sent, never logged
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"  # the header value is "<scheme> <secret>"; "" sends the secret alone
    # Dry-run requests are not sent, unless the API has a dry-run switch: then they carry this
    # header with the value "true".
    dry_run_header: str | None = None

    @field_validator("allowed_prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        for prefix in v:
            u = urlsplit(prefix)
            if u.scheme not in ("http", "https") or not u.netloc or u.query or u.fragment or "@" in u.netloc:
                raise ValueError(f"prefix {prefix!r}: expected http(s)://host[:port]/path, "
                                 "without user, query or fragment")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        allowed = {"GET", "POST", "PUT", "PATCH", "DELETE"}
        bad = [m for m in v if m not in allowed]
        if bad:
            raise ValueError(f"unknown HTTP method {bad[0]!r} (expected some of {sorted(allowed)})")
        return v


class KubernetesSettings(Frozen):
    kubectl: str = "kubectl"  # a name looked up on PATH, or a path
    context: str | None = None  # always passed as --context when set; None: kubectl's current context
    namespace: str | None = None  # always passed as --namespace when set
    max_replicas: int = Field(default=10, ge=1)  # cap when a step gives no max_replicas; a step cannot exceed it
    min_replicas: int = Field(default=1, ge=0)  # a relative scale-down never goes below this
    timeout: Duration = parse_duration("30s")
    # Kinds a step may target, as kubectl spells them.
    kinds: list[str] = Field(default_factory=lambda: ["deployment", "statefulset"])


class KafkaSettings(Frozen):
    allowed_topics: list[TopicName] = Field(default_factory=list)
    bootstrap: str | None = None  # None: the executor's own bootstrap servers


class ExecutorSettings(Frozen):
    runbooks_dir: str = "runbooks"
    ledger_path: str = ".aiops-data/action-ledger.jsonl"  # the at-most-once ledger (JSON lines, fsynced)
    exec: ExecSettings = Field(default_factory=ExecSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
