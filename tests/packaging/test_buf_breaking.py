"""`make lint`'s `buf breaking` holds protos/ to the released API, so it can fail in CI.

The baseline is protos/released.json (written by `make api-release`), not a git
ref: CI runs on a clean clone, where comparing with HEAD compares the tree with
itself. These tests run the real buf, as `make lint` does, on a copy of protos/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
RELEASED = ROOT / "protos" / "released.json"
JOBS_PROTO = Path("jobqueue") / "jobs" / "v1" / "jobs.proto"


@pytest.fixture
def protos(tmp_path: Path) -> Path:
    """A copy of protos/ (without the baseline), for a test to change."""
    assert BUF.exists(), f"{BUF} is missing: `make lint` installs it"
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy, ignore=shutil.ignore_patterns(RELEASED.name))
    return copy


def buf_breaking(module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", str(module), "--against", str(RELEASED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_as_it_is_does_not_break_the_released_api(protos: Path) -> None:
    done = buf_breaking(protos)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_renamed_field_breaks_the_released_api(protos: Path) -> None:
    proto = protos / JOBS_PROTO
    text = proto.read_text()
    # CreateJobRequest's timeout_seconds, renamed: same number and type, so only the name changes.
    renamed, count = re.subn(r"\bint32 timeout_seconds = (\d+);", r"int32 deadline_seconds = \1;", text)
    assert count >= 1, "the field to rename is not in jobs.proto any more: pick another"
    proto.write_text(renamed)

    done = buf_breaking(protos)

    assert done.returncode != 0, done.stdout + done.stderr
    assert 'changed name from "timeout_seconds" to "deadline_seconds"' in done.stdout, done.stdout + done.stderr


def test_make_lint_compares_with_the_released_api_not_a_git_ref() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "RELEASED_API := protos/released.json" in makefile
    assert re.search(r"^\t\$\(BUF\) breaking protos --against \$\(RELEASED_API\)$", makefile, re.M)
    assert ".git#" not in makefile
