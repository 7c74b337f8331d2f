"""Keys and worker tokens rotate under traffic and nobody is refused: real auth, job and worker processes.

Signing key: clients keep calling CreateJob and GetJob, logging in again as
their token nears its expiry, while (a) the new public key joins the job
service's JWT_PUBLIC_KEYS_DIR, (b) the auth service restarts with the new
private key, and (c) once every token of the old key has expired, the old
public key leaves. Worker token: a worker keeps reporting while the job
service's WORKER_TOKEN_FILE goes {old} -> {old, new} -> (the worker restarts,
presenting the new one) -> {new}. In neither may any call meet UNAUTHENTICATED;
the auth service being briefly unreachable while it restarts is UNAVAILABLE,
which clients retry.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_svc.tokens import TokenIssuer
from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from jobqueue.runtime.secrets import key_id
from tests.integration.jobservice import text
from tests.support.clients import bearer, error_info, mint_token
from tests.support.metrics import scrape
from tests.support.processes import ServiceProcess, free_port
from tests.support.system import System

#: Short, so the old key's tokens are all gone within the test: the shortest TOKEN_TTL_SECONDS allowed.
TTL_SECONDS = 60
LEEWAY_SECONDS = 2
#: A client logs in again once its token has less than this left, as a client that refreshes ahead of time does.
REFRESH_MARGIN = 20
CLIENTS = 6
PASSWORD = "correct horse battery"


@dataclass
class Call:
    """One call a client made: what, with the token of which key, when, and how it ended."""

    method: str
    kid: str
    at: float
    code: grpc.StatusCode
    details: str = ""


@dataclass
class Traffic:
    """Clients calling the services until told to stop, and every call they made."""

    auth_address: str
    job_address: str
    stop: threading.Event = field(default_factory=threading.Event)
    calls: list[Call] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> list[Call]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a client did not stop"
        return self.calls

    def _record(self, method: str, kid: str, code: grpc.StatusCode, details: str = "") -> None:
        with self.lock:
            self.calls.append(Call(method, kid, time.time(), code, details))

    def _client(self) -> None:
        email = f"rotate-{uuid.uuid4().hex[:12]}@example.com"
        with grpc.insecure_channel(self.auth_address) as auth_channel, grpc.insecure_channel(self.job_address) as jobs:
            auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
            stub = jobs_pb2_grpc.JobServiceStub(jobs)
            auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Rotating"), timeout=10)
            token, expires = "", 0.0
            while not self.stop.is_set():
                if expires - time.time() < REFRESH_MARGIN:
                    token, expires = self._login(auth, email, token, expires)
                kid = str(jwt.get_unverified_header(token).get("kid"))
                try:
                    job = stub.CreateJob(
                        jobs_pb2.CreateJobRequest(type="reverse_string", payload=text("rotate")),
                        metadata=bearer(token),
                        timeout=10,
                    ).job
                    self._record("CreateJob", kid, grpc.StatusCode.OK)
                    stub.GetJob(jobs_pb2.GetJobRequest(id=job.id), metadata=bearer(token), timeout=10)
                    self._record("GetJob", kid, grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    self._record("jobs", kid, error_info(error)[0], error.details() or "")
                self.stop.wait(0.1)

    def _login(self, auth: auth_pb2_grpc.AuthServiceStub, email: str, token: str, expires: float) -> tuple[str, float]:
        """A new token, or (the auth service restarting: UNAVAILABLE) the one held, to try again on the next call."""
        try:
            reply = auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=10)
        except grpc.RpcError as error:
            self._record("Login", "", error_info(error)[0], error.details() or "")
            if not token:
                time.sleep(0.2)
            return token, expires
        kid = str(jwt.get_unverified_header(reply.access_token).get("kid"))
        self._record("Login", kid, grpc.StatusCode.OK)
        return reply.access_token, float(reply.expires_at.seconds)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def place(path: Path, data: bytes) -> None:
    """Write ``path`` whole at once, as an operator's `cp` to a temporary name and `mv` would."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def log_lines(process: ServiceProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]


def wait_for_log(process: ServiceProcess, wanted: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> None:
    """Block until ``process`` logs a line ``wanted`` accepts."""
    deadline = time.monotonic() + timeout
    while not any(wanted(line) for line in log_lines(process)):
        assert time.monotonic() < deadline, f"no such log line after {timeout} s:\n{process.output()}"
        time.sleep(0.2)


def trusts(kids: list[str]) -> Callable[[dict[str, Any]], bool]:
    """A log line saying the job service now trusts exactly ``kids``."""
    return lambda line: line["msg"] in ("public keys loaded", "public keys changed") and line["loaded"] == sorted(kids)


@pytest.fixture
def system(service_env: dict[str, str], tmp_path: Path, purge_queues: None) -> Iterator[System]:
    """Processes started by each test (System's own environment: proxies, ports); stopped, cleanly, after."""
    running = System(service_env, tmp_path)
    yield running
    codes = running.stop()
    assert all(code == 0 for code in codes.values()), f"not every service stopped cleanly: {codes}"


def test_the_signing_key_rotates_under_traffic_with_nobody_logged_out(system: System, tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    old_kid, new_kid = key_id(old.public_key()), key_id(new.public_key())
    (tmp_path / "old.key").write_bytes(private_pem(old))
    (tmp_path / "new.key").write_bytes(private_pem(new))
    keys = tmp_path / "trusted-keys"
    keys.mkdir()
    place(keys / "old.pem", public_pem(old))
    ttl = {"TOKEN_TTL_SECONDS": str(TTL_SECONDS)}
    system.start_auth(JWT_PRIVATE_KEY_FILE=str(tmp_path / "old.key"), **ttl)
    jobs = system.start_jobs(JWT_PUBLIC_KEYS_DIR=str(keys), JWT_LEEWAY_SECONDS=str(LEEWAY_SECONDS))
    # A token of the old key that outlives the rotation, as one from an auth with a longer TTL would.
    long_lived = TokenIssuer(old, issuer="jobqueue-auth", audience="jobqueue", ttl_seconds=3600)
    kept = long_lived.issue(str(uuid.uuid4()), "kept@example.com").token

    traffic = Traffic(system.auth_address, system.job_address)
    traffic.start(CLIENTS)
    try:
        time.sleep(3)
        # (a) The job service trusts the new key as well, without a restart.
        place(keys / "new.pem", public_pem(new))
        wait_for_log(jobs, trusts([old_kid, new_kid]))

        # (b) The auth service signs with the new key from now on.
        assert system.auth is not None
        system.auth.stop()
        last_old_token = time.time()
        auth = system.start_auth(JWT_PRIVATE_KEY_FILE=str(tmp_path / "new.key"), **ttl)
        wait_for_log(auth, lambda line: line["msg"] == "signing tokens" and line["kid"] == new_kid)

        # (c) Once every token of the old key has expired (leeway included), it is retired.
        time.sleep(max(0.0, last_old_token + TTL_SECONDS + LEEWAY_SECONDS + 1 - time.time()))
        with grpc.insecure_channel(system.job_address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            missing = jobs_pb2.GetJobRequest(id=str(uuid.uuid4()))
            with pytest.raises(grpc.RpcError) as found:
                stub.GetJob(missing, metadata=bearer(kept), timeout=10)
            assert found.value.code() == grpc.StatusCode.NOT_FOUND  # past authentication: the key is trusted
            removed_at = time.time()
            (keys / "old.pem").unlink()
            wait_for_log(jobs, trusts([new_kid]))
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetJob(missing, metadata=bearer(kept), timeout=10)
            # Although the job service remembered the token as verified.
            assert error_info(refused.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")
        time.sleep(3)
    finally:
        calls = traffic.finish()

    refused_calls = [call for call in calls if call.code == grpc.StatusCode.UNAUTHENTICATED]
    assert refused_calls == []
    failed_job_calls = [call for call in calls if call.method != "Login" and call.code != grpc.StatusCode.OK]
    assert failed_job_calls == []
    assert {call.code for call in calls if call.method == "Login"} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    # The traffic did cross the rotation: calls with each key's tokens, and after the old key left, with the new.
    by_kid = {kid: sum(1 for call in calls if call.kid == kid and call.method != "Login") for kid in (old_kid, new_kid)}
    assert by_kid[old_kid] > 100, by_kid
    assert by_kid[new_kid] > 100, by_kid
    after_removal = [call for call in calls if call.at > removed_at and call.method != "Login"]
    assert len(after_removal) > 10 * CLIENTS
    assert {call.kid for call in after_removal} == {new_kid}


def test_the_worker_token_rotates_while_a_worker_keeps_reporting(
    system: System, tmp_path: Path, secrets_dir: Path
) -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    tokens = tmp_path / "worker-tokens"  # one file, shared by the job service and the worker
    place(tokens, f"{old}\n".encode())
    metrics_port = free_port()
    jobs = system.start_jobs(WORKER_TOKEN_FILE=str(tokens), METRICS_PORT=str(metrics_port))
    system.start_worker(WORKER_TOKEN_FILE=str(tokens))
    user = mint_token(secrets_dir)
    submitted: list[str] = []
    stop = threading.Event()

    def submit() -> None:
        with grpc.insecure_channel(system.job_address) as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            while not stop.is_set():
                request = jobs_pb2.CreateJobRequest(type="reverse_string", payload=text(f"job {len(submitted)}"))
                submitted.append(stub.CreateJob(request, metadata=bearer(user), timeout=10).job.id)
                stop.wait(0.05)

    submitter = threading.Thread(target=submit, daemon=True)
    submitter.start()
    try:
        time.sleep(2)
        place(tokens, f"{old}\n{new}\n".encode())  # the new token appended
        wait_for_log(jobs, lambda line: line["msg"] == "worker tokens changed" and line["loaded"] == 2)
        time.sleep(1)
        system.workers[0].stop()
        system.start_worker(WORKER_TOKEN_FILE=str(tokens))  # presents the last token of the file: the new one
        time.sleep(2)
        place(tokens, f"{new}\n".encode())  # the old one retired
        wait_for_log(jobs, lambda line: line["msg"] == "worker tokens changed" and line["loaded"] == 1)
        time.sleep(2)
    finally:
        stop.set()
        submitter.join(timeout=30)

    with grpc.insecure_channel(system.job_address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        deadline = time.monotonic() + 60
        pending = list(submitted)
        while pending and time.monotonic() < deadline:
            pending = [
                job_id
                for job_id in pending
                if stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), metadata=bearer(user), timeout=10).job.status
                != jobs_pb2.JOB_STATUS_COMPLETED
            ]
            time.sleep(0.2)
        assert pending == [], f"{len(pending)} of {len(submitted)} jobs not completed"
        assert len(submitted) > 100

        answers = {
            labels: value
            for (name, labels), value in scrape({"METRICS_PORT": str(metrics_port)}).items()
            if name == "grpc_server_handled_total" and dict(labels)["grpc_method"] in ("UpdateJob", "UpdateJobs")
        }
        assert {dict(labels)["grpc_code"] for labels, value in answers.items() if value} == {"OK"}, answers
        for worker in system.workers:
            assert "refused" not in worker.output(), worker.output()

        # The old token is retired: a report with it is refused now.
        report = jobs_pb2.UpdateJobsRequest(requests=[jobs_pb2.UpdateJobRequest(id=submitted[0])])
        with pytest.raises(grpc.RpcError) as refused:
            stub.UpdateJobs(report, metadata=bearer(old), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
