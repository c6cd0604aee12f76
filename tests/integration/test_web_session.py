"""Sessions in the database on SQLite and PostgreSQL: only the digest stored, stale
sessions swept by housekeeping, a new password or a disabled user ends every session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatcher.bootstrap import App
from dispatcher.domain.access import LoginLimits, Role
from dispatcher.service import login

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)
LIMITS = LoginLimits(3, 10, timedelta(minutes=15))
PASSWORD = "a long enough password"


def test_a_login_stores_only_the_digest_and_a_new_password_ends_it(app: App) -> None:
    login.add_user(app.users, "colin", PASSWORD, frozenset({Role.COLLECTOR}), actor="t", now=NOW)
    logged = login.log_in(app.users, "colin", PASSWORD, client="10.0.0.1", now=NOW, limits=LIMITS)
    assert isinstance(logged, login.LoggedIn)
    assert app.users.session(logged.token) is None
    session = app.users.session(login.token_digest(logged.token))
    assert session is not None and session.csrf_token == logged.csrf_token
    app.users.change(
        "colin", actor="t", now=NOW, password_hash=login.hash_password("another one 1234")
    )
    assert app.users.session(login.token_digest(logged.token)) is None


def test_stale_sessions_are_swept_and_fresh_ones_kept(app: App) -> None:
    login.add_user(app.users, "olive", PASSWORD, frozenset({Role.OPS}), actor="t", now=NOW)
    old = login.log_in(app.users, "olive", PASSWORD, client="c", now=NOW, limits=LIMITS)
    later = NOW + timedelta(hours=1)
    new = login.log_in(app.users, "olive", PASSWORD, client="c", now=later, limits=LIMITS)
    assert isinstance(old, login.LoggedIn) and isinstance(new, login.LoggedIn)
    swept = app.users.end_stale_sessions(later - timedelta(hours=12), later - timedelta(minutes=30))
    assert swept == 1
    assert app.users.session(login.token_digest(old.token)) is None
    assert app.users.session(login.token_digest(new.token)) is not None


def test_failures_are_counted_per_name_and_per_client_within_the_window(app: App) -> None:
    login.add_user(app.users, "cora", PASSWORD, frozenset({Role.COMPLIANCE}), actor="t", now=NOW)
    for i in range(3):
        refused = login.log_in(app.users, "cora", "wrong", client=f"c{i}", now=NOW, limits=LIMITS)
        assert refused is login.Refusal.WRONG
    throttled = login.log_in(app.users, "cora", PASSWORD, client="c9", now=NOW, limits=LIMITS)
    assert throttled is login.Refusal.THROTTLED
    # The window moves on: the right password works again.
    after = NOW + timedelta(minutes=16)
    assert isinstance(
        login.log_in(app.users, "cora", PASSWORD, client="c9", now=after, limits=LIMITS),
        login.LoggedIn,
    )
