"""Where ``jobq`` finds the services and keeps the token of the last ``jobq login``.

The token is the only state: ``$XDG_CONFIG_HOME/jobq/credentials.json`` (``~/.config/jobq/``
without XDG_CONFIG_HOME), readable by its owner alone (file 0600 in a 0700 folder), because
whoever reads it acts as the user until it expires. It is written to a temporary file in the same
folder and renamed over the old one, so a crash or a second ``jobq login`` never leaves half a file.
The addresses are not stored: they come from the flags or the environment on every run, so a
token can never be sent to a service the user did not name this time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobqueue.client import DEFAULT_AUTH_ADDRESS, DEFAULT_JOBS_ADDRESS

#: The variables ``jobq`` reads (the flags --auth and --jobs win over them).
AUTH_ADDRESS_VARIABLE = "JOBQ_AUTH_ADDRESS"
JOBS_ADDRESS_VARIABLE = "JOBQ_JOBS_ADDRESS"
CREDENTIALS_FILE = "credentials.json"


class NotLoggedIn(Exception):
    """Raised when a command needs the stored token and there is none (or it is unreadable)."""


@dataclass(frozen=True)
class Environment:
    """What ``jobq`` takes from its environment, read once at start."""

    #: The auth service's address when --auth is not given.
    auth_address: str
    #: The job service's address when --jobs is not given.
    jobs_address: str
    #: The folder of ``credentials.json``.
    config_dir: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Environment:
        """The environment of this process (``os.environ``), or any mapping a test gives."""
        # An empty XDG_CONFIG_HOME counts as unset (the XDG Base Directory specification says so).
        base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
        return cls(
            auth_address=environ.get(AUTH_ADDRESS_VARIABLE) or DEFAULT_AUTH_ADDRESS,
            jobs_address=environ.get(JOBS_ADDRESS_VARIABLE) or DEFAULT_JOBS_ADDRESS,
            config_dir=Path(base) / "jobq",
        )

    @property
    def credentials_path(self) -> Path:
        """The file that holds the token."""
        return self.config_dir / CREDENTIALS_FILE


@dataclass(frozen=True)
class Credentials:
    """What ``jobq login`` stores: the access token, and for messages the email it was issued to."""

    access_token: str
    email: str


def save(path: Path, credentials: Credentials) -> None:
    """Store ``credentials`` at ``path`` atomically, the file 0600 and its folder 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode does not change a folder that already exists, nor escape the umask.
    path.parent.chmod(0o700)
    text = json.dumps({"access_token": credentials.access_token, "email": credentials.email}) + "\n"
    # mkstemp creates the file 0600 from the start: the token is never readable by others, not even briefly.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def load(path: Path) -> Credentials:
    """The stored credentials; NotLoggedIn if there are none or the file is not what ``save`` writes."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotLoggedIn("not logged in: run `jobq login` first") from None
    except (OSError, ValueError) as error:
        raise NotLoggedIn(f"cannot read {path} ({error}): run `jobq login` again") from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token or token != token.strip():
        raise NotLoggedIn(f"{path} holds no token: run `jobq login` again")
    email = data.get("email")
    return Credentials(token, email if isinstance(email, str) else "")


def forget(path: Path) -> bool:
    """Delete the stored credentials; whether there were any."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
