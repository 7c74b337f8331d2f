"""The images: lint-clean, non-root, no secret baked in, running what the tests run.

There is no Docker engine here, so each Dockerfile is read as text and linted
with hadolint (installed into .venv by requirements-dev.txt). The health probe
the images run is executed against a real in-process gRPC health server, so a
probe that could never pass fails here rather than in a container.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer

from tests.packaging.test_compose import SERVICES, settings_defaults
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"
#: Where compose mounts the shared `secrets` volume (the services' DEV_SECRETS_DIR).
SECRETS_MOUNT = "/app/var/secrets"
#: The METRICS_PORT docker-compose.yml gives every service.
COMPOSE_METRICS_PORT = "9100"
#: The tag pins Python's minor version; an optional suffix may pin the Debian release, and a digest may follow.
BASE_IMAGE = re.compile(r"^python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
#: An ENV or ARG holding a secret, or the path of a secret file baked into the image.
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|PASS|SECRET|TOKEN|KEY|CREDENTIALS?)(_FILE)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Image:
    """What one Dockerfile must build: its package, the compose service running it, its health port."""

    package: str
    compose_service: str
    port: int | None = None
    port_variable: str | None = None


IMAGES = {
    "auth_svc": Image("auth_svc", "auth-service", 5001, "AUTH_PORT"),
    "job_svc": Image("job_svc", "job-service", 5002, "JOB_PORT"),
    "worker_svc": Image("worker_svc", "worker-service", 5003, "WORKER_HEALTH_PORT"),
    # A one-shot job: no port, no health probe.
    "migrations": Image("migrations", "migrate"),
}
SERVERS = [name for name, image in IMAGES.items() if image.port is not None]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, in order (comments and blank lines dropped, as Docker does)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def dockerfile(package: str) -> Path:
    """The Dockerfile of ``package``; fails (not skips) when it is missing."""
    path = ROOT / package / "Dockerfile"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return path


def instructions(package: str, keyword: str | None = None) -> list[Instruction]:
    """The instructions of ``package``'s Dockerfile, optionally only those with ``keyword``."""
    found = parse(dockerfile(package).read_text())
    return [i for i in found if keyword is None or i.keyword == keyword]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction argument. Docker silently runs invalid JSON through a shell, so insist."""
    try:
        argv = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise AssertionError(f"not a JSON array (Docker would run it through /bin/sh): {arguments}") from error
    assert isinstance(argv, list), arguments
    assert all(isinstance(part, str) for part in argv), arguments
    return argv


def copy_sources(instruction: Instruction) -> list[str]:
    """The source paths of a COPY (flags and the destination dropped)."""
    arguments = instruction.arguments
    parts = exec_form(arguments) if arguments.startswith("[") else arguments.split()
    parts = [part for part in parts if not part.startswith("--")]
    return parts[:-1]


def health_probe(package: str) -> list[str]:
    """The argv of the image's HEALTHCHECK CMD."""
    (check,) = instructions(package, "HEALTHCHECK")
    _, separator, command = check.arguments.partition("CMD ")
    assert separator, f"HEALTHCHECK of {package} has no CMD: {check.arguments}"
    return exec_form(command.strip())


def test_every_dockerfile_is_checked() -> None:
    """Each image has a Dockerfile and every Dockerfile has expectations here."""
    found = {path.parent.name for path in ROOT.glob("*/Dockerfile")}
    assert found == set(IMAGES)


@pytest.mark.parametrize("package", IMAGES)
def test_hadolint_passes(package: str) -> None:
    """hadolint reports nothing (a missing hadolint is a failure: `make install` provides it)."""
    assert HADOLINT.is_file(), f"{HADOLINT} is missing; run `make install`"
    path = dockerfile(package)
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("package", IMAGES)
def test_hadolint_ignores_are_justified(package: str) -> None:
    """An inline `# hadolint ignore=` is preceded by a comment saying why."""
    lines = dockerfile(package).read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#"), f"line {number + 1}: say why the rule is ignored"
            assert "hadolint" not in previous, f"line {number + 1}: say why the rule is ignored"


@pytest.mark.parametrize("package", IMAGES)
def test_base_image_is_python_311_slim(package: str) -> None:
    """One stage, on python:3.11-slim pinned to the minor version."""
    (base,) = instructions(package, "FROM")
    assert BASE_IMAGE.match(base.arguments), base.arguments


def test_images_share_their_base_and_user() -> None:
    """Same base and user everywhere: the dependency layers are shared and the `secrets` volume has one owner."""
    bases = {instructions(package, "FROM")[0].arguments for package in IMAGES}
    users = {instructions(package, "USER")[-1].arguments for package in IMAGES if instructions(package, "USER")}
    assert len(bases) == 1, bases
    assert len(users) == 1, users


@pytest.mark.parametrize("package", IMAGES)
def test_runs_as_non_root(package: str) -> None:
    """The process runs as a user other than root."""
    users = instructions(package, "USER")
    assert users, "no USER: the service would run as root"
    user = users[-1].arguments.split(":")[0]
    assert user not in ("root", "0"), user
    keywords = [i.keyword for i in instructions(package)]
    last_user = max(i for i, keyword in enumerate(keywords) if keyword == "USER")
    assert last_user < keywords.index("CMD"), "USER must come before CMD"


@pytest.mark.parametrize("package", IMAGES)
def test_no_secret_is_baked_in(package: str) -> None:
    """No ENV or ARG carries a secret: secrets come at run time (environment, *_FILE, or generated)."""
    for instruction in instructions(package):
        assert "-----BEGIN" not in instruction.arguments, instruction
        if instruction.keyword not in ("ENV", "ARG"):
            continue
        arguments = instruction.arguments
        # `ENV A=1 B=2`, `ARG A=1`, `ARG A`, and the legacy `ENV A value`.
        names = re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", arguments) if "=" in arguments else arguments.split()[:1]
        for name in names:
            assert not SECRET_NAME.search(name), f"{instruction.keyword} {name} looks like a secret"


@pytest.mark.parametrize("package", IMAGES)
def test_cmd_runs_the_package(package: str) -> None:
    """CMD is `python -m <package>`, the entry point the tests run, from WORKDIR /app."""
    (cmd,) = instructions(package, "CMD")
    assert exec_form(cmd.arguments) == ["python", "-m", package]
    assert (ROOT / package / "__main__.py").is_file(), f"{package}/__main__.py is missing"
    assert not instructions(package, "ENTRYPOINT")
    assert [w.arguments for w in instructions(package, "WORKDIR")] == ["/app"]


@pytest.mark.parametrize("package", IMAGES)
def test_copies_only_what_the_service_needs(package: str) -> None:
    """COPY brings the pinned requirements, the client library, common/ and the package itself, nothing else."""
    assert not instructions(package, "ADD")
    sources = [source for copy in instructions(package, "COPY") for source in copy_sources(copy)]
    assert sorted(source.rstrip("/") for source in sources) == sorted(["requirements.txt", "gen", "common", package])
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert source.rstrip("/").split("/")[0] not in ignored, f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("package", IMAGES)
def test_installs_requirements_then_client_without_cache(package: str) -> None:
    """The pinned requirements, then ./gen, each with pip's cache off (smaller layers)."""
    installs = [run.arguments for run in instructions(package, "RUN") if "pip install" in run.arguments]
    assert installs, "nothing is installed"
    for install in installs:
        assert "--no-cache-dir" in install, install
    requirements = next(i for i, run in enumerate(installs) if "-r requirements.txt" in run)
    client = next(i for i, run in enumerate(installs) if re.search(r"pip install .*\./gen\b", run))
    assert requirements < client


@pytest.mark.parametrize("package", IMAGES)
def test_exposes_its_ports(package: str) -> None:
    """EXPOSE names exactly the ports the service serves, gRPC and metrics (none for the one-shot migration)."""
    image = IMAGES[package]
    exposed = [port for expose in instructions(package, "EXPOSE") for port in expose.arguments.split()]
    assert exposed == ([] if image.port is None else [str(image.port), COMPOSE_METRICS_PORT])


@pytest.mark.parametrize("package", IMAGES)
def test_healthcheck_uses_grpc_health(package: str) -> None:
    """Servers run the shared grpc.health.v1 probe on their port (following its variable); the one-shot job none."""
    image = IMAGES[package]
    if image.port is None:
        assert [h.arguments for h in instructions(package, "HEALTHCHECK")] == ["NONE"]
        return
    argv = health_probe(package)
    assert argv[:3] == ["python", "-m", "common.health_check"]
    assert argv[3:] == [image.port_variable, str(image.port)]


@pytest.mark.parametrize("package", SERVERS)
def test_probed_port_is_the_service_setting(package: str) -> None:
    """The variable the probe reads is the service's port setting, and the image's port is its default."""
    image = IMAGES[package]
    defaults = settings_defaults(package)
    assert image.port_variable in defaults, f"{package}.settings has no {image.port_variable}"
    assert defaults[image.port_variable] == image.port


@pytest.fixture
def health_server() -> Iterator[tuple[HealthServicer, int]]:
    """A real gRPC health server on a free port: (servicer, port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


def run_probe(argv: list[str], variable: str, port: int) -> subprocess.CompletedProcess[str]:
    """Run the image's probe here: the variable points at ``port``, the built-in default points nowhere."""
    command = [sys.executable, *argv[1:4], "1"]
    env = {**os.environ, variable: str(port)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("package", SERVERS)
def test_probe_passes_only_while_serving(package: str, health_server: tuple[HealthServicer, int]) -> None:
    """The probe exits 0 on SERVING and non-zero on NOT_SERVING, so Docker's health follows the service's."""
    servicer, port = health_server
    argv = health_probe(package)
    variable = IMAGES[package].port_variable
    assert variable is not None

    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    serving = run_probe(argv, variable, port)
    assert serving.returncode == 0, serving.stderr

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    not_serving = run_probe(argv, variable, port)
    assert not_serving.returncode == 1, not_serving.stderr
    assert "NOT_SERVING" in not_serving.stderr


@pytest.mark.parametrize("package", SERVERS)
def test_probe_fails_when_nothing_listens(package: str) -> None:
    """A service that is down (connection refused) is unhealthy, not an error Docker ignores."""
    variable = IMAGES[package].port_variable
    assert variable is not None
    result = run_probe(health_probe(package), variable, free_port())
    assert result.returncode == 1, result.stderr


@pytest.mark.parametrize("package", SERVERS)
def test_compose_runs_the_image_probe(package: str) -> None:
    """docker-compose.yml's healthcheck is the image's, so `docker run` and compose agree on health."""
    test = SERVICES[IMAGES[package].compose_service]["healthcheck"]["test"]
    assert test == ["CMD", *health_probe(package)]


@pytest.mark.parametrize("package", SERVERS)
def test_secrets_mount_point_belongs_to_the_service_user(package: str) -> None:
    """The image creates the secrets directory owned by its user.

    Docker seeds an empty named volume from the image's directory, owner
    included; without it the volume is root-owned and a non-root service cannot
    write its development secrets.
    """
    volumes = SERVICES[IMAGES[package].compose_service].get("volumes") or []
    assert any(str(volume).split(":")[1] == SECRETS_MOUNT for volume in volumes)
    uid = instructions(package, "USER")[-1].arguments.split(":")[0]
    runs = " ".join(run.arguments for run in instructions(package, "RUN"))
    assert f"--uid {uid}" in runs
    assert f"mkdir -p {SECRETS_MOUNT}" in runs
    assert re.search(rf"chown -R \S+ {SECRETS_MOUNT.rsplit('/', 1)[0]}\b", runs), "the directory is not chowned"


def test_dockerignore_keeps_local_state_and_tooling_out() -> None:
    """Local environments, state (dev secrets in var/, .env), caches, tests and history never reach a build."""
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")}
    required = {".git", ".venv", ".tools", "var", ".env", "tests", "**/__pycache__"}
    required |= {".mypy_cache", ".ruff_cache", ".pytest_cache", "**/*.egg-info"}
    assert required <= entries, sorted(required - entries)
