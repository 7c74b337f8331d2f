"""The locks: every package pinned with its hashes, every input in them, and only they installed.

requirements.in and requirements-dev.in are what a person edits; `make lock` resolves them into
requirements.txt and requirements-dev.txt, which `make install`, the Dockerfile and so CI install
with pip's --require-hashes. Read as text here; `make lock-check` (part of `make test`) proves the
locks are what the inputs resolve to, and pip itself refuses a file whose hash the lock lacks.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.text import logical_lines

ROOT = Path(__file__).resolve().parents[2]
#: Lock -> the input it is resolved from.
LOCKS = {"requirements.txt": "requirements.in", "requirements-dev.txt": "requirements-dev.in"}
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
#: What `make lock` resolves for: CI's and the images' Python, on Linux x86_64, as of a recorded moment.
RESOLVED_FOR = re.compile(
    r"--python-version (?P<python>\d+\.\d+) --python-platform x86_64-unknown-linux-gnu "
    r"--exclude-newer (?P<moment>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) "
)


@dataclass(frozen=True)
class Locked:
    """One package of a lock: its exact version and the hashes of the files pip may install."""

    version: Version
    hashes: frozenset[str]


def read_lock(name: str) -> dict[str, Locked]:
    """A lock's packages by canonical name; fails on any line that is not `name==version` with its hashes."""
    packages: dict[str, Locked] = {}
    for line in logical_lines((ROOT / name).read_text()):
        requirement_text, *options = re.split(r"\s+(?=--)", line)
        requirement = Requirement(requirement_text)
        assert requirement.url is None, f"{name}: {line}"
        assert not requirement.extras, f"{name}: {requirement_text} (extras are locked as their packages)"
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"{name}: {requirement_text} is not pinned to one version"
        assert specifiers[0].operator == "==", f"{name}: {requirement_text} is not pinned"
        assert "*" not in specifiers[0].version, f"{name}: {requirement_text} is not pinned"
        assert options, f"{name}: {requirement_text} carries no hash"
        for option in options:
            assert HASH.fullmatch(option), f"{name}: {requirement_text}: {option} is not a sha256 hash"
        package = canonicalize_name(requirement.name)
        assert package not in packages, f"{name}: {package} is locked twice"
        packages[package] = Locked(Version(specifiers[0].version), frozenset(options))
    assert packages, f"{name} locks nothing"
    return packages


def read_inputs(name: str) -> list[Requirement]:
    """The requirements of an input file, those of the files it includes (-r) too; constraints (-c) are no input."""
    requirements: list[Requirement] = []
    for line in logical_lines((ROOT / name).read_text()):
        text = line.split(" #", 1)[0].strip()
        option, _, argument = text.partition(" ")
        if option == "-r":
            requirements += read_inputs(argument.strip())
        elif option == "-c":
            continue
        else:
            assert not text.startswith("-"), f"{name}: {text}: options belong in `make lock`, not the inputs"
            requirements.append(Requirement(text))
    return requirements


def header_match(name: str) -> re.Match[str]:
    header = (ROOT / name).read_text().splitlines()[:2]
    found = RESOLVED_FOR.search(" ".join(header))
    assert found, f"{name} was not written by `make lock`: {header}"
    return found


def test_the_inputs_and_the_locks_are_separate_files() -> None:
    """Each lock has its input beside it, and no input is a lock (no hash is written by hand)."""
    for lock, source in LOCKS.items():
        assert (ROOT / lock).is_file(), f"{lock} is missing: run `make lock`"
        assert (ROOT / source).is_file(), f"{source}, the input of {lock}, is missing"
        assert "--hash" not in (ROOT / source).read_text(), f"{source} holds hashes: it is an input, not a lock"
    assert sorted(path.name for path in ROOT.glob("requirements*")) == sorted([*LOCKS, *LOCKS.values()])


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_is_pinned_with_its_hashes(lock: str) -> None:
    """Every requirement of a lock is `name==version` with at least one sha256: pip's --require-hashes needs it."""
    packages = read_lock(lock)
    assert all(package.hashes for package in packages.values())


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_every_input_is_in_its_lock_at_a_version_it_allows(lock: str, source: str) -> None:
    """A requirement of the input that the lock lacks, or pins outside its range, means the lock is stale."""
    packages = read_lock(lock)
    inputs = read_inputs(source)
    assert inputs, f"{source} requires nothing"
    for requirement in inputs:
        package = canonicalize_name(requirement.name)
        assert package in packages, f"{requirement} ({source}) is not in {lock}: run `make lock`"
        version = packages[package].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement} ({source}) is locked at {version} in {lock}: run `make lock`"
        )


def test_the_dev_lock_holds_the_runtime_lock_exactly() -> None:
    """The checks run the services on the versions the images ship: same packages, versions and hashes."""
    runtime = read_lock("requirements.txt")
    dev = read_lock("requirements-dev.txt")
    for package, locked in runtime.items():
        assert package in dev, f"{package} is in requirements.txt but not in requirements-dev.txt"
        assert dev[package] == locked, f"{package}: requirements-dev.txt differs from requirements.txt"
    assert "-c requirements.txt" in logical_lines((ROOT / "requirements-dev.in").read_text())


def test_the_client_library_dependencies_are_in_the_runtime_lock() -> None:
    """./gen is installed with --no-deps: what its pyproject requires must be in the runtime lock, in range."""
    pyproject = tomllib.loads((ROOT / "gen" / "pyproject.toml").read_text())
    runtime = read_lock("requirements.txt")
    dependencies = [Requirement(text) for text in pyproject["project"]["dependencies"]]
    assert dependencies
    for requirement in dependencies:
        package = canonicalize_name(requirement.name)
        assert package in runtime, f"gen/ requires {requirement}, which requirements.txt does not lock"
        assert requirement.specifier.contains(runtime[package].version, prereleases=True), requirement
    # What builds it (--no-build-isolation) is locked too.
    for text in pyproject["build-system"]["requires"]:
        requirement = Requirement(text)
        assert canonicalize_name(requirement.name) in runtime, f"gen/ is built with {requirement}: lock it"
        assert requirement.specifier.contains(runtime[canonicalize_name(requirement.name)].version)


def test_the_locks_are_resolved_for_the_images_python_as_of_one_moment() -> None:
    """Both locks were written by one `make lock`, for the Python minor version the Dockerfile's base runs."""
    base = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)\.", (ROOT / "Dockerfile").read_text(), re.M)
    assert base, "the Dockerfile's PYTHON_IMAGE is not a python:X.Y.Z image"
    headers = [header_match(lock) for lock in LOCKS]
    assert {header["python"] for header in headers} == {base[1]}
    assert len({header["moment"] for header in headers}) == 1, "the locks were resolved at different moments"


def test_make_installs_only_from_the_locks() -> None:
    """Every pip install of the Makefile is hash-checked from a lock, or ./gen without its dependencies."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCKED := \$\(PIP\) --require-hashes --no-build-isolation$", makefile, re.M)
    recipes = [line.strip() for line in makefile.splitlines() if line.startswith("\t")]
    installs = [line for line in recipes if re.search(r"\$\((PIP|LOCKED)\)|pip install", line)]
    for line in installs:
        assert line.startswith("$(LOCKED) -r ") or line == "$(PIP) --no-deps --no-build-isolation -e ./gen", line
    assert "$(LOCKED) -r requirements.txt" in installs
    assert "$(LOCKED) -r requirements-dev.txt" in installs
