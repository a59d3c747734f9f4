"""OTLP/JSON ``ExportLogsServiceRequest`` to :class:`~detectors.records.LogRecord` objects.

The service is the resource attribute ``service.name``; resource and record attributes become
labels. The time is ``timeUnixNano``, else ``observedTimeUnixNano`` (the collector sets the
latter when a source gives no time). A record without a usable severity number takes it from
``severityText`` so that plain ``ERROR`` lines still count as errors. Bodies (cut to
``MAX_BODY`` characters) and attributes go through the redactor (:mod:`streams.ingest.redact`).
"""
from __future__ import annotations

from detectors.records import LogRecord
from streams.ingest import DEFAULT_REDACTOR, Context, PathError, Redactor, expect_list, type_name
from streams.ingest.otlp import any_to_str, attributes, decode_resources, parse_int, time_problem

MAX_BODY = 2048
_TEXT_SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13, "ERROR": 17,
                  "ERR": 17, "CRITICAL": 21, "FATAL": 21, "PANIC": 21, "ALERT": 21, "EMERGENCY": 24}


def decode(payload: bytes, *, known_services: frozenset[str] | None,
           redactor: Redactor = DEFAULT_REDACTOR, limits=None) -> tuple[list[LogRecord], list[str]]:
    return decode_resources(payload, "resourceLogs", "scopeLogs", "logs", _resource_logs,
                            known_services=known_services, redactor=redactor, limits=limits)


def _resource_logs(service: str, res_attrs: dict[str, str], scope_logs: list, ctx: Context,
                   out: list[LogRecord]) -> None:
    for j, sl in enumerate(scope_logs):
        if type(sl) is not dict:
            raise PathError(f"scopeLogs[{j}]", f"expected an object (got {type_name(sl)})")
        for k, rec in enumerate(expect_list(sl.get("logRecords"), f"scopeLogs[{j}].logRecords")):
            path = f"scopeLogs[{j}].logRecords[{k}]"
            if type(rec) is not dict:
                raise PathError(path, f"expected an object (got {type_name(rec)})")
            raw_t = rec.get("timeUnixNano")
            ns = parse_int(raw_t, f"{path}.timeUnixNano") if raw_t is not None else None
            if not ns:  # absent or 0: unknown, fall back to when the collector saw it
                raw_t = rec.get("observedTimeUnixNano")
                ns = parse_int(raw_t, f"{path}.observedTimeUnixNano") if raw_t is not None else None
            problem = time_problem(raw_t, ns)
            if problem is not None:
                ctx.reject(f"log record: {problem}")
                continue
            sev = rec.get("severityNumber")
            if type(sev) is not int or not 1 <= sev <= 24:
                text = rec.get("severityText")
                sev = _TEXT_SEVERITY.get(text.upper(), 0) if type(text) is str else 0
            body = rec.get("body")
            text = any_to_str(body, f"{path}.body") if body is not None else ""
            attrs = attributes(rec.get("attributes"), f"{path}.attributes", dict(res_attrs))
            out.append(LogRecord(service, ns / 1e9, sev, ctx.redactor.prefix(text, MAX_BODY), ctx.labels(attrs)))
