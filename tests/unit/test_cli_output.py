"""What jobq prints: aligned tables cut to the terminal, JSON lines in the API's names, the progress bar."""

from __future__ import annotations

import datetime
import io
import json

from google.protobuf import message as message_pb
from google.protobuf import timestamp_pb2

from jobqueue.cli import output
from jobqueue.cli.progress import BAR_WIDTH, ProgressBar
from jobqueue.client import Job, JobType, to_value
from jobqueue.jobs.v1 import jobs_pb2

NOW = datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=datetime.UTC)


def stamp(seconds_ago: float) -> timestamp_pb2.Timestamp:
    moment = timestamp_pb2.Timestamp()
    moment.FromDatetime(NOW - datetime.timedelta(seconds=seconds_ago))
    return moment


def job(**fields: object) -> Job:
    message = jobs_pb2.Job(
        id="0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11",
        type="reverse_string",
        status=jobs_pb2.JOB_STATUS_COMPLETED,
        payload=to_value("hello"),
        attempts=1,
        max_attempts=3,
        priority=jobs_pb2.JOB_PRIORITY_NORMAL,
        timeout_seconds=30,
        owner_id="5f0e",
        created_at=stamp(125),
        updated_at=stamp(4),
    )
    for name, value in fields.items():
        if isinstance(value, message_pb.Message):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return Job.from_proto(message)


def test_ages_are_in_their_largest_unit() -> None:
    ago = [0, 59, 60, 3599, 3600, 86399, 86400 * 3, -5]
    assert [output.age(NOW - datetime.timedelta(seconds=s), NOW) for s in ago] == [
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "23h",
        "3d",
        "0s",  # a clock a little ahead of ours
    ]


def test_a_job_table_is_aligned_with_ids_in_full_and_the_outcome_on_one_line() -> None:
    done = job(result="olleh")
    failed = job(
        id="1" * 36, type="always_fails", status=jobs_pb2.JOB_STATUS_FAILED, attempts=3, error="Boom\n  at line 4"
    )
    running = job(status=jobs_pb2.JOB_STATUS_RUNNING, progress=jobs_pb2.JobProgress(fraction=0.5, message="halfway"))
    lines = output.job_table([done, failed, running], 120, NOW)
    assert lines == [
        "ID                                    TYPE            STATUS     ATTEMPTS  AGE  UPDATED  RESULT/ERROR",
        "0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11  reverse_string  COMPLETED  1/3       2m   4s       olleh",
        "111111111111111111111111111111111111  always_fails    FAILED     3/3       2m   4s       "
        "error: Boom at line 4",
        "0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11  reverse_string  RUNNING    1/3       2m   4s       50% halfway",
    ]


def test_the_last_column_is_cut_to_fit_the_terminal_but_keeps_ten_characters() -> None:
    lines = output.job_table([job(result="x" * 500)], 100, NOW)
    assert len(lines[1]) == 100
    assert lines[1].endswith("x…")
    narrow = output.job_table([job(result="x" * 500)], 20, NOW)
    assert narrow[1].endswith("  " + "x" * 9 + "…")


def test_an_empty_table_is_its_header() -> None:
    assert output.job_table([], 120, NOW) == [
        "ID  TYPE  STATUS  ATTEMPTS  AGE  UPDATED  RESULT/ERROR",
    ]


def test_json_lines_use_the_apis_json_names() -> None:
    line = output.job_json(job(result="olleh"))
    assert "\n" not in line
    data = json.loads(line)
    assert data["id"] == "0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11"
    assert data["status"] == "JOB_STATUS_COMPLETED"
    assert (data["maxAttempts"], data["timeoutSeconds"], data["payload"], data["result"]) == (3, 30, "hello", "olleh")
    assert data["createdAt"] == "2026-12-02T11:57:55Z"
    numbers = json.loads(output.job_json(job(payload=to_value({"n": [10, 2.5]}), result_value=to_value(55))))
    assert (numbers["payload"], numbers["resultValue"]) == ({"n": [10, 2.5]}, 55)
    assert '"payload": {"n": [10, 2.5]}' in output.job_json(job(payload=to_value({"n": [10, 2.5]})))


def test_job_type_json_uses_the_same_names() -> None:
    declared = JobType("t", "a string", {"type": "string"}, 2, 5, 30, NOW)
    assert json.loads(output.job_type_json(declared)) == {
        "name": "t",
        "summary": "a string",
        "payloadSchema": {"type": "string"},
        "version": 2,
        "defaultMaxAttempts": 5,
        "defaultTimeoutSeconds": 30,
        "declaredAt": "2026-12-02T12:00:00Z",
    }
    assert "declaredAt" not in json.loads(output.job_type_json(JobType("t", "s")))


def test_details_show_the_error_in_full() -> None:
    lines = output.job_details(job(status=jobs_pb2.JOB_STATUS_FAILED, error="Boom\n  at line 4"))
    assert lines[:3] == [
        "job 0b6c8e5e-3f0c-4a53-9c1e-1f3f6a0c2d11 (reverse_string): FAILED, attempt 1 of 3",
        "error: Boom",
        "    at line 4",
    ]
    assert 'payload: "hello"' in lines
    assert "priority: NORMAL, timeout 30 s" in lines


def test_a_state_line_says_status_attempts_and_outcome() -> None:
    line = output.state_line(job(result="olleh"), 120)
    assert line.endswith("  COMPLETED  attempt 1/3  olleh")
    assert len(output.state_line(job(result="y" * 500), 100)) == 100


def test_the_bar_fills_as_batches_are_stored() -> None:
    stream = io.StringIO()
    bar = ProgressBar(2500, stream, enabled=True)
    bar.start()
    for count in (1000, 1000, 500):
        bar.advance(count)
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0] == f"[{'-' * BAR_WIDTH}]    0/2500 jobs   0%"
    assert frames[1] == f"[{'#' * 12}{'-' * 18}] 1000/2500 jobs  40%"
    assert frames[3] == f"[{'#' * BAR_WIDTH}] 2500/2500 jobs 100%\n"


def test_the_bar_draws_nothing_when_disabled() -> None:
    stream = io.StringIO()
    bar = ProgressBar.for_terminal(10, stream)  # a StringIO is no terminal
    bar.start()
    bar.advance(10)
    bar.close()
    assert not bar.enabled
    assert stream.getvalue() == ""
