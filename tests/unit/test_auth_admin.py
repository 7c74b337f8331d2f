"""The operator command's pure parts (auth_svc.admin): its arguments and the line it prints."""

from __future__ import annotations

import pytest

from auth_svc.admin import COMMANDS, outcome, parse_args
from auth_svc.roles import Role


def test_each_command_takes_one_email_and_names_the_role_it_leaves() -> None:
    assert COMMANDS == {"grant-operator": Role.OPERATOR, "revoke-operator": Role.USER}
    args = parse_args(["grant-operator", " Ops@Example.com "])
    assert (args.command, args.email) == ("grant-operator", " Ops@Example.com ")


@pytest.mark.parametrize(
    "argv", [[], ["grant-operator"], ["make-admin", "ops@example.com"], ["revoke-operator", "a@b.c", "d@e.f"]]
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert "usage: python -m auth_svc.admin" in capsys.readouterr().err


def test_the_message_says_what_changed_and_when_it_takes_effect() -> None:
    email = "ops@example.com"
    granted = outcome(email, Role.OPERATOR, Role.USER, 3600)
    assert granted == "ops@example.com is now an operator, from their next login"
    revoked = outcome(email, Role.USER, Role.OPERATOR, 3600)
    assert revoked.startswith("ops@example.com is no longer an operator from their next login")
    assert "at most 3600 s" in revoked
    for role in Role:
        assert outcome(email, role, role, 3600) == f"ops@example.com already has the {role.value} role; nothing changed"
    assert all("\n" not in line for line in (granted, revoked))
