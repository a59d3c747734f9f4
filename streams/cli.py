"""The ``aiops`` command line."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DESCRIPTION = """\
Streaming AIOps on Kafka: telemetry in, incidents with ranked root causes, guarded actions
and tickets out.

Try it:
  aiops demo                         the whole pipeline on an embedded broker (what `make run` does)
  aiops simulate --out sim/          write telemetry with injected faults and their ground truth
  aiops replay --input sim/telemetry.jsonl --output incidents.jsonl
                                     the same pipeline over a file, no broker, deterministic
  aiops worker                       the Faust worker on KAFKA_BOOTSTRAP_SERVERS (default localhost:9092)
  aiops validate                     check topology.yaml and report every problem
"""


def _bootstrap_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or localhost:9092)")


def _group_help(parser: argparse.ArgumentParser):
    """The action of a command group given no subcommand: its help, exit status 2."""
    def show(_args) -> int:
        parser.print_help()
        return 2
    return show


def _topology_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topology", "-t", type=Path, default=Path(os.environ.get("AIOPS_TOPOLOGY", "topology.yaml")),
                   help="the operator's topology file (default: $AIOPS_TOPOLOGY or ./topology.yaml)")


def _load(path: Path):
    from streams.config import ConfigError, load_topology

    try:
        return load_topology(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate(args) -> int:
    from streams.config import topology_warnings

    topo = _load(args.topology)
    for path, msg in topology_warnings(topo):
        print(f"{args.topology}: {path}: {msg}", file=sys.stderr)
    n_edges = sum(len(s.depends_on) for s in topo.services.values())
    print(f"{args.topology}: ok ({len(topo.services)} services, {n_edges} dependencies, "
          f"{len(topo.detectors.rules)} detector rules, {len(topo.remediation.policies)} policies)")
    return 0


def cmd_replay(args) -> int:
    from streams.replay import replay

    topo = _load(args.topology)
    if not args.input.exists():
        print(f"aiops replay: input file {args.input} does not exist", file=sys.stderr)
        return 2
    if args.logs is not None and not args.logs.exists():
        print(f"aiops replay: logs file {args.logs} does not exist", file=sys.stderr)
        return 2
    if args.changes is not None and not args.changes.exists():
        print(f"aiops replay: changes file {args.changes} does not exist", file=sys.stderr)
        return 2
    if args.external is not None and not args.external.exists():
        print(f"aiops replay: external alerts file {args.external} does not exist", file=sys.stderr)
        return 2
    if args.traces is not None and not args.traces.exists():
        print(f"aiops replay: traces file {args.traces} does not exist", file=sys.stderr)
        return 2
    try:
        replay(topo, args.input, args.output, actions=args.actions, tickets=args.tickets,
               deadletter=args.deadletter, drain=args.drain, progress=None if args.quiet else sys.stderr,
               logs=args.logs, changes=args.changes, external=args.external, traces=args.traces,
               input_format=args.input_format)
    except ValueError as exc:  # a bad changes file, named with its line
        print(f"aiops replay: {exc}", file=sys.stderr)
        return 2
    if args.pictures is not None:
        from streams.knowledge_cli import write_pictures

        write_pictures(args.output, args.pictures, topo.graph(), quiet=args.quiet)
    return 0


def cmd_simulate(args) -> int:
    from streams import simulate as sim

    topo = _load(args.topology)
    scenarios = sim.load_scenarios(args.scenario or None)
    result = sim.simulate(topo, scenarios, seed=args.seed)
    sim.write(result, args.out)
    print(f"wrote {len(result.requests)} OTLP/JSON requests and {len(result.truth)} injected faults to {args.out}/",
          file=sys.stderr)
    return 0


def _bootstrap(args) -> str:
    return args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")


def _operator(args) -> str:
    import getpass

    return args.by or os.environ.get("AIOPS_OPERATOR") or getpass.getuser()


def _send_control(args, topo, key: str, payload: bytes) -> None:
    """One message to the control topic, acknowledged by the broker before we say it was sent."""
    from kafka import KafkaProducer

    from streams import kafka_security

    producer = KafkaProducer(bootstrap_servers=_bootstrap(args), acks="all",
                             **kafka_security.current().kafka_python_kwargs())
    try:
        producer.send(topo.topics.control, payload, key=key.encode()).get(timeout=30)
    finally:
        producer.close(5)


def cmd_worker(args) -> int:
    from streams.app import run_worker
    from streams.codec import config_sha256
    from streams.config import ConfigError

    topo = _load(args.topology)
    try:
        return run_worker(topo, bootstrap=_bootstrap(args), web_port=args.web_port, data_dir=args.data_dir,
                          verbose=args.verbose, instance_id=args.instance_id or None, web_bind=args.web_bind or None,
                          config_sha=config_sha256(args.topology.read_text()))
    except ConfigError as exc:  # what only starting finds (runbooks that do not load), against the file
        print(ConfigError(str(args.topology), exc.problems), file=sys.stderr)
        return 2


def _check_config(path: Path):
    """``(text, topology)`` of the file, or ``(None, ConfigError)`` when it does not validate."""
    from streams.config import ConfigError, parse_topology_text, read_capped

    try:
        data = read_capped(path)
    except OSError as exc:
        return None, ConfigError(str(path), [("", f"cannot read the file: {exc.strerror}")])
    try:
        topo = parse_topology_text(data, str(path))
    except ConfigError as exc:
        return None, exc
    return data.decode("utf-8-sig"), topo  # valid, so UTF-8


def watch_config(path: Path, push, *, interval: float, sleep, err=sys.stderr, rounds: int | None = None) -> None:
    """Push ``path`` now and each time it changes (mtime, size, then content hash): every valid
    version once, an invalid one never (its problems go to ``err``, and watching goes on).
    ``push(text)`` sends one version. ``rounds`` bounds the polls (tests); None: until interrupted."""
    from streams.codec import config_sha256

    seen: tuple | None = None
    last_sha = None
    n = 0
    while rounds is None or n < rounds:
        n += 1
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != seen:
            seen = stamp
            text, result = _check_config(path)
            if text is None:
                print(f"refused, not pushed:\n{result}", file=err)
            elif config_sha256(text) != last_sha:
                push(text)
                last_sha = config_sha256(text)
        sleep(interval)


def cmd_config_push(args) -> int:
    import time

    from kafka import KafkaProducer

    from streams import codec, kafka_security
    from streams.codec import config_sha256

    text, result = _check_config(args.file)
    if text is None:
        print(result, file=sys.stderr)
        return 2
    by = _operator(args)
    topic = result.topics.config  # topics change only with a restart: the pushed file names the running one
    producer = KafkaProducer(bootstrap_servers=_bootstrap(args), acks="all",
                             **kafka_security.current().kafka_python_kwargs())

    def push(text: str) -> None:
        producer.send(topic, codec.encode_config(text, by, time.time()), key=codec.CONFIG_KEY.encode()).get(timeout=30)
        print(f"{args.file}: pushed to {topic} (sha256 {config_sha256(text)[:12]}, by {by}); every worker applies it "
              f"live, or refuses it and logs why (aiops_config_info, aiops_config_rejected_total)", flush=True)

    try:
        if not args.watch:
            push(text)
            return 0
        print(f"watching {args.file} every {args.interval:g}s; Ctrl-C stops", file=sys.stderr, flush=True)
        try:
            watch_config(args.file, push, interval=args.interval, sleep=time.sleep)
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        producer.close(5)


def cmd_approve(args) -> int:
    import time

    from streams import codec

    topo = _load(args.topology)
    by = _operator(args)
    _send_control(args, topo, args.action_id, codec.encode_approval(args.action_id, by, time.time()))
    print(f"approval of {args.action_id} by {by} sent to {topo.topics.control}; the result appears on "
          f"{topo.topics.actions} (decision approved, or expired if it came too late)")
    return 0


def cmd_silence(args) -> int:
    import time

    from detectors.config import parse_duration
    from detectors.records import rfc3339, stable_hash
    from streams import codec

    topo = _load(args.topology)
    by = _operator(args)
    now = time.time()
    if args.expire:
        _send_control(args, topo, args.expire, codec.encode_expire_silence(args.expire, by, now))
        print(f"silence {args.expire} ends now")
        return 0
    try:
        ends = now + parse_duration(args.duration).total_seconds()
    except ValueError as exc:
        print(f"aiops silence: --duration: {exc}", file=sys.stderr)
        return 2
    labels = {}
    for item in args.label or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"aiops silence: --label {item!r}: expected KEY=GLOB", file=sys.stderr)
            return 2
        labels[key] = value
    silence_id = args.id or "sil-" + stable_hash(by, args.service, args.metric, str(sorted(labels.items())), str(now),
                                                 length=10)
    _send_control(args, topo, silence_id, codec.encode_silence(
        silence_id, by, now, starts_at=now, ends_at=ends, service=args.service, metric=args.metric, labels=labels,
        comment=args.comment))
    print(f"silence {silence_id} by {by} until {rfc3339(ends)}: service={args.service} metric={args.metric} "
          f"labels={labels}; matching alerts are recorded but open no incident")
    return 0


def cmd_executor(args) -> int:
    from streams.executors import run_executor

    topo = _load(args.topology)
    return run_executor(topo, bootstrap=_bootstrap(args), ledger_path=args.ledger, verbose=args.verbose,
                        metrics_port=args.metrics_port)


def cmd_tickets_deliver(args) -> int:
    from streams.delivery import run_ticket_delivery

    topo = _load(args.topology)
    return run_ticket_delivery(topo, _bootstrap(args), metrics_port=args.metrics_port)


def cmd_broker(args) -> int:
    from streams.broker import run_broker_forever

    run_broker_forever(args.port)
    return 0


def cmd_demo(args) -> int:
    from streams.demo import run_demo

    topo = _load(args.topology)
    return run_demo(topo, args.topology, speed=args.speed, bootstrap=args.bootstrap, web_port=args.web_port)


def cmd_nab(args) -> int:
    from streams.nab import run_nab

    summary = run_nab(args.data, args.out, _load(args.topology).detectors)
    print(summary, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiops", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("validate", help="validate topology.yaml and report every problem")
    _topology_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("replay", help="run the pipeline over a telemetry file, no broker",
                       description="Read one message per line (OTLP/JSON ExportMetricsServiceRequest, a Prometheus "
                                   "adapter sample or a native batch), run every stage on event time, and write each "
                                   "incident record as it is emitted. Deterministic: the same input gives "
                                   "byte-identical output.")
    _topology_arg(p)
    p.add_argument("--input", "-i", type=Path, required=True, help="telemetry, one JSON message per line")
    p.add_argument("--input-format", choices=("json", "otlp_proto"), default="json",
                   help="how --input, --logs and --traces hold their messages: json (default), one message per "
                        "line; otlp_proto, OTLP protobuf export requests in length-prefixed frames (a 4-byte "
                        "big-endian length, then the message), byte for byte as they were on the topic")
    p.add_argument("--changes", type=Path,
                   help="change events (deploys, config changes, scalings), one JSON record per line "
                        "(streams/schemas/change.schema.json): candidate causes")
    p.add_argument("--logs", type=Path,
                   help="OTLP/JSON logs, one export request per line, merged with --input by event time")
    p.add_argument("--traces", type=Path,
                   help="OTLP/JSON spans (ExportTraceServiceRequest), one export request per line, merged with "
                        "--input by event time: request, error and duration series, and the learned call graph")
    p.add_argument("--external", type=Path,
                   help='webhook payloads of other alerting tools, one JSON line each: {"source": "alertmanager" '
                        '| "datadog" | "newrelic", "payload": {...}}, merged with --input by event time')
    p.add_argument("--output", "-o", type=Path, required=True, help="incident records, one per line")
    p.add_argument("--actions", type=Path, help="also write action records here")
    p.add_argument("--tickets", type=Path, help="also write ticket events here")
    p.add_argument("--deadletter", type=Path, help="also write dead-letter records here")
    p.add_argument("--drain", action="store_true",
                   help="at the end of input, advance event time until pending incidents are sent and quiet ones resolve")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    p.add_argument("--pictures", type=Path, metavar="DIR",
                   help="also draw each incident's last version to DIR/ID.svg (root cause, path, affected services)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("simulate", help="write telemetry with injected faults and the ground truth",
                       description="Write DIR/telemetry.jsonl (OTLP/JSON, one export request per line, as the "
                                   "OpenTelemetry Collector's kafka exporter writes it) and DIR/truth.json.")
    _topology_arg(p)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--scenario", action="append",
                   help="scenario to inject (repeatable; default: all shipped scenarios)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("worker", help="run the Faust worker on Kafka",
                       description="Run one worker of the consumer group. Start as many as the input topics have "
                                   "partitions (topics.partitions); they share the partitions, and each keeps the "
                                   "state of the partitions it holds, rebuilt from the partition when it gets one.")
    _topology_arg(p)
    _bootstrap_arg(p)
    p.add_argument("--web-port", type=int, default=int(os.environ.get("AIOPS_WEB_PORT", "6066")),
                   help="port for /metrics and health (default 6066)")
    p.add_argument("--web-bind", default=os.environ.get("AIOPS_WEB_BIND", ""),
                   help="address the HTTP endpoints listen on (default: $AIOPS_WEB_BIND, else the topology's "
                        "worker.web_bind, 127.0.0.1: this host only; 0.0.0.0 for every interface, as a "
                        "container needs)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("AIOPS_DATA_DIR", ".aiops-data")),
                   help="worker state directory")
    p.add_argument("--instance-id", default=os.environ.get("AIOPS_INSTANCE_ID", ""),
                   help="static group membership (Apache Kafka >= 2.3; not supported by the embedded tansu): a "
                        "stable id per worker (a StatefulSet pod name, say), so a restart within "
                        "worker.session_timeout keeps its partitions without a group rebalance "
                        "(default: $AIOPS_INSTANCE_ID, else dynamic membership)")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("config", help="live config: push topology.yaml to every running worker")
    csub = p.add_subparsers(dest="config_command", metavar="COMMAND")
    c = csub.add_parser("push", help="validate a topology file and push it to the config topic",
                        description="Validate FILE with the checks of `aiops validate` (an invalid file is refused "
                                    "here, exit 2, nothing sent), then send it to the compacted config topic "
                                    "(topics.config, default aiops.config), acknowledged by the broker. Every worker "
                                    "applies it without a restart, or refuses it whole and keeps its running config "
                                    "(a change to topics or worker needs a restart). See README, \"Live config\".")
    c.add_argument("file", type=Path, help="the topology file to push")
    c.add_argument("--watch", action="store_true",
                   help="keep watching FILE and push each valid change (invalid ones are reported, not pushed)")
    c.add_argument("--interval", type=float, default=2.0, help="--watch: seconds between checks (default 2)")
    c.add_argument("--by", help="who pushes (default: $AIOPS_OPERATOR or the login name)")
    _bootstrap_arg(c)
    c.set_defaults(func=cmd_config_push)
    p.set_defaults(func=_group_help(p))

    p = sub.add_parser("approve", help="approve a risky action that awaits approval",
                       description="Send an approval for ACTION_ID (the `id` of an aiops.actions record with decision "
                                   "awaiting_approval) to the control topic. The worker releases the step to the "
                                   "executor if the approval arrives before it expires (remediation.guards.approval_ttl); "
                                   "who approved is recorded on the action.")
    _topology_arg(p)
    p.add_argument("action_id", help="the action's id, e.g. act-1f2e3d4c5b6a7988")
    p.add_argument("--by", help="who approves (default: $AIOPS_OPERATOR or the login name)")
    _bootstrap_arg(p)
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("silence", help="start (or end) a maintenance window: matching alerts page no one",
                       description="Send a silence to the control topic. Alerts whose service, metric and labels "
                                   "match the globs open and join no incident until it ends; they stay on "
                                   "aiops.alerts and are counted. Open incidents still update and resolve. "
                                   "Windows known in advance go in topology.yaml under correlation.silences.")
    _topology_arg(p)
    p.add_argument("--service", default="*", help="service glob (default *)")
    p.add_argument("--metric", default="*", help="metric glob (default *)")
    p.add_argument("--label", action="append", metavar="KEY=GLOB", help="label matcher, repeatable")
    p.add_argument("--duration", default="2h", help="how long, e.g. 30m, 2h (default 2h)")
    p.add_argument("--comment", default="", help="why (kept with the silence)")
    p.add_argument("--by", help="who (default: $AIOPS_OPERATOR or the login name)")
    p.add_argument("--id", help="the silence id (default: derived); reuse one to replace a silence")
    p.add_argument("--expire", metavar="ID", help="end silence ID now instead of starting one")
    _bootstrap_arg(p)
    p.set_defaults(func=cmd_silence)

    p = sub.add_parser("executor", help="run planned actions from aiops.actions, at most once each",
                       description="Consume aiops.actions and run each step the dispatcher planned or an operator "
                                   "approved, within remediation.executors' allowlists. A ledger makes every action "
                                   "id run at most once, across redeliveries and restarts; results go back to "
                                   "aiops.actions under the same id. See docs/actions.md.")
    _topology_arg(p)
    _bootstrap_arg(p)
    p.add_argument("--ledger", type=Path, help="the execution ledger (default: remediation.executors.ledger_path)")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)")
    p.set_defaults(func=cmd_executor)

    p = sub.add_parser("tickets", help="ticket delivery to ClickUp, Jira, PagerDuty or a webhook")
    tsub = p.add_subparsers(dest="tickets_command", metavar="COMMAND")
    d = tsub.add_parser("deliver", help="deliver aiops.tickets to the configured trackers, exactly one ticket per incident",
                        description="Consume aiops.tickets and create, update, escalate and resolve one ticket per "
                                    "incident in the sink tickets.sink (or the team's) names, with tickets.delivery's "
                                    "settings. Tokens come from the environment (env:VAR in topology.yaml). 429s "
                                    "and 5xx are retried with backoff; what still fails goes to aiops.deadletter. "
                                    "A ledger (a compacted topic) and search-before-create keep it to one ticket "
                                    "across restarts. See docs/tickets.md.")
    _topology_arg(d)
    _bootstrap_arg(d)
    d.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)")
    d.set_defaults(func=cmd_tickets_deliver)
    p.set_defaults(func=_group_help(p))

    from streams.knowledge_cli import add_subcommands as add_knowledge_subcommands

    add_knowledge_subcommands(sub)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (tansu) for local use")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("demo", help="broker + worker + scenarios, incidents printed as they open and resolve")
    _topology_arg(p)
    p.add_argument("--speed", type=float, default=60.0,
                   help="event seconds per wall second when feeding the scenarios (default 60)")
    p.add_argument("--bootstrap", help="use this broker instead of starting the embedded one")
    p.add_argument("--web-port", type=int, default=6066)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("nab", help="score a NAB-style corpus with what production pages on",
                       description="Run every CSV (timestamp,value) under --data through the production detector "
                                   "path with the detectors section of --topology, and write "
                                   "timestamp,value,anomaly_score,onset_score at the same relative path under --out: "
                                   "anomaly_score is 1 where an alert fires (what pages), else 0; onset_score is the "
                                   "model's continuous onset score. Score it with NAB at threshold 0.5 (make nab).")
    _topology_arg(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_nab)

    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except BrokenPipeError:  # `aiops ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
