"""What a job may ask for, what it gets when it asks for nothing, and what a job type may be: the one copy
every service and worker reads.

The job service checks requests against these bounds (job_svc/rules.py) and
fills in the defaults; a queue message carries the job's timeout, and a worker
reading one without it (a message from before timeouts existed) falls back to
the same default.
"""

from __future__ import annotations

import re

#: Attempts a job gets when CreateJob leaves max_attempts at 0.
DEFAULT_MAX_ATTEMPTS = 3
#: Most attempts a job may ask for (and most a re-run may grant).
MAX_ATTEMPTS = 10
#: Seconds a handler may run when CreateJob leaves timeout_seconds at 0.
DEFAULT_TIMEOUT_SECONDS = 60
#: Longest timeout a job may ask for; RabbitMQ's consumer_timeout must outlast it (docker-compose.yml).
MAX_TIMEOUT_SECONDS = 3600

#: The shape of a job type's name; the jobs and job_types tables check the same.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
#: Longest summary of a job type.
MAX_SUMMARY_CHARS = 500
#: Largest payload schema of a job type, as compact JSON (UTF-8 bytes).
MAX_SCHEMA_BYTES = 64 << 10
