"""`pip install ./gen` gives a typed client: the built wheel carries the code, the .pyi stubs and py.typed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
