"""The stack in production mode (docker-compose.production.yml): TLS, a secret per service, own roles and users.

A project of its own comes up with throwaway secrets made here as an operator
would (scripts/certs.py's authority and certificates, an Ed25519 key pair, a
random worker token, a random password for every database role and broker
user), each file readable by the services' user only. Then the README's grpcurl
walkthrough runs over TLS (`-cacert` instead of `-plaintext`), as does the
Python client with `tls_credentials`; both jobs complete, so the workers'
reports reached the job service over mutual TLS. A plaintext client is refused.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jobqueue.client import JobStatus, connect_auth, connect_jobs, tls_credentials
from tests.compose.stack import Stack
from tests.support.processes import ROOT
from tests.support.readme import readme_block, run_grpcurl_walkthrough, wait_listed_completed

pytestmark = pytest.mark.timeout(1800)

#: The user every image runs as, who must be able to read the secret files.
SERVICE_UID = 10001
#: Every password docker-compose.production.yml asks for: production refuses the development defaults.
PASSWORDS = (
    "POSTGRES_PASSWORD",
    "AUTH_DATABASE_PASSWORD",
    "JOB_DATABASE_PASSWORD",
    "RABBITMQ_PASSWORD",
    "JOB_RABBITMQ_PASSWORD",
    "WORKER_RABBITMQ_PASSWORD",
)
APP_SERVICES = ("auth-service", "job-service", "worker-service", "web-service")


def make_secrets(folder: Path) -> None:
    """The files docker-compose.production.yml reads, made as its header says."""
    servers = {"auth-service": "auth-service", "job-service": "job-service", "worker-health": "worker-service"}
    for stem, name in servers.items():
        _certs(folder, "--server", stem, "--name", name, "--name", "localhost", "--ip", "127.0.0.1")
    _certs(folder, "--client", "worker")
    (folder / "ca.key").unlink()  # the authority's key stays with the operator, never near the services
    key = Ed25519PrivateKey.generate()
    (folder / "jwt.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "jwt.pub.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (folder / "worker-token").write_text(secrets.token_urlsafe(32))
    for path in folder.iterdir():
        os.chown(path, SERVICE_UID, SERVICE_UID)
        path.chmod(0o400)


def _certs(folder: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scripts.certs", str(folder), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def production(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    folder = tmp_path_factory.mktemp("production")
    secret_files = folder / "secrets"
    secret_files.mkdir()
    make_secrets(secret_files)
    # The CA certificate the clients on this host use: the mounted one is readable by the services only.
    ca = folder / "ca.pem"
    ca.write_bytes((secret_files / "ca.pem").read_bytes())
    environment = {"PRODUCTION_SECRETS_DIR": str(secret_files)}
    environment.update({name: secrets.token_urlsafe(18) for name in PASSWORDS})
    stack = Stack(folder, files=[ROOT / "docker-compose.production.yml"], environment=environment)
    try:
        stack.compose("up", "--wait", "--build", timeout=900)
        yield stack, ca
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--rmi", "local", "--timeout", "60")


def _user_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _over_tls(stack: Stack, ca: Path, text: str) -> str:
    """A README command as a user of the production stack runs it: TLS, verified with the CA, on its ports."""
    return (
        text.replace("-plaintext", f"-cacert {ca}")
        .replace("localhost:5001", stack.address("auth-service"))
        .replace("localhost:5002", stack.address("job-service"))
    )


def test_every_service_runs_in_production_mode_with_only_its_own_secrets(production: tuple[Stack, Path]) -> None:
    stack, _ = production
    mounted = {}
    for service in APP_SERVICES:
        container = stack.inspect(stack.containers(service)[0]["ID"])
        assert "APP_ENV=production" in container["Config"]["Env"], service
        mounted[service] = {
            m["Destination"] for m in container["Mounts"] if m["Destination"].startswith("/run/secrets")
        }
    assert "/run/secrets/jwt_private_key" in mounted["auth-service"]
    assert all("/run/secrets/jwt_private_key" not in mounted[s] for s in ("job-service", "worker-service"))
    assert mounted["web-service"] == {"/run/secrets/ca_cert"}  # a client of auth and jobs: their CA only
    assert "/run/secrets/worker_token" not in mounted["auth-service"]


def test_the_grpcurl_walkthrough_works_over_tls(production: tuple[Stack, Path]) -> None:
    stack, ca = production
    script = _over_tls(stack, ca, readme_block("grpcurl"))
    done, token = run_grpcurl_walkthrough(script, _user_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jobqueue.jobs.v1.JobService" in done.stdout
    list_jobs = _over_tls(
        stack,
        ca,
        'grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d \'{"page_size": 10}\' '
        "localhost:5002 jobqueue.jobs.v1.JobService/ListJobs",
    )
    jobs = wait_listed_completed(list_jobs, {**_user_env(), "TOKEN": token})
    assert ("fibonacci_calc", "55") in {(job["type"], job["result"]) for job in jobs}


def test_a_plaintext_client_is_refused(production: tuple[Stack, Path]) -> None:
    stack, _ = production
    for service in ("auth-service", "job-service"):
        done = subprocess.run(
            ["grpcurl", "-plaintext", "-max-time", "10", stack.address(service), "list"],
            env=_user_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, f"{service} answered in plaintext: {done.stdout}"


async def test_the_python_client_submits_and_waits_over_tls(production: tuple[Stack, Path]) -> None:
    stack, ca = production
    credentials = tls_credentials(ca)
    email, password = f"tls-{secrets.token_hex(4)}@example.com", "correct horse battery"
    async with connect_auth(stack.address("auth-service"), credentials=credentials) as auth:
        await auth.register(email, password, "Over TLS")
        token = await auth.login(email, password)
    async with connect_jobs(stack.address("job-service"), token=token, credentials=credentials) as jobs:
        job = await jobs.submit_and_wait("fibonacci_calc", 20, timeout=60)
    assert (job.status, job.result) == (JobStatus.COMPLETED, "6765")
