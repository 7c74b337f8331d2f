"""Worker settings: the documented defaults, and values that are refused at start."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from jobqueue.runtime.settings import SettingsError, load
from jobqueue.worker.settings import Settings
from tests.support.tls import PRODUCTION_SETTINGS


def test_defaults_are_the_documented_ones() -> None:
    settings = load(Settings, {})
    assert settings.rabbitmq_queue == "job_queue"
    assert settings.prefetch_count == 100
    assert settings.job_service_addr == "127.0.0.1:5002"
    assert (settings.worker_health_host, settings.worker_health_port) == ("0.0.0.0", 5003)
    assert settings.handler_processes == 1
    assert settings.shutdown_grace_seconds == 30.0


def test_values_come_from_the_environment() -> None:
    settings = load(Settings, {"PREFETCH_COUNT": "3", "WORKER_HEALTH_PORT": "0", "SHUTDOWN_GRACE_SECONDS": "2.5"})
    assert (settings.prefetch_count, settings.worker_health_port, settings.shutdown_grace_seconds) == (3, 0, 2.5)


@pytest.mark.parametrize(
    "environ",
    [
        {"PREFETCH_COUNT": "0"},
        {"PREFETCH_COUNT": "ten"},
        {"HANDLER_PROCESSES": "0"},
        {"WORKER_HEALTH_PORT": "70000"},
        {"REPORT_TIMEOUT_SECONDS": "0"},
        {"SHUTDOWN_GRACE_SECONDS": "-1"},
        {"LOG_LEVEL": "LOUD"},
        {"APP_ENV": "prod"},  # accepted (as development) before the settings base checked it for every service
    ],
)
def test_bad_values_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load(Settings, environ)


def test_token_inline_wins_over_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert load(Settings, {"WORKER_TOKEN": "inline", "WORKER_TOKEN_FILE": str(token_file)}).token() == b"inline"
    assert load(Settings, {"WORKER_TOKEN_FILE": str(token_file)}).token() == b"from-file"


def test_token_is_required_in_production(tmp_path: Path) -> None:
    settings = load(Settings, {**PRODUCTION_SETTINGS, "DEV_SECRETS_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="WORKER_TOKEN"):
        settings.token()


def test_token_falls_back_to_the_shared_dev_secret(tmp_path: Path) -> None:
    token = load(Settings, {"DEV_SECRETS_DIR": str(tmp_path)}).token()
    assert token
    assert token == (tmp_path / "worker-token").read_bytes().strip()


@pytest.mark.parametrize("token", ["has space", "tök"])
def test_token_must_fit_in_grpc_metadata(token: str) -> None:
    with pytest.raises(SettingsError, match="ASCII"):
        load(Settings, {"WORKER_TOKEN": token}).token()


APP_TYPES = ("fibonacci_calc", "reverse_string", "uppercase_text")


@pytest.mark.parametrize(
    ("job_types", "served"),
    [
        ("", list(APP_TYPES)),
        ("fibonacci_calc", ["fibonacci_calc"]),
        (" uppercase_text, reverse_string ,", ["reverse_string", "uppercase_text"]),
        ("reverse_string,reverse_string", ["reverse_string"]),
    ],
)
def test_job_types_chooses_which_of_the_apps_types_the_worker_serves(job_types: str, served: list[str]) -> None:
    assert load(Settings, {"JOB_TYPES": job_types}).served(APP_TYPES) == served


def test_job_types_naming_a_type_the_app_lacks_refuses_to_start_saying_which() -> None:
    settings = load(Settings, {"JOB_TYPES": "reverse_string,fibonaci_calc,sleep"})
    with pytest.raises(SettingsError, match=r"JOB_TYPES .*: fibonaci_calc, sleep \(it has fibonacci_calc, "):
        settings.served(APP_TYPES)


def test_a_worker_with_no_job_types_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="no job types"):
        load(Settings, {}).served([])


def test_the_worker_id_is_the_setting_else_host_and_pid() -> None:
    assert load(Settings, {}).identity() == f"{socket.gethostname()}/{os.getpid()}"
    assert load(Settings, {"WORKER_ID": "pod-7 (eu-west)"}).identity() == "pod-7 (eu-west)"


@pytest.mark.parametrize("worker_id", ["w" * 201, "line\nbreak", "nul\x00"])
def test_a_worker_id_the_job_service_would_refuse_is_refused_at_start(worker_id: str) -> None:
    with pytest.raises(SettingsError, match="WORKER_ID"):
        load(Settings, {"WORKER_ID": worker_id})
