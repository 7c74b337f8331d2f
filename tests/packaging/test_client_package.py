"""`pip install ./gen` gives a typed client: the built wheel carries the code, the .pyi stubs and py.typed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def test_the_client_wheel_ships_generated_code_type_stubs_and_the_helper(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing behind in the checkout.
    source = tmp_path / "gen"
    shutil.copytree(ROOT / "gen", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path, "./gen"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("jobqueue_client-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("jobqueue/auth/v1/auth_pb2", "jobqueue/jobs/v1/jobs_pb2", "jobqueue/jobs/v1/delivery_pb2"):
        assert f"{module}.py" in names
        assert f"{module}.pyi" in names
    assert "jobqueue/jobs/v1/jobs_pb2_grpc.pyi" in names
    assert "jobqueue/py.typed" in names
    assert "jobqueue/client.py" in names
    # The worker SDK and the runtime it runs on ship in the same wheel, their dependencies as the extra `worker`.
    assert {"jobqueue/worker/__init__.py", "jobqueue/worker/__main__.py", "jobqueue/runtime/service.py"} <= names
    # The command line, and the console script that runs it.
    assert {"jobqueue/cli/__main__.py", "jobqueue/cli/commands.py", "jobqueue/cli/progress.py"} <= names
    [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]\njobq = jobqueue.cli.__main__:main\n" in scripts
    [metadata] = [name for name in names if name.endswith(".dist-info/METADATA")]
    requires = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Provides-Extra: worker" in requires
    assert 'Requires-Dist: aio-pika<11,>=10.2.1; extra == "worker"' in requires


def test_the_locked_requirements_meet_every_dependency_of_the_package_and_its_extras() -> None:
    # The images install gen/ with --no-deps after requirements.txt: its pins must satisfy the package
    # (pip check proves it there, for the installed extras only, so the worker extra is checked here).
    project = tomllib.loads((ROOT / "gen" / "pyproject.toml").read_text())["project"]
    pins = dict(re.findall(r"^([a-z0-9-]+)==([^ ]+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE))
    extras = project["optional-dependencies"]
    assert set(extras) == {"worker", "tracing"}
    for line in [*project["dependencies"], *extras["worker"], *extras["tracing"]]:
        requirement = Requirement(line)
        assert requirement.name in pins, f"{requirement.name} is not in requirements.txt"
        assert requirement.specifier.contains(pins[requirement.name]), (line, pins[requirement.name])
