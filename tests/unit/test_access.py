"""Roles, session lifetimes and the login limit (rules HR-31, HR-32, HR-33): pure tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.domain.access import (
    LoginLimits,
    Role,
    SessionLimits,
    allows,
    login_blocked,
    parse_roles,
    roles_text,
    session_alive,
)
from dispatcher.web.auth import _safe_next
from dispatcher.web.csrf import tokens_match

C, P, OPS, A, D = Role.COLLECTOR, Role.COMPLIANCE, Role.OPS, Role.AUDITOR, Role.ADMIN


@pytest.mark.parametrize(
    ("held", "needed", "allowed"),
    [
        ({C}, {C}, True),
        ({C}, {P}, False),  # a collector on a compliance page
        ({C, P}, {P}, True),  # several roles: any one that the page names will do
        ({D}, {C}, False),  # admin is not a master key
        ({D}, {P}, False),
        ({A}, {A, OPS}, True),
        (set(), {C}, False),
        ({C, P, OPS, A, D}, set(), False),  # a page naming no role fails closed
    ],
)
def test_a_page_is_open_to_holders_of_one_of_its_roles(
    held: set[Role], needed: set[Role], allowed: bool
) -> None:
    assert allows(frozenset(held), frozenset(needed)) is allowed


def test_roles_parse_from_names_and_store_sorted() -> None:
    roles = parse_roles(["ops, Collector", "admin"])
    assert roles == {OPS, C, D}
    assert roles_text(roles) == "admin,collector,ops"
    assert parse_roles([roles_text(roles)]) == roles
    assert parse_roles([""]) == frozenset()
    with pytest.raises(ValueError, match="unknown role 'root'"):
        parse_roles(["root"])


T0 = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
LIMITS = SessionLimits(lifetime=timedelta(hours=12), idle=timedelta(minutes=30))


@pytest.mark.parametrize(
    ("last_seen", "now", "alive"),
    [
        (T0, T0, True),
        (T0, T0 + timedelta(minutes=29, seconds=59), True),
        (T0, T0 + timedelta(minutes=30), False),  # idle
        (T0 + timedelta(hours=11, minutes=50), T0 + timedelta(hours=11, minutes=59), True),
        (T0 + timedelta(hours=11, minutes=50), T0 + timedelta(hours=12), False),  # too old
    ],
)
def test_a_session_ends_when_too_old_or_idle(
    last_seen: datetime, now: datetime, alive: bool
) -> None:
    assert session_alive(T0, last_seen, now, LIMITS) is alive


@pytest.mark.parametrize(
    ("by_name", "by_client", "blocked"),
    [(0, 0, False), (4, 19, False), (5, 0, True), (0, 20, True), (7, 30, True)],
)
def test_logins_are_blocked_after_too_many_failures(
    by_name: int, by_client: int, blocked: bool
) -> None:
    limits = LoginLimits(failures=5, client_failures=20, window=timedelta(minutes=15))
    assert login_blocked(by_name, by_client, limits) is blocked


@pytest.mark.parametrize(
    ("sent", "expected", "match"),
    [("abc", "abc", True), ("abd", "abc", False), (None, "abc", False), ("", "", False)],
)
def test_csrf_tokens_must_match_and_never_be_empty(
    sent: str | None, expected: str, match: bool
) -> None:
    assert tokens_match(sent, expected) is match


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/accounts/A-1", "/accounts/A-1"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_after_login_only_a_path_on_this_site_is_followed(target: str | None, safe: str) -> None:
    assert _safe_next(target) == safe
