"""Logging in: argon2 password hashes, the login rate limit (HR-33), new session tokens.

The web layer and the ``users`` command both come through here, so a password is hashed
and checked one way only. Passwords are never logged or stored; session tokens are kept
by the browser, and only their SHA-256 by us.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dispatcher.domain.access import LoginLimits, Role, login_blocked
from dispatcher.error import InputError
from dispatcher.store.user import User, UserStore

# argon2id with the library's defaults (RFC 9106 "second recommended" profile).
_HASHER = PasswordHasher()
# Checked when the user name is unknown, so a wrong name costs as long as a wrong password
# and the answer's timing does not tell which names exist.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")
MIN_PASSWORD_LENGTH = 12
MAX_NAME_LENGTH = 64


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def token_digest(token: str) -> str:
    """What the database keeps of a session token: its SHA-256 (a copy logs nobody in)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits), for sessions and CSRF alike."""
    return secrets.token_urlsafe(32)


def add_user(
    users: UserStore, name: str, password: str, roles: frozenset[Role], *, actor: str, now: datetime
) -> User:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable() or " " in name:
        raise InputError(f"user name {name!r}: 1-{MAX_NAME_LENGTH} characters, no spaces")
    if not roles:
        raise InputError("a user needs at least one role")
    return users.add_user(name, hash_password(password), roles, actor=actor, now=now)


class Refusal(StrEnum):
    """Why a login was refused; the page says only "wrong name or password" or "too many
    attempts", never which of name or password was wrong."""

    WRONG = "wrong name or password"
    THROTTLED = "too many failed attempts: wait a while and try again"


@dataclass(frozen=True, slots=True)
class LoggedIn:
    user: User
    token: str  # goes to the browser's cookie; the database keeps its digest
    csrf_token: str


def log_in(
    users: UserStore,
    name: str,
    password: str,
    *,
    client: str,
    now: datetime,
    limits: LoginLimits,
) -> LoggedIn | Refusal:
    """Check a login and start a brand-new session (never reusing one the browser sent:
    no session fixation). Refused before the password is checked while the name or the
    client address has too many recent failures (HR-33); every attempt is recorded."""
    name = name.strip()[:MAX_NAME_LENGTH]
    by_name, by_client = users.failures_since(now - limits.window, name=name, client=client)
    if login_blocked(by_name, by_client, limits):
        users.record_attempt(name, client, succeeded=False, now=now)
        return Refusal.THROTTLED
    user = users.user(name)
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None and not user.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        users.record_attempt(name, client, succeeded=False, now=now)
        return Refusal.WRONG
    if _HASHER.check_needs_rehash(user.password_hash):
        users.change(name, actor="system:rehash", now=now, password_hash=_HASHER.hash(password))
    token, csrf = new_token(), new_token()
    users.start_session(user, token_digest(token), csrf, client=client, now=now)
    users.record_attempt(name, client, succeeded=True, now=now, actor=user.actor)
    return LoggedIn(user, token, csrf)
