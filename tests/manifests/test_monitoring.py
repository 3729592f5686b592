"""The monitoring component (manifests/components/monitoring): alert rules checked and unit
tested by promtool (Debian's `prometheus` package; .ci/run installs it), Grafana
dashboards whose every query parses, and every metric an alert or a panel reads exported
by our code (functions/, kserve/jan_predictor/) or by CloudNativePG (its exporter's
collector and default queries, copied into schemas/cnpg/ from the source named there)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.manifests.support import MANIFESTS, REPO, SCHEMAS, Obj, one, render_with, tool

COMPONENT = MANIFESTS / "components" / "monitoring"
DASHBOARDS = ("gateway", "router", "predictor", "database", "limits")
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
# cnpg_collector_* of CloudNativePG's exporter: the Name of each metric in
# pkg/management/postgres/webserver/metricserver/pg_collector.go, at commit
# a95a534dbe0854495b863bbc1b7651f74d310916 (namespace cnpg, subsystem collector).
CNPG_COLLECTOR = """
    collections_total collection_errors_total last_collection_error up
    collection_duration_seconds manual_switchover_required sync_replicas replica_mode
    pg_wal_archive_status postgres_version pg_wal first_recoverability_point
    last_available_backup_timestamp last_failed_backup_timestamp fencing_on nodes_used
    wal_records wal_fpi wal_bytes wal_buffers_full wal_write wal_sync wal_write_time
    wal_sync_time
"""
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
)
# How prometheus_client exposes each kind (its _created series left aside).
_DECLARED = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|GaugeMetricFamily|CounterMetricFamily)\(\s*\"([a-z_:]+)\"",
)


def rendered() -> tuple[Obj, ...]:
    return render_with("prod", "monitoring")


@functools.cache
def exported_metrics() -> frozenset[str]:
    """Every series name our processes export, from their prometheus_client declarations."""
    names: set[str] = set()
    sources = [
        *(REPO / "functions").rglob("*.py"),
        *(REPO / "kserve" / "jan_predictor").rglob("*.py"),
    ]
    for source in sources:
        for kind, name in _DECLARED.findall(source.read_text()):
            if kind in ("Counter", "CounterMetricFamily"):
                names.add(name.removesuffix("_total") + "_total")
            elif kind in ("Histogram", "Summary"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return frozenset(names)


@functools.cache
def cnpg_metrics() -> frozenset[str]:
    """CloudNativePG's: its collector's, and cnpg_<query>_<column> of each default query."""
    config = yaml.safe_load((SCHEMAS / "cnpg" / "default-monitoring.yaml").read_text())
    queries = yaml.safe_load(config["data"]["queries"])
    names = {f"cnpg_collector_{n}" for n in CNPG_COLLECTOR.split()}
    for query, spec in queries.items():
        for column in spec["metrics"]:
            ((name, how),) = column.items()
            if how["usage"] in ("GAUGE", "COUNTER"):
                names.add(f"cnpg_{query}_{name}")
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not functions, keywords or labels)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {
        name
        for name in re.findall(r"(?<![\w:$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
        if name not in PROMQL_WORDS
    }


def rule_groups() -> dict[str, Any]:
    rule = one(list(rendered()), "PrometheusRule", "jan-alerts")
    return {"groups": rule["spec"]["groups"]}


def alerts() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in rule_groups()["groups"] for r in g["rules"]}


def dashboards() -> dict[str, dict[str, Any]]:
    data = one(list(rendered()), "ConfigMap", "jan-grafana-dashboards")["data"]
    return {name.removesuffix(".json"): json.loads(text) for name, text in data.items()}


def panel_queries() -> dict[str, str]:
    """(dashboard / panel / refId) -> expression, Grafana's variables given values."""
    found: dict[str, str] = {}
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "5m")
                expr = re.sub(r"\$\w+", ".*", expr)  # a multi-value variable: a regex
                found[f"{name} / {panel['title']} / {target['refId']}"] = expr
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_component_renders_rules_and_dashboards() -> None:
    objs = list(rendered())
    rule = one(objs, "PrometheusRule", "jan-alerts")
    assert rule["metadata"]["namespace"] == "jan"
    board = one(objs, "ConfigMap", "jan-grafana-dashboards")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(dashboards()) == sorted(DASHBOARDS)


def test_the_components_objects_match_their_schemas() -> None:
    from tests.manifests.test_schemas import crd_schema_problems, typed_model_problems

    objs = list(rendered())
    rule = one(objs, "PrometheusRule", "jan-alerts")
    assert crd_schema_problems(rule) == []
    broken = json.loads(json.dumps(rule))
    broken["spec"]["groups"][0]["rules"][0]["fr"] = "10m"
    assert crd_schema_problems(broken)
    assert typed_model_problems(one(objs, "ConfigMap", "jan-grafana-dashboards")) == []


def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups()))
    checked = promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


def test_alert_rules_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups()))
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    cases["rule_files"] = [str(rules)]
    tested = {t["alertname"] for case in cases["tests"] for t in case["alert_rule_test"]}
    assert tested == set(alerts()), "every alert has a unit test (and only those)"
    firing = {
        t["alertname"]
        for case in cases["tests"]
        for t in case["alert_rule_test"]
        if t.get("exp_alerts")
    }
    assert firing == set(alerts()), "each alert is shown to fire, not only to stay quiet"
    unit = tmp_path / "alerts_test.yaml"
    unit.write_text(yaml.safe_dump(cases, sort_keys=False))
    result = promtool("test", "rules", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Each panel's expression as a recording rule: `promtool check rules` parses it."""
    queries = panel_queries()
    assert len(queries) >= 30
    rules = [{"record": f"jan:panel_{n}", "expr": expr} for n, expr in enumerate(queries.values())]
    file = tmp_path / "panels.yaml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    checked = promtool("check", "rules", str(file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboards_are_grafana_dashboards() -> None:
    uids = set()
    for name, board in dashboards().items():
        assert board["title"].startswith("Jan Server / ") and board["uid"] == f"jan-{name}"
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and board["panels"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
    assert len(uids) == len(DASHBOARDS)


def test_every_metric_queried_is_exported() -> None:
    known = exported_metrics() | cnpg_metrics()
    assert {"jan_http_requests_total", "jan_upstream_endpoint_healthy"} <= exported_metrics()
    assert "jan_predictor_requests_total" in exported_metrics()  # Counter("jan_predictor_requests")
    assert "jan_db_pool_connections" in exported_metrics()
    assert {"cnpg_backends_total", "cnpg_pg_replication_lag"} <= cnpg_metrics()
    read = {f"alert {name}": metric_names(expr) for name, expr in alerts().items()}
    read |= {f"panel {where}": metric_names(expr) for where, expr in panel_queries().items()}
    assert all(read.values()), [k for k, v in read.items() if not v]
    unknown = {where: sorted(names - known) for where, names in read.items() if names - known}
    assert not unknown


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (le, route) (rate(jan_x_bucket{route!~"/v1/(a|b)"}[5m])) / on (pod) '
        'group_left max(cnpg_y{name="max_connections"}) > 0.5 and time() - z_seconds offset 5m'
    )
    assert metric_names(expr) == {"jan_x_bucket", "cnpg_y", "z_seconds"}
