"""The images: one multi-stage Dockerfile, lint-clean, pinned, non-root, no secret baked in.

Read as text here (and linted with hadolint, installed into .venv by requirements-dev.txt);
tests/compose/test_images.py builds the same file on a real engine and checks what the images
contain. The health probe the images run is executed against a real in-process gRPC health
server, so a probe that could never pass fails here rather than in a container.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
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
from tests.support.text import logical_lines

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
#: The example application's image, built FROM the worker base as a user's own worker is.
EXAMPLE_DOCKERFILE = ROOT / "examples" / "Dockerfile"
#: Prometheus's image for docker-compose.monitoring.yml, from Debian's package (tests/packaging/test_monitoring.py).
PROMETHEUS_DOCKERFILE = ROOT / "monitoring" / "prometheus" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
#: Where compose mounts the shared `secrets` volume (the services' DEV_SECRETS_DIR).
SECRETS_MOUNT = "/app/var/secrets"
#: The METRICS_PORT docker-compose.yml gives every service.
COMPOSE_METRICS_PORT = "9100"
#: The base: Python 3.11 to the patch release, slim, on a named Debian release, and its digest.
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}$")
#: An ENV or ARG holding a secret, or the path of a secret file baked into the image.
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|PASS|SECRET|TOKEN|KEY|CREDENTIALS?)(_FILE)?$", re.IGNORECASE)
#: Where the build stage installs everything, and the only thing the images take from it.
VENV = "/opt/jobqueue"
#: The stage every worker image is built FROM, the built-in types' and a user's.
WORKER_BASE = "worker-base"
#: The probe of every worker image.
WORKER_PROBE = ["python", "-m", "jobqueue.runtime.health_check", "WORKER_HEALTH_PORT", "5003"]


@dataclass(frozen=True)
class Image:
    """What one target of the Dockerfile must build: its package, the compose service running it, its health port."""

    package: str
    compose_service: str
    port: int | None = None
    port_variable: str | None = None
    #: Probed over HTTP by its own probe (the web dashboard), not grpc.health.v1; it serves no metrics.
    http: bool = False


#: Target -> image. Each target has the name of the compose service that runs it.
IMAGES = {
    "auth-service": Image("auth_svc", "auth-service", 5001, "AUTH_PORT"),
    "job-service": Image("job_svc", "job-service", 5002, "JOB_PORT"),
    "worker-service": Image("worker_svc", "worker-service", 5003, "WORKER_HEALTH_PORT"),
    "web-service": Image("web_svc", "web-service", 5080, "WEB_PORT", http=True),
    # A one-shot job: no port, no health probe.
    "migrate": Image("migrations", "migrate"),
}
#: The gRPC servers, probed by the shared grpc.health.v1 probe.
SERVERS = [name for name, image in IMAGES.items() if image.port is not None and not image.http]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


@dataclass(frozen=True)
class Stage:
    """One FROM and the instructions under it."""

    name: str
    base: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, in order (comments and blank lines dropped, as Docker does)."""
    instructions = []
    for line in logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


INSTRUCTIONS = parse(DOCKERFILE.read_text())


def global_args() -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name (every stage must be named: targets are how compose picks an image)."""
    found: dict[str, Stage] = {}
    current: list[Instruction] | None = None
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            base, separator, name = instruction.arguments.rpartition(" AS ")
            assert separator, f"FROM {instruction.arguments}: every stage is named"
            current = []
            found[name] = Stage(name, base.split()[-1], current)
        elif current is not None:
            current.append(instruction)
    return found


STAGES = stages()


def ancestry(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [STAGES[name]]
    while chain[-1].base in STAGES:
        chain.append(STAGES[chain[-1].base])
    return chain


def image_instructions(target: str, keyword: str) -> list[Instruction]:
    """What the image of ``target`` inherits and adds with ``keyword``, in build order."""
    return [i for stage in reversed(ancestry(target)) for i in stage.all(keyword)]


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


def health_probe(target: str) -> list[str]:
    """The argv of the image's HEALTHCHECK CMD."""
    (check,) = image_instructions(target, "HEALTHCHECK")
    _, separator, command = check.arguments.partition("CMD ")
    assert separator, f"HEALTHCHECK of {target} has no CMD: {check.arguments}"
    return exec_form(command.strip())


def test_the_images_are_the_targets_compose_builds() -> None:
    """One Dockerfile at the root; each built compose service names its target in it, and only these.

    The one-shots other than the migration (broker-users, dev-secrets) run the migrate image, which
    holds common/ and nothing of a service: they need no image of their own.
    """
    assert sorted(path.relative_to(ROOT).as_posix() for path in ROOT.glob("**/Dockerfile")) == [
        "Dockerfile",
        "examples/Dockerfile",
        "monitoring/prometheus/Dockerfile",
        *sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "scripts" / "containers").glob("**/Dockerfile")),
    ], (
        "a Dockerfile outside the root one (the stand-ins' are the test harness's own, the example's a user's, "
        "Prometheus's the monitoring overlay's)"
    )
    built = {name: service["build"] for name, service in SERVICES.items() if "build" in service}
    assert {build["target"] for build in built.values()} == set(IMAGES)
    for name, build in built.items():
        assert (ROOT / build["context"]).resolve() == ROOT
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
        assert IMAGES[build["target"]].compose_service == name or (
            build["target"] == "migrate" and name in ("broker-users", "dev-secrets")
        ), name


@pytest.mark.parametrize(
    "dockerfile", [DOCKERFILE, EXAMPLE_DOCKERFILE, PROMETHEUS_DOCKERFILE], ids=["root", "example", "prometheus"]
)
def test_hadolint_passes(dockerfile: Path) -> None:
    """hadolint reports nothing (a missing hadolint is a failure: `make install` provides it)."""
    assert HADOLINT.is_file(), f"{HADOLINT} is missing; run `make install`"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_are_justified() -> None:
    """An inline `# hadolint ignore=` is preceded by a comment saying why."""
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#"), f"line {number + 1}: say why the rule is ignored"
            assert "hadolint" not in previous, f"line {number + 1}: say why the rule is ignored"


def test_the_base_is_python_311_slim_pinned_by_digest() -> None:
    """Every stage starts from the one base ARG (or an earlier stage), whose default is pinned by digest."""
    base = global_args()["PYTHON_IMAGE"]
    assert PINNED_BASE.match(base), base
    for stage in STAGES.values():
        assert stage.base in ("${PYTHON_IMAGE}", *STAGES), f"stage {stage.name} is built FROM {stage.base}"


def test_every_image_shares_the_runtime_stage() -> None:
    """The four images are the runtime stage plus their own package: their dependency layers are one.

    The worker's is built FROM the worker base, which adds no layer to runtime (only how to run
    and probe a worker), so a user's worker image shares those layers too.
    """
    for target in IMAGES:
        between = [WORKER_BASE] if target == "worker-service" else []
        assert [stage.name for stage in ancestry(target)] == [target, *between, "runtime"], target
        assert STAGES[target].all("RUN") == [], f"{target} runs a command of its own: it belongs in runtime"
    assert STAGES["runtime"].base == "${PYTHON_IMAGE}"
    assert {i.keyword for i in STAGES[WORKER_BASE].instructions} <= {"EXPOSE", "HEALTHCHECK", "ENTRYPOINT"}


def test_the_worker_base_runs_the_worker_its_command_names() -> None:
    """`FROM` it + a package + `CMD ["package:worker"]` is a worker image: the SDK's entry point, probe and user."""
    assert [exec_form(e.arguments) for e in STAGES[WORKER_BASE].all("ENTRYPOINT")] == [
        ["python", "-m", "jobqueue.worker"]
    ]
    assert not image_instructions(WORKER_BASE, "CMD"), "the base names no Worker: the image built FROM it does"
    assert health_probe(WORKER_BASE) == WORKER_PROBE
    assert [u.arguments for u in image_instructions(WORKER_BASE, "USER")] == ["10001:10001"]


def test_the_example_is_built_from_the_worker_base_of_this_sdk_version() -> None:
    """examples/Dockerfile: FROM the base tagged with jobqueue-client's version, its package, and its Worker."""
    example = parse(EXAMPLE_DOCKERFILE.read_text())
    version = tomllib.loads((ROOT / "gen" / "pyproject.toml").read_text())["project"]["version"]
    assert [i.arguments for i in example if i.keyword == "FROM"] == [f"jobqueue-worker-base:{version}"]
    assert [i.arguments for i in example if i.keyword == "COPY"] == ["myapp/ /app/myapp/"]
    assert [exec_form(i.arguments) for i in example if i.keyword == "CMD"] == [["myapp:worker"]]
    # Nothing else: one layer on the base, which holds the user, the entry point, the probe and WORKDIR /app.
    assert [i.keyword for i in example] == ["FROM", "COPY", "CMD"]


def test_only_the_build_stage_installs_and_it_leaves_no_installer() -> None:
    """pip runs only in `build`; it installs the lock, hash-checked, then ./gen, then removes pip and setuptools.

    Nothing is installed that the lock does not pin with its hashes: ./gen with its worker and tracing extras from
    no index (the lock must already hold their dependencies), and no build fetches a backend of its
    own (--no-build-isolation).
    """
    for stage in STAGES.values():
        if stage.name != "build":
            assert not any("pip" in run.arguments for run in stage.all("RUN")), f"{stage.name} runs pip"
    installs = " && ".join(run.arguments for run in STAGES["build"].all("RUN"))
    assert f"python -m venv {VENV}" in installs
    pip_installs = re.findall(rf"{VENV}/bin/pip install [^&]*", installs)
    assert [command.strip() for command in pip_installs] == [
        f"{VENV}/bin/pip install --no-cache-dir --require-hashes --no-build-isolation -r /tmp/requirements.txt",
        f'{VENV}/bin/pip install --no-cache-dir --no-index --no-build-isolation "/tmp/gen[worker,tracing]"',
    ]
    requirements = installs.index(pip_installs[0])
    client = installs.index(pip_installs[1])
    check = installs.index(f"{VENV}/bin/pip check")
    removed = installs.index(f"{VENV}/bin/pip uninstall --yes --quiet pip setuptools")
    assert requirements < client < check < removed


def test_images_take_only_the_environment_from_the_build_stage() -> None:
    """The runtime stage copies the virtual environment out of `build` and nothing else from it."""
    from_build = [c for c in STAGES["runtime"].all("COPY") if "--from=" in c.arguments]
    assert [c.arguments for c in from_build] == [f"--from=build {VENV} {VENV}"]
    for stage in STAGES.values():
        if stage.name != "runtime":
            assert not any("--from=" in c.arguments for c in stage.all("COPY")), stage.name
    assert any(f"PATH={VENV}/bin:$PATH" in env.arguments for env in STAGES["runtime"].all("ENV"))


@pytest.mark.parametrize("target", IMAGES)
def test_copies_only_what_the_service_needs(target: str) -> None:
    """An image holds common/ and its own package (plus the environment); `build` the requirements and gen/."""
    assert not [i for i in INSTRUCTIONS if i.keyword == "ADD"]
    copies = [copy for copy in image_instructions(target, "COPY") if "--from=" not in copy.arguments]
    sources = [source for copy in copies for source in copy_sources(copy)]
    assert sorted(source.rstrip("/") for source in sources) == sorted(["common", IMAGES[target].package])
    build = [s for copy in STAGES["build"].all("COPY") for s in copy_sources(copy)]
    assert sorted(source.rstrip("/") for source in build) == ["gen", "requirements.txt"]
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for source in sources + build:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert source.rstrip("/").split("/")[0] not in ignored, f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("target", IMAGES)
def test_runs_as_non_root(target: str) -> None:
    """The process runs as a numeric user other than root, the same in every image."""
    users = image_instructions(target, "USER")
    assert [u.arguments for u in users] == ["10001:10001"], "one USER, in runtime, for every image"


def test_no_secret_is_baked_in() -> None:
    """No ENV or ARG carries a secret: secrets come at run time (environment, *_FILE, or generated)."""
    for instruction in INSTRUCTIONS:
        assert "-----BEGIN" not in instruction.arguments, instruction
        if instruction.keyword not in ("ENV", "ARG"):
            continue
        arguments = instruction.arguments
        # `ENV A=1 B=2`, `ARG A=1`, `ARG A`, and the legacy `ENV A value`.
        names = re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", arguments) if "=" in arguments else arguments.split()[:1]
        for name in names:
            assert not SECRET_NAME.search(name), f"{instruction.keyword} {name} looks like a secret"


@pytest.mark.parametrize("target", IMAGES)
def test_cmd_runs_the_package(target: str) -> None:
    """CMD is `python -m <package>`, the entry point the tests run, from WORKDIR /app."""
    package = IMAGES[target].package
    (cmd,) = STAGES[target].all("CMD")
    assert exec_form(cmd.arguments) == ["python", "-m", package]
    assert (ROOT / package / "__main__.py").is_file(), f"{package}/__main__.py is missing"
    # None, or the worker base's reset to none.
    assert [exec_form(e.arguments) for e in STAGES[target].all("ENTRYPOINT")] in ([], [[]])
    assert not image_instructions(target, "ENTRYPOINT") or STAGES[target].all("ENTRYPOINT")
    assert [w.arguments for w in image_instructions(target, "WORKDIR")] == ["/app"]


@pytest.mark.parametrize("target", IMAGES)
def test_exposes_its_ports(target: str) -> None:
    """EXPOSE names exactly the ports the service serves, gRPC and metrics (none for the one-shot migration)."""
    image = IMAGES[target]
    exposed = [port for expose in image_instructions(target, "EXPOSE") for port in expose.arguments.split()]
    metrics = [] if image.http else [COMPOSE_METRICS_PORT]
    assert exposed == ([] if image.port is None else [str(image.port), *metrics])


@pytest.mark.parametrize("target", IMAGES)
def test_healthcheck_uses_grpc_health(target: str) -> None:
    """Servers run the shared grpc.health.v1 probe on their port (following its variable); the one-shot job none."""
    image = IMAGES[target]
    if image.port is None:
        assert [h.arguments for h in image_instructions(target, "HEALTHCHECK")] == ["NONE"]
        return
    argv = health_probe(target)
    if image.http:
        assert argv == ["python", "-m", f"{image.package}.probe"]
        return
    assert argv[:3] == ["python", "-m", "jobqueue.runtime.health_check"]
    assert argv[3:] == [image.port_variable, str(image.port)]


@pytest.mark.parametrize("target", [name for name, image in IMAGES.items() if image.port is not None])
def test_probed_port_is_the_service_setting(target: str) -> None:
    """The variable the probe reads is the service's port setting, and the image's port is its default."""
    image = IMAGES[target]
    defaults = settings_defaults(image.package)
    assert image.port_variable in defaults, f"{image.package}.settings has no {image.port_variable}"
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


@pytest.mark.parametrize("target", SERVERS)
def test_probe_passes_only_while_serving(target: str, health_server: tuple[HealthServicer, int]) -> None:
    """The probe exits 0 on SERVING and non-zero on NOT_SERVING, so Docker's health follows the service's."""
    servicer, port = health_server
    argv = health_probe(target)
    variable = IMAGES[target].port_variable
    assert variable is not None

    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    serving = run_probe(argv, variable, port)
    assert serving.returncode == 0, serving.stderr

    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    not_serving = run_probe(argv, variable, port)
    assert not_serving.returncode == 1, not_serving.stderr
    assert "NOT_SERVING" in not_serving.stderr


@pytest.mark.parametrize("target", SERVERS)
def test_probe_fails_when_nothing_listens(target: str) -> None:
    """A service that is down (connection refused) is unhealthy, not an error Docker ignores."""
    variable = IMAGES[target].port_variable
    assert variable is not None
    result = run_probe(health_probe(target), variable, free_port())
    assert result.returncode == 1, result.stderr


@pytest.mark.parametrize("target", [name for name, image in IMAGES.items() if image.port is not None])
def test_compose_runs_the_image_probe(target: str) -> None:
    """docker-compose.yml's healthcheck is the image's, so `docker run` and compose agree on health."""
    test = SERVICES[IMAGES[target].compose_service]["healthcheck"]["test"]
    assert test == ["CMD", *health_probe(target)]


@pytest.mark.parametrize("target", SERVERS)
def test_secrets_mount_point_belongs_to_the_service_user(target: str) -> None:
    """The image creates the secrets directory owned by its user.

    Docker seeds an empty named volume from the image's directory, owner
    included; without it the volume is root-owned and a non-root service cannot
    write its development secrets.
    """
    volumes = SERVICES[IMAGES[target].compose_service].get("volumes") or []
    [mount] = [str(volume).split(":")[1] for volume in volumes if str(volume).split(":")[1].startswith(SECRETS_MOUNT)]
    uid = image_instructions(target, "USER")[-1].arguments.split(":")[0]
    runs = " ".join(run.arguments for run in image_instructions(target, "RUN"))
    assert f"--uid {uid}" in runs
    [made] = re.findall(r"mkdir -p ((?:\S+ ?)+?) &&", runs)
    assert mount in made.split(), f"{mount} is not made by the image"
    assert re.search(rf"chown -R \S+ {SECRETS_MOUNT.rsplit('/', 1)[0]}\b", runs), "the directory is not chowned"


def test_the_dashboard_probe_passes_only_while_it_serves() -> None:
    """web_svc.probe exits 0 while GET /healthz on WEB_PORT answers 200, and 1 when nothing listens there."""
    answers = {"/healthz": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answers.get(self.path, 404))
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def probe(port: int) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "WEB_PORT": str(port)}
        command = [sys.executable, *health_probe("web-service")[1:]]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)

    try:
        assert probe(server.server_address[1]).returncode == 0
        answers["/healthz"] = 503
        failing = probe(server.server_address[1])
        assert failing.returncode == 1
        assert "503" in failing.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert probe(free_port()).returncode == 1


def test_dockerignore_keeps_local_state_and_tooling_out() -> None:
    """Local environments, state (dev secrets in var/, .env), caches, tests and history never reach a build."""
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")}
    required = {".git", ".venv", ".tools", "var", ".env", "tests", "**/__pycache__"}
    required |= {".mypy_cache", ".ruff_cache", ".pytest_cache", "**/*.egg-info"}
    assert required <= entries, sorted(required - entries)
