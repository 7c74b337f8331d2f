"""The README's walkthroughs, run as written against the system started the way `make run` starts it.

The commands are read from README.md itself (between the walkthrough markers),
so the README cannot drift from what works. Only the addresses are changed, to
the ports this test's system listens on. Around them, what the README says of
`make` itself: `make help`'s texts, `make run`'s addresses, a second `make run`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.e2e.conftest import RunningSystem
from tests.support.processes import ROOT
from tests.support.readme import readme_block, run_grpcurl_walkthrough, wait_listed_completed


def test_the_grpcurl_walkthrough_works_as_written_twice_in_a_row(make_run: RunningSystem) -> None:
    script = make_run.localize(readme_block("grpcurl"))
    for run in (1, 2):  # the second finds the user registered, and must carry on all the same
        done, token = run_grpcurl_walkthrough(script, make_run.env)
        assert done.returncode == 0, f"run {run}:\n{done.stdout}{done.stderr}"
        assert "jobqueue.jobs.v1.JobService" in done.stdout
        assert '"status": "SERVING"' in done.stdout
        assert done.stdout.count('"status": "JOB_STATUS_QUEUED"') >= 3  # each CreateJob answered at once
        assert ("Code: AlreadyExists" in done.stderr) == (run == 2), done.stderr
        # WatchJob printed the job until it finished, with its attempts.
        watched = done.stdout[done.stdout.rindex('"payload": "watch me"') :]
        assert '"result": "em hctaw"' in watched, watched
        assert '"attemptHistory"' in watched or '"attempt_history"' in watched, watched

    list_command = make_run.localize(
        'grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d \'{"page_size": 10}\' '
        "localhost:5002 jobqueue.jobs.v1.JobService/ListJobs"
    )
    assert list_command.split(" -d ")[0].replace("$TOKEN", "") in make_run.localize(script).replace("$TOKEN", "")
    jobs = wait_listed_completed(list_command, {**make_run.env, "TOKEN": token})
    assert len(jobs) == 10  # five from each run
    results = {(job["type"], job["result"]) for job in jobs}
    assert results == {
        ("reverse_string", "dlrow olleh"),
        ("uppercase_text", "HELLO WORLD"),
        ("fibonacci_calc", "55"),
        ("reverse_string", "tnegru"),
        ("reverse_string", "em hctaw"),
    }


def test_the_python_walkthrough_works_as_written(make_run: RunningSystem) -> None:
    program = make_run.localize(readme_block("python"))
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=make_run.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["reverse_string dlrow olleh", "uppercase_text HELLO WORLD", "fibonacci_calc 55"]
    assert any(line.endswith(" 55") for line in lines[3:-1])
    # The client speaks words: a status prints as its name, not its number.
    assert any(line.endswith(" COMPLETED 55") for line in lines[3:-1]), lines[3:6]
    assert "COMPLETED 832040" in lines  # the last state jobs.watch() yielded
    assert lines[-1] == "batch 1200 9911 boj"


def test_make_help_expands_its_variables() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        env={**os.environ, "WORKERS": "3"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "$(" not in done.stdout, done.stdout
    assert "run auth, jobs, 3 workers and the web dashboard" in done.stdout


def listening_hosts(port: int) -> set[str]:
    """The addresses something listens on at TCP ``port``, read from /proc/net/tcp and tcp6."""
    hosts = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            hex_host, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(hex_host)  # 32-bit words in host (little-endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(packed)
            mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            hosts.add(str(mapped or address))
    return hosts


def test_make_run_listens_where_its_banner_says_and_a_second_one_refuses(make_run: RunningSystem) -> None:
    banner = re.findall(r"^run +\| +(\S+) +((?:\w+ \S+:\d+(?:, )?)+) +pid \d+", make_run.output(), re.M)
    assert [name for name, _ in banner] == ["auth", "job", "worker-1", "worker-2", "web"], make_run.output()
    for name, where in banner:
        for listen in where.split(", "):
            host, port = listen.split()[1].rsplit(":", 1)
            assert host == "127.0.0.1"  # loopback by default
            # The dashboard starts with the workers, and nothing waits for it: it may still be starting.
            deadline = time.monotonic() + 30
            while listening_hosts(int(port)) != {host} and time.monotonic() < deadline:
                time.sleep(0.2)
            assert listening_hosts(int(port)) == {host}, f"{name} {listen}"
    # The banner says where the dashboard is, and it serves there.
    url = f"http://127.0.0.1:{make_run.env['WEB_PORT']}/"
    assert f"Dashboard: {url} " in make_run.output()
    with urllib.request.urlopen(f"{url}login", timeout=10) as page:  # noqa: S310 - http://127.0.0.1
        assert page.status == 200

    second = subprocess.run(
        [sys.executable, "scripts/run_system.py", "--workers", "2"],
        cwd=ROOT,
        env=make_run.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert second.stdout == ""  # no banner, nothing started
    [line] = second.stderr.splitlines()
    assert line.startswith("run_system: cannot start, ports taken: ")
    assert f"held by pid {make_run.pid('auth')} (" in line
    assert f"held by pid {make_run.pid('worker-2')} (" in line
