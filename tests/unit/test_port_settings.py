"""Every port a service listens on is checked at start, the same way, whichever service reads it."""

from __future__ import annotations

import pytest

from auth_svc.settings import AuthSettings
from job_svc.settings import Settings as JobSettings
from jobqueue.runtime.settings import SettingsError, load
from jobqueue.worker.settings import Settings as WorkerSettings

PORTS = [
    (AuthSettings, "AUTH_PORT"),
    (AuthSettings, "METRICS_PORT"),
    (JobSettings, "JOB_PORT"),
    (JobSettings, "METRICS_PORT"),
    (WorkerSettings, "WORKER_HEALTH_PORT"),
    (WorkerSettings, "METRICS_PORT"),
]


@pytest.mark.parametrize(("settings", "variable"), PORTS)
@pytest.mark.parametrize("value", ["-1", "65536"])
def test_a_port_out_of_range_is_refused_by_name(settings: type, variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}={value} is not a TCP port \\(0 to 65535\\)$"):
        load(settings, {variable: value})


@pytest.mark.parametrize(("settings", "variable"), PORTS)
@pytest.mark.parametrize("value", ["0", "65535"])
def test_the_ends_of_the_range_are_ports(settings: type, variable: str, value: str) -> None:
    assert getattr(load(settings, {variable: value}), variable.lower()) == int(value)
