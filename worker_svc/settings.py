"""The worker service's configuration: a worker's (jobqueue.worker.settings), plus the demo types' switch."""

from __future__ import annotations

from dataclasses import dataclass

from jobqueue.runtime.settings import SettingsError, setting
from jobqueue.worker import settings as worker


@dataclass(frozen=True)
class Settings(worker.Settings):
    """Every setting of the worker service, with its default and meaning."""

    demo_job_types: bool = setting(
        False,
        "true adds the demo job types sleep and fail (worker_svc/demo.py); refused when APP_ENV=production",
    )

    def validate(self) -> None:
        """No demo types in production (said first: nothing else matters then), then a worker's checks."""
        if self.production and self.demo_job_types:
            raise SettingsError(
                "DEMO_JOB_TYPES: the demo job types (worker_svc/demo.py) are refused when APP_ENV=production; "
                "unset DEMO_JOB_TYPES"
            )
        super().validate()
