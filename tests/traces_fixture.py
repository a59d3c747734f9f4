"""Synthetic traces for the tests: OTLP/JSON ``ExportTraceServiceRequest`` objects, as the
Collector's kafka exporter writes them, for a call tree walked from an entry point, with an
optional fault (slow and failing) on one service.

Deterministic for a seed. Each trace calls every callee of a service once, one after the other;
a service's server span lasts its own work plus its calls. With ``kinds`` the spans carry kind
and status (a CLIENT span in the caller, a SERVER span in the callee); without, as in Nezha's
data, there is one span per service visit, no kind, no status, and errors do not show.
"""
from __future__ import annotations

import random

SERVER, CLIENT = 2, 3


def _ns(t: float) -> str:
    return str(int(round(t * 1e9)))


def make_traces(calls: dict[str, list[str]], entry: str, start: float, minutes: int, *, per_minute: int = 30,
                seed: int = 7, fault: tuple[str, float, float] | None = None, kinds: bool = True,
                batch_seconds: float = 10.0, operations: dict[str, str] | None = None) -> list[dict]:
    """Requests in time order, one per ``batch_seconds`` of span end times.

    ``fault``: ``(service, from, to)``: in that window the service's own work is twenty times
    slower and half of its requests fail (status ERROR, and the caller's CLIENT span too)."""
    rng = random.Random(seed)
    spans: list[tuple[str, dict]] = []  # (service, span)

    def visit(service: str, trace_id: str, parent: str | None, t: float) -> tuple[float, bool]:
        """Spans of one visit of ``service`` starting at ``t``; returns (end, failed)."""
        sid = f"{rng.getrandbits(64):016x}"
        broken = fault is not None and service == fault[0] and fault[1] <= t < fault[2]
        work = 0.004 + rng.random() * 0.002
        if broken:
            work *= 20
        now = t + work / 2
        for callee in calls.get(service, []):
            csid = f"{rng.getrandbits(64):016x}"
            end, failed = visit(callee, trace_id, csid if kinds else sid, now + 0.0005)
            if kinds:
                client = {"traceId": trace_id, "spanId": csid, "parentSpanId": sid, "name": f"call {callee}",
                          "kind": CLIENT, "startTimeUnixNano": _ns(now), "endTimeUnixNano": _ns(end + 0.0005)}
                if failed:
                    client["status"] = {"code": 2}
                spans.append((service, client))
            now = end + 0.0005
        failed = broken and rng.random() < 0.5
        end = now + work / 2
        span = {"traceId": trace_id, "spanId": sid, "name": (operations or {}).get(service, f"GET /{service}"),
                "startTimeUnixNano": _ns(t), "endTimeUnixNano": _ns(end)}
        if parent:
            span["parentSpanId"] = parent
        if kinds:
            span["kind"] = SERVER
            if failed:
                span["status"] = {"code": 2, "message": "internal error"}
        spans.append((service, span))
        return end, failed

    for m in range(minutes):
        for k in range(per_minute):
            t = start + m * 60 + (k + rng.random() * 0.5) * 60.0 / per_minute
            visit(entry, f"{rng.getrandbits(128):032x}", None, t)

    batches: dict[int, dict[str, list[dict]]] = {}
    for service, span in spans:
        b = int(int(span["endTimeUnixNano"]) // int(batch_seconds * 1e9))
        batches.setdefault(b, {}).setdefault(service, []).append(span)
    return [{"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
         "scopeSpans": [{"scope": {"name": "tests.traces_fixture"},
                         "spans": sorted(batch[svc], key=lambda s: int(s["endTimeUnixNano"]))}]}
        for svc in sorted(batch)]} for _, batch in sorted(batches.items())]
