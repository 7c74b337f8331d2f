# The images of Job Queue Processor, from one file. Build context: the repository root.
#
#   docker compose build                                      # the four services', as docker-compose.yml names them
#   docker build --target job-service    -t jobqueue-job .    # or one at a time:
#   docker build --target auth-service   -t jobqueue-auth .   #   auth-service, job-service,
#   docker build --target worker-service -t jobqueue-worker . #   worker-service, migrate
#   docker build --target worker-base -t jobqueue-worker-base .  # what your own worker's image is built FROM
#   docker build --target web-service -t jobqueue-web .        # the web dashboard
#
# Stages:
#   build    the one stage that installs anything: a virtual environment in /opt/jobqueue holding
#            requirements.txt and the client library, then its installers removed. Only that
#            folder leaves this stage.
#   runtime  the base, the service user, that environment and common/: every image starts with
#            these same layers, so the dependencies are stored, pushed and pulled once for all.
#   auth-service, job-service, web-service, migrate
#            runtime + the service's own package + how to run and probe it.
#   worker-base
#            runtime + how to run and probe a worker: `python -m jobqueue.worker MODULE:ATTRIBUTE`.
#            A worker of your own is this + your package + CMD ["yourpackage:worker"]
#            (examples/Dockerfile); worker-service is this + worker_svc, the built-in types.
#
# Configuration comes from the environment at run time (see .env.example); no secret is baked in:
# in development the services generate theirs on first start. docs/containers.md says what the
# images contain, their size budget and how to move the base.

# The base, pinned by version and by the digest of its multi-architecture index, so that a rebuild
# gets the same bytes until someone moves it on purpose. Overridable for a mirror or a rebuilt base.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/jobqueue
# Dependencies before code: this layer is rebuilt only when requirements.txt changes. It is the lock
# (`make lock`): every package, transitive ones included, pinned with the sha256 of its files, and
# --require-hashes installs no other file and no package it does not pin. --no-build-isolation: pip
# fetches no build backend of its own, unchecked (./gen is built with the setuptools locked there).
COPY requirements.txt /tmp/requirements.txt
RUN /opt/jobqueue/bin/pip install --no-cache-dir --require-hashes --no-build-isolation -r /tmp/requirements.txt
# The client library with its worker and tracing extras (the SDK every worker image runs): their dependencies
# are pinned in requirements.txt, installed above, and --no-index lets pip take nothing else, so
# this fails if the lock does not satisfy them; `pip check` proves the rest. It is built with that
# setuptools too. Then pip and setuptools go: nothing installs anything at run time.
COPY gen/ /tmp/gen/
RUN /opt/jobqueue/bin/pip install --no-cache-dir --no-index --no-build-isolation "/tmp/gen[worker,tracing]" \
    && /opt/jobqueue/bin/pip check \
    && /opt/jobqueue/bin/pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
# The code is owned by root and read-only to the service user, so no .pyc can be written next to
# it (the dependencies' .pyc files were compiled at install time).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/jobqueue/bin:$PATH
WORKDIR /app
# The same UID in every image. In compose each service keeps its development secrets in a volume
# of its own, mounted on var/secrets/<service>, which the one-shot `dev-secrets` fills. Docker seeds
# an empty named volume from the image's directory (owner included), so those folders must exist
# here owned by that user, or the volumes come up root-owned and nothing can be written to them.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/var/secrets/auth /app/var/secrets/jobs /app/var/secrets/worker \
    && chown -R app:app /app/var \
    && chmod -R 0700 /app/var/secrets
COPY --from=build /opt/jobqueue /opt/jobqueue
COPY common/ ./common/
# Numeric, so a runtime can verify "not root" without reading /etc/passwd.
USER 10001:10001

# Each server's health check is grpc.health.v1 through gen/jobqueue/runtime/health_check.py, the probe
# docker-compose.yml runs too: exit 0 only while SERVING, on the port the service's own setting
# names (so it follows an overridden port), and a service reports SERVING only while its
# dependencies answer.

FROM runtime AS auth-service
COPY auth_svc/ ./auth_svc/
EXPOSE 5001 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --start-interval=1s --retries=3 \
    CMD ["python", "-m", "jobqueue.runtime.health_check", "AUTH_PORT", "5001"]
CMD ["python", "-m", "auth_svc"]

FROM runtime AS job-service
COPY job_svc/ ./job_svc/
EXPOSE 5002 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --start-interval=1s --retries=3 \
    CMD ["python", "-m", "jobqueue.runtime.health_check", "JOB_PORT", "5002"]
CMD ["python", "-m", "job_svc"]

# The base of every worker image, the built-in types' and yours: it runs the Worker its command
# names (`docker run IMAGE --help` lists the settings; with no command it says what to name).
# ENTRYPOINT, not CMD, so that a worker image's command is only that MODULE:ATTRIBUTE.
FROM runtime AS worker-base
# Health and metrics only: a worker serves no API, and compose publishes no port for it, so any
# number of copies run side by side.
EXPOSE 5003 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --start-interval=1s --retries=3 \
    CMD ["python", "-m", "jobqueue.runtime.health_check", "WORKER_HEALTH_PORT", "5003"]
ENTRYPOINT ["python", "-m", "jobqueue.worker"]

# The built-in types, run by worker_svc rather than by the SDK's entry point: its settings choose
# the demo types too. Its command is `python -m worker_svc`, as the other images' are theirs.
FROM worker-base AS worker-service
COPY worker_svc/ ./worker_svc/
ENTRYPOINT []
CMD ["python", "-m", "worker_svc"]

# The web dashboard: a client of auth and jobs like any other (it holds no secret of theirs), serving
# HTTP. Its probe is GET /healthz on the port WEB_PORT names; it has no /metrics.
FROM runtime AS web-service
COPY web_svc/ ./web_svc/
EXPOSE 5080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --start-interval=1s --retries=3 \
    CMD ["python", "-m", "web_svc.probe"]
CMD ["python", "-m", "web_svc"]

# The one-shot schema migration: applies migrations/*.sql and exits. It reads only DATABASE_URL.
FROM runtime AS migrate
COPY migrations/ ./migrations/
# Not a server: its exit code is its health (compose waits for service_completed_successfully).
HEALTHCHECK NONE
CMD ["python", "-m", "migrations"]
