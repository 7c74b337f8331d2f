"""JOB_TYPE_MODULES: job types from extra modules, added at start, and every way a module is refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from common.job_types import BUILTIN_TYPES, JobType, JobTypes, module_names, text
from job_svc.settings import Settings as JobSettings
from jobqueue.runtime.settings import SettingsError, describe, load
from jobqueue.worker.runner import Runner
from jobqueue.worker.settings import Settings as WorkerSettings
from tests.support.flaky_jobs import AlwaysFails
from worker_svc.handlers import load_job_types

FLAKY = "tests.support.flaky_jobs"
GOOD_TYPE = """
from common.job_types import JobType, text

def shout(value: str) -> str:
    return value.upper() + "!"

JOB_TYPES = [JobType({name!r}, text, "a string, shouted", handler=shout, schema={{"type": "string"}})]
"""


@pytest.fixture
def modules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where a test writes the modules it loads."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_module(folder: Path, source: str) -> str:
    """Write a module of a fresh name (so no test sees another's import) and return its name."""
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    (folder / f"{name}.py").write_text(source)
    return name


@pytest.mark.parametrize(
    ("value", "names"),
    [("", ()), (" , ", ()), ("a", ("a",)), (" my_co.jobs , b_2,", ("my_co.jobs", "b_2"))],
)
def test_module_names_are_comma_separated(value: str, names: tuple[str, ...]) -> None:
    assert module_names(value) == names


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("my-jobs", "'my-jobs' is not a module name"),
        ("a..b", "'a..b' is not a module name"),
        ("1jobs", "'1jobs' is not a module name"),
        ("a, a", "a module is listed twice"),
    ],
)
def test_malformed_module_lists_are_refused_by_the_workers_settings(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"JOB_TYPE_MODULES: {message}"):
        load(WorkerSettings, {"JOB_TYPE_MODULES": value})


def test_the_worker_defaults_to_no_modules_and_the_job_service_reads_none() -> None:
    assert load(WorkerSettings, {}).modules() == ()
    assert load(WorkerSettings, {"JOB_TYPE_MODULES": FLAKY}).modules() == (FLAKY,)
    # The job service imports no worker code: it learns types from DeclareJobTypes.
    assert "JOB_TYPE_MODULES" not in describe(JobSettings)
    assert "DEMO_JOB_TYPES" not in describe(JobSettings)


def test_a_module_adds_its_types_to_the_registry(modules_dir: Path) -> None:
    name = write_module(modules_dir, GOOD_TYPE.format(name="shout"))
    types = JobTypes.load([name, FLAKY])
    builtins = [t.name for t in BUILTIN_TYPES]
    assert list(types) == [*builtins, "shout", "always_fails", "sleeps"]
    assert types.modules == (name, FLAKY)
    assert types.parse("shout", "hi") == "hi"
    handler = types["shout"].handler
    assert handler is not None
    assert handler("hi") == "HI!"
    assert list(JobTypes.load([])) == builtins, "each registry is its own: loading one changes no other"


def test_a_registry_cannot_be_changed() -> None:
    types = JobTypes.load([FLAKY])
    with pytest.raises(TypeError):
        types["shout"] = JobType("shout", text, "", schema={})  # type: ignore[index]
    with pytest.raises(AttributeError):
        types.modules = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="'shout' is given twice"):
        JobTypes([JobType("shout", text, "", schema={}), JobType("shout", text, "", schema={})])


#: A module's first line, for the broken modules below.
IMPORT = "from common.job_types import JobType, text\n"

BROKEN = [
    ("raise RuntimeError('no config file')", r"cannot be imported \(RuntimeError: no config file\)"),
    ("import no_such_dependency_xyz", r"cannot be imported \(ModuleNotFoundError: No module named"),
    ("X = 1", "must define JOB_TYPES, a list of common.job_types.JobType"),
    ("JOB_TYPES = {'a': 1}", "must define JOB_TYPES, a list of common.job_types.JobType"),
    ("JOB_TYPES = [('shout', str)]", "must define JOB_TYPES, a list of common.job_types.JobType"),
    (
        IMPORT + "JOB_TYPES = [JobType('Shout-Loud', text, '', handler=str, schema={})]",
        "job type name 'Shout-Loud' must be lowercase letters, digits and _",
    ),
    (
        IMPORT + "JOB_TYPES = [JobType('shout', text, '', schema={})]",
        "job type 'shout' has no handler",
    ),
    (
        "from common.job_types import JobType\nJOB_TYPES = [JobType('shout', None, '', handler=str, schema={})]",
        "job type 'shout' has no callable parse rule",
    ),
    (
        IMPORT + "JOB_TYPES = [JobType('reverse_string', text, '', handler=str, schema={})]",
        "declares job type 'reverse_string', which already exists",
    ),
    (
        IMPORT + "JOB_TYPES = [JobType('shout', text, '', handler=str)]",
        "cannot be imported \\(TypeError: .*missing 1 required keyword-only argument: 'schema'",
    ),
    (
        IMPORT + "JOB_TYPES = [JobType('shout', text, '', handler=str, schema='s')]",
        "job type 'shout' has no schema",
    ),
]


@pytest.mark.parametrize(("source", "message"), BROKEN)
def test_a_module_that_breaks_the_contract_is_refused_by_name(modules_dir: Path, source: str, message: str) -> None:
    name = write_module(modules_dir, source)
    with pytest.raises(SettingsError, match=f"^JOB_TYPE_MODULES: module '{name}'.*{message}"):
        JobTypes.load([name])
    with pytest.raises(SettingsError, match=f"^JOB_TYPE_MODULES: module '{name}'.*{message}"):
        load_job_types([name])


def test_an_unknown_module_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="module 'no_such_jobs_module' cannot be imported"):
        JobTypes.load(["no_such_jobs_module"], builtins=())


def test_two_modules_may_not_declare_the_same_type(modules_dir: Path) -> None:
    first = write_module(modules_dir, GOOD_TYPE.format(name="shout"))
    second = write_module(modules_dir, GOOD_TYPE.format(name="shout"))
    with pytest.raises(SettingsError, match=f"module '{second}' declares job type 'shout', which module '{first}'"):
        JobTypes.load([first, second], builtins=())


def test_handlers_come_with_their_types() -> None:
    types = load_job_types([FLAKY])
    assert types.modules == (FLAKY,)
    assert types["always_fails"].cpu_bound
    handler = types["always_fails"].handler
    assert handler is not None
    with pytest.raises(AlwaysFails):
        handler("x")
    assert all(t.handler is not None for t in types.values()), "the worker's registry runs every type it knows"


def test_a_runner_refuses_types_it_cannot_run() -> None:
    with pytest.raises(ValueError, match=r"without a handler cannot be run: \['fibonacci_calc', 'reverse_string'"):
        Runner(JobTypes.load([FLAKY]))
