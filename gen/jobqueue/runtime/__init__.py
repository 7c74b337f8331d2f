"""Plumbing every Job Queue Processor process shares: settings, logs, errors, the gRPC server, health, secrets.

The services (auth_svc, job_svc) and the worker runtime (``jobqueue.worker``)
import it from here, so the worker SDK installs with the client library
(``pip install ./gen[worker]``) and needs nothing from the repository.
"""
