"""The pages a reader follows stay true to the tree: links resolve, documented settings and metrics exist.

The walkthroughs in README.md are run as written by tests/e2e/test_walkthrough.py;
this file keeps the rest of README.md, CONTRIBUTING.md and docs/ honest where a
check is cheap: a renamed file, a removed setting or a renamed metric fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import prometheus_client
import pytest

import job_svc.metrics
import jobqueue.runtime.metrics
import jobqueue.worker.metrics
from auth_svc.settings import AuthSettings
from job_svc.settings import Settings as JobSettings
from jobqueue.runtime.settings import env_name
from migrations import roles
from worker_svc.settings import Settings as WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
#: [text](target), skipping images and absolute URLs.
LINK = re.compile(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)")
#: Variables the migrations runner reads itself (it has no settings class).
MIGRATION_VARIABLES = {"DATABASE_URL", *(role.password_variable for role in roles.ROLES)}
_ = (jobqueue.runtime.metrics, job_svc.metrics, jobqueue.worker.metrics)  # imported for the metrics they register


def anchors(page: Path) -> set[str]:
    """The GitHub anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def local_links(page: Path) -> list[str]:
    """The page's links to files of this repository (and anchors), as written."""
    return [target for target in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", target)]


def test_the_pages_exist() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "CONTRIBUTING.md", "docs/architecture.md", "docs/operations.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_link_to_a_file_or_heading_resolves(page: Path) -> None:
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def documented_variables() -> list[str]:
    """The variables in the first column of docs/operations.md's configuration table."""
    section = (ROOT / "docs" / "operations.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])]


def test_every_documented_setting_is_read_by_a_service() -> None:
    read = set(MIGRATION_VARIABLES)
    for settings in (AuthSettings, JobSettings, WorkerSettings):
        read |= {env_name(field) for field in dataclasses.fields(settings)}
    documented = documented_variables()
    assert len(documented) >= 15  # the table was found and parsed
    assert set(documented) <= read, sorted(set(documented) - read)


def test_every_documented_metric_is_registered() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"\| `((?:jobqueue|grpc_server)_[a-z_]+)", text))
    families = {metric.name for metric in prometheus_client.REGISTRY.collect()}
    # A counter's family is named without the _total its samples carry.
    missing = {name for name in documented if name not in families and name.removesuffix("_total") not in families}
    assert len(documented) >= 10  # the table was found and parsed
    assert not missing, sorted(missing)
