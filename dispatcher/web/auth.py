"""Login, logout, and the one dependency every page declares: :func:`require`.

A page names the roles that may see it (HR-31)::

    @router.get("/templates")
    def template_list(
        request: Request, visitor: Visitor = Depends(require(Role.COMPLIANCE))
    ) -> HTMLResponse: ...

``require`` answers, before the page's code runs: not logged in → 303 to the login page
(htmx requests: 401 with ``HX-Redirect``); logged in without one of the roles → 403;
an unsafe method (POST, PUT, PATCH, DELETE) without the session's CSRF token → 403
(HR-34). tests/unit/test_web_route.py fails for any page route that does not declare it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dispatcher.domain.access import LoginLimits, Role, allows
from dispatcher.service import login
from dispatcher.web import csrf
from dispatcher.web.page import render
from dispatcher.web.session import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Visitor,
    clear_cookie,
    client_of,
    set_cookie,
    visitor_of,
)

if TYPE_CHECKING:
    from dispatcher.daemon import Service


class LoginRequired(Exception):
    """No (live) session: the visitor is sent to the login page."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Forbidden(Exception):
    """Logged in, but this page is not for them (or the CSRF token is wrong): 403."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def require(*roles: Role) -> Callable[[Request], Awaitable[Visitor]]:
    """The dependency of a page open to holders of any of ``roles`` (see module doc)."""
    needed = frozenset(roles)

    async def guard(request: Request) -> Visitor:
        service = service_of(request)
        settings = service.app.settings.web
        visitor = await visitor_of(request, service.app.users, settings, service.clock.now())
        if visitor is None:
            raise LoginRequired(request.url.path)
        if not allows(visitor.roles, needed):
            raise Forbidden(f"this page is for {', '.join(sorted(needed))}")
        try:
            await csrf.check(request, visitor.csrf_token)
        except csrf.CsrfRefused:
            raise Forbidden(
                "the form's security token is missing or stale: reload the page"
            ) from None
        return visitor

    guard.roles = needed  # type: ignore[attr-defined]  # read by the route audit test
    return guard


def roles_of(dependency: object) -> frozenset[Role] | None:
    """The roles a dependency made by :func:`require` asks for (None for any other)."""
    roles = getattr(dependency, "roles", None)
    return roles if isinstance(roles, frozenset) else None


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no ``//host`` or scheme): no open redirect after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_limits(service: Service) -> LoginLimits:
    web = service.app.settings.web
    return LoginLimits(
        web.login_max_failures,
        web.login_max_failures_per_client,
        timedelta(seconds=web.login_window_seconds),
    )


def auth_router() -> APIRouter:
    router = APIRouter()

    def login_page(
        request: Request, next_path: str, error: str = "", status_code: int = 200
    ) -> HTMLResponse:
        settings = service_of(request).app.settings.web
        token = login.new_token()
        response = render(
            request,
            "login.html",
            None,
            {"next": _safe_next(next_path), "error": error, "login_csrf": token},
            status_code=status_code,
        )
        set_cookie(response, request, settings, LOGIN_CSRF_COOKIE, token)
        return response

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return login_page(request, next)

    @router.post("/login")
    async def login_submit(
        request: Request,
        name: str = Form(""),
        password: str = Form(""),
        next: str = Form("/"),
        csrf_token: str = Form(""),
    ) -> Response:
        service = service_of(request)
        settings = service.app.settings.web
        # Login CSRF: the form's token must equal the cookie set with the form.
        if not csrf.tokens_match(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE, "")):
            raise Forbidden("the login form's security token is missing or stale")
        now = service.clock.now()
        old = request.cookies.get(SESSION_COOKIE)
        if old:  # whatever session the browser brought ends here: never reused
            await run_in_threadpool(service.app.users.end_session, login.token_digest(old))
        outcome = await run_in_threadpool(
            lambda: login.log_in(
                service.app.users,
                name,
                password,
                client=client_of(request),
                now=now,
                limits=login_limits(service),
            )
        )
        if isinstance(outcome, login.Refusal):
            status = 429 if outcome is login.Refusal.THROTTLED else 401
            return login_page(request, next, outcome.value, status)
        response = RedirectResponse(_safe_next(next), status_code=303)
        set_cookie(response, request, settings, SESSION_COOKIE, outcome.token)
        clear_cookie(response, request, settings, LOGIN_CSRF_COOKIE)
        return response

    @router.post("/logout")
    async def logout(
        request: Request,
        visitor: Visitor = Depends(require(*Role)),  # noqa: B008
    ) -> Response:
        service = service_of(request)
        await run_in_threadpool(service.app.users.end_session, visitor.session.token_sha256)
        response = RedirectResponse("/login", status_code=303)
        clear_cookie(response, request, service.app.settings.web, SESSION_COOKIE)
        return response

    return router


def login_redirect(request: Request, exc: Exception) -> Response:
    """Exception handler: to the login page, back to where they were going after."""
    assert isinstance(exc, LoginRequired)
    query = f"?{request.url.query}" if request.url.query else ""
    target = "/login?next=" + quote(exc.path + query)
    if request.headers.get("HX-Request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def forbidden_page(request: Request, exc: Exception) -> Response:
    """Exception handler: a 403 page saying why (never what the page would have shown)."""
    assert isinstance(exc, Forbidden)
    return render(request, "forbidden.html", None, {"reason": exc.reason}, status_code=403)
