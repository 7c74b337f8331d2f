"""``jobq`` as a user runs it: in a terminal for the tables and the bar, through pipes for --json and exit codes.

Every part is real: ``python -m jobqueue.cli`` (what the ``jobq`` console script runs) in a process of
its own, with its token in a temporary XDG_CONFIG_HOME, against the auth and job services and a
worker of the test job types (tests/support/flaky_jobs.py).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobqueue.cli.exits import Exit
from tests.support import flaky_jobs
from tests.support.processes import free_port
from tests.support.system import System
from tests.support.terminal import Terminal

ROOT = Path(__file__).resolve().parents[2]
JOBQ = [sys.executable, "-m", "jobqueue.cli"]
EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"
REQUEST_ID = "0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11"


@pytest.fixture
def service_env(service_env: dict[str, str]) -> dict[str, str]:
    """The session's service environment, with the test job types (always_fails, sleeps) in every service."""
    return {**service_env, "WORKER_APP": flaky_jobs.APP}


class Jobq:
    """Runs ``jobq`` for one user: their config folder, this system's addresses."""

    def __init__(self, system: System, home: Path) -> None:
        self.config = home / "config"
        self.env = {
            **os.environ,
            # This checkout's client library, whichever one the virtualenv has installed.
            "PYTHONPATH": str(ROOT / "gen"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(self.config),
            "JOBQ_AUTH_ADDRESS": system.auth_address,
            "JOBQ_JOBS_ADDRESS": system.job_address,
        }

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``jobq args`` through pipes (no terminal)."""
        return subprocess.run(
            [*JOBQ, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=120,
            check=False,
        )

    def terminal(self, *args: str) -> Terminal:
        """``jobq args`` in a terminal 120 columns wide."""
        return Terminal([*JOBQ, *args], self.env, ROOT)

    def in_terminal(self, *args: str) -> tuple[int, str]:
        """``jobq args`` in a terminal: its exit code and what it showed."""
        return self.terminal(*args).finish()

    def login(self, email: str) -> None:
        registered = self("register", "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
        assert registered.returncode == 0, registered.stderr
        logged_in = self("login", "--email", email, "--password-stdin", stdin=PASSWORD + "\n")
        assert logged_in.returncode == 0, logged_in.stderr


def refused(result: subprocess.CompletedProcess[str], code: Exit, says: str) -> None:
    """``result`` exited with ``code`` and said ``says`` on stderr, in one line, with nothing on stdout."""
    assert (result.returncode, result.stdout) == (code, ""), result
    assert says in result.stderr, result.stderr
    assert result.stderr.startswith("jobq: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, and never a traceback


def states(shown: str) -> list[str]:
    """The statuses ``jobq watch ID`` showed, one line each (``<date> <time> <STATUS> attempt ...``)."""
    return [line.split()[2] for line in shown.splitlines() if line[:1].isdigit()]


def test_a_user_logs_in_submits_waits_and_reads_jobs(system: System, tmp_path: Path) -> None:
    system.start_worker()
    jobq = Jobq(system, tmp_path)
    refused(jobq("list"), Exit.UNAUTHENTICATED, "not logged in: run `jobq login` first")
    registered = jobq("register", "--email", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
    assert (registered.returncode, registered.stdout) == (0, f"registered {EMAIL}: now run `jobq login`\n")

    # Logging in at a terminal: asked for both, the password not echoed, the token stored for the owner alone.
    terminal = jobq.terminal("login")
    terminal.expect("email: ")
    terminal.type(EMAIL + "\n")
    terminal.expect("password: ")
    terminal.type(PASSWORD + "\n")
    code, shown = terminal.finish()
    credentials = jobq.config / "jobq" / "credentials.json"
    assert (code, shown.splitlines()[-1]) == (0, f"logged in as {EMAIL} (token in {credentials})"), shown
    assert PASSWORD not in shown
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.parent.stat().st_mode) == 0o700
    assert json.loads(credentials.read_text())["email"] == EMAIL

    # --wait prints the job with its result, and the exit code says how it ended.
    code, shown = jobq.in_terminal("submit", "reverse_string", "hello", "--wait")
    assert code == Exit.OK, shown
    assert shown.startswith("submitted "), shown
    assert "): COMPLETED, attempt 1 of " in shown
    assert shown.endswith("result: olleh\n"), shown
    code, shown = jobq.in_terminal("submit", "always_fails", "x", "--max-attempts", "1", "--wait")
    assert code == Exit.JOB_FAILED, shown
    assert "): FAILED, attempt 1 of 1\nerror: AlwaysFails: always_fails never succeeds\n" in shown
    failed_id = shown.split()[1].rstrip(";")

    # Without --wait: the id alone, or the job as JSON with the API's field names.
    submitted = jobq("submit", "fibonacci_calc", "10", "--priority", "high", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert (job["type"], job["status"], job["priority"], job["payload"]) == (
        "fibonacci_calc",
        "JOB_STATUS_QUEUED",
        "JOB_PRIORITY_HIGH",
        10,
    )
    bare = jobq("submit", "uppercase_text", '"abc"')
    assert bare.returncode == 0, bare.stderr
    bare_id = bare.stdout.strip()
    assert str(uuid.UUID(bare_id)) == bare_id

    # watch ID through a pipe: one JSON line per state, the last one final (so the list below is all done).
    for waited_id in (job["id"], bare_id):
        watched = jobq("watch", waited_id, "--json")
        assert watched.returncode == Exit.OK, watched
        assert json.loads(watched.stdout.splitlines()[-1])["status"] == "JOB_STATUS_COMPLETED"

    # get: in full, or as JSON; unknown and malformed ids.
    waited = jobq("submit", "reverse_string", "x", "--wait", "--json")
    assert json.loads(waited.stdout)["status"] == "JOB_STATUS_COMPLETED", waited
    got = jobq("get", job["id"], "--json")
    assert json.loads(got.stdout)["result"] == "55", got
    code, shown = jobq.in_terminal("get", failed_id)
    assert code == Exit.OK, shown
    assert shown.startswith(f"job {failed_id} (always_fails): FAILED, attempt 1 of 1\nerror: AlwaysFails"), shown
    assert 'payload: "x"' in shown
    refused(jobq("get", str(uuid.uuid4())), Exit.NOT_FOUND, " not found [JOB_NOT_FOUND]")
    refused(jobq("get", "not-a-uuid"), Exit.REFUSED, "id: must be a UUID")

    # list: an aligned table at the terminal, newest first; JSON lines through a pipe.
    code, shown = jobq.in_terminal("list")
    lines = shown.splitlines()
    assert code == Exit.OK, shown
    assert lines[0].split() == ["ID", "TYPE", "STATUS", "ATTEMPTS", "AGE", "UPDATED", "RESULT/ERROR"]
    assert [line.split()[1:4] for line in lines[1:]] == [
        ["reverse_string", "COMPLETED", "1/3"],
        ["uppercase_text", "COMPLETED", "1/3"],
        ["fibonacci_calc", "COMPLETED", "1/3"],
        ["always_fails", "FAILED", "1/1"],
        ["reverse_string", "COMPLETED", "1/3"],
    ]
    assert lines[3].startswith(job["id"])
    assert lines[3].endswith("  55")
    assert "  error: AlwaysFails: always_fa" in lines[4]
    assert lines[4].endswith("…")  # cut to the terminal's 120 columns
    assert max(len(line) for line in lines) == 120
    status_at = lines[0].index("STATUS")
    assert [line[status_at:].split()[0] for line in lines[1:]] == [line.split()[2] for line in lines[1:]]
    listed = jobq("list", "--status", "completed", "--type", "reverse_string", "--json")
    assert [json.loads(line)["result"] for line in listed.stdout.splitlines()] == ["x", "olleh"]
    limited = jobq("list", "--limit", "2", "--json")
    assert len(limited.stdout.splitlines()) == 2
    assert limited.stderr == "(the first 2; --limit N for more, --limit 0 for all)\n"
    assert jobq("list", "--limit", "5").stderr == ""  # all of them: nothing more to say

    # A payload the type's schema refuses: exit 6, the field named.
    refused(jobq("submit", "fibonacci_calc", "abc"), Exit.REFUSED, "payload")
    refused(jobq("submit", "reverse_string", "{oops"), Exit.USAGE, "is not valid JSON")

    # watch ID follows a job to its end; cancel, and watching a cancelled job exits 3.
    slow = jobq("submit", "sleeps", "1").stdout.strip()
    code, shown = jobq.in_terminal("watch", slow)
    assert code == Exit.OK, shown
    assert states(shown)[-1] == "COMPLETED", shown
    assert set(states(shown)) <= {"QUEUED", "RUNNING", "COMPLETED"}
    assert shown.endswith("result: slept 1 s\n"), shown
    stuck = jobq("submit", "sleeps", "3600", "--max-attempts", "1").stdout.strip()
    cancelled = jobq("cancel", stuck, "--json")
    assert json.loads(cancelled.stdout)["status"] == "JOB_STATUS_CANCELLED", cancelled
    code, shown = jobq.in_terminal("watch", stuck)
    assert (code, states(shown)) == (Exit.JOB_CANCELLED, ["CANCELLED"]), shown
    assert shown.endswith("error: cancelled by its owner\n"), shown
    refused(jobq("cancel", stuck), Exit.REFUSED, "[")

    # Ctrl-C while waiting: exit 130, no traceback, and the job goes on.
    terminal = jobq.terminal("submit", "sleeps", "3600", "--max-attempts", "1", "--wait")
    terminal.expect("(Ctrl-C stops the waiting, not the job)\n")
    terminal.interrupt()
    code, shown = terminal.finish()
    assert code == Exit.INTERRUPTED, shown
    assert "Traceback" not in shown
    waited_for = shown.split()[1].rstrip(";")
    assert json.loads(jobq("get", waited_for, "--json").stdout)["status"] in {"JOB_STATUS_QUEUED", "JOB_STATUS_RUNNING"}
    assert jobq("cancel", waited_for).returncode == 0

    # rerun: the failed job is queued again, and fails again.
    again = jobq("rerun", failed_id, "--max-attempts", "1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1].split()[:3] == [failed_id, "always_fails", "QUEUED"]

    # A wait that runs out exits 8; Ctrl-C while watching exits 130, and the job goes on.
    code, shown = jobq.in_terminal("submit", "sleeps", "3600", "--max-attempts", "1", "--wait", "--timeout-wait", "1")
    assert code == Exit.WAIT_TIMED_OUT, shown
    assert "is not finished after 1.0 s" in shown
    sleeping = shown.split()[1].rstrip(";")
    terminal = jobq.terminal("watch", sleeping)
    terminal.expect(" attempt ")
    terminal.interrupt()
    code, shown = terminal.finish()
    assert (code, "Traceback" in shown) == (Exit.INTERRUPTED, False), shown
    assert jobq("cancel", sleeping).returncode == 0

    # A token the service does not take (expired, or from another system): exit 5, log in again.
    credentials.write_text(json.dumps({"access_token": "not-a-token", "email": EMAIL}))
    refused(jobq("list"), Exit.UNAUTHENTICATED, "not logged in, or the login expired: run `jobq login`")
    assert jobq("login", "--email", EMAIL, "--password-stdin", stdin=PASSWORD + "\n").returncode == 0

    # types, then a service that is not there, then logging out.
    code, shown = jobq.in_terminal("types")
    assert code == Exit.OK, shown
    assert shown.splitlines()[0].split() == ["TYPE", "VERSION", "ATTEMPTS", "TIMEOUT", "SUMMARY"]
    assert {"reverse_string", "always_fails", "sleeps"} <= {line.split()[0] for line in shown.splitlines()[1:]}
    nowhere = f"127.0.0.1:{free_port()}"
    refused(jobq("list", "--jobs", nowhere), Exit.UNAVAILABLE, f"cannot reach the service at {nowhere}")
    assert jobq("logout").stdout == f"logged out (removed {credentials})\n"
    assert not credentials.exists()
    refused(jobq("list"), Exit.UNAUTHENTICATED, "not logged in")
    wrong = jobq("login", "--email", EMAIL, "--password-stdin", stdin="wrong password!\n")
    assert wrong.returncode == Exit.UNAUTHENTICATED, wrong
    assert not credentials.exists()


def test_submit_file_sends_the_jobs_in_batches_with_a_bar_at_a_terminal(system: System, tmp_path: Path) -> None:
    # No worker: the jobs stay QUEUED, and the test counts them.
    jobq = Jobq(system, tmp_path)
    jobq.login("filer@example.com")
    lines = [json.dumps({"type": "reverse_string", "payload": f"job {i}"}) for i in range(2_497)]
    lines += [
        json.dumps({"type": "reverse_string", "payload": "high", "priority": "high", "request_id": REQUEST_ID}),
        "",  # blank lines are skipped
        json.dumps({"type": "fibonacci_calc", "payload": 7, "max_attempts": 5, "timeout_seconds": 9}),
        json.dumps({"type": "uppercase_text", "payload": "abc"}),
    ]
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(lines) + "\n")

    code, shown = jobq.in_terminal("submit", "--file", str(jobs_file))
    assert code == Exit.OK, shown
    # The bar is redrawn in place after each of the three calls, then its line is ended.
    frames = shown.split("\r")
    assert [frame.split("]")[1].split()[0] for frame in frames[1:]] == ["0/2500", "1000/2500", "2000/2500", "2500/2500"]
    assert frames[-1].endswith("100%\nsubmitted 2500 jobs in 3 batches\n"), shown
    stored = [json.loads(line) for line in jobq("list", "--limit", "0", "--json").stdout.splitlines()]
    assert len(stored) == len({job["id"] for job in stored}) == 2_500
    by_payload = {json.dumps(job["payload"]): job for job in stored}
    assert by_payload['"high"']["priority"] == "JOB_PRIORITY_HIGH"
    assert (by_payload["7"]["maxAttempts"], by_payload["7"]["timeoutSeconds"]) == (5, 9)

    # Through pipes: JSON lines on stdout, no bar on stderr; a line's request_id gives the job it gave before.
    again = "\n".join(lines[-4:]) + "\n"
    piped = jobq("submit", "--file", "-", "--json", "--priority", "low", stdin=again)
    assert (piped.returncode, piped.stderr) == (0, ""), piped
    resent = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [job["type"] for job in resent] == ["reverse_string", "fibonacci_calc", "uppercase_text"]
    assert resent[0]["id"] == by_payload['"high"']["id"]
    assert resent[2]["priority"] == "JOB_PRIORITY_LOW"  # --priority for the lines that do not say

    # A reader that stops early (| head -1): exit 141, quietly.
    reader = subprocess.Popen(
        [*JOBQ, "list", "--limit", "0", "--json"],
        env=jobq.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert reader.stderr is not None
    assert json.loads(reader.stdout.readline())["status"] == "JOB_STATUS_QUEUED"
    reader.stdout.close()
    assert reader.wait(60) == Exit.STDOUT_CLOSED
    assert reader.stderr.read() == ""
    reader.stderr.close()

    # A bad line anywhere: reported with its number, and nothing at all is sent.
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text("\n".join([*lines[:3], '{"type": "reverse_string", "payload": true}', *lines[3:10]]) + "\n")
    refused(jobq("submit", "--file", str(bad_file)), Exit.USAGE, f"{bad_file}: line 4: bad payload: a bool")
    refused(jobq("submit", "--file", str(tmp_path / "missing.jsonl")), Exit.USAGE, "No such file or directory")
    assert len(jobq("list", "--limit", "0", "--json").stdout.splitlines()) == 2_502


def test_an_operator_lists_dead_jobs_and_runs_them_again(system: System, tmp_path: Path) -> None:
    system.start_worker()
    jobq = Jobq(system, tmp_path)
    jobq.login("ops@example.com")
    failed = jobq("submit", "always_fails", "x", "--max-attempts", "1", "--wait", "--json")
    assert failed.returncode == Exit.JOB_FAILED, failed
    refused(jobq("dead"), Exit.REFUSED, "[OPERATORS_ONLY]")
    granted = subprocess.run(
        [sys.executable, "-m", "auth_svc.admin", "grant-operator", "ops@example.com"],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert granted.returncode == 0, granted.stderr
    # The role arrives with the next login.
    assert jobq("login", "--email", "ops@example.com", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    code, shown = jobq.in_terminal("dead", "--type", "always_fails")
    assert code == Exit.OK, shown
    assert shown.splitlines()[1].split()[:3] == [json.loads(failed.stdout)["id"], "always_fails", "FAILED"]
    dead = jobq("dead", "--limit", "0", "--json").stdout.splitlines()  # everyone's: other tests' too
    assert jobq("dead", "--rerun", "--max-attempts", "1").stdout == f"{len(dead)} jobs run again\n"


def test_watching_every_change_until_ctrl_c(system: System, tmp_path: Path) -> None:
    """Needs WatchJobs on the job service (main 97dab4d; before it, UNIMPLEMENTED: exit 7)."""
    system.start_worker()
    jobq = Jobq(system, tmp_path)
    jobq.login("watcher@example.com")
    # As a context manager, Popen closes the pipes and waits for the process, whatever happens here.
    with subprocess.Popen(
        [*JOBQ, "watch", "--json"], env=jobq.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as watching:
        assert watching.stderr is not None
        assert watching.stdout is not None
        try:
            assert watching.stderr.readline() == "watching; Ctrl-C to stop\n"
            job_id = jobq("submit", "reverse_string", "abc").stdout.strip()
            seen: list[str] = []
            while not seen or seen[-1] != "JOB_STATUS_COMPLETED":
                change = json.loads(watching.stdout.readline())
                assert change["id"] == job_id
                seen.append(change["status"])
            # A change is shown as the job stands when it is read, so quick steps may be seen as one.
            assert set(seen) <= {"JOB_STATUS_QUEUED", "JOB_STATUS_RUNNING", "JOB_STATUS_COMPLETED"}
            watching.send_signal(signal.SIGINT)  # Ctrl-C
            assert watching.wait(30) == Exit.INTERRUPTED
            assert "Traceback" not in watching.stderr.read()
        finally:
            if watching.poll() is None:
                watching.kill()


def test_get_history_shows_every_attempt(system: System, tmp_path: Path) -> None:
    """Needs the attempt history on the job service (GetJob's FULL view; before it: "sent no attempt history")."""
    system.start_worker()
    jobq = Jobq(system, tmp_path)
    jobq.login("historian@example.com")
    failed = jobq("submit", "always_fails", "x", "--max-attempts", "2", "--wait").stdout.split()[1].rstrip(";")
    code, shown = jobq.in_terminal("get", failed, "--history")
    assert code == Exit.OK, shown
    history = shown.split("\n\n")[1].splitlines()
    assert history[0].split() == ["#", "OUTCOME", "WORKER", "STARTED", "TOOK", "ERROR"]
    assert [line.split()[:2] for line in history[1:]] == [["1", "FAILED"], ["2", "FAILED"]]
