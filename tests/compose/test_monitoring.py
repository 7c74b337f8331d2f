"""Prometheus in compose: every service scraped, every worker replica found by DNS, job metrics arriving.

A project of its own (not the suite's shared stack): docker-compose.yml with
docker-compose.monitoring.yml on top, two worker replicas, and Prometheus built
from Debian's package (monitoring/prometheus/Dockerfile), its port published on
a free loopback port. The tests read what Prometheus itself reports over its
HTTP API, as an operator's Prometheus UI would show it. Grafana is not started:
its image comes only from a registry, which this suite may not have
(docs/operations.md, "Prometheus and Grafana"); its dashboard's queries run
here against the live Prometheus instead.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.compose.stack import Backlog, Stack, new_user
from tests.packaging.test_monitoring import alert_rules, as_promql, dashboard_queries
from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.timeout(1200)

MONITORING_FILE = ROOT / "docker-compose.monitoring.yml"
#: What the tests bring up (their dependencies come along): everything but Grafana.
STARTED = ("auth-service", "job-service", "worker-service", "prometheus")
#: Prometheus's scrape job -> replicas the stack runs at first.
REPLICAS = {"auth-service": 1, "job-service": 1, "worker-service": 2}
#: Prometheus scrapes every 15 s and asks DNS every 5 s: a change shows within two scrapes, with margin.
SETTLE_SECONDS = 90


@pytest.fixture(scope="module")
def monitored(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """The stack with Prometheus and two workers; Prometheus's base URL on this host."""
    directory = tmp_path_factory.mktemp("monitoring")
    port = free_port()
    published = directory / "prometheus-port.yml"
    published.write_text(f'services:\n  prometheus:\n    ports: !override\n      - "127.0.0.1:{port}:9090"\n')
    stack = Stack(directory, files=[MONITORING_FILE, published])
    try:
        stack.compose("up", "--detach", "--wait", "--build", "--scale", "worker-service=2", *STARTED, timeout=900)
        yield stack, f"http://127.0.0.1:{port}"
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--rmi", "local", "--timeout", "60")


def api(base: str, path: str, **query: str) -> Any:
    """GET Prometheus's /api/v1/<path>; its `data` (asserting the status is success)."""
    url = f"{base}/api/v1/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (a URL this test built, on loopback)
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def targets(base: str) -> dict[str, list[dict[str, Any]]]:
    """Scrape job -> its active targets."""
    found: dict[str, list[dict[str, Any]]] = {}
    for target in api(base, "targets", state="active")["activeTargets"]:
        found.setdefault(target["labels"]["job"], []).append(target)
    return found


def wait_for_targets(base: str, replicas: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Until each job has exactly its number of targets, every one scraped successfully."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = targets(base)
        counts = {job: sum(t["health"] == "up" for t in found.get(job, [])) for job in replicas}
        if counts == replicas and all(len(found[job]) == n for job, n in replicas.items()):
            return found
        assert time.monotonic() < deadline, f"targets up after {SETTLE_SECONDS} s: {counts}, wanted {replicas}"
        time.sleep(2)


def container_addresses(stack: Stack, service: str) -> set[str]:
    """The address of each running container of ``service`` on the project's network, as ip:9100."""
    found = set()
    for container in stack.containers(service):
        networks = stack.inspect(container["ID"])["NetworkSettings"]["Networks"]
        found |= {f"{network['IPAddress']}:9100" for network in networks.values()}
    return found


def query(base: str, expr: str) -> list[dict[str, Any]]:
    data = api(base, "query", query=expr)
    assert data["resultType"] == "vector", data
    return list(data["result"])


def test_every_service_and_each_worker_replica_is_up(monitored: tuple[Stack, str]) -> None:
    stack, base = monitored
    found = wait_for_targets(base, REPLICAS)
    # The targets are the containers themselves: DNS answered with every replica's address.
    for job in REPLICAS:
        assert {t["labels"]["instance"] for t in found[job]} == container_addresses(stack, job), job
    up = {(s["metric"]["job"], s["metric"]["instance"]): s["value"][1] for s in query(base, "up")}
    for job, count in REPLICAS.items():
        assert sorted(value for (name, _), value in up.items() if name == job) == ["1"] * count, up


def test_a_worker_added_later_is_scraped_too(monitored: tuple[Stack, str]) -> None:
    stack, base = monitored
    stack.compose("up", "--detach", "--wait", "--no-recreate", "--scale", "worker-service=3", *STARTED)
    try:
        found = wait_for_targets(base, {**REPLICAS, "worker-service": 3})
        addresses = {t["labels"]["instance"] for t in found["worker-service"]}
        assert addresses == container_addresses(stack, "worker-service")
    finally:
        stack.compose("up", "--detach", "--wait", "--no-recreate", "--scale", "worker-service=2", *STARTED)
    wait_for_targets(base, REPLICAS)


async def test_job_metrics_arrive_in_prometheus_after_a_job(monitored: tuple[Stack, str]) -> None:
    stack, base = monitored
    wait_for_targets(base, REPLICAS)
    async with await new_user(stack) as jobs:
        backlog = Backlog()
        await backlog.submit(jobs, 20, "monitored")
        await backlog.wait_all_completed(stack)
    wanted = {
        # Counted by the job service, and by whichever workers ran them, summed over replicas.
        'sum(jobqueue_jobs_created_total{type="reverse_string"})': 20,
        'sum(jobqueue_job_outcomes_total{type="reverse_string", outcome="completed"})': 20,
        'sum(jobqueue_worker_jobs_total{type="reverse_string", outcome="completed"})': 20,
        'sum(jobqueue_worker_handler_seconds_count{type="reverse_string"})': 20,
    }
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        seen = {expr: sum(float(s["value"][1]) for s in query(base, expr)) for expr in wanted}
        if all(seen[expr] >= count for expr, count in wanted.items()):
            break
        assert time.monotonic() < deadline, f"after {SETTLE_SECONDS} s Prometheus has {seen}"
        time.sleep(2)


def test_every_dashboard_query_runs_and_the_alerts_are_loaded(monitored: tuple[Stack, str]) -> None:
    """Prometheus evaluates each panel's query (as Grafana sends it) and, once the jobs of the test above
    have been scraped twice (a rate needs two samples), answers data for every panel that has some to
    show; it loaded every alert of alerts.yml, and with every service up no service alert fires."""
    _, base = monitored
    wait_for_targets(base, REPLICAS)
    # Panels that may rightly be empty now: no dead letter, no error answered.
    allowed_empty = {"gRPC errors per second by code", "Dead jobs"}
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        empty = {title for title, expr in dashboard_queries() if not query(base, as_promql(expr))}
        if empty <= allowed_empty:
            break
        assert time.monotonic() < deadline, f"panels still empty after {SETTLE_SECONDS} s: {sorted(empty)}"
        time.sleep(2)
    loaded = {rule["name"] for group in api(base, "rules")["groups"] for rule in group["rules"]}
    assert loaded == set(alert_rules())
    # Firing, not pending: a replica the test above scaled away may still count as down for a few
    # scrapes (alerts.yml, JobQueueServiceDown), well within the alert's `for`.
    alerts = api(base, "alerts")["alerts"]
    firing = {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}
    assert not firing & {"JobQueueServiceDown", "JobQueueServiceMissing"}, alerts
