"""remediators.runbooks: front matter, the shipped runbooks, BM25 ranking; runbooks/compress-old-logs.sh."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from correlators.records import Evidence, Incident, RootCause
from remediators.runbooks import (
    CAUSES,
    RunbookError,
    RunbookIndex,
    load_runbooks,
    parse_runbook,
    runbook_refs,
    tokenize,
)

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "runbooks"
SCRIPT = RUNBOOKS / "compress-old-logs.sh"
SECTIONS = ("## Symptoms", "## Checks", "## Remediation", "## Verification", "## Escalation")


@pytest.fixture(scope="module")
def index() -> RunbookIndex:
    return load_runbooks(RUNBOOKS)


def incident(service, kind, evidence, title="", path=None, labels=()):
    ev = tuple(Evidence(series=f"{service}/{m}", metric=m, score=0.99, value=v, expected=e, at=0.0,
                        detail=d, labels=labels) for m, v, e, d in evidence)
    rc = RootCause(service=service, score=0.6, kind=kind, path=path or (service,), evidence=ev)
    return Incident(id="inc-1", version=1, status="open", reason="opened", opened_at=0.0, updated_at=30.0,
                    resolved_at=None, title=title or f"{service} {kind}", priority="P1", severity="critical",
                    services=(service,), alert_count=1, firing_count=1, fingerprints=(), root_causes=(rc,))


POOL = incident("orders-db", "saturation", [
    ("db.client.connections.utilization", 0.98, 0.3, "orders-db db.client.connections.utilization 0.98 (expected 0.3)"),
    ("process.cpu.utilization", 0.5, 0.2, ""),
    ("http.server.requests.rate", 120, 65, "")], path=("orders-db", "orders", "checkout", "frontend"))
DISK = incident("log-host", "saturation", [("system.filesystem.utilization", 0.93, 0.45, "")],
                labels=(("mountpoint", "/"),))
GATEWAY = incident("payment-gateway", "errors", [("http.server.errors.rate", 9.0, 0.09, "")],
                   labels=(("host.name", "gw-2"),))
LOG_TEMPLATE = incident("api", "errors", [
    ("log.errors.rate", 3.0, 0.01, "x509: certificate has expired or is not yet valid <*>")])


# --- front matter ---------------------------------------------------------------------------

def test_front_matter_is_parsed_with_defaults():
    rb = parse_runbook("---\ntitle: ' Disk full '\ntags: [Disk, logs]\nmetrics: system.filesystem.*\n---\n# Body\n",
                       "rb/disk-full.md")
    assert (rb.id, rb.path, rb.title) == ("disk-full", "rb/disk-full.md", "Disk full")
    assert rb.tags == ("disk", "logs")
    assert rb.metrics == ("system.filesystem.*",)  # a single string is a one-item list
    assert rb.services == ("*",) and rb.causes == ()
    assert rb.body == "# Body"


@pytest.mark.parametrize("text, problems", [
    ("# no front matter\n", ["no YAML front matter (the file must start with a '---' line)"]),
    ("---\ntitle: x\n", ["front matter is not closed (no second '---' line)"]),
    ("---\ntitle: [x\n---\n",
     ["front matter is not valid YAML at line 3: expected ',' or ']', but got '<stream end>'"]),
    ("---\n- a\n---\n", ["front matter must be a mapping (got list)"]),
    ("---\ntags: [a]\n---\n", ["title: required key is missing"]),
    ("---\ntitle: x\ntag: [a]\n---\n", ["unknown key 'tag' (did you mean 'tags'?)"]),
    ("---\ntitle: x\ntags: [\"502\", 503]\nservices: 7\n---\n",
     ["tags[1]: expected a string (got int 503; quote it)", "services: expected a list of strings (got int)"]),
    ("---\ntitle: x\ncauses: [saturaton, flood]\n---\n",
     ["causes[0]: unknown cause 'saturaton' (did you mean 'saturation'?)",
      "causes[1]: unknown cause 'flood' (expected one of " + ", ".join(CAUSES) + ")"]),
])
def test_front_matter_errors_name_the_file_and_every_problem(text, problems):
    with pytest.raises(RunbookError) as exc:
        parse_runbook(text, "runbooks/bad.md")
    assert exc.value.problems == [("runbooks/bad.md", p) for p in problems]
    assert str(exc.value).splitlines()[1:] == [f"  runbooks/bad.md: {p}" for p in problems]


def test_loading_reports_every_bad_file_and_never_half_loads(tmp_path):
    (tmp_path / "good.md").write_text("---\ntitle: Good\n---\nbody\n")
    (tmp_path / "a.md").write_text("no front matter\n")
    (tmp_path / "b.md").write_text("---\ntitle: B\ncauses: [nope]\n---\n")
    with pytest.raises(RunbookError) as exc:
        load_runbooks(tmp_path)
    assert str(exc.value) == (
        f"{tmp_path}: 2 problems\n"
        f"  {tmp_path}/a.md: no YAML front matter (the file must start with a '---' line)\n"
        f"  {tmp_path}/b.md: causes[0]: unknown cause 'nope' (expected one of {', '.join(CAUSES)})")


def test_missing_or_empty_directory_is_an_error(tmp_path):
    with pytest.raises(RunbookError, match="not a directory"):
        load_runbooks(tmp_path / "nope")
    with pytest.raises(RunbookError, match=r"no runbooks \(\*\.md\) found"):
        load_runbooks(tmp_path)


# --- the shipped runbooks -------------------------------------------------------------------

def test_shipped_runbooks_load_and_each_has_what_an_sre_needs(index):
    assert len(index) >= 10
    for rb in index.runbooks:
        for section in SECTIONS:
            assert f"\n{section}" in "\n" + rb.body, f"{rb.path}: missing {section}"
        assert "```sh" in rb.body, f"{rb.path}: no commands in Checks"
        assert rb.causes and rb.tags, rb.path


def test_every_exec_target_of_the_shipped_policies_exists_and_is_executable():
    from streams.config import load_topology

    topo = load_topology(REPO / "topology.yaml")
    targets = [s.target for p in topo.remediation.policies for s in p.steps if s.kind == "exec"]
    assert targets
    for t in targets:
        assert (REPO / t).is_file() and os.access(REPO / t, os.X_OK), t


# --- ranking --------------------------------------------------------------------------------

@pytest.mark.parametrize("query, first", [
    ("pod CrashLoopBackOff", "pod-crashloopbackoff"),
    ("no space left on device", "disk-usage-high"),
    ("connection pool exhausted", "db-connection-pool-exhausted"),
    ("x509 certificate expired", "certificate-expiry"),
    ("kafka consumer lag growing", "queue-backlog"),
    ("OOMKilled", "memory-leak-oom"),
    ("latency up after deploy", "latency-after-deploy"),
    ("502 bad gateway on one node", "gateway-node-bad"),
    ("vendor api timeouts", "upstream-api-failing"),
    ("cpu throttling", "high-cpu"),
])
def test_free_text_finds_the_right_runbook_first(index, query, first):
    assert index.search(query)[0].runbook.id == first


@pytest.mark.parametrize("inc, first", [
    (POOL, "db-connection-pool-exhausted"),
    (DISK, "disk-usage-high"),
    (GATEWAY, "gateway-node-bad"),
    (LOG_TEMPLATE, "certificate-expiry"),  # the log template in the evidence detail decides
])
def test_incident_search_finds_the_right_runbook_first(index, inc, first):
    hits = index.for_incident(inc)
    assert hits[0].runbook.id == first
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_front_matter_matches_are_explained(index):
    top = index.for_incident(POOL)[0]
    assert top.why == ("metric db.client.connections.utilization", "cause saturation", "service orders-db ~ *db*")


def test_the_wire_record_ranks_like_the_incident(index):
    from streams.codec import incident_dict

    assert index.for_incident(incident_dict(POOL)) == index.for_incident(POOL)


def test_no_root_cause_no_runbooks(index):
    assert index.for_incident(dataclasses.replace(POOL, root_causes=())) == []
    assert runbook_refs(index, {"root_causes": []}) == ()


def test_runbook_refs_are_paths_of_relevant_runbooks_only(index):
    refs = runbook_refs(index, POOL)
    assert refs[0] == str(RUNBOOKS / "db-connection-pool-exhausted.md")
    assert str(RUNBOOKS / "disk-usage-high.md") not in refs  # a shared cause alone is not relevant


def test_ranking_is_deterministic_and_ties_break_on_the_id():
    text = "---\ntitle: Disk full\ntags: [disk]\n---\nCompress logs.\n"
    a, b = parse_runbook(text, "x/b-disk.md"), parse_runbook(text, "x/a-disk.md")
    other = parse_runbook("---\ntitle: CPU\n---\nProfile.\n", "x/cpu.md")
    for order in ([a, b, other], [other, b, a]):
        hits = RunbookIndex.build(order).search("disk full")
        assert [h.runbook.id for h in hits] == ["a-disk", "b-disk"]
        assert hits[0].score == hits[1].score


def test_the_index_is_immutable(index):
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.runbooks = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.runbooks[0].title = "x"
    before = index.search("disk")
    index.for_incident(POOL)
    assert index.search("disk") == before


def test_duplicate_ids_are_rejected():
    rb = parse_runbook("---\ntitle: X\n---\n", "a/x.md")
    with pytest.raises(RunbookError, match="duplicate runbook id 'x'"):
        RunbookIndex.build([rb, dataclasses.replace(rb, path="b/x.md")])


def test_tokenize_splits_metric_names():
    assert tokenize("db.client.connections.utilization") == ["db", "client", "connection", "utilization"]


# --- runbooks/compress-old-logs.sh ----------------------------------------------------------

def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "TMPDIR": os.environ.get("TMPDIR", "/tmp")})


@pytest.fixture
def logs(tmp_path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    old = time.time() - 3 * 86400
    for name, content in [("app.log", "live\n"), ("app.log.1", "x" * 5000), ("syslog-20240101", "y" * 500)]:
        (d / name).write_text(content)
        os.utime(d / name, (old, old))
    (d / "older.log.2.gz").write_bytes(b"z" * 100)
    os.utime(d / "older.log.2.gz", (time.time() - 40 * 86400,) * 2)
    return d


@pytest.mark.skipif(shutil.which("gzip") is None, reason="needs gzip")
def test_script_is_a_dry_run_by_default(logs):
    before = sorted(p.name for p in logs.iterdir())
    r = _run(str(logs))
    assert r.returncode == 0, r.stderr
    assert f"would compress: {logs}/app.log.1" in r.stdout
    assert f"would delete: {logs}/older.log.2.gz" in r.stdout
    assert "app.log " not in r.stdout and not r.stdout.count(f"{logs}/app.log\n")
    assert sorted(p.name for p in logs.iterdir()) == before


@pytest.mark.skipif(shutil.which("gzip") is None, reason="needs gzip")
def test_script_compresses_rotated_logs_and_deletes_old_archives_with_execute(logs):
    r = _run("--execute", "--host", "log-host", str(logs))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["app.log", "app.log.1.gz", "syslog-20240101.gz"]


@pytest.mark.parametrize("args, message", [
    (["/tmp;rm -rf /"], "MOUNTPOINT must be an absolute path"),
    (["$(reboot)"], "MOUNTPOINT must be an absolute path"),
    (["/tmp/../etc"], "MOUNTPOINT must be an absolute path"),
    (["relative/dir"], "MOUNTPOINT must be an absolute path"),
    (["--min-age-days", "1;id", "/tmp"], "--min-age-days must be a whole number"),
    (["--host", "a b", "/tmp"], "--host must be a host name"),
    (["--frobnicate", "/tmp"], "unknown option '--frobnicate'"),
    (["/tmp", "/var"], "one MOUNTPOINT only"),
])
def test_script_rejects_bad_arguments_before_doing_anything(args, message):
    r = _run(*args)
    assert r.returncode == 2
    assert message in r.stderr
