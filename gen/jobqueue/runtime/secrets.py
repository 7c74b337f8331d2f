"""Where the JWT keys and the worker token come from, and how a key is named.

In production (``APP_ENV=production``) every secret must be configured, inline
or as a file path, and a service refuses to start without it. Anywhere else a
missing secret is generated once into ``DEV_SECRETS_DIR`` (default
``var/secrets``) and shared from there, so a fresh checkout runs with no set-up.

Both secrets rotate without logging anyone out, because the checking side
accepts a set: the job service trusts several public keys at once (a key file
may hold several PEM keys one after another), each named by its ``key_id``,
which the auth service writes into every token's ``kid`` header; and a worker
token file may hold several tokens, one per line, of which the job service
accepts any and a worker presents the last (the newest).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets as _random
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from jobqueue.runtime.settings import ServiceSettings, SettingsError

PRIVATE_KEY = "jwt-ed25519.pem"
PUBLIC_KEY = "jwt-ed25519.pub.pem"
WORKER_TOKEN = "worker-token"  # noqa: S105 - a file name, not a secret
#: The shortest worker token production accepts: a guessable token would let anyone settle any job.
MIN_PRODUCTION_TOKEN_LENGTH = 32
#: A PEM block: its label ("PUBLIC KEY", "PRIVATE KEY", ...) and everything up to its END line.
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)


def _written_beside(path: Path, data: bytes, mode: int) -> str:
    """A new hidden file beside ``path`` holding ``data`` with ``mode``: its path, to link or rename into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return tmp


def _write_once(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data`` atomically; if it already exists keep the existing file."""
    tmp = _written_beside(path, data, mode)
    try:
        # link() fails if the target exists, so concurrent starters agree on one value.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def dev_secret(directory: str | Path, name: str) -> Path:
    """The development secret ``name`` (PRIVATE_KEY, PUBLIC_KEY or WORKER_TOKEN) in ``directory``, made if absent.

    Only what is asked for is made (a public key needs its private key, so that
    first): a folder holding just a public key and a worker token, as compose gives
    the job service, stays that way.
    """
    folder = Path(directory)
    path = folder / name
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    if name == PRIVATE_KEY:
        private = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_once(path, private, 0o600)
    elif name == PUBLIC_KEY:
        loaded = serialization.load_pem_private_key(dev_secret(folder, PRIVATE_KEY).read_bytes(), password=None)
        public = loaded.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write_once(path, public, 0o644)
    elif name == WORKER_TOKEN:
        _write_once(path, _random.token_urlsafe(32).encode(), 0o600)
    else:
        raise ValueError(f"no development secret is called {name!r}")
    return path


def ensure_dev_secrets(directory: str | Path) -> Path:
    """Generate the development key pair and worker token in ``directory`` unless present (one folder for all)."""
    for name in (PRIVATE_KEY, PUBLIC_KEY, WORKER_TOKEN):
        dev_secret(directory, name)
    return Path(directory)


def split_dev_secrets(auth: str | Path, jobs: str | Path, worker: str | Path) -> None:
    """Development secrets in one folder per service, each holding only what its service reads.

    ``auth``: the key pair (only the auth service can sign tokens); ``jobs``: the
    public key and the worker token; ``worker``: the worker token. Made in ``auth``
    and ``jobs`` if absent, then copied where they are read, replacing an older copy,
    so running it again after either is replaced brings the others along.
    """
    public = dev_secret(auth, PUBLIC_KEY).read_bytes()
    _replace(Path(jobs) / PUBLIC_KEY, public, 0o644)
    token = dev_secret(jobs, WORKER_TOKEN).read_bytes()
    _replace(Path(worker) / WORKER_TOKEN, token, 0o600)


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Make ``path`` hold ``data`` (atomically), unless it already does."""
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(_written_beside(path, data, mode), path)


def resolve(*, inline: str, file: str, dev_name: str, app_env: str, dev_dir: str, variable: str) -> bytes:
    """A secret's bytes: from ``inline``, else ``file``, else (outside production) the dev secret.

    ``variable`` is the setting's name (without ``_FILE``) for the error message.
    """
    if inline:
        return inline.encode()
    if file:
        return read(file, f"{variable}_FILE").strip()
    if app_env == "production":
        raise SettingsError(f"{variable} or {variable}_FILE must be set when APP_ENV=production")
    return dev_secret(dev_dir, dev_name).read_bytes().strip()


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


def origin(settings: ServiceSettings, variable: str) -> str:
    """Where ``of(settings, variable, ...)`` takes the secret from, for a message: the variable, its file, or dev."""
    field = variable.lower()
    if getattr(settings, field):
        return variable
    if getattr(settings, f"{field}_file"):
        return f"{variable}_FILE"
    return f"the development {variable} in DEV_SECRETS_DIR"


def read(path: str | Path, variable: str) -> bytes:
    """The bytes of the file ``path`` that ``variable`` names; SettingsError naming both if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"{variable}={str(path)!r} cannot be read: {error.strerror}") from None


def key_id(key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint: SHA-256 of its canonical JWK, base64url without padding.

    Derived from the key itself, so the auth service (signing) and the job
    service (verifying) agree on a key's name with nothing more to configure.
    """
    x = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # RFC 7638 section 3.2: the required members only (RFC 8037: crv, kty, x), sorted, no whitespace.
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _base64url(x)}
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
    return _base64url(hashlib.sha256(canonical).digest())


def public_keys(pem: bytes, source: str) -> dict[str, Ed25519PublicKey]:
    """Every PEM public key in ``pem`` (one or several, one after another), by key id.

    Text between the blocks is ignored (a comment saying which key is which);
    anything else is a SettingsError naming ``source``: no key at all, a key
    that is not Ed25519, or a private key, which the job service must never hold.
    """
    # An inline key in an env file or compose YAML often arrives with its line breaks written as "\n".
    text = pem.replace(b"\\n", b"\n")
    blocks = list(_PEM_BLOCK.finditer(text))
    if not blocks:
        raise SettingsError(f"{source} holds no PEM public key")
    keys: dict[str, Ed25519PublicKey] = {}
    for block in blocks:
        label = block[1].decode()
        if label != "PUBLIC KEY":
            raise SettingsError(f"{source} holds a {label}; give the job service public keys only")
        try:
            key = serialization.load_pem_public_key(block[0])
        except ValueError:
            raise SettingsError(f"{source} holds a PEM public key that does not parse") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SettingsError(f"{source} holds a key that is not Ed25519 (tokens are signed with EdDSA)")
        keys[key_id(key)] = key
    return keys


def key_files(directory: str, variable: str) -> list[Path]:
    """The key files in ``directory``: every visible file (symbolic links followed), by name.

    Hidden names are skipped: editors' and copy tools' temporary files, and the
    ``..data`` links a Kubernetes secret volume keeps beside its files.
    """
    try:
        entries = sorted(Path(directory).iterdir())
    except OSError as error:
        raise SettingsError(f"{variable}={directory!r} cannot be read: {error.strerror}") from None
    return [entry for entry in entries if not entry.name.startswith(".") and entry.is_file()]


def worker_tokens(settings: ServiceSettings) -> tuple[bytes, ...]:
    """The worker tokens of ``settings`` (WORKER_TOKEN, else WORKER_TOKEN_FILE, else the dev one), in order.

    The job service accepts any of them; a worker presents the last, so a file
    both share rotates by appending the new token and, once every worker
    presents it, removing the old one.
    """
    text = of(settings, "WORKER_TOKEN", WORKER_TOKEN)
    return parse_worker_tokens(text, origin(settings, "WORKER_TOKEN"), production=settings.production)


def parse_worker_tokens(text: bytes, variable: str, *, production: bool) -> tuple[bytes, ...]:
    """The worker tokens in ``text``, one per line (blank lines skipped), in order.

    Each travels as a gRPC metadata value, so it must be printable ASCII without
    spaces; in production each must be at least MIN_PRODUCTION_TOKEN_LENGTH characters.
    """
    tokens = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not tokens:
        raise SettingsError(f"{variable} holds no worker token")
    for token in tokens:
        if not all(0x21 <= byte <= 0x7E for byte in token):
            raise SettingsError(f"{variable} must hold printable ASCII tokens without spaces")
        if production and len(token) < MIN_PRODUCTION_TOKEN_LENGTH:
            raise SettingsError(
                f"{variable} holds a token of {len(token)} characters; APP_ENV=production needs at least "
                f"{MIN_PRODUCTION_TOKEN_LENGTH} (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    return tokens


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main(argv: list[str]) -> int:
    """`python -m jobqueue.runtime.secrets AUTH_DIR JOB_DIR WORKER_DIR`: split_dev_secrets, for compose."""
    if len(argv) != 3:
        print("usage: python -m jobqueue.runtime.secrets AUTH_DIR JOB_DIR WORKER_DIR", file=sys.stderr)
        return 2
    split_dev_secrets(*argv)
    print(
        f"development secrets ready: key pair in {argv[0]}; public key and worker token in {argv[1]}; "
        f"worker token in {argv[2]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
