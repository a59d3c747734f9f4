"""Wire decoders: Kafka message bytes to :class:`~detectors.normalize.Sample` and
:class:`~detectors.records.LogRecord` objects.

Three metric formats, told apart by their top-level keys:

- OTLP ``ExportMetricsServiceRequest``: the OpenTelemetry Collector's ``kafka`` exporter, as
  protobuf (``encoding: otlp_proto``, its default; :mod:`streams.ingest.otlp_proto`) or OTLP/JSON
  (``otlp_json``, ``resourceMetrics``; :mod:`streams.ingest.otlp`), told apart per message;
- one prometheus-kafka-adapter sample (``labels`` and ``value``) (:mod:`streams.ingest.prometheus`);
- the native batch (``schema_version`` and ``points``), see ``docs/native-format.md``
  (:mod:`streams.ingest.native`).

Logs are OTLP ``ExportLogsServiceRequest`` (:mod:`streams.ingest.logs`), spans OTLP
``ExportTraceServiceRequest`` (:mod:`streams.ingest.traces`), in either encoding too: a protobuf
request is read as the OTLP/JSON object it stands for, so both mean exactly the same.

Error model: a point that cannot be used is dropped and its reason kept in ``rejects``; the
rest of the message goes on. A message that is unusable as a whole (not JSON, wrong types in
its structure, or nothing but rejected points) raises :class:`DecodeError`, whose text names
the JSON path and goes to the dead-letter topic. Nothing else is ever raised, whatever the
bytes: a decoder that crashed on one message would stall its partition on redelivery.
"""
from __future__ import annotations

import contextvars
import difflib
import math
from functools import lru_cache

import orjson

from detectors.normalize import Sample
from detectors.records import Labels
from streams.ingest.limits import Limits, check_json, check_proto, check_size
from streams.ingest.redact import DEFAULT as DEFAULT_REDACTOR
from streams.ingest.redact import Redactor

MAX_REJECTS = 20
MAX_REASON_CHARS = 2000  # as a dead-letter record's reason
# Plausible event times. Outside this window the producer is sending the wrong unit (ms for
# ns, ns for s) or garbage, and one such point would drag every window it lands in.
T_MIN = 946684800.0  # 2000-01-01T00:00:00Z
T_MAX = 4102444800.0  # 2100-01-01T00:00:00Z
MAX_ABS_VALUE = 1e300

_isfinite = math.isfinite


class DecodeError(ValueError):
    """The whole message is unusable. ``str()`` is the reason, short and specific.

    Examples
    --------
    >>> try:
    ...     decode_metrics(b'{"resourceMetrics": "x"}', known_services=None)
    ... except DecodeError as exc:
    ...     print(exc)
    resourceMetrics: expected a list (got str)
    """


class PathError(DecodeError):
    """A :class:`DecodeError` at a JSON path; outer loops prefix their part of the path."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem

    def within(self, outer: str) -> PathError:
        if not self.path:
            path = outer
        elif self.path[0] == "[":
            path = outer + self.path
        else:
            path = f"{outer}.{self.path}"
        return PathError(path, self.problem)


class Decoded:
    """The usable samples of one message and why the others were dropped.

    Decoders may hand over a sample as a plain tuple of :class:`Sample`'s fields in order
    (trailing defaults left out): building a frozen dataclass per point costs more than the
    rest of decoding it. :attr:`rows` is what they handed over, for consumers that read tuples
    (:meth:`Normalizer.normalize_rows`); :attr:`samples` is the same, as ``Sample`` objects,
    built on first use.
    """

    __slots__ = ("rows", "rejects", "fmt", "_samples")

    def __init__(self, samples: list, rejects: list[str], fmt: str):
        self.rows: list = samples  # tuples in Sample field order, or Sample objects
        self.rejects = rejects  # distinct reasons, at most MAX_REJECTS of them
        self.fmt = fmt  # "otlp" | "prometheus" | "native"
        self._samples: list[Sample] | None = None

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = [r if type(r) is Sample else Sample(*r) for r in self.rows]
        return self._samples

    def __repr__(self) -> str:
        return f"Decoded(samples={self.samples!r}, rejects={self.rejects!r}, fmt={self.fmt!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decoded):
            return NotImplemented
        return (self.samples, self.rejects, self.fmt) == (other.samples, other.rejects, other.fmt)

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside, as the dataclass had


def type_name(v: object) -> str:
    """The JSON-ish name of a parsed value's type, for error messages."""
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def expect_list(v: object, path: str) -> list:
    """``v`` when it is a list; an absent or null field is the empty list (proto3 JSON)."""
    if type(v) is list:
        return v
    if v is None:
        return []
    raise PathError(path, f"expected a list (got {type_name(v)})")


_EMPTY: dict = {}


def expect_object(v: object, path: str) -> dict:
    if type(v) is dict:
        return v
    if v is None:
        return _EMPTY
    raise PathError(path, f"expected an object (got {type_name(v)})")


# The redactor of the message being decoded (set by the decoders' guard): a reason quotes the
# bad value, and it is redacted before it is cut, so no cut leaves part of a card or a token.
_REDACTOR: contextvars.ContextVar[Redactor] = contextvars.ContextVar("redactor", default=DEFAULT_REDACTOR)


def short(v: object, limit: int = 40) -> str:
    """``repr`` of a bad value, redacted, then cut so one hostile point cannot blow up the
    dead-letter record.

    >>> short("card 4111 1111 1111 1111 and more words than fit", 20)
    "'card <pan> and m..."
    """
    r = repr(v) if type(v) is not str or len(v) <= 4 * limit + 1024 else repr(v[:4 * limit + 1024])
    if type(v) not in (int, float, bool, type(None)):
        # A string, or a list or object whose repr holds strings: the fuzzer found a card
        # number inside an object given as a point's value.
        r = _REDACTOR.get().prefix(r, limit + 16)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def nonfinite(v: float) -> str:
    return "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")


def value_problem(v: float) -> str | None:
    """Why a parsed value cannot be used, or ``None`` when it can."""
    if not _isfinite(v):
        return f"non-finite value ({nonfinite(v)})"
    if v > MAX_ABS_VALUE or v < -MAX_ABS_VALUE:
        return f"value out of range ({v:.3g})"
    return None


@lru_cache(maxsize=1024)
def _did_you_mean(service: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(service[:200], sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_service(service: str, known: frozenset[str]) -> str:
    return f"unknown service {short(service, 80)}{_did_you_mean(service, known)}"


class Context:
    """Per-message accumulator shared by the decoders: samples, reasons, the label policy and
    the redactor every string leaving ingest goes through."""

    __slots__ = ("samples", "known", "keep", "redactor", "_reasons")

    def __init__(self, known: frozenset[str] | None, keep: frozenset[str], redactor: Redactor = DEFAULT_REDACTOR):
        self.samples: list = []  # Sample objects, or tuples of their fields (see Decoded)
        self.known = known
        self.keep = keep
        self.redactor = redactor
        self._reasons: dict[str, None] = {}  # an ordered set

    def reject(self, reason: str) -> None:
        # Redacted here, where every reason enters, not at each call: a reason quotes names and
        # values from the input (the fuzzer found a card number in a metric's name), and the
        # reasons reach a webhook's HTTP answer as well as the dead-letter topic.
        if len(self._reasons) < MAX_REJECTS:
            self._reasons[self.redactor.prefix(reason, MAX_REASON_CHARS)] = None

    def service_ok(self, service: str) -> bool:
        if self.known is None or service in self.known:
            return True
        self.reject(unknown_service(service, self.known))
        return False

    def labels(self, d: dict[str, str]) -> Labels:
        """Series labels (or log attributes): kept keys only, sorted, redacted."""
        keep = self.keep
        if keep:
            return self.redactor.labels(tuple(sorted((k, v) for k, v in d.items() if k in keep)), self.reject)
        return self.redactor.labels(tuple(sorted(d.items())), self.reject)

    def reasons(self, kept: bool) -> list[str]:
        """The reasons given so far; raises :class:`DecodeError` with the first of them when
        nothing was ``kept`` (a message whose every part was refused is refused whole)."""
        reasons = list(self._reasons)
        if not kept and reasons:
            more = "; ..." if len(reasons) > 3 else ""
            raise DecodeError("; ".join(reasons[:3]) + more)
        return reasons

    def finish(self, fmt: str) -> Decoded:
        return Decoded(self.samples, self.reasons(bool(self.samples)), fmt)


def load(payload: bytes) -> object:
    """Parse JSON, mapping every failure to :class:`DecodeError`."""
    try:
        return orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None


def load_otlp(payload: bytes, signal: str, limits: Limits | None = None) -> object:
    """An OTLP export request of ``signal`` ("metrics", "logs", "traces") in either encoding,
    told apart per message (:func:`streams.ingest.otlp_proto.is_protobuf`): parsed JSON, or a
    protobuf request as the OTLP/JSON object it stands for. Raises :class:`DecodeError`, also
    for a message over one of ``limits`` (:mod:`streams.ingest.limits`)."""
    check_size(payload, limits)
    if payload[:1] == b"\n" and otlp_proto.is_protobuf(payload):
        msg = otlp_proto.parse_or_json_error(payload, signal)
        check_proto(msg, signal, limits, len(payload))
        return otlp_proto.to_json(msg, signal)
    obj = load(payload)
    check_json(obj, signal, limits)
    return obj


def _guard(decode, payload: bytes, **kwargs):
    token = _REDACTOR.set(kwargs.get("redactor") or DEFAULT_REDACTOR)
    try:
        return decode(payload, **kwargs)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("document nested too deeply") from None
    except Exception as exc:  # noqa: BLE001
        # A bug must dead-letter the message, not crash the agent and loop on redelivery.
        raise DecodeError(f"internal decoder error: {type(exc).__name__}: {short(str(exc), 120)}") from None
    finally:
        _REDACTOR.reset(token)


def decode_metrics(payload: bytes, *, known_services: frozenset[str] | None, service_label: str = "service",
                   keep_labels: frozenset[str] = frozenset(), redactor: Redactor = DEFAULT_REDACTOR,
                   limits: Limits | None = None) -> Decoded:
    """Decode one metrics message, detecting its format.

    Parameters
    ----------
    payload
        The Kafka message value.
    known_services
        Services that may send; points of others are rejected. ``None`` accepts any.
    service_label
        The Prometheus label naming the service (falls back to ``job``).
    keep_labels
        When not empty, the only label keys kept on series (bounds cardinality).
    redactor
        Applied to every label key and value and every metric name (``ingest.redaction``;
        :mod:`streams.ingest.redact`). The default redacts emails, card numbers and tokens.
    limits
        Caps on the message's size, data points and histogram buckets
        (:mod:`streams.ingest.limits`); a message over one is refused whole. ``None``: no caps.

    Raises
    ------
    DecodeError
        When the message as a whole is unusable; never anything else.

    Examples
    --------
    >>> d = decode_metrics(b'{"schema_version":1,"service":"api","points":[["cpu",1.7e9,0.5]]}',
    ...                    known_services=None)
    >>> d.fmt, [(s.series.id, s.t, s.kind, s.value) for s in d.samples]
    ('native', [('api/cpu', 1700000000.0, 'gauge', 0.5)])
    """
    return _guard(_decode_metrics, payload, known_services=known_services, service_label=service_label,
                  keep_labels=keep_labels, redactor=redactor, limits=limits)


def decode_logs(payload: bytes, *, known_services: frozenset[str] | None,
                redactor: Redactor = DEFAULT_REDACTOR, limits: Limits | None = None) -> tuple[list, list[str]]:
    """Decode one OTLP/JSON ``ExportLogsServiceRequest`` into log records and reject reasons.

    Bodies and attributes (keys and values) go through ``redactor``, so templates and sample
    lines mined from them downstream carry placeholders, never the matched text.

    Raises
    ------
    DecodeError
        When the message as a whole is unusable; never anything else.
    """
    return _guard(logs.decode, payload, known_services=known_services, redactor=redactor, limits=limits)


def decode_traces(payload: bytes, *, known_services: frozenset[str] | None,
                  redactor: Redactor = DEFAULT_REDACTOR, limits: Limits | None = None) -> tuple[list, list[str]]:
    """Decode one OTLP/JSON ``ExportTraceServiceRequest`` into spans and reject reasons.

    Spans of services not in ``known_services`` are dropped with the reason, as their metrics
    would be; span names go through ``redactor``.

    Raises
    ------
    DecodeError
        When the message as a whole is unusable; never anything else.

    Examples
    --------
    >>> spans, rejects = decode_traces(b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name",'
    ...     b'"value":{"stringValue":"api"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",'
    ...     b'"spanId":"eee19b7ec3c1b174","name":"GET /users","kind":2,"startTimeUnixNano":"1700000000000000000",'
    ...     b'"endTimeUnixNano":"1700000000250000000","status":{"code":2}}]}]}]}', known_services=None)
    >>> [(s.service, s.name, s.kind, s.error, round(s.end - s.start, 3)) for s in spans], rejects
    ([('api', 'GET /users', 2, True, 0.25)], [])
    """
    return _guard(traces.decode, payload, known_services=known_services, redactor=redactor, limits=limits)


def _decode_metrics(payload: bytes, *, known_services, service_label, keep_labels, redactor, limits=None) -> Decoded:
    check_size(payload, limits)
    if payload[:1] == b"\n" and otlp_proto.is_protobuf(payload):
        msg = otlp_proto.parse_or_json_error(payload, "metrics")
        ctx = Context(known_services, keep_labels, redactor)
        otlp_proto.decode_metrics(msg, ctx, limits, len(payload))  # checks the caps as it goes
        return ctx.finish("otlp")
    obj = load(payload)
    if type(obj) is not dict:
        raise DecodeError(f"unrecognized metrics message: expected a JSON object (got {type_name(obj)})")
    if "resourceMetrics" in obj:
        ctx = Context(known_services, keep_labels, redactor)
        otlp.decode(obj, ctx, limits)  # checks the caps as it goes, deciding as check_json would first
        return ctx.finish("otlp")
    check_json(obj, "metrics", limits)
    ctx = Context(known_services, keep_labels, redactor)
    if "schema_version" in obj and "points" in obj:
        native.decode(obj, ctx)
        return ctx.finish("native")
    if "labels" in obj and "value" in obj:
        prometheus.decode(obj, ctx, service_label)
        return ctx.finish("prometheus")
    keys = ", ".join(short(k, 30) for k in list(obj)[:5])
    raise DecodeError("unrecognized metrics message: expected OTLP/JSON (resourceMetrics), a prometheus-kafka-adapter "
                      f"sample (labels, value) or a native batch (schema_version, points); got keys: {keys or 'none'}")


# The format modules import the helpers above from this package, so they come last.
from streams.ingest import logs, native, otlp, otlp_proto, prometheus, traces  # noqa: E402

__all__ = ["DecodeError", "Decoded", "Limits", "Redactor", "decode_logs", "decode_metrics", "decode_traces"]
