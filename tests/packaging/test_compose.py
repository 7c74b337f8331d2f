"""docker-compose.yml keeps the promises of the operator experience.

`docker compose up -d` starts everything in a declared, health-gated order;
`--scale worker-service=N` works; the services run the same entry points the
tests run, with the settings they actually read; no secret is written into the
file; and every variable it reads is documented in .env.example with the same
default. Checked statically; tests/compose/ runs the same file on a real engine.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from job_svc.settings import Settings as JobSettings
from jobqueue.runtime.limits import MAX_TIMEOUT_SECONDS
from jobqueue.runtime.settings import env_name
from migrations import roles

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: What `-f docker-compose.yml -f docker-compose.production.yml` adds for production mode.
PRODUCTION_FILE = ROOT / "docker-compose.production.yml"
#: What `-f docker-compose.yml -f docker-compose.examples.yml` adds: the example application's worker (examples/).
EXAMPLES_FILE = ROOT / "docker-compose.examples.yml"
#: What `-f docker-compose.yml -f docker-compose.monitoring.yml` adds: Prometheus and Grafana (monitoring/).
MONITORING_FILE = ROOT / "docker-compose.monitoring.yml"
ENV_EXAMPLE = ROOT / ".env.example"

#: The long-running services and the package each runs (`python -m <package>`).
APP_SERVICES = {"auth-service": "auth_svc", "job-service": "job_svc", "worker-service": "worker_svc"}
#: Every service compose builds from this repository, including the one-shot migration.
BUILT_SERVICES = {**APP_SERVICES, "migrate": "migrations"}
#: The one-shots: each runs once per `up`, and what waits on it waits for its success.
ONE_SHOTS = ("migrate", "broker-users", "dev-secrets")
INFRASTRUCTURE = ("rabbitmq", "postgres")
#: The ports the seed's users already know.
PUBLISHED = {"auth-service": 5001, "job-service": 5002}
#: Where each app service keeps its development secrets: a volume of its own (dev-secrets fills them).
SECRETS_MOUNTS = {
    "auth-service": ("auth-secrets", "/app/var/secrets/auth"),
    "job-service": ("job-secrets", "/app/var/secrets/jobs"),
    "worker-service": ("worker-secrets", "/app/var/secrets/worker"),
}

#: ${NAME}, ${NAME:-default} (and the other operators), $NAME; `$$` is a literal dollar.
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<braced>\w+)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|\$(?P<bare>\w+)")
#: A variable holding a secret: named for what it holds (WORKER_TOKEN, RABBITMQ_DEFAULT_PASS, JWT_PRIVATE_KEY).
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|PASS|SECRET|TOKEN|KEY|CREDENTIALS?)$")
#: The only non-empty defaults a secret may have: throwaway development values, documented in .env.example.
DEV_SECRET_DEFAULTS = {"guest", "jobqueue-dev"}
#: What a pasted key or token looks like: a PEM block or a long run of base64/hex characters.
SECRET_LOOKING = re.compile(r"-----BEGIN|[A-Za-z0-9+/_=-]{32,}")


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it before interpolation (anchors and merge keys resolved)."""
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return compose


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def environment(service: str) -> dict[str, str]:
    """The environment compose sets on ``service``, whichever syntax (mapping or KEY=VALUE list) it uses."""
    raw = SERVICES[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree (keys are not interpolated by compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def references(text: str) -> list[tuple[str, str | None, str]]:
    """The variables ``text`` interpolates: (name, operator or None, operator argument)."""
    found = []
    for match in INTERPOLATION.finditer(text):
        if match.group(0) == "$$":
            continue
        name = match.group("braced") or match.group("bare")
        found.append((name, match.group("op"), match.group("arg") or ""))
    return found


def all_references() -> list[tuple[str, str | None, str]]:
    """Every variable reference in the compose files (the production and monitoring ones too), with duplicates."""
    production = yaml.safe_load(PRODUCTION_FILE.read_text())
    monitoring = yaml.safe_load(MONITORING_FILE.read_text())
    return [ref for text in (*strings(COMPOSE), *strings(production), *strings(monitoring)) for ref in references(text)]


def env_example() -> dict[str, str]:
    """The assignments of .env.example (comments and blank lines skipped)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, separator, value = stripped.partition("=")
        assert separator, f".env.example: not NAME=value: {line!r}"
        assert name not in values, f".env.example sets {name} twice"
        values[name] = value
    return values


def command(service: str) -> list[str]:
    """The command of ``service`` as an argv list."""
    raw = SERVICES[service].get("command")
    assert raw is not None, f"{service} declares no command"
    return raw.split() if isinstance(raw, str) else [str(part) for part in raw]


def seconds(duration: str) -> float:
    """A compose duration (`45s`, `1m30s`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts, f"not a duration: {duration!r}"
    assert "".join(number + unit for number, unit in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def settings_defaults(package: str) -> dict[str, Any]:
    """Environment variable -> default for every setting ``<package>.settings`` declares."""
    module = importlib.import_module(f"{package}.settings")
    defaults: dict[str, Any] = {}
    for value in vars(module).values():
        if isinstance(value, type) and is_dataclass(value) and value.__module__ == module.__name__:
            for field in fields(value):
                defaults[env_name(field)] = field.default
    return defaults


def variables_read(package: str) -> set[str]:
    """The environment variables ``package`` reads: its settings, or (no settings module) os.environ look-ups."""
    if (ROOT / package / "settings.py").is_file():
        return set(settings_defaults(package))
    source = "\n".join(path.read_text() for path in (ROOT / package).glob("*.py"))
    return set(re.findall(r"environ(?:\.get\(|\[)\s*[\"'](\w+)[\"']", source))


def with_defaults(text: str) -> str:
    """``text`` as compose reads it with no variable set: each ${NAME:-default} is its default."""
    return INTERPOLATION.sub(lambda match: "$" if match.group(0) == "$$" else match.group("arg") or "", text)


def published_ports(service: str) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) for each short-syntax port of ``service``, variables at their defaults."""
    published = []
    for entry in SERVICES[service].get("ports", []):
        *host, container = with_defaults(str(entry)).split(":")
        ip = host[0] if len(host) == 2 else ""
        host_port = host[-1] if host else container
        published.append((ip, int(host_port), int(container.split("/")[0])))
    return published


def test_expected_services_exist() -> None:
    """The broker, the database, the one-shots and the three services."""
    assert {*INFRASTRUCTURE, *BUILT_SERVICES, *ONE_SHOTS} <= set(SERVICES)


def test_no_container_names() -> None:
    """A fixed container_name breaks `--scale` and running two checkouts side by side."""
    assert [name for name, service in SERVICES.items() if "container_name" in service] == []


def test_workers_scale() -> None:
    """`docker compose up -d --scale worker-service=5`: no fixed name, no host port, nothing unique."""
    worker = SERVICES["worker-service"]
    assert "build" in worker or "image" in worker
    for unique in ("container_name", "ports", "hostname"):
        assert unique not in worker, f"worker-service has {unique}: its copies would collide"


@pytest.mark.parametrize("service", BUILT_SERVICES)
def test_runs_the_packages_entry_point(service: str) -> None:
    """compose runs exactly `python -m <package>`, the entry point the tests start."""
    package = BUILT_SERVICES[service]
    assert "entrypoint" not in SERVICES[service]
    assert command(service) == ["python", "-m", package]
    assert (ROOT / package / "__main__.py").is_file(), f"{package}/__main__.py is missing"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_have_a_grpc_healthcheck(service: str) -> None:
    """Health comes from grpc.health.v1, so `service_healthy` means the service really serves."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[:4] == ["CMD", "python", "-m", "jobqueue.runtime.health_check"]
    assert "disable" not in SERVICES[service]["healthcheck"]


@pytest.mark.parametrize("service", INFRASTRUCTURE)
def test_infrastructure_has_a_healthcheck(service: str) -> None:
    """The servers the start order waits on can say when they are ready.

    RabbitMQ's is `check_port_connectivity`, which passes once AMQP accepts connections:
    `ping` passes about 6 s before that, and the job service then started against a broker
    that refused it (measured on Engine 26.1; tests/compose/ checks it on a real engine).
    """
    expected = {"rabbitmq": "rabbitmq-diagnostics -q check_port_connectivity", "postgres": "pg_isready"}[service]
    assert expected in " ".join(SERVICES[service]["healthcheck"]["test"])


def test_start_order() -> None:
    """postgres -> migrate -> auth and jobs; rabbitmq + jobs -> workers; each edge gated on health or success."""
    expected = {
        "migrate": {"postgres": "service_healthy"},
        "broker-users": {"rabbitmq": "service_healthy"},
        "auth-service": {
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
            "dev-secrets": "service_completed_successfully",
        },
        "job-service": {
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
            "rabbitmq": "service_healthy",
            "broker-users": "service_completed_successfully",
            "dev-secrets": "service_completed_successfully",
        },
        "worker-service": {
            "rabbitmq": "service_healthy",
            "broker-users": "service_completed_successfully",
            "job-service": "service_healthy",
            "dev-secrets": "service_completed_successfully",
        },
    }
    for service, dependencies in expected.items():
        declared = SERVICES[service]["depends_on"]
        assert isinstance(declared, dict), f"{service}: depends_on needs conditions"
        assert {name: spec["condition"] for name, spec in declared.items()} == dependencies, service


def test_dependency_conditions_match_the_dependency() -> None:
    """A one-shot dependency must have completed successfully; a long-running one must be healthy."""
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
            assert spec["condition"] == wanted, f"{name} -> {dependency}"
            if wanted == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits on {dependency}, which has no healthcheck"


def test_restart_policies() -> None:
    """Servers come back after a crash or reboot; the one-shots run once per `up`."""
    for service in (*INFRASTRUCTURE, *APP_SERVICES):
        assert SERVICES[service]["restart"] == "unless-stopped", service
    for service in ONE_SHOTS:
        # Quoted in YAML: a bare `no` is the boolean false.
        assert SERVICES[service]["restart"] == "no", service


@pytest.mark.parametrize("service", APP_SERVICES)
def test_stop_grace_outlasts_the_services_own_drain(service: str) -> None:
    """Docker's SIGKILL comes only after the service's own shutdown deadline (workers drain jobs: >= 30 s)."""
    grace = seconds(SERVICES[service].get("stop_grace_period", "10s"))
    drain = settings_defaults(APP_SERVICES[service]).get("SHUTDOWN_GRACE_SECONDS", 0.0)
    assert grace >= float(drain) + 5, f"{service}: stop_grace_period {grace} s vs SHUTDOWN_GRACE_SECONDS {drain} s"
    if service == "worker-service":
        assert grace >= 30


@pytest.mark.parametrize("service", APP_SERVICES)
def test_environment_is_what_the_service_reads(service: str) -> None:
    """Every variable compose sets is a setting the service reads: a misspelt name would be silently ignored."""
    unknown = set(environment(service)) - variables_read(APP_SERVICES[service])
    assert not unknown, f"{service} does not read {sorted(unknown)}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_service_serves_metrics_on_the_port_its_image_exposes(service: str) -> None:
    """METRICS_PORT is on (it defaults to off) and is the port the image EXPOSEs beside the gRPC one."""
    port = environment(service)["METRICS_PORT"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = service
    while True:  # the stage's own EXPOSE, else the one of the stage it is built FROM (worker-base)
        text = dockerfile.split(f" AS {stage}\n")[1].split("\nFROM ")[0]
        exposes = [line.split()[1:] for line in text.splitlines() if line.startswith("EXPOSE ")]
        if exposes:
            break
        stage = dockerfile.split(f" AS {stage}\n")[0].rsplit("\nFROM ", 1)[1].split()[0]
    [exposed] = exposes
    assert port != "0"
    assert port in exposed


def test_migrate_environment_is_what_it_reads() -> None:
    """The migration reads DATABASE_URL (the owner's) and the passwords of the services' roles."""
    passwords = {role.password_variable for role in roles.ROLES}
    assert set(environment("migrate")) <= variables_read("migrations") | passwords
    assert {"DATABASE_URL", *passwords} <= set(environment("migrate"))


def test_broker_users_environment_is_what_it_reads() -> None:
    """Every variable compose gives broker-users is one common/broker_users.py reads."""
    source = (ROOT / "common" / "broker_users.py").read_text()
    read = set(re.findall(r"value\(environ, \"(\w+)\"", source))
    assert command("broker-users") == ["python", "-m", "common.broker_users"]
    assert set(environment("broker-users")) <= read
    assert {"RABBITMQ_ADMIN_PASSWORD", "JOB_RABBITMQ_PASSWORD", "WORKER_RABBITMQ_PASSWORD"} <= set(
        environment("broker-users")
    )


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_env_defaults_to_development(service: str) -> None:
    """APP_ENV is passed through with the development default, so production is one variable away."""
    assert environment(service)["APP_ENV"] == "${APP_ENV:-development}"


def test_only_the_one_shots_hold_the_owners_credentials() -> None:
    """The migration logs in as the database's owner and broker-users as the broker's administrator;
    each service logs in as its own role and user, with the passwords those one-shots set."""
    postgres = environment("postgres")
    owner = f"{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
    database = f"@postgres:5432/{postgres['POSTGRES_DB']}"
    assert environment("migrate")["DATABASE_URL"] == f"postgresql://{owner}{database}"
    for service, role in (("auth-service", roles.AUTH), ("job-service", roles.JOBS)):
        password = environment("migrate")[role.password_variable]
        assert environment(service)["DATABASE_URL"] == f"postgresql://{role.name}:{password}{database}", service
    rabbitmq = environment("rabbitmq")
    users = environment("broker-users")
    assert (users["RABBITMQ_ADMIN_USER"], users["RABBITMQ_ADMIN_PASSWORD"]) == (
        rabbitmq["RABBITMQ_DEFAULT_USER"],
        rabbitmq["RABBITMQ_DEFAULT_PASS"],
    )
    for service, prefix in (("job-service", "JOB"), ("worker-service", "WORKER")):
        user, password = users[f"{prefix}_RABBITMQ_USER"], users[f"{prefix}_RABBITMQ_PASSWORD"]
        assert environment(service)["RABBITMQ_URL"] == f"amqp://{user}:{password}@rabbitmq:5672/", service
    for name, declared in SERVICES.items():
        if name not in ("postgres", "rabbitmq", "migrate", "broker-users"):
            assert owner not in str(declared), f"{name} holds the database owner's credentials"
            assert f"{users['RABBITMQ_ADMIN_USER']}:{users['RABBITMQ_ADMIN_PASSWORD']}@" not in str(declared), name
    assert users["RABBITMQ_QUEUE"] == environment("job-service")["RABBITMQ_QUEUE"]
    assert environment("job-service")["RABBITMQ_QUEUE"] == environment("worker-service")["RABBITMQ_QUEUE"]
    # By name through gRPC's DNS resolver, so that every job-service replica gets reports.
    assert environment("worker-service")["JOB_SERVICE_ADDR"] == f"dns:///job-service:{PUBLISHED['job-service']}"
    assert "PREFETCH_COUNT" in environment("worker-service")


def test_each_service_keeps_its_development_secrets_in_a_volume_of_its_own() -> None:
    """Only auth mounts the volume holding the signing key; dev-secrets fills each with what its service reads."""
    for service, (volume, mount) in SECRETS_MOUNTS.items():
        assert volume in COMPOSE["volumes"]
        assert SERVICES[service].get("volumes") == [f"{volume}:{mount}"], service
        assert environment(service)["DEV_SECRETS_DIR"] == mount, service
    filler = SERVICES["dev-secrets"]
    assert sorted(filler["volumes"]) == sorted(f"{volume}:{mount}" for volume, mount in SECRETS_MOUNTS.values())
    # jobqueue.runtime.secrets AUTH_DIR JOB_DIR WORKER_DIR: the key pair goes to the first only.
    assert command("dev-secrets") == [
        "python",
        "-m",
        "jobqueue.runtime.secrets",
        *(m for _, m in SECRETS_MOUNTS.values()),
    ]


@pytest.mark.parametrize("service", PUBLISHED)
def test_api_ports_are_published_on_loopback_by_default(service: str) -> None:
    """Nothing is reachable from the network unless PUBLISH_ADDRESS opens it."""
    assert [ip for ip, _, _ in published_ports(service)] == ["127.0.0.1"]
    assert all(str(entry).startswith("${PUBLISH_ADDRESS:-127.0.0.1}:") for entry in SERVICES[service]["ports"])


@pytest.mark.parametrize("service", INFRASTRUCTURE)
def test_infrastructure_keeps_its_data_in_a_named_volume(service: str) -> None:
    """Queues and jobs survive `docker compose down` / `up`."""
    named = [str(v).split(":")[0] for v in SERVICES[service].get("volumes", [])]
    assert named, f"{service} has no volume"
    assert set(named) <= set(COMPOSE["volumes"]), named


def test_rabbitmq_keeps_its_node_name() -> None:
    """RabbitMQ stores data under its node name (from the hostname): fixed, so a new container finds the old data."""
    assert SERVICES["rabbitmq"]["hostname"] == "rabbitmq"


def test_rabbitmq_lets_the_longest_job_keep_its_delivery() -> None:
    """consumer_timeout outlasts the longest job timeout plus its lease grace: else RabbitMQ redelivers it mid-run."""
    args = environment("rabbitmq")["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"].split()
    [milliseconds] = [args[i + 2] for i in range(len(args) - 2) if args[i : i + 2] == ["-rabbit", "consumer_timeout"]]
    longest = MAX_TIMEOUT_SECONDS + JobSettings().lease_grace_seconds
    assert int(milliseconds) > longest * 1000


@pytest.mark.parametrize("service", PUBLISHED)
def test_api_ports_are_the_seeds(service: str) -> None:
    """Auth on 5001 and jobs on 5002, on the host as in the container."""
    port = PUBLISHED[service]
    assert (port, port) in [(host, container) for _, host, container in published_ports(service)]


def test_rabbitmq_has_the_management_ui() -> None:
    """A pinned -management image, its UI published on loopback at 15672 unless RABBITMQ_UI_PORT moves it."""
    assert re.fullmatch(r"rabbitmq:\d+\.\d+(\.\d+)?-management(-alpine)?", SERVICES["rabbitmq"]["image"])
    assert published_ports("rabbitmq") == [("127.0.0.1", 15672, 15672)]
    assert "${RABBITMQ_UI_PORT:-15672}" in str(SERVICES["rabbitmq"]["ports"][0])


def test_broker_leaves_a_local_rabbitmq_alone() -> None:
    """AMQP is not published: 127.0.0.1:5672 would collide with a RabbitMQ on the host (the one `make run` uses).

    The services reach the broker over the compose network; nothing on the host needs its AMQP port.
    """
    assert 5672 not in {container for _, _, container in published_ports("rabbitmq")}
    assert 5672 not in {host for _, host, _ in published_ports("rabbitmq")}


def test_postgres_image_is_pinned() -> None:
    """PostgreSQL 15 (what the migrations and the tests run on), not a moving `latest`."""
    assert re.fullmatch(r"postgres:15(\.\d+)?-alpine", SERVICES["postgres"]["image"])


def test_one_network_for_all() -> None:
    """Every service joins the same declared network, so they reach each other by service name."""
    (network,) = COMPOSE["networks"]
    for name, service in SERVICES.items():
        assert network in service.get("networks", []), name


def test_every_variable_has_a_default() -> None:
    """`docker compose up -d` works with no .env: every reference is ${NAME:-default} (the default may be empty)."""
    bare = sorted({name for name, op, _ in all_references() if op != ":-"})
    assert not bare, f"no default for {bare}"


def test_every_variable_is_documented_with_the_same_default() -> None:
    """.env.example lists exactly the variables compose reads, each with compose's default."""
    documented = env_example()
    defaults: dict[str, set[str]] = {}
    for name, _, default in all_references():
        defaults.setdefault(name, set()).add(default)
    assert set(defaults) == set(documented), {
        "read but not in .env.example": sorted(set(defaults) - set(documented)),
        "in .env.example but never read": sorted(set(documented) - set(defaults)),
    }
    for name, values in defaults.items():
        assert len(values) == 1, f"{name} has different defaults: {sorted(values)}"
        assert documented[name] == next(iter(values)), f"{name}: .env.example and compose disagree"


def test_no_secret_is_written_into_the_compose_file() -> None:
    """Secrets are variables with empty or throwaway development defaults; no key or token is pasted in."""
    for service in SERVICES:
        for key, value in environment(service).items():
            assert not SECRET_LOOKING.search(INTERPOLATION.sub("", value)), f"{service}: {key} holds a literal secret"
            # Credentials inside a URL must be variables too.
            masked = INTERPOLATION.sub("\0", value)
            for password in re.findall(r"://[^:/@]*:([^@/]*)@", masked):
                assert password == "\0", f"{service}: {key} has a literal password"
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+:-[^}]*\}", value), f"{service}: {key} must come from a variable"
    for name, _, default in all_references():
        if SECRET_NAME.search(name):
            assert default in ("", *DEV_SECRET_DEFAULTS), f"{name} defaults to something that looks real"


def test_env_example_holds_no_real_secret() -> None:
    """.env.example is committed: its secrets are empty or the throwaway development defaults."""
    for name, value in env_example().items():
        assert not SECRET_LOOKING.search(value), name
        if SECRET_NAME.search(name):
            assert value in ("", *DEV_SECRET_DEFAULTS), name


def test_env_example_explains_production() -> None:
    """Someone switching to APP_ENV=production learns which secrets to provide."""
    text = ENV_EXAMPLE.read_text()
    assert "APP_ENV=production" in text
    for name in ("JWT_PRIVATE_KEY_FILE", "JWT_PUBLIC_KEY_FILE", "WORKER_TOKEN"):
        assert name in text


class _ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads an override file: `!override` and `!reset` mark how a value merges, not what it is."""


_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_mapping(node))  # type: ignore[arg-type]


def test_the_examples_file_runs_the_example_beside_worker_service() -> None:
    """example-worker is worker-service with the example's image and its Worker, added beside it.

    Each job type has a queue of its own, so the example's workers and the built-in types' each
    receive only their own jobs, and the file leaves worker-service as it is.
    """
    services = yaml.load(EXAMPLES_FILE.read_text(), Loader=_ComposeLoader)["services"]  # noqa: S506 - a SafeLoader
    example = services["example-worker"]
    assert example["extends"] == {"file": COMPOSE_FILE.name, "service": "worker-service"}
    assert example["build"] == {"context": "examples"}
    [cmd] = [line for line in (ROOT / "examples" / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert example["command"] == json.loads(cmd.removeprefix("CMD "))
    assert set(services) == {"example-worker"}


def test_the_dashboard_is_a_client_of_auth_and_jobs_only() -> None:
    """web-service reads what compose sets, reaches auth and every job-service replica by name, holds no
    credentials of theirs, starts once both are healthy, and is published on loopback at 5080."""
    dashboard = environment("web-service")
    assert set(dashboard) <= variables_read("web_svc")
    assert dashboard["AUTH_SERVICE_ADDR"] == f"auth-service:{PUBLISHED['auth-service']}"
    assert dashboard["JOB_SERVICE_ADDR"] == f"dns:///job-service:{PUBLISHED['job-service']}"
    assert not [name for name in dashboard if "DATABASE" in name or "RABBITMQ" in name or "WORKER" in name]
    assert "volumes" not in SERVICES["web-service"]
    assert {name: spec["condition"] for name, spec in SERVICES["web-service"]["depends_on"].items()} == {
        "auth-service": "service_healthy",
        "job-service": "service_healthy",
    }
    assert published_ports("web-service") == [("127.0.0.1", 5080, 5080)]
    assert command("web-service") == ["python", "-m", "web_svc"]
    assert SERVICES["web-service"]["restart"] == "unless-stopped"
