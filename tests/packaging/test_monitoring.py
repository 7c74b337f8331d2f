"""monitoring/: Prometheus's configuration and alerts, checked by the real promtool, and Grafana's dashboard.

promtool is Debian's (the `prometheus` package, the same version the Prometheus image is built
from; `make promtool` provides it). Its `check config`, `check rules` and `test rules` run here on
the files as committed, and every alert must have unit tests (alerts_test.yml) in which it both
fires and stays silent. No Grafana runs here (there is none to install from a package registry:
docs/operations.md, "Prometheus and Grafana"), so the dashboard is checked for what Grafana would
need of it: each panel's PromQL parses (promtool, on a rules file made of the panel queries), names
only metrics the services register, and reads the data source the provisioning creates.
tests/compose/test_monitoring.py runs the same queries against a running Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

import job_svc.metrics
import jobqueue.runtime.metrics
import jobqueue.worker.metrics
from tests.packaging.test_compose import APP_SERVICES, environment

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_DOCKERFILE = PROMETHEUS_DIR / "Dockerfile"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "jobqueue.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "jobqueue.yml"
MONITORING_COMPOSE = ROOT / "docker-compose.monitoring.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
_ = (jobqueue.runtime.metrics, job_svc.metrics, jobqueue.worker.metrics)  # imported for the metrics they register

#: Grafana's own variables in panel queries, and a value of the same kind PromQL accepts in their place.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
#: A metric name in PromQL (label names, functions and keywords are told apart below).
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: Prometheus's own series, which no service of ours registers.
PROMETHEUS_SERIES = {"up"}
#: The suffixes a counter's or a histogram's samples add to its family name.
SAMPLE_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    """Run the real promtool (a missing one is a failure: `make promtool` installs it)."""
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make promtool` installs it (Debian's prometheus package)"
    return subprocess.run([found, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> dict[str, dict[str, Any]]:
    """Alert name -> its rule, from every group of alerts.yml."""
    return {rule["alert"]: rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def as_promql(expr: str) -> str:
    """A panel query with Grafana's variables replaced by values of their kind, as Grafana sends it."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not label names, functions,
    keywords or inside a string."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels)
    names = set()
    for match in NAME.finditer(without_groupings):
        rest = without_groupings[match.end() :].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        if match.group() in {"and", "or", "unless", "offset", "bool", "le"}:
            continue
        names.add(match.group())
    return names


def registered(name: str) -> bool:
    families = {metric.name for metric in prometheus_client.REGISTRY.collect()}
    return name in families or any(name.removesuffix(suffix) in families for suffix in SAMPLE_SUFFIXES)


def test_promtool_checks_the_config() -> None:
    done = promtool("check", "config", CONFIG.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_alerts_unit_tests_pass() -> None:
    done = promtool("test", "rules", ALERT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_fails_a_broken_alert_test(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests, expecting the backlog alert where it cannot fire yet."""
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    text = ALERT_TESTS.read_text()
    broken = text.replace(
        "      - eval_time: 10m\n        alertname: JobQueueBacklogGrowing\n        exp_alerts: []",
        (
            "      - eval_time: 10m\n        alertname: JobQueueBacklogGrowing\n        exp_alerts:\n"
            "          - exp_labels: {severity: warning, queue: job_queue.type.fibonacci_calc}"
        ),
    )
    assert broken != text
    (tmp_path / ALERT_TESTS.name).write_text(broken)
    done = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "JobQueueBacklogGrowing" in done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert of alerts.yml has a unit test where it fires and one where it does not, and no test
    names an alert that does not exist."""
    fires: set[str] = set()
    silent: set[str] = set()
    for case in load(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(alert_rules())
    assert len(alerts) >= 3
    assert (fires | silent) <= alerts, sorted((fires | silent) - alerts)
    assert not alerts - fires, f"never shown firing: {sorted(alerts - fires)}"
    assert not alerts - silent, f"never shown silent: {sorted(alerts - silent)}"


def test_the_three_alerts_the_issue_asks_for_exist() -> None:
    """A backlog that grows, dead jobs appearing, a service down."""
    rules = alert_rules()
    assert "jobqueue_queue_messages_ready" in rules["JobQueueBacklogGrowing"]["expr"]
    assert 'jobqueue_jobs{status="FAILED"}' in rules["JobQueueDeadJobs"]["expr"]
    assert "up{" in rules["JobQueueServiceDown"]["expr"]
    assert "absent(up{" in rules["JobQueueServiceMissing"]["expr"]


def test_every_alert_says_where_its_runbook_is_and_the_page_explains_it() -> None:
    section = OPERATIONS.read_text().split("\n### Alerts\n", 1)
    assert len(section) == 2, "docs/operations.md has no '### Alerts' section"
    runbook = section[1].split("\n## ", 1)[0]
    for name, rule in alert_rules().items():
        assert rule["annotations"]["runbook"] == "docs/operations.md#alerts", name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert f"`{name}`" in runbook, f"docs/operations.md, Alerts, does not explain {name}"


def test_prometheus_scrapes_every_service_on_the_metrics_port_compose_gives_it() -> None:
    """One job per app service, found by its compose service name (every replica: DNS A records), on
    the METRICS_PORT docker-compose.yml sets on it."""
    jobs = {job["job_name"]: job for job in load(CONFIG)["scrape_configs"]}
    for service in APP_SERVICES:
        port = int(environment(service)["METRICS_PORT"])
        (discovery,) = jobs[service]["dns_sd_configs"]
        assert discovery["names"] == [service]
        assert discovery["type"] == "A"
        assert discovery["port"] == port
    assert load(CONFIG)["rule_files"] == [ALERTS.name]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_queried_is_one_the_services_register(source: str) -> None:
    """A renamed metric fails here, not on a dashboard that silently shows nothing."""
    exprs = (
        [rule["expr"] for rule in alert_rules().values()]
        if source == "alerts"
        else [expr for _, expr in dashboard_queries()]
    )
    names = {name for expr in exprs for name in metric_names(as_promql(expr))}
    assert names, "no metric found: the expressions were not read"
    unknown = sorted(name for name in names - PROMETHEUS_SERIES if not registered(name))
    assert not unknown, unknown


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each panel's query, as a recording rule of a file made for the purpose."""
    queries = dashboard_queries()
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(expr)} for i, (_, expr) in enumerate(queries)]
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


def test_a_query_that_does_not_parse_fails_the_check(tmp_path: Path) -> None:
    rules = [{"record": "dashboard:broken", "expr": "sum by (outcome (rate(jobqueue_job_outcomes_total[1m]))"}]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert promtool("check", "rules", "broken.yml", cwd=tmp_path).returncode != 0


def test_the_dashboard_shows_what_an_operator_asks_first() -> None:
    """Per-service health, queue depth, jobs per second by outcome, job latency, dead jobs."""
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for wanted in (
        "up{",
        "jobqueue_queue_messages_ready",
        "rate(jobqueue_job_outcomes_total",
        "jobqueue_worker_handler_seconds_bucket",
        'jobqueue_jobs{status="FAILED"}',
    ):
        assert wanted in exprs, wanted


def test_the_dashboard_reads_the_provisioned_data_source() -> None:
    (source,) = load(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service, on the port Prometheus listens on
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        for holder in (panel, *panel["targets"]):
            assert holder["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]


def test_compose_mounts_the_provisioning_where_grafana_reads_it() -> None:
    grafana = load(MONITORING_COMPOSE)["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = load(DASHBOARD_PROVIDERS)["providers"]
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_prometheus_is_built_here_on_the_root_dockerfiles_pinned_base() -> None:
    """The same base as our images (one pin to move), and the same files as these tests check."""
    pin = re.compile(r"^ARG PYTHON_IMAGE=(\S+)$", re.M)
    assert pin.findall(PROMETHEUS_DOCKERFILE.read_text()) == pin.findall((ROOT / "Dockerfile").read_text())
    prometheus = load(MONITORING_COMPOSE)["services"]["prometheus"]
    assert (ROOT / prometheus["build"]["context"]).resolve() == PROMETHEUS_DIR
    text = PROMETHEUS_DOCKERFILE.read_text()
    assert f"COPY {CONFIG.name} {ALERTS.name} {ALERT_TESTS.name} /etc/prometheus/" in text
    assert "promtool test rules" in text


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_the_uis_listen_on_loopback_only(service: str) -> None:
    (port,) = load(MONITORING_COMPOSE)["services"][service]["ports"]
    assert port.startswith("127.0.0.1:"), port
