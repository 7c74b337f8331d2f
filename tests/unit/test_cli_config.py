"""Where jobq keeps the token: the folder XDG says, readable by its owner alone, replaced whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobqueue.cli import config
from jobqueue.client import DEFAULT_AUTH_ADDRESS, DEFAULT_JOBS_ADDRESS


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_environment_names_the_services_and_the_folder(tmp_path: Path) -> None:
    env = config.Environment.from_environ(
        {"XDG_CONFIG_HOME": str(tmp_path), "JOBQ_AUTH_ADDRESS": "auth:1", "JOBQ_JOBS_ADDRESS": "jobs:2"}
    )
    assert (env.auth_address, env.jobs_address) == ("auth:1", "jobs:2")
    assert env.credentials_path == tmp_path / "jobq" / "credentials.json"


@pytest.mark.parametrize("xdg", [None, ""])
def test_without_xdg_config_home_the_folder_is_under_home(tmp_path: Path, xdg: str | None) -> None:
    environ = {"HOME": str(tmp_path)} | ({} if xdg is None else {"XDG_CONFIG_HOME": xdg})
    env = config.Environment.from_environ(environ)
    assert env.config_dir == tmp_path / ".config" / "jobq"
    assert (env.auth_address, env.jobs_address) == (DEFAULT_AUTH_ADDRESS, DEFAULT_JOBS_ADDRESS)


def test_saved_credentials_are_0600_in_a_0700_folder_and_load_back(tmp_path: Path) -> None:
    path = tmp_path / "config" / "jobq" / "credentials.json"
    old_umask = os.umask(0o022)  # a usual umask, which would make files 0644
    try:
        config.save(path, config.Credentials("token-1", "ada@example.com"))
    finally:
        os.umask(old_umask)
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)
    assert config.load(path) == config.Credentials("token-1", "ada@example.com")


def test_saving_again_replaces_the_file_whole_and_tightens_an_open_folder(tmp_path: Path) -> None:
    folder = tmp_path / "jobq"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    path = folder / "credentials.json"
    config.save(path, config.Credentials("token-1", "ada@example.com"))
    before = path.stat().st_ino
    config.save(path, config.Credentials("token-2", "bob@example.com"))
    assert config.load(path).access_token == "token-2"
    assert path.stat().st_ino != before  # a new file renamed over the old one, not the old one rewritten
    assert mode(folder) == 0o700
    assert [p.name for p in folder.iterdir()] == ["credentials.json"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobq" / "credentials.json"
    config.save(path, config.Credentials("token-1", "ada@example.com"))

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        config.save(path, config.Credentials("token-2", "ada@example.com"))
    assert config.load(path).access_token == "token-1"
    assert [p.name for p in path.parent.iterdir()] == ["credentials.json"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (None, "not logged in: run `jobq login` first"),
        ("{", "cannot read"),
        ('{"email": "a@b.c"}', "holds no token"),
        ('{"access_token": " t "}', "holds no token"),
        ("[]", "holds no token"),
    ],
)
def test_a_missing_or_broken_file_means_not_logged_in(tmp_path: Path, text: str | None, says: str) -> None:
    path = tmp_path / "credentials.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(config.NotLoggedIn, match=says):
        config.load(path)


def test_forget_removes_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "jobq" / "credentials.json"
    config.save(path, config.Credentials("t", "a@b.c"))
    assert config.forget(path)
    assert not path.exists()
    assert not config.forget(path)
