"""Server-side sessions: the cookie, who the visitor is, and when a login ends (HR-32).

The cookie holds a random token; the database holds its SHA-256, the user, the CSRF token
and when it was made and last used. Logging in always makes a new one (no session
fixation); logging out deletes it, so the old cookie opens nothing. Cookies are HttpOnly,
SameSite=Lax, and Secure over TLS (setting ``web.cookie_secure``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from dispatcher.domain.access import Role, SessionLimits, session_alive
from dispatcher.service.login import token_digest
from dispatcher.settings import WebSettings
from dispatcher.store.user import Session, User, UserStore

SESSION_COOKIE = "dispatcher_session"
LOGIN_CSRF_COOKIE = "dispatcher_login_csrf"
# Writing last_seen_at on every request would make each page a write; a minute is
# precise enough for an idle limit counted in minutes.
TOUCH_AFTER = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Visitor:
    """The logged-in person behind a request, as the pages see them."""

    user: User
    session: Session

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def actor(self) -> str:
        return self.user.actor

    @property
    def roles(self) -> frozenset[Role]:
        return self.user.roles

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    def has(self, role: Role) -> bool:
        return role in self.user.roles


def limits_of(settings: WebSettings) -> SessionLimits:
    return SessionLimits(
        lifetime=timedelta(hours=settings.session_hours),
        idle=timedelta(minutes=settings.session_idle_minutes),
    )


def client_of(request: Request) -> str:
    """The client's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client else "unknown"


def secure_cookies(request: Request, settings: WebSettings) -> bool:
    if settings.cookie_secure == "auto":
        return request.url.scheme == "https"
    return settings.cookie_secure == "always"


def set_cookie(
    response: Response, request: Request, settings: WebSettings, name: str, value: str
) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, settings),
        path="/",
    )


def clear_cookie(response: Response, request: Request, settings: WebSettings, name: str) -> None:
    response.delete_cookie(
        name, httponly=True, samesite="lax", secure=secure_cookies(request, settings), path="/"
    )


def _visitor(users: UserStore, token: str, now: datetime, limits: SessionLimits) -> Visitor | None:
    digest = token_digest(token)
    session = users.session(digest)
    if session is None:
        return None
    if not session_alive(session.created_at, session.last_seen_at, now, limits):
        users.end_session(digest)
        return None
    if now - session.last_seen_at >= TOUCH_AFTER:
        users.touch_session(digest, now)
    return Visitor(session.user, session)


async def visitor_of(
    request: Request, users: UserStore, settings: WebSettings, now: datetime
) -> Visitor | None:
    """The logged-in visitor, or None (no cookie, unknown, expired, idle or disabled)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await run_in_threadpool(_visitor, users, token, now, limits_of(settings))
