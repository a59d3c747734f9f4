"""topology.yaml validation: every problem reported at once, with its path and what was expected."""
from pathlib import Path

import pytest

from detectors.robust import RobustParams
from streams.config import ConfigError, load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]


def test_a_file_with_only_services_gets_every_default():
    topo = parse_topology({"services": {"web": {"depends_on": ["db"]}, "db": {}}})
    assert topo.correlation.group_wait.total_seconds() == 30
    assert topo.remediation.dry_run is True
    assert topo.detectors.rule_for("web", "cpu", ()).model == "robust"
    assert list(topo.graph().edges) == [("web", "db")]


def test_every_problem_is_reported_with_its_path():
    with pytest.raises(ConfigError) as exc:
        parse_topology({
            "services": {"checkout": {"depends_on": ["payment", "checkout"], "tier": 9}, "payments": {}},
            "correlation": {"group_wiat": "3s", "group_wait": "soon"},
            "detectors": {"threshold": 1.5},
        }, "shop.yaml")
    lines = str(exc.value).splitlines()
    assert lines[0] == "shop.yaml: 6 problems"
    assert sorted(lines[1:]) == sorted([
        "  services.checkout.depends_on[0]: unknown service 'payment' (did you mean 'payments'?)",
        "  services.checkout.depends_on[1]: a service cannot depend on itself",
        "  services.checkout.tier: Input should be less than or equal to 4 (got 9)",
        "  detectors.threshold: Input should be less than or equal to 1 (got 1.5)",
        "  correlation.group_wait: expected a duration such as '30s', '5m' or '1h' (got 'soon')",
        "  correlation.group_wiat: unknown key 'group_wiat'",
    ])


@pytest.mark.parametrize("doc, path, message", [
    ({"services": {"a": {"depends_on": ["b"]}}}, "services.a.depends_on[0]", "unknown service 'b'"),
    ({"services": {"a": {"owner": 3}}}, "services.a.owner", "Input should be a valid string (got 3)"),
    ({"services": {"a": {}}, "correlation": {"max_hops": -1}}, "correlation.max_hops",
     "Input should be greater than or equal to 0 (got -1)"),
    ({"services": {"a": {}}, "correlation": {"window": "5 minutes"}}, "correlation.window",
     "expected a duration such as '30s', '5m' or '1h' (got '5 minutes')"),
    ({"services": {"a": {}}, "tickets": {"teams": {"t": {"assignee": "x", "api_token": "abc123"}}}},
     "tickets.teams.t.api_token",
     "secrets must not be written in topology.yaml; use 'env:VARIABLE_NAME' and set the variable in the environment"),
    ({"services": {"a": {}}, "remediation": {"policies": [
        {"name": "p", "steps": [{"kind": "exec", "target": "x"}]},
        {"name": "p", "steps": [{"kind": "exec", "target": "y"}]}]}},
     "remediation.policies[1].name", "duplicate policy name 'p'"),
    ({"services": {"a": {}}, "remediation": {"policies": [{"name": "p", "steps": [{"kind": "ssh", "target": "x"}]}]}},
     "remediation.policies[0].steps[0].kind", "Input should be 'exec', 'http', 'kubernetes' or 'kafka' (got 'ssh')"),
    ({}, "services", "required key is missing"),
    # a model's params are checked at load, not when its first series arrives inside an agent
    ({"services": {"a": {}}, "detectors": {"params": {"alpah": 0.1}}}, "detectors.params",
     "robust: unknown param 'alpah' (did you mean 'alpha'?); known: " + str(sorted(RobustParams.__dataclass_fields__))),
    ({"services": {"a": {}}, "detectors": {"rules": [{"params": {"shift_points": "many"}}]}},
     "detectors.rules[0].params", "robust: param 'shift_points' expects a number, got 'many'"),
    ({"services": {"a": {}}, "detectors": {"params": {"time_zone": "America/New_Yrok"}}}, "detectors.params",
     "robust: time_zone 'America/New_Yrok' is not a time zone name (IANA, such as 'UTC' or 'America/New_York')"),
    ({"services": {"a": {}}, "detectors": {"rules": [{"model": "snarimax", "params": {"period": 24}}]}},
     "detectors.rules[0].params", "snarimax: unknown param 'period'; known: ['d', 'm', 'p', 'q', 'sd', 'sp', 'sq']"),
])
def test_each_problem_names_its_path_and_expectation(doc, path, message):
    with pytest.raises(ConfigError) as exc:
        parse_topology(doc)
    assert (path, message) in exc.value.problems


def test_errors_are_not_cut_short_by_the_first(tmp_path):
    doc = {"services": {"a": {"depends_on": ["nope"], "tier": 0}}, "correlation": {"bogus": 1}}
    with pytest.raises(ConfigError) as exc:
        parse_topology(doc)
    assert len(exc.value.problems) == 3


def test_unreadable_and_malformed_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=r"missing.yaml: 1 problem\n  cannot read the file"):
        load_topology(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: 1 problem\n  line \d+, column \d+: invalid YAML"):
        load_topology(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_topology(top)


def test_the_shipped_topology_is_valid():
    topo = load_topology(REPO / "topology.yaml")
    assert topo.services


def documented_model_options(text: str) -> dict[str, dict[str, object]]:
    """The ``detectors.params`` option list commented in topology.yaml, as {model: {option: default}}."""
    import re

    import yaml

    models: dict[str, dict[str, object]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^  # (robust|halfspacetrees|snarimax|holtwinters) \(", line)
        if head:
            current = models.setdefault(head.group(1), {})
            continue
        if current is None:
            continue
        if not line.startswith("  #   "):
            if not line.startswith("  # "):
                current = None
            continue
        body = line[6:]
        if ": " not in body.split()[0] + " ":
            continue  # a sub-heading inside a model's list
        for item in re.split(r",\s+(?=\w+: )", body):
            key, _, rest = item.partition(": ")
            current[key.strip()] = yaml.safe_load(rest.split()[0])
    return models


def test_topology_yaml_documents_every_model_option_with_its_default():
    from dataclasses import fields

    from detectors.river_models import HOLTWINTERS_DEFAULTS, HST_DEFAULTS, SNARIMAX_DEFAULTS
    from detectors.robust import RobustParams

    doc = documented_model_options((Path(__file__).parents[2] / "topology.yaml").read_text())
    assert doc["robust"] == {f.name: f.default for f in fields(RobustParams)}
    assert doc["halfspacetrees"] == HST_DEFAULTS
    assert doc["snarimax"] == SNARIMAX_DEFAULTS
    assert doc["holtwinters"] == HOLTWINTERS_DEFAULTS
