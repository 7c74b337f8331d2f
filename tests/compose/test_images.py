"""The images compose built, as shipped: sizes within budget, one shared dependency layer, nothing to install with.

tests/packaging/test_dockerfiles.py reads the Dockerfile; these tests look inside the
images it produced on a real engine (`docker image inspect`, and `docker run` of the
image itself), so they hold whatever the Dockerfile's text says.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.compose.stack import Stack

#: Compose service -> the package its image runs.
IMAGES = {"auth-service": "auth_svc", "job-service": "job_svc", "worker-service": "worker_svc", "migrate": "migrations"}
#: What an image may add to its Python base: the dependencies, common/ and one package. 73.6 MB when
#: first set, almost all compiled extensions (grpcio, cryptography, uvloop, asyncpg); 94 MB since the
#: dashboard's aiohttp and Jinja2 (14 MB with theirs) and OpenTelemetry (7.5 MB) joined the one
#: dependency layer every image shares (issue 12), which a single pull then brings for all of them.
ADDED_BUDGET = 110_000_000
#: What a service's own layer (its package) may weigh: it is all that differs between the images.
OWN_LAYER_BUDGET = 1_000_000
#: The user every image runs as (owner of the shared `secrets` volume).
USER = "10001:10001"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=True).stdout


def image_of(stack: Stack, service: str) -> dict[str, Any]:
    """`docker image inspect` of the image compose built for ``service``."""
    found: dict[str, Any] = json.loads(docker("image", "inspect", f"{stack.project}-{service}"))[0]
    return found


def base_of(image: dict[str, Any]) -> dict[str, Any]:
    """The Python base the image was built on: the image whose layers are the first ones of ``image``."""
    for line in docker("image", "ls", "--format", "{{.ID}}", "python").split():
        candidate: dict[str, Any] = json.loads(docker("image", "inspect", line))[0]
        layers = candidate["RootFS"]["Layers"]
        if image["RootFS"]["Layers"][: len(layers)] == layers:
            return candidate
    raise AssertionError("no python image in the engine is the base of the built images")


def run(stack: Stack, service: str, script: str) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` in a throwaway container of ``service``'s image, with no network."""
    image = f"{stack.project}-{service}"
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("service", IMAGES)
def test_the_image_is_within_its_size_budget(stack: Stack, service: str) -> None:
    image = image_of(stack, service)
    added = image["Size"] - base_of(image)["Size"]
    assert 0 < added <= ADDED_BUDGET, (
        f"{service} adds {added / 1e6:.1f} MB to its base (budget {ADDED_BUDGET / 1e6} MB)"
    )
    history = docker("history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", image["Id"])
    [own] = [int(line.split("\t")[0]) for line in history.splitlines() if f"COPY {IMAGES[service]}/ " in line]
    assert 0 < own <= OWN_LAYER_BUDGET, f"{service}'s own layer is {own} bytes (budget {OWN_LAYER_BUDGET})"


def test_the_four_images_share_every_layer_but_their_own(stack: Stack) -> None:
    """Pushed or pulled together, the dependencies travel once: only the last layer differs."""
    layers = {service: image_of(stack, service)["RootFS"]["Layers"] for service in IMAGES}
    shared = {tuple(found[:-1]) for found in layers.values()}
    assert len(shared) == 1, "the images differ below their own layer"
    assert len({found[-1] for found in layers.values()}) == len(IMAGES)


@pytest.mark.parametrize("service", IMAGES)
def test_runs_as_the_service_user_and_cannot_write_its_code(stack: Stack, service: str) -> None:
    assert image_of(stack, service)["Config"]["User"] == USER
    done = run(stack, service, "id -u; id -g; touch /app/common/x 2>/dev/null && echo writable || echo read-only")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["10001", "10001", "read-only"]


@pytest.mark.parametrize("service", IMAGES)
def test_nothing_to_build_or_install_with(stack: Stack, service: str) -> None:
    """No compiler, and no pip or setuptools in the environment the services run in."""
    probe = (
        "for tool in gcc cc c++ make; do command -v $tool; done; "
        'for module in pip setuptools; do python -c "import $module" 2>/dev/null && echo $module; done; '
        "true"
    )
    done = run(stack, service, probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"{service} still has: {done.stdout.split()}"


@pytest.mark.parametrize("service", IMAGES)
def test_holds_only_its_own_code(stack: Stack, service: str) -> None:
    """/app has common/, the service's package and the secrets mount point (empty): no tests, no gen/, no state."""
    done = run(stack, service, "ls -A /app; find /app/var/secrets -type f | wc -l; python -c 'import jobqueue.client'")
    assert done.returncode == 0, done.stderr
    *entries, secrets = done.stdout.split()
    assert sorted(entries) == sorted(["common", IMAGES[service], "var"])
    assert secrets == "0"
