"""Detector settings from the ``detectors:`` section of topology.yaml."""
from __future__ import annotations

import difflib
import fnmatch
import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def show(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from the file, cut to ``limit`` characters: a problem report stays
    readable whatever the file holds.

    >>> show("x" * 100, 10)
    "'xxxxxxxx…"
    """
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 1] + "…"


# Ten years: longer than any wait, window or retention here needs, and far inside what timedelta
# (and the float seconds the core computes with) can hold, so no duration overflows downstream.
MAX_DURATION_SECONDS = 3650 * 86400


# The validation context of a file's contents (``Model.model_validate(data, strict=True,
# context=FROM_FILE)``): a file is held to what its reader can check by eye, code that builds
# settings in Python is not.
FROM_FILE = {"from_file": True}


def parse_duration(value: Any) -> timedelta:
    """Accept ``30s``, ``5m``, ``1.5h``, ``2d``, ``250ms`` or a number of seconds, up to ten years.

    >>> parse_duration("5m")
    datetime.timedelta(seconds=300)
    >>> parse_duration("99999999999999d")
    Traceback (most recent call last):
    ...
    ValueError: expected a duration of at most 3650d (got '99999999999999d')
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m' or '1h'")
    if isinstance(value, (int, float)):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as '30s', '5m' or '1h' (got {show(value)})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative duration (got {show(value)})")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"expected a duration of at most {MAX_DURATION_SECONDS // 86400}d (got {show(value)})")
    return timedelta(seconds=seconds)


def parse_config_duration(value: Any, info: ValidationInfo | None) -> timedelta:
    """A duration setting: as :func:`parse_duration`, but in a file it needs a unit. ``group_wait: 30``
    could mean seconds or minutes; a reader of the file should not have to guess.

    >>> parse_config_duration(30, None).total_seconds()
    30.0
    """
    if (info is not None and info.context and info.context.get("from_file")
            and isinstance(value, (int, float)) and not isinstance(value, bool)):
        raise ValueError(f"expected a duration with a unit, such as '30s' or '5m' (got {show(value)})")
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(parse_config_duration)]


# Kafka's own rule for topic names (kafka.common.internals.Topic): at most 249 of these characters,
# and not "." or "..". A name such as "aiops/../x" would otherwise reach the broker, or a path.
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_topic_name(value: str) -> str:
    """A legal Kafka topic name.

    >>> check_topic_name("aiops.alerts")
    'aiops.alerts'
    >>> check_topic_name("aiops/../alerts")
    Traceback (most recent call last):
    ...
    ValueError: expected a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-', not '.' or '..' (got 'aiops/../alerts')
    """
    if not _TOPIC.match(value) or value in (".", ".."):
        raise ValueError("expected a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-', not '.' or '..' "
                         f"(got {show(value)})")
    return value


TopicName = Annotated[str, AfterValidator(check_topic_name)]


class Frozen(BaseModel):
    """Config models reject unknown keys (a typo is an error, not a silent default) and are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesMatch(Frozen):
    """Glob patterns on a series. Every given field must match; an empty match matches all."""

    service: str = "*"
    metric: str = "*"
    labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, service: str, metric: str, labels: dict[str, str] | tuple) -> bool:
        if not fnmatch.fnmatchcase(service, self.service):
            return False
        if not fnmatch.fnmatchcase(metric, self.metric):
            return False
        got = dict(labels)
        return all(k in got and fnmatch.fnmatchcase(got[k], v) for k, v in self.labels.items())


ModelName = Literal["robust", "halfspacetrees", "snarimax", "holtwinters"]


class DidYouMean:
    """Suggestions for unknown names, at a bounded cost.

    One difflib suggestion compares the name with every choice, each comparison costing up to the
    product of the two lengths. A file with thousands of unknown names and thousands of choices
    would make that quadratic and validation would hang, so suggestions stop once ``budget``
    (the sum of those products, about a quarter of a microsecond each) is spent, and skip names
    longer than ``max_len``; the problems themselves are all still reported.

    >>> s = DidYouMean(["payments", "orders"])
    >>> s.suggest("payment"), s.suggest("x" * 500)
    (" (did you mean 'payments'?)", '')
    """

    def __init__(self, choices, *, budget: int = 2_000_000, max_len: int = 64):
        self.choices = [c for c in choices if isinstance(c, str) and len(c) <= max_len]
        self._total_len = sum(len(c) for c in self.choices)
        self.budget, self.max_len = budget, max_len
        self._memo: dict[str, str] = {}

    def suggest(self, name: str) -> str:
        if not isinstance(name, str) or len(name) > self.max_len:
            return ""
        if name in self._memo:
            return self._memo[name]
        cost = max(len(name), 1) * self._total_len
        if cost > self.budget:
            return ""
        self.budget -= cost
        close = difflib.get_close_matches(name, self.choices, n=1)
        self._memo[name] = hint = f" (did you mean '{close[0]}'?)" if close else ""
        return hint


def unknown_params_message(model: str, unknown: list[str], known: list[str]) -> str:
    """``robust: unknown param 'alpah' (did you mean 'alpha'?); known: [...]``"""
    hints = DidYouMean(known)
    names = [show(name) + hints.suggest(name) for name in unknown[:20]]
    if len(unknown) > 20:
        names.append(f"and {len(unknown) - 20} more")
    return f"{model}: unknown param{'s' if len(names) > 1 else ''} {', '.join(names)}; known: {sorted(known)}"


def _params_fit_model(params: dict, info: ValidationInfo) -> dict:
    """A model's params are checked when the config loads, not when its first series arrives."""
    model = info.data.get("model")
    if model is None:  # the model itself was invalid; that error is reported
        return params
    from detectors.engine import make_detector  # lazily: the engine imports this module

    try:
        make_detector(model, params)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from None
    return params


class DetectorRule(Frozen):
    match: SeriesMatch = Field(default_factory=SeriesMatch)
    model: ModelName = "robust"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)

    _check_params = field_validator("params")(_params_fit_model)


class DetectorSettings(Frozen):
    model: ModelName = "robust"
    # Score at or above which a point counts as anomalous. Production pages at this fixed value.
    threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    # No alert before a series has this many points: a cold start is not an anomaly.
    warmup_points: int = Field(default=30, ge=1)
    # How long an anomaly must last, from its onset, to fire (Prometheus's ``for``): a point covers
    # one sampling interval, so a 5-minute series fires at the onset and a 1-minute one after two
    # anomalous points. A one-minute spike is not worth a page; a lasting departure is.
    fire_after: Duration = parse_duration("2m")
    # Consecutive normal points needed to resolve.
    resolve_after_points: int = Field(default=3, ge=1)
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    rules: list[DetectorRule] = Field(default_factory=list)

    _check_params = field_validator("params")(_params_fit_model)

    def rule_for(self, service: str, metric: str, labels) -> DetectorRule:
        """The first matching rule, else the defaults as a rule."""
        for rule in self.rules:
            if rule.match.matches(service, metric, labels):
                return rule
        return DetectorRule(model=self.model, threshold=self.threshold, params=self.params)
