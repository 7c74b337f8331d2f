"""Where the JWT keys and the worker token come from.

In production (``APP_ENV=production``) every secret must be configured, inline
or as a file path, and a service refuses to start without it. Anywhere else a
missing secret is generated once into ``DEV_SECRETS_DIR`` (default
``var/secrets``) and shared from there, so a fresh checkout runs with no set-up.
"""

from __future__ import annotations

import os
import secrets as _random
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.settings import ServiceSettings, SettingsError

PRIVATE_KEY = "jwt-ed25519.pem"
PUBLIC_KEY = "jwt-ed25519.pub.pem"
WORKER_TOKEN = "worker-token"  # noqa: S105 - a file name, not a secret


def _write_once(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data`` atomically; if it already exists keep the existing file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        # link() fails if the target exists, so concurrent starters agree on one value.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def ensure_dev_secrets(directory: str | Path) -> Path:
    """Generate the development key pair and worker token in ``directory`` unless present."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / PRIVATE_KEY).exists():
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_once(folder / PRIVATE_KEY, private, 0o600)
    if not (folder / PUBLIC_KEY).exists():
        loaded = serialization.load_pem_private_key((folder / PRIVATE_KEY).read_bytes(), password=None)
        public = loaded.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write_once(folder / PUBLIC_KEY, public, 0o644)
    if not (folder / WORKER_TOKEN).exists():
        _write_once(folder / WORKER_TOKEN, _random.token_urlsafe(32).encode(), 0o600)
    return folder


def resolve(*, inline: str, file: str, dev_name: str, app_env: str, dev_dir: str, variable: str) -> bytes:
    """A secret's bytes: from ``inline``, else ``file``, else (outside production) the dev secret.

    ``variable`` is the setting's name (without ``_FILE``) for the error message.
    """
    if inline:
        return inline.encode()
    if file:
        try:
            return Path(file).read_bytes().strip()
        except OSError as error:
            raise SettingsError(f"{variable}_FILE={file!r} cannot be read: {error.strerror}") from None
    if app_env == "production":
        raise SettingsError(f"{variable} or {variable}_FILE must be set when APP_ENV=production")
    return (ensure_dev_secrets(dev_dir) / dev_name).read_bytes().strip()


def of(settings: ServiceSettings, variable: str, dev_name: str) -> bytes:
    """The secret ``variable`` (e.g. "WORKER_TOKEN") of ``settings``, from its inline or ``_FILE`` setting.

    ``settings`` must have the two fields (``worker_token``, ``worker_token_file``);
    outside production a missing secret is the development one named ``dev_name``.
    """
    field = variable.lower()
    return resolve(
        inline=getattr(settings, field),
        file=getattr(settings, f"{field}_file"),
        dev_name=dev_name,
        app_env=settings.app_env,
        dev_dir=settings.dev_secrets_dir,
        variable=variable,
    )
