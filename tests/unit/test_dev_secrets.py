"""Development secrets: made only where asked, and split so each service's folder holds only what it reads."""

from __future__ import annotations

import stat
from pathlib import Path

from jobqueue.runtime.secrets import PRIVATE_KEY, PUBLIC_KEY, WORKER_TOKEN, dev_secret, split_dev_secrets


def _names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_a_folder_holding_a_public_key_gets_no_private_key(tmp_path: Path) -> None:
    (tmp_path / PUBLIC_KEY).write_bytes(b"the public key compose copied here")
    assert dev_secret(tmp_path, PUBLIC_KEY).read_bytes() == b"the public key compose copied here"
    dev_secret(tmp_path, WORKER_TOKEN)
    assert _names(tmp_path) == {PUBLIC_KEY, WORKER_TOKEN}


def test_split_gives_only_the_auth_folder_the_signing_key(tmp_path: Path) -> None:
    auth, jobs, worker = (tmp_path / name for name in ("auth", "jobs", "worker"))
    split_dev_secrets(auth, jobs, worker)
    assert _names(auth) == {PRIVATE_KEY, PUBLIC_KEY}
    assert _names(jobs) == {PUBLIC_KEY, WORKER_TOKEN}
    assert _names(worker) == {WORKER_TOKEN}
    assert (jobs / PUBLIC_KEY).read_bytes() == (auth / PUBLIC_KEY).read_bytes()
    assert (worker / WORKER_TOKEN).read_bytes() == (jobs / WORKER_TOKEN).read_bytes()
    for secret in (auth / PRIVATE_KEY, jobs / WORKER_TOKEN, worker / WORKER_TOKEN):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_split_again_keeps_the_secrets_and_brings_a_replaced_one_along(tmp_path: Path) -> None:
    auth, jobs, worker = (tmp_path / name for name in ("auth", "jobs", "worker"))
    split_dev_secrets(auth, jobs, worker)
    before = {path: path.read_bytes() for folder in (auth, jobs, worker) for path in folder.iterdir()}
    split_dev_secrets(auth, jobs, worker)
    assert {path: path.read_bytes() for path in before} == before
    # The worker's volume was recreated: it gets the job service's token back, not a new one.
    (worker / WORKER_TOKEN).unlink()
    split_dev_secrets(auth, jobs, worker)
    assert (worker / WORKER_TOKEN).read_bytes() == (jobs / WORKER_TOKEN).read_bytes()
