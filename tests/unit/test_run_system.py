"""`make run`'s supervisor, its pure parts: the plan of processes, start and stop order, output prefixing.

Its handling of real processes (start, stop, failures) is in tests/integration/test_supervisor.py.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
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


def test_worker_app_runs_a_worker_of_ones_own_in_place_of_the_worker_service() -> None:
    children = plan(2, {"WORKER_APP": " my_company.jobs:worker "}, python="py")
    assert [c.argv for c in children if c.name.startswith("worker-")] == [
        ("py", "-m", "jobqueue.worker", "my_company.jobs:worker")
    ] * 2


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
        ("web", ("py", "-m", "web_svc")),
    ]
    assert [c.health_address for c in children] == ["127.0.0.1:5001", "127.0.0.1:5002", None, None, None]
    worker = {"WORKER_HEALTH_HOST": "127.0.0.1", "JOB_SERVICE_ADDR": "127.0.0.1:5002", "METRICS_PORT": "0"}
    assert [dict(c.env) for c in children] == [
        {
            "AUTH_HOST": "127.0.0.1",
            "METRICS_PORT": "0",
            "DATABASE_URL": "postgresql://jobqueue_auth@127.0.0.1:5432/jobqueue",
        },
        {
            "JOB_HOST": "127.0.0.1",
            "METRICS_PORT": "0",
            "DATABASE_URL": "postgresql://jobqueue_jobs@127.0.0.1:5432/jobqueue",
        },
        {**worker, "WORKER_HEALTH_PORT": "5003"},
        {**worker, "WORKER_HEALTH_PORT": "5004"},
        {
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": "5080",
            "AUTH_SERVICE_ADDR": "127.0.0.1:5001",
            "JOB_SERVICE_ADDR": "127.0.0.1:5002",
        },
    ]
    assert [[str(listen) for listen in c.listens] for c in children] == [
        ["grpc 127.0.0.1:5001"],
        ["grpc 127.0.0.1:5002"],
        ["health 127.0.0.1:5003"],
        ["health 127.0.0.1:5004"],
        ["http 127.0.0.1:5080"],
    ]
    assert run_system.dashboard_url({}) == "http://127.0.0.1:5080/"


def test_each_service_logs_in_as_its_own_role_on_the_server_and_database_the_migrations_used() -> None:
    environ = {"DATABASE_URL": "postgresql://owner:secret@db.example:6543/jq", "JOB_DATABASE_PASSWORD": "p@ss"}
    auth, job, worker, web = plan(1, environ, python="py")
    assert auth.env["DATABASE_URL"] == "postgresql://jobqueue_auth@db.example:6543/jq"
    assert job.env["DATABASE_URL"] == "postgresql://jobqueue_jobs:p%40ss@db.example:6543/jq"
    assert "DATABASE_URL" not in worker.env
    assert "DATABASE_URL" not in web.env


def test_bind_host_opens_every_service_unless_its_own_host_is_set() -> None:
    children = plan(1, {"BIND_HOST": "0.0.0.0", "JOB_HOST": "10.0.0.7"}, python="py")
    assert [
        c.env.get(name)
        for c, name in zip(children, ["AUTH_HOST", "JOB_HOST", "WORKER_HEALTH_HOST", "WEB_HOST"], strict=True)
    ] == ["0.0.0.0", "10.0.0.7", "0.0.0.0", "0.0.0.0"]
    # Probed (and followed by the workers) where this machine reaches it; printed where it listens.
    assert [c.health_address for c in children[:2]] == ["127.0.0.1:5001", "10.0.0.7:5002"]
    assert children[2].env["JOB_SERVICE_ADDR"] == "10.0.0.7:5002"
    assert [str(c.listens[0]) for c in children] == [
        "grpc 0.0.0.0:5001",
        "grpc 10.0.0.7:5002",
        "health 0.0.0.0:5003",
        "http 0.0.0.0:5080",
    ]
    # The dashboard follows the job service too; a browser here opens it on loopback.
    assert children[3].env["JOB_SERVICE_ADDR"] == "10.0.0.7:5002"
    assert run_system.dashboard_url({"BIND_HOST": "0.0.0.0", "WEB_PORT": "8080"}) == "http://127.0.0.1:8080/"


def test_an_ipv6_host_is_bracketed() -> None:
    children = plan(0, {"BIND_HOST": "::1"}, python="py")
    assert [c.health_address for c in children] == ["[::1]:5001", "[::1]:5002", None]
    assert str(children[0].listens[0]) == "grpc [::1]:5001"


def test_metrics_ports_count_up_from_the_base_in_start_order() -> None:
    *children, web = plan(2, {"METRICS_PORT": "9100"}, python="py")
    assert [c.env["METRICS_PORT"] for c in children] == ["9100", "9101", "9102", "9103"]
    assert "METRICS_PORT" not in web.env  # the dashboard serves no metrics
    # ... on the host of each one's gRPC server, and listed with it.
    assert [", ".join(map(str, c.listens)) for c in children] == [
        "grpc 127.0.0.1:5001, metrics 127.0.0.1:9100",
        "grpc 127.0.0.1:5002, metrics 127.0.0.1:9101",
        "health 127.0.0.1:5003, metrics 127.0.0.1:9102",
        "health 127.0.0.1:5004, metrics 127.0.0.1:9103",
    ]


def test_plan_takes_addresses_and_ports_from_the_environment() -> None:
    environ = {"AUTH_PORT": "6001", "JOB_HOST": "10.1.2.3", "JOB_PORT": "6002", "WORKER_HEALTH_PORT": "7000"}
    children = plan(3, environ, python="py")
    assert [c.health_address for c in children[:2]] == ["127.0.0.1:6001", "10.1.2.3:6002"]
    assert [c.env["WORKER_HEALTH_PORT"] for c in children[2:5]] == ["7000", "7001", "7002"]
    assert {c.env["JOB_SERVICE_ADDR"] for c in children[2:]} == {"10.1.2.3:6002"}
    assert children[5].env["AUTH_SERVICE_ADDR"] == "127.0.0.1:6001"
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
    assert names(start_stages(plan(3, {}))) == [["auth", "job"], ["worker-1", "worker-2", "worker-3", "web"]]


def test_workers_stop_first_then_job_then_auth() -> None:
    assert names(stop_stages(plan(3, {}))) == [["worker-1", "worker-2", "worker-3", "web"], ["job"], ["auth"]]


def test_workers_default_from_the_environment() -> None:
    assert run_system.parse_args([], {"WORKERS": "5"}).workers == 5
    assert run_system.parse_args(["--workers", "1"], {"WORKERS": "5"}).workers == 1
    assert run_system.parse_args([], {}).workers == 2


def test_negative_worker_count_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_system.parse_args(["--workers", "-1"], {})
    assert "--workers" in capsys.readouterr().err


# --- ports taken before the start ---------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    """A port this test process listens on (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_listening_port_is_taken_and_its_holder_named(listener: int) -> None:
    assert not run_system.port_free("127.0.0.1", listener)
    assert not run_system.port_free("0.0.0.0", listener)  # a wildcard bind would clash too
    assert run_system.holder(listener).startswith(f"pid {os.getpid()} (")


def test_a_free_port_is_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert run_system.port_free("127.0.0.1", port)


def test_every_taken_port_is_named_in_one_line(listener: int) -> None:
    children = plan(2, {"AUTH_PORT": str(listener), "JOB_PORT": "0", "WORKER_HEALTH_PORT": "0", "METRICS_PORT": "0"})
    line = run_system.taken_ports(children)
    assert line is not None
    assert "\n" not in line
    assert line.startswith(f"cannot start, port taken: {listener} (auth) held by pid {os.getpid()} (")
    assert run_system.taken_ports(plan(0, {"AUTH_PORT": "0", "JOB_PORT": "0"})) is None


def test_metrics_ports_are_checked_too(listener: int) -> None:
    line = run_system.taken_ports(plan(0, {"AUTH_PORT": "0", "JOB_PORT": "0", "METRICS_PORT": str(listener - 1)}))
    assert line is not None
    assert f"{listener} (job metrics) held by pid " in line


def test_the_holder_of_a_socket_is_found_through_proc(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [
        "   0: 0100007F:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1",
        "   1: 0100007F:138A 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1",
    ]
    (tmp_path / "net" / "tcp").write_text(header + "\n".join(rows) + "\n")
    assert run_system.listening_inodes(0x1389, tmp_path) == {"4242"}
    assert run_system.listening_inodes(0x138A, tmp_path) == set()  # connected, not listening
    fds = tmp_path / "77" / "fd"
    fds.mkdir(parents=True)
    (fds / "3").symlink_to("socket:[4242]")
    (tmp_path / "77" / "cmdline").write_bytes(b"/usr/bin/python3\0-m\0job_svc\0")
    (tmp_path / "self").mkdir()
    assert run_system.socket_owner({"4242"}, tmp_path) == (77, "python3 -m job_svc")
    assert run_system.socket_owner({"9999"}, tmp_path) is None


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
