"""TLS settings and helpers: production refuses each missing piece by name; files that do not fit fail at start.

What runs over TLS for real (services, grpcurl, proxies in front of RabbitMQ and
PostgreSQL) is in tests/integration/test_tls.py; here, the rules alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from auth_svc.settings import AuthSettings
from job_svc.auth import Authenticator
from job_svc.errors import CertificateRequired, WorkersOnly
from job_svc.settings import Settings as JobSettings
from jobqueue.client import tls_credentials
from jobqueue.runtime.health_check import tls_of
from jobqueue.runtime.secrets import PUBLIC_KEY, WORKER_TOKEN, ensure_dev_secrets, public_keys
from jobqueue.runtime.settings import ServiceSettings, SettingsError, load, refuse_default_credentials
from jobqueue.runtime.tls import TlsServerSettings
from jobqueue.worker.settings import Settings as WorkerSettings
from tests.support.clients import bearer, mint_token
from tests.support.tls import PRODUCTION_SETTINGS, Certificates, make_certificates

if TYPE_CHECKING:
    import certs  # scripts/ is not a package: see tests/unit/test_run_system.py
else:
    from scripts import certs

SERVICES: list[type[TlsServerSettings]] = [AuthSettings, JobSettings, WorkerSettings]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def without(name: str) -> dict[str, str]:
    return {key: value for key, value in PRODUCTION_SETTINGS.items() if key != name}


@pytest.mark.parametrize("settings", SERVICES)
def test_production_starts_with_every_piece(settings: type[ServiceSettings]) -> None:
    assert load(settings, PRODUCTION_SETTINGS).production


@pytest.mark.parametrize("settings", SERVICES)
def test_production_refuses_a_plaintext_listener(settings: type[TlsServerSettings]) -> None:
    plaintext = {k: v for k, v in PRODUCTION_SETTINGS.items() if k not in ("TLS_CERT_FILE", "TLS_KEY_FILE")}
    with pytest.raises(SettingsError, match=r"^TLS_CERT_FILE and TLS_KEY_FILE must be set when APP_ENV=production"):
        load(settings, plaintext)
    assert not load(settings, {**plaintext, "APP_ENV": "development"}).tls


@pytest.mark.parametrize("settings", SERVICES)
@pytest.mark.parametrize("given", ["TLS_CERT_FILE", "TLS_KEY_FILE"])
def test_a_listener_is_never_half_configured(settings: type[TlsServerSettings], given: str) -> None:
    for app_env in ("development", "production"):
        environ = {k: v for k, v in PRODUCTION_SETTINGS.items() if k not in ("TLS_CERT_FILE", "TLS_KEY_FILE")}
        environ["APP_ENV"] = app_env
        with pytest.raises(SettingsError, match=r"^set TLS_CERT_FILE and TLS_KEY_FILE together, or neither"):
            load(settings, {**environ, given: "x.pem"})


def test_production_refuses_a_worker_that_would_send_its_token_in_clear_text() -> None:
    with pytest.raises(SettingsError, match=r"^JOB_SERVICE_CA_FILE \(or JOB_SERVICE_TLS=true\) must be set"):
        load(WorkerSettings, without("JOB_SERVICE_CA_FILE"))
    assert load(WorkerSettings, {**without("JOB_SERVICE_CA_FILE"), "JOB_SERVICE_TLS": "true"}).job_service_tls


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        (AuthSettings, "DATABASE_URL"),
        (JobSettings, "DATABASE_URL"),
        (JobSettings, "RABBITMQ_URL"),
        (WorkerSettings, "RABBITMQ_URL"),
    ],
)
@pytest.mark.parametrize(
    ("credentials", "refusal"),
    [
        ("", "must name a user of its own"),
        ("guest:guest@", "must name a user of its own"),
        ("guest:Xy7-long-and-random@", "must name a user of its own"),
        ("jobqueue@", "has no password"),
        ("jobqueue:@", "has no password"),
        ("jobqueue:jobqueue-dev@", "has a default password"),
        ("postgres:postgres@", "has a default password"),
        ("jobqueue:jobqueue@", "has a default password"),
        ("jobqueue:gu%65st@", "has a default password"),  # percent-encoded "guest"
    ],
)
def test_production_refuses_default_broker_and_database_credentials(
    settings: type[ServiceSettings], variable: str, credentials: str, refusal: str
) -> None:
    scheme = "postgresql" if variable == "DATABASE_URL" else "amqp"
    with pytest.raises(SettingsError, match=f"^{variable} {refusal}") as caught:
        load(settings, {**PRODUCTION_SETTINGS, variable: f"{scheme}://{credentials}host.example:1234/db"})
    assert "jobqueue-dev" not in str(caught.value)  # a password is never quoted
    # Development takes the defaults (make run and the compose development stack use them).
    load(settings, {**PRODUCTION_SETTINGS, "APP_ENV": "development", variable: f"{scheme}://{credentials}h:1/db"})


def test_a_database_user_with_a_client_certificate_needs_no_password() -> None:
    refuse_default_credentials("DATABASE_URL", "postgresql://jobqueue@db/jobqueue?sslmode=verify-full&sslcert=c.pem")
    with pytest.raises(SettingsError, match="has no password"):
        refuse_default_credentials("DATABASE_URL", "postgresql://jobqueue@db/jobqueue?sslmode=verify-full")


@pytest.mark.parametrize("settings", [JobSettings, WorkerSettings])
def test_broker_tls_options_must_be_ones_aiormq_reads(settings: type[ServiceSettings]) -> None:
    url = "amqps://jobqueue:Xy7-long-and-random@mq:5671/"
    with pytest.raises(SettingsError, match=r"^RABBITMQ_URL: the query key ca_certs= is not read; use cafile="):
        load(settings, {"RABBITMQ_URL": f"{url}?ca_certs=ca.pem"})
    with pytest.raises(SettingsError, match=r"^RABBITMQ_URL sets cafile but is not amqps:// \(no TLS\)"):
        load(settings, {"RABBITMQ_URL": "amqp://guest:guest@mq:5672/?cafile=ca.pem"})
    with pytest.raises(SettingsError, match="no_verify_ssl is refused when APP_ENV=production"):
        load(settings, {**PRODUCTION_SETTINGS, "RABBITMQ_URL": f"{url}?no_verify_ssl=1"})
    assert load(settings, {"RABBITMQ_URL": f"{url}?no_verify_ssl=1"}).rabbitmq_url  # type: ignore[attr-defined]


def test_the_token_ttl_and_the_worker_token_stay_bounded_in_production(tmp_path: Path) -> None:
    # Both were bounded before TLS came; checked again here with everything else production needs.
    with pytest.raises(SettingsError, match="TOKEN_TTL_SECONDS=86401 must be between 60 and 86400"):
        load(AuthSettings, {**PRODUCTION_SETTINGS, "TOKEN_TTL_SECONDS": "86401"})
    short = tmp_path / "token"
    short.write_text("a" * 31)
    for settings in (JobSettings, WorkerSettings):
        loaded: Any = load(settings, {**PRODUCTION_SETTINGS, "WORKER_TOKEN_FILE": str(short)})
        with pytest.raises(SettingsError, match="holds a token of 31 characters"):
            loaded.worker_tokens() if settings is JobSettings else loaded.token()


def test_certificate_files_that_do_not_fit_stop_the_start_naming_the_variable(
    files: Certificates, tmp_path: Path
) -> None:
    good = {"TLS_CERT_FILE": str(files.server_cert), "TLS_KEY_FILE": str(files.server_key)}
    assert isinstance(load(AuthSettings, good).server_credentials(), grpc.ServerCredentials)
    cases = {
        "TLS_KEY_FILE is not the key of the (first) certificate in TLS_CERT_FILE": {
            **good,
            "TLS_KEY_FILE": str(files.worker_key),
        },
        "TLS_CERT_FILE='/nonexistent.pem' cannot be read": {**good, "TLS_CERT_FILE": "/nonexistent.pem"},
        "TLS_CERT_FILE holds no PEM certificate": {**good, "TLS_CERT_FILE": str(files.server_key)},
        "TLS_KEY_FILE holds no unencrypted PEM private key": {**good, "TLS_KEY_FILE": str(files.server_cert)},
    }
    for message, environ in cases.items():
        with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load(AuthSettings, environ).server_credentials()
    with pytest.raises(SettingsError, match="TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE"):
        load(JobSettings, {"TLS_CLIENT_CA_FILE": str(files.ca)})
    assert isinstance(
        load(JobSettings, {**good, "TLS_CLIENT_CA_FILE": str(files.ca)}).worker_credentials(), grpc.ServerCredentials
    )


def test_the_worker_reads_its_client_certificate_and_the_job_services_ca(files: Certificates) -> None:
    mutual = {
        "JOB_SERVICE_CA_FILE": str(files.ca),
        "WORKER_TLS_CERT_FILE": str(files.worker_cert),
        "WORKER_TLS_KEY_FILE": str(files.worker_key),
    }
    assert isinstance(load(WorkerSettings, mutual).job_service_credentials(), grpc.ChannelCredentials)
    assert load(WorkerSettings, {}).job_service_credentials() is None
    with pytest.raises(SettingsError, match="WORKER_TLS_KEY_FILE is not the key of the"):
        load(WorkerSettings, {**mutual, "WORKER_TLS_KEY_FILE": str(files.server_key)}).job_service_credentials()
    with pytest.raises(SettingsError, match="WORKER_TLS_CERT_FILE needs TLS to the job service"):
        load(WorkerSettings, {k: v for k, v in mutual.items() if k != "JOB_SERVICE_CA_FILE"})
    with pytest.raises(SettingsError, match="set WORKER_TLS_CERT_FILE and WORKER_TLS_KEY_FILE together"):
        load(WorkerSettings, {k: v for k, v in mutual.items() if k != "WORKER_TLS_KEY_FILE"})


def test_the_health_probe_follows_the_services_certificate(files: Certificates) -> None:
    assert tls_of({}) is None
    tls = tls_of(files.server_env())
    assert tls is not None
    assert tls[1] == (("grpc.ssl_target_name_override", "localhost"),)


def test_the_client_library_builds_tls_credentials(files: Certificates) -> None:
    assert isinstance(tls_credentials(files.ca), grpc.ChannelCredentials)
    assert isinstance(tls_credentials(), grpc.ChannelCredentials)  # the system's CAs
    both = tls_credentials(files.ca, cert_file=files.worker_cert, key_file=files.worker_key)
    assert isinstance(both, grpc.ChannelCredentials)
    with pytest.raises(ValueError, match="together"):
        tls_credentials(files.ca, cert_file=files.worker_cert)


def test_reports_without_a_client_certificate_are_refused_before_the_token_is_read(tmp_path: Path) -> None:
    secrets = ensure_dev_secrets(tmp_path)
    worker = bearer((secrets / WORKER_TOKEN).read_text().strip())

    def checker(required: bool) -> Authenticator:
        return Authenticator(
            keys=lambda: public_keys((secrets / PUBLIC_KEY).read_bytes(), "the dev key"),
            worker_tokens=lambda: frozenset({(secrets / WORKER_TOKEN).read_bytes().strip()}),
            issuer="jobqueue-auth",
            audience="jobqueue",
            leeway_seconds=0,
            worker_certificates=required,
        )

    required = checker(True)
    with pytest.raises(CertificateRequired):
        required.worker(worker, certified=lambda: False)
    required.worker(worker, certified=lambda: True)
    with pytest.raises(WorkersOnly):  # a certificate does not make a user's token a worker's
        required.worker(bearer(mint_token(secrets)), certified=lambda: True)
    checker(False).worker(worker)  # without TLS_CLIENT_CA_FILE the token alone, as before


def test_the_certificate_tool_keeps_one_authority_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert certs.main([str(out), "--server", "job-service", "--name", "job-service", "--ip", "127.0.0.1"]) == 0
    authority = (out / "ca.pem").read_bytes()
    assert certs.main([str(out), "--client", "worker"]) == 0
    assert (out / "ca.pem").read_bytes() == authority, "a second run made a second CA"
    assert sorted(path.name for path in out.iterdir()) == [
        "ca.key",
        "ca.pem",
        "job-service.key",
        "job-service.pem",
        "worker.key",
        "worker.pem",
    ]
    assert (out / "worker.key").stat().st_mode & 0o077 == 0
    assert certs.main([str(out), "--client", "worker"]) == 1  # exists: delete it to issue it again
    with pytest.raises(SystemExit):
        certs.main([str(out), "--name", "lonely"])  # a name without --server
