"""``dispatcher users``: the people who log in to the web pages, and their roles.

``users add NAME --role admin`` makes the first admin. The password is never a command
argument (arguments land in shell history, ``ps`` and CI logs): it is read from the file
``--password-file`` names (a secret file), else from the environment variable
``--password-env`` names, else from standard input (one line; asked twice without echo
on a terminal). Every change is audited with who made it (``cli:<login>``).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.bootstrap import App, bootstrap
from dispatcher.clock import SystemClock
from dispatcher.domain.access import Role, parse_roles, roles_text
from dispatcher.error import InputError
from dispatcher.service import login

users_app = typer.Typer(no_args_is_help=True, help="Web users: add, list, roles, passwords.")
out = Console()

RoleOption = Annotated[
    list[str],
    typer.Option("--role", help="collector, compliance, ops, auditor or admin (repeatable)."),
]
PasswordFile = Annotated[
    Path | None, typer.Option("--password-file", help="Read the password from this file.")
]
PasswordEnv = Annotated[
    str | None,
    typer.Option("--password-env", help="Read the password from this environment variable."),
]


def _wired() -> App:
    from dispatcher import cli  # late: cli imports this module to register the sub-app

    wired = bootstrap(settings_file=cli.state.config)
    wired.store.check_schema()
    return wired


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def read_password(file: Path | None, env: str | None) -> str:
    """The new password from a secret file, an environment variable or standard input."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise InputError(f"{file}: cannot be read ({exc.strerror})") from None
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise InputError(f"environment variable {env} is not set")
        return value
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise InputError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _roles(values: list[str]) -> frozenset[Role]:
    try:
        return parse_roles(values)
    except ValueError as exc:
        raise InputError(f"--role: {exc}") from None


@users_app.command("add")
def users_add(
    name: str,
    role: RoleOption,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
) -> None:
    """Add a user with roles; the password comes from a file, a variable or stdin."""
    roles = _roles(role)
    password = read_password(password_file, password_env)
    wired = _wired()
    user = login.add_user(
        wired.users, name, password, roles, actor=_actor(), now=SystemClock().now()
    )
    out.print(f"user {user.name} added ({roles_text(user.roles)})", markup=False)


@users_app.command("list")
def users_list() -> None:
    """Every user, their roles and whether they may log in."""
    table = Table("name", "roles", "created", "by", "password changed", "disabled")
    for row in _wired().users.users():
        table.add_row(
            row["name"],
            row["roles"],
            str(row["created_at"])[:16],
            row["created_by"],
            str(row["password_changed_at"])[:16],
            str(row["disabled_at"] or "")[:16],
        )
    out.print(table)


@users_app.command("roles")
def users_roles(name: str, role: RoleOption) -> None:
    """Replace a user's roles (from their next page on)."""
    user = _wired().users.change(name, actor=_actor(), now=SystemClock().now(), roles=_roles(role))
    out.print(f"user {user.name} now holds {roles_text(user.roles)}", markup=False)


@users_app.command("password")
def users_password(
    name: str, password_file: PasswordFile = None, password_env: PasswordEnv = None
) -> None:
    """Set a new password; every session of the user ends."""
    password_hash = login.hash_password(read_password(password_file, password_env))
    _wired().users.change(
        name, actor=_actor(), now=SystemClock().now(), password_hash=password_hash
    )
    out.print(f"password of {name} changed; their sessions ended", markup=False)


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Stop a user logging in (kept: the audit log names them); their sessions end."""
    _wired().users.change(name, actor=_actor(), now=SystemClock().now(), disabled=True)
    out.print(f"user {name} disabled", markup=False)


@users_app.command("enable")
def users_enable(name: str) -> None:
    """Let a disabled user log in again."""
    _wired().users.change(name, actor=_actor(), now=SystemClock().now(), disabled=False)
    out.print(f"user {name} enabled", markup=False)
