"""Who may see what on the web pages, and how long a login lasts (rules HR-31, HR-32).

Pure: roles held and needed in, a verdict out; session age and idleness from the times
given, never from the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Role(StrEnum):
    """What a person does here. A user may hold several; none implies another (an admin
    manages users and sees collector pages only when also given ``collector``): least
    privilege, and the four-eyes rules stay between real people."""

    COLLECTOR = "collector"
    COMPLIANCE = "compliance"
    OPS = "ops"
    AUDITOR = "auditor"
    ADMIN = "admin"


def parse_roles(values: Iterable[str]) -> frozenset[Role]:
    """Roles from names (comma- or space-separated strings allowed); an unknown name is a
    ValueError naming it and the choices."""
    roles: set[Role] = set()
    for value in values:
        for name in value.replace(",", " ").split():
            try:
                roles.add(Role(name.strip().lower()))
            except ValueError:
                choices = ", ".join(r.value for r in Role)
                raise ValueError(f"unknown role {name!r}: choose from {choices}") from None
    return frozenset(roles)


def roles_text(roles: Iterable[Role]) -> str:
    """How roles are stored: their names, sorted, comma-separated."""
    return ",".join(sorted(r.value for r in roles))


def allows(held: frozenset[Role], needed: frozenset[Role]) -> bool:
    """Rule HR-31: a page is open to a user holding at least one of the roles it names.
    A page naming no role is refused to everyone (a forgotten declaration fails closed)."""
    return bool(held & needed)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Rule HR-32: a login ends after ``lifetime`` however busy, or after ``idle`` unused."""

    lifetime: timedelta
    idle: timedelta


def session_alive(
    created_at: datetime, last_seen_at: datetime, now: datetime, limits: SessionLimits
) -> bool:
    """Whether a session may still be used at ``now`` (HR-32)."""
    return now < created_at + limits.lifetime and now < last_seen_at + limits.idle


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Rule HR-33: at most ``failures`` failed logins per user name, and
    ``client_failures`` per client address, within ``window``; then logins are refused
    until the window moves on."""

    failures: int
    client_failures: int
    window: timedelta


def login_blocked(failures_by_name: int, failures_by_client: int, limits: LoginLimits) -> bool:
    """Whether a login attempt must be refused before its password is even checked."""
    return failures_by_name >= limits.failures or failures_by_client >= limits.client_failures
