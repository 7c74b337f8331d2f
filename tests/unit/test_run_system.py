"""`make run`'s supervisor, its pure parts: the plan of processes, start and stop order, output prefixing.

Its handling of real processes (start, stop, failures) is in tests/integration/test_supervisor.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # scripts/ is not a package, so mypy (given scripts/run_system.py) knows the
    # file as the top-level module `run_system`; importing it as
    # `scripts.run_system` would make mypy see one file under two names.
    import run_system
else:
    from scripts import run_system

Child = run_system.Child
LinePrefixer = run_system.LinePrefixer
plan = run_system.plan
start_stages = run_system.start_stages
stop_stages = run_system.stop_stages

# --- the plan -------------------------------------------------------------------------------------------


def names(groups: list[list[Child]]) -> list[list[str]]:
    return [[c.name for c in group] for group in groups]


def test_worker_health_ports_count_up_from_the_base() -> None:
    assert run_system.worker_health_ports(5003, 3) == [5003, 5004, 5005]
    assert run_system.worker_health_ports(5003, 0) == []


def test_default_plan() -> None:
    children = plan(2, {}, python="py")
    assert [(c.name, c.argv) for c in children] == [
        ("auth", ("py", "-m", "auth_svc")),
        ("job", ("py", "-m", "job_svc")),
        ("worker-1", ("py", "-m", "worker_svc")),
        ("worker-2", ("py", "-m", "worker_svc")),
    ]
    assert [c.health_address for c in children] == ["127.0.0.1:5001", "127.0.0.1:5002", None, None]
    assert [dict(c.env) for c in children] == [
        {"METRICS_PORT": "0"},
        {"METRICS_PORT": "0"},
        {"WORKER_HEALTH_PORT": "5003", "JOB_SERVICE_ADDR": "127.0.0.1:5002", "METRICS_PORT": "0"},
        {"WORKER_HEALTH_PORT": "5004", "JOB_SERVICE_ADDR": "127.0.0.1:5002", "METRICS_PORT": "0"},
    ]


def test_metrics_ports_count_up_from_the_base_in_start_order() -> None:
    children = plan(2, {"METRICS_PORT": "9100"}, python="py")
    assert [c.env["METRICS_PORT"] for c in children] == ["9100", "9101", "9102", "9103"]


def test_plan_takes_addresses_and_ports_from_the_environment() -> None:
    environ = {"AUTH_PORT": "6001", "JOB_HOST": "10.1.2.3", "JOB_PORT": "6002", "WORKER_HEALTH_PORT": "7000"}
    children = plan(3, environ, python="py")
    assert [c.health_address for c in children[:2]] == ["127.0.0.1:6001", "10.1.2.3:6002"]
    assert [c.env["WORKER_HEALTH_PORT"] for c in children[2:]] == ["7000", "7001", "7002"]
    assert {c.env["JOB_SERVICE_ADDR"] for c in children[2:]} == {"10.1.2.3:6002"}
    explicit = plan(1, {**environ, "JOB_SERVICE_ADDR": "jobs.internal:5002"}, python="py")
    assert explicit[2].env["JOB_SERVICE_ADDR"] == "jobs.internal:5002"


def test_plan_refuses_a_malformed_port() -> None:
    with pytest.raises(ValueError, match="JOB_PORT"):
        plan(1, {"JOB_PORT": "50o2"})


@pytest.mark.parametrize(
    ("host", "probe"), [("", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("10.0.0.7", "10.0.0.7")]
)
def test_wildcard_bind_is_probed_on_loopback(host: str, probe: str) -> None:
    assert run_system.probe_host(host) == probe


def test_services_start_before_workers() -> None:
    assert names(start_stages(plan(3, {}))) == [["auth", "job"], ["worker-1", "worker-2", "worker-3"]]


def test_workers_stop_first_then_job_then_auth() -> None:
    assert names(stop_stages(plan(3, {}))) == [["worker-1", "worker-2", "worker-3"], ["job"], ["auth"]]


def test_workers_default_from_the_environment() -> None:
    assert run_system.parse_args([], {"WORKERS": "5"}).workers == 5
    assert run_system.parse_args(["--workers", "1"], {"WORKERS": "5"}).workers == 1
    assert run_system.parse_args([], {}).workers == 2


def test_negative_worker_count_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_system.parse_args(["--workers", "-1"], {})
    assert "--workers" in capsys.readouterr().err


# --- output ---------------------------------------------------------------------------------------------


def test_label_pads_names_to_one_column() -> None:
    assert run_system.label("job", 8) == b"job      | "


def test_prefixer_emits_whole_lines_only() -> None:
    prefixer = LinePrefixer(b"w | ")
    assert prefixer.feed(b"one\ntw") == b"w | one\n"
    assert prefixer.feed(b"o\nthree\n") == b"w | two\nw | three\n"
    assert prefixer.feed(b"tail") == b""
    assert prefixer.flush() == b"w | tail\n"
    assert prefixer.flush() == b""


def test_prefixer_keeps_empty_lines() -> None:
    assert LinePrefixer(b"> ").feed(b"\n\n") == b"> \n> \n"


def test_prefixer_cuts_an_endless_line() -> None:
    prefixer = LinePrefixer(b"> ", max_line=4)
    assert prefixer.feed(b"abcdefghij") == b"> abcd\n> efgh\n"
    assert prefixer.flush() == b"> ij\n"


@pytest.mark.parametrize(("code", "text"), [(0, "code 0"), (3, "code 3"), (-9, "signal SIGKILL")])
def test_exit_descriptions(code: int, text: str) -> None:
    assert run_system.describe_exit(code) == text
