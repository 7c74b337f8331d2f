"""Operator commands, run next to the service with its settings: ``python -m auth_svc.admin --help``.

    python -m auth_svc.admin grant-operator ops@example.com
    python -m auth_svc.admin revoke-operator ops@example.com

This is the only way to change a role: the API never takes one. The account's
access tokens carry its role from its next login on (see auth_svc.tokens); a
token issued before keeps the role it was minted with until it expires.

Exit codes: 0 done (also when the account already had that role), 1 no account
has that email, 2 bad usage or settings, 3 the database cannot be reached or
refused the change.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from auth_svc import rules
from auth_svc.roles import Role
from auth_svc.settings import AuthSettings
from auth_svc.store import UserStore
from common import db
from jobqueue.runtime.settings import SettingsError, load

EXIT_NO_ACCOUNT = 1
EXIT_BAD_CONFIG = 2
EXIT_DATABASE = 3

#: An unreachable database, or one that refuses the statement (not migrated, say).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*db.TRANSIENT_ERRORS, asyncpg.PostgresError)

#: Each command and the role it leaves the account with.
COMMANDS = {"grant-operator": Role.OPERATOR, "revoke-operator": Role.USER}
_HELP = {
    "grant-operator": "make the account an operator, from its next login",
    "revoke-operator": "make the account a plain user again, from its next login",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command and the email it applies to (argparse exits 2 on bad usage)."""
    parser = argparse.ArgumentParser(
        prog="python -m auth_svc.admin",
        description="Grant or revoke the operator role (takes effect at the account's next login).",
        epilog="Reads the same environment as the service, DATABASE_URL above all (python -m auth_svc --help).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        command = commands.add_parser(name, help=_HELP[name])
        command.add_argument("email", help="the account's email (compared case-insensitively, as Login does)")
    return parser.parse_args(argv)


async def change_role(database_url: str, email: str, role: Role) -> Role | None:
    """Set the role of the account with this normalised email; its role before, or None if no account."""
    pool = await db.create_pool(database_url, max_size=1)
    try:
        return await UserStore(pool).set_role(email, role)
    finally:
        await pool.close()


def outcome(email: str, role: Role, before: Role, ttl_seconds: int) -> str:
    """The one line that tells the operator what changed."""
    if before is role:
        return f"{email} already has the {role} role; nothing changed"
    if role is Role.OPERATOR:
        return f"{email} is now an operator, from their next login"
    return (
        f"{email} is no longer an operator from their next login; "
        f"tokens issued before keep the role until they expire (at most {ttl_seconds} s)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; prints one line (stdout on success, stderr otherwise) and returns the exit code."""
    args = parse_args(argv)
    email = rules.normalise_email(args.email)
    role = COMMANDS[args.command]
    try:
        settings = load(AuthSettings)
    except SettingsError as error:
        print(f"auth_svc.admin: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        before = asyncio.run(change_role(settings.database_url, email, role))
    except DATABASE_ERRORS as error:
        # The URL is not echoed: it may hold a password.
        hint = (
            "; apply the migrations first (python -m migrations)"
            if isinstance(error, asyncpg.UndefinedColumnError)
            else ""
        )
        print(f"auth_svc.admin: cannot change the role, database error: {error!r}{hint}", file=sys.stderr)
        return EXIT_DATABASE
    if before is None:
        print(f"auth_svc.admin: no account has the email {email!r}; register it first", file=sys.stderr)
        return EXIT_NO_ACCOUNT
    print(outcome(email, role, before, settings.token_ttl_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
