"""The settings every service shares (jobqueue.runtime.settings): alike in every service, never showing a secret."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from dataclasses import dataclass

import pytest

from auth_svc.settings import AuthSettings
from job_svc.settings import Settings as JobSettings
from jobqueue.runtime import logs
from jobqueue.runtime.settings import ServiceSettings, SettingsError, describe, load, setting
from jobqueue.worker.settings import Settings as WorkerSettings
from tests.support.tls import PRODUCTION_SETTINGS

SERVICES = [AuthSettings, JobSettings, WorkerSettings]


@pytest.mark.parametrize("settings", SERVICES)
@pytest.mark.parametrize("app_env", ["prod", "Production", "dev", ""])
def test_every_service_refuses_an_app_env_it_does_not_know(settings: type[ServiceSettings], app_env: str) -> None:
    # A typo must not quietly fall back to development's generated secrets.
    with pytest.raises(SettingsError) as caught:
        load(settings, {"APP_ENV": app_env})
    assert str(caught.value) == f"APP_ENV={app_env!r} must be one of development, production"


@pytest.mark.parametrize("settings", SERVICES)
def test_every_service_knows_both_app_envs(settings: type[ServiceSettings]) -> None:
    assert not load(settings, {"APP_ENV": "development"}).production
    assert load(settings, {**PRODUCTION_SETTINGS, "BCRYPT_ROUNDS": "12"}).production


@pytest.mark.parametrize("settings", SERVICES)
@pytest.mark.parametrize("level", ["LOUD", "WARN", "NOTSET", "10"])
def test_every_service_refuses_a_log_level_it_does_not_know(settings: type[ServiceSettings], level: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(settings, {"LOG_LEVEL": level})
    assert (
        str(caught.value)
        == f"LOG_LEVEL={level!r} is not a log level (use one of DEBUG, INFO, WARNING, ERROR, CRITICAL)"
    )


@pytest.mark.parametrize("settings", SERVICES)
@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "ERROR", "critical"])
def test_every_service_takes_the_log_levels(settings: type[ServiceSettings], level: str) -> None:
    assert load(settings, {"LOG_LEVEL": level}).log_level == level


#: (settings, the secret settings among its fields, the URL settings among its fields)
SECRETS = [
    (AuthSettings, {"JWT_PRIVATE_KEY"}, {"DATABASE_URL"}),
    (JobSettings, {"WORKER_TOKEN"}, {"DATABASE_URL", "RABBITMQ_URL"}),
    (WorkerSettings, {"WORKER_TOKEN"}, {"RABBITMQ_URL"}),
]


@pytest.mark.parametrize(("settings", "secrets", "urls"), SECRETS)
def test_no_secret_and_no_url_password_shows_in_repr_or_the_logged_settings(
    settings: type[ServiceSettings], secrets: set[str], urls: set[str]
) -> None:
    environ = {name: f"hunter2-{name}" for name in secrets}
    environ.update({name: f"scheme://svc:hunter2-{name}@db.example:1234/x" for name in urls})
    loaded = load(settings, environ)
    for shown in (repr(loaded), str(loaded), json.dumps(loaded.masked())):
        assert "hunter2" not in shown
        assert shown.count("scheme://svc:***@db.example:1234/x") == len(urls)
    for name in secrets:
        assert loaded.masked()[name.lower()] == "***"
        assert getattr(loaded, name.lower()) == f"hunter2-{name}"  # the service itself still reads the value
    assert repr(loaded).startswith(f"{settings.__name__}(app_env='development', ")


@pytest.mark.parametrize(("settings", "secrets", "urls"), SECRETS)
def test_every_secret_is_declared_as_one(settings: type[ServiceSettings], secrets: set[str], urls: set[str]) -> None:
    """The table above is the services' whole list: a new token or key must be declared secret=True."""
    declared = {field.name.upper() for field in dataclasses.fields(settings) if field.metadata.get("secret")}
    assert declared == secrets
    suspicious = {
        field.name.upper()
        for field in dataclasses.fields(settings)
        if any(word in field.name for word in ("token", "private", "password", "secret"))
        and not field.name.endswith(("_file", "_dir", "_seconds"))
    }
    assert suspicious <= secrets


def test_a_settings_class_cannot_forget_to_mask() -> None:
    # No repr=False here: the base still decides what the repr shows.
    @dataclass(frozen=True)
    class Forgetful(ServiceSettings):
        api_key: str = setting("", "a secret", secret=True)

    assert "sesame" not in repr(load(Forgetful, {"API_KEY": "sesame"}))


def test_an_empty_secret_is_shown_as_empty() -> None:
    # So an operator can tell "not configured" from "configured" at a glance.
    assert load(WorkerSettings, {}).masked()["worker_token"] == ""


def test_a_url_without_a_password_is_shown_as_it_is() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/jobqueue"
    assert load(JobSettings, {"DATABASE_URL": url}).masked()["database_url"] == url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("lost postgresql://app:s%40cret@db/jobs, retrying", "lost postgresql://app:***@db/jobs, retrying"),
        ("two: amqp://a:b@h/ and amqp://c:d@h/", "two: amqp://a:***@h/ and amqp://c:***@h/"),
        ("no password: amqp://guest@h/", "no password: amqp://guest@h/"),
        ("host:port only 127.0.0.1:5002", "host:port only 127.0.0.1:5002"),
    ],
)
def test_log_lines_never_show_a_url_password(text: str, shown: str) -> None:
    assert logs.hide_passwords(text) == shown
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("demo_svc"))
    record = logging.LogRecord("demo", logging.WARNING, __file__, 1, "%s", (text,), None)
    record.url = text
    handler.emit(record)
    line = json.loads(stream.getvalue())
    assert (line["msg"], line["url"]) == (shown, shown)


@pytest.mark.parametrize("settings", SERVICES)
def test_help_lists_every_setting(settings: type[ServiceSettings]) -> None:
    text = describe(settings)
    for field in dataclasses.fields(settings):
        assert f"  {field.name.upper()} " in text


def test_added_fields_appear_on_every_line_unless_the_line_sets_its_own() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("demo_svc"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logs.add_fields(worker_id="host-a/1")
        logging.getLogger("demo.child").warning("consuming", extra={"queues": ["q"]})
        logging.getLogger("demo").warning("explicit", extra={"worker_id": "other"})
    finally:
        root.removeHandler(handler)
        for other in root.handlers:  # pytest's own capture handlers got the filter too
            other.filters = [f for f in other.filters if not isinstance(f, logs._Fields)]
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["msg"], first["worker_id"], first["queues"]) == ("consuming", "host-a/1", ["q"])
    assert second["worker_id"] == "other"
