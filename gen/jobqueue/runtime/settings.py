"""Reading configuration from the environment, once, at start.

Each service declares its settings as a frozen dataclass built on
``ServiceSettings`` whose fields carry a default and a one-line doc
(``setting(...)``); ``load(cls)`` fills it from the environment and fails fast,
naming the variable, when a value does not parse or is refused.

What every service reads is checked here, the same way for all: APP_ENV
(development or production, so a typo such as ``prod`` cannot fall back to
development's generated secrets), LOG_LEVEL, and every field declared with
``port=True``; with APP_ENV=production, every URL declared with
``credentials=True`` must carry credentials of its own, not none or a well-known
default. A settings object never shows a secret: fields declared with
``secret=True`` and the password of any URL appear as ``***`` in its repr and
in ``masked()``, which is what the start-up log line prints.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from jobqueue.runtime.logs import hide_passwords

T = TypeVar("T")

APP_ENVS = ("development", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: What a secret is shown as (a URL's password too: see jobqueue.runtime.logs.hide_passwords).
MASK = "***"
#: Credentials that ship as defaults (RabbitMQ's guest, PostgreSQL's superuser, the compose development
#: database password): production refuses a URL with one of these as its user or password.
DEFAULT_USERS = frozenset({"guest"})
DEFAULT_PASSWORDS = frozenset({"guest", "postgres", "jobqueue-dev", "password", "secret", "changeme"})


class SettingsError(ValueError):
    """Raised at start when an environment variable holds a value that does not parse or is refused."""


def setting(
    default: Any,
    doc: str,
    *,
    env: str | None = None,
    port: bool = False,
    secret: bool = False,
    credentials: bool = False,
) -> Any:
    """Declare one setting: its default, what it means, and (if not the field name upper-cased) its variable.

    ``port``: checked to be a TCP port (0 to 65535). ``secret``: never shown, only ``***``.
    ``credentials``: a URL that, with APP_ENV=production, must name a user and password of its own.
    """
    metadata = {"doc": doc, "env": env, "port": port, "secret": secret, "credentials": credentials}
    return dataclasses.field(default=default, metadata=metadata)


def env_name(field: dataclasses.Field[Any]) -> str:
    """The environment variable a settings field is read from."""
    return str(field.metadata.get("env") or field.name.upper())


@dataclass(frozen=True)
class ServiceSettings:
    """What every service reads; each service's settings class adds its own fields and ``validate()``."""

    app_env: str = setting(
        "development", "development or production; production refuses to run without configured secrets"
    )
    log_level: str = setting("INFO", "least severe level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    dev_secrets_dir: str = setting(
        "var/secrets", "outside production, where missing secrets are generated once and shared by the services"
    )
    # OpenTelemetry's own variables (jobqueue/runtime/tracing.py): these decide whether the process traces;
    # the SDK reads the others (endpoint, sampler, batching, service name) itself.
    otel_traces_exporter: str = setting(
        "", "empty or none: no tracing at all; otlp (and/or console, comma-separated): trace and export there"
    )
    otel_exporter_otlp_protocol: str = setting("grpc", "how the otlp exporter sends spans: grpc (the one installed)")
    otel_sdk_disabled: bool = setting(False, "true: no tracing, whatever OTEL_TRACES_EXPORTER says")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # @dataclass gives a class a __repr__ that shows every value unless the class defines its
        # own; handing each subclass this one before its decorator runs means no settings class
        # can leak a secret into a log or a traceback by forgetting `repr=False`.
        cls.__repr__ = ServiceSettings.__repr__  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        if self.app_env not in APP_ENVS:
            raise SettingsError(f"APP_ENV={self.app_env!r} must be one of {', '.join(APP_ENVS)}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL={self.log_level!r} is not a log level (use one of {', '.join(LOG_LEVELS)})")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            # 0 is allowed: the service then asks the OS for a free port (tests do), or, for
            # METRICS_PORT, serves no metrics.
            if field.metadata.get("port") and not 0 <= value <= 65_535:
                raise SettingsError(f"{env_name(field)}={value} is not a TCP port (0 to 65535)")
        self.validate()
        if self.production:
            for field in dataclasses.fields(self):
                if field.metadata.get("credentials"):
                    refuse_default_credentials(env_name(field), getattr(self, field.name))

    def validate(self) -> None:
        """A service's own checks, run after the common ones; raises SettingsError."""

    @property
    def production(self) -> bool:
        """Whether APP_ENV=production."""
        return self.app_env == "production"

    def masked(self) -> dict[str, Any]:
        """Every setting by field name, secrets and URL passwords shown as ``***``: safe to log."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata.get("secret") and value:
                value = MASK
            elif isinstance(value, str):
                value = hide_passwords(value)
            values[field.name] = value
        return values

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.masked().items())
        return f"{type(self).__name__}({shown})"


def refuse_default_credentials(variable: str, url: str) -> None:
    """Raise SettingsError unless ``url`` names a user and a password that are not well-known defaults.

    A URL without a user means the client's default one (aio-pika logs in as guest:guest). A
    PostgreSQL URL authenticating with a client certificate (``sslcert=``) needs no password.
    The message never quotes the password.
    """
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if not user or user in DEFAULT_USERS:
        raise SettingsError(f"{variable} must name a user of its own when APP_ENV=production (not {user or 'none'})")
    if not password and "sslcert" in parse_qs(parts.query):
        return
    if not password:
        raise SettingsError(f"{variable} has no password; APP_ENV=production needs one")
    if password in DEFAULT_PASSWORDS or password == user:
        raise SettingsError(f"{variable} has a default password; APP_ENV=production needs one of its own")


def _parse(raw: str, kind: Any, name: str) -> Any:
    if kind in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if kind in (float, "float"):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
    return raw


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build settings of type ``cls`` from ``environ`` (default: the process environment)."""
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = env_name(field)
        if name in source:
            values[field.name] = _parse(source[name], field.type, name)
    return cls(**values)


def describe(cls: type[Any]) -> str:
    """One line per setting (variable, default, doc): the text of a service's ``--help``."""
    lines = []
    for field in dataclasses.fields(cls):
        lines.append(f"  {env_name(field):<28} default {field.default!r}\n      {field.metadata.get('doc', '')}")
    return "\n".join(lines)
