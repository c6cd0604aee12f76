"""The admin's page of users: who may log in, with which roles (HR-31).

Adding a user here takes the first password from the admin (at least 12 characters);
the person changes it with ``dispatcher users password`` (or the admin sets a new one
here). Every change is audited with the admin's name.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dispatcher.domain.access import Role
from dispatcher.error import InputError
from dispatcher.service import login
from dispatcher.web.auth import require, service_of
from dispatcher.web.page import render
from dispatcher.web.session import Visitor

ADMIN = require(Role.ADMIN)


def user_router() -> APIRouter:
    router = APIRouter()

    def page(request: Request, visitor: Visitor, error: str = "", status: int = 200) -> Response:
        users = service_of(request).app.users.users()
        context = {"users": users, "roles": list(Role), "error": error}
        return render(request, "users.html", visitor, context, status_code=status)

    @router.get("/users", response_class=HTMLResponse)
    def users_page(request: Request, visitor: Visitor = Depends(ADMIN)) -> Response:  # noqa: B008
        return page(request, visitor)

    @router.post("/users")
    async def user_add(
        request: Request,
        visitor: Visitor = Depends(ADMIN),  # noqa: B008
        name: str = Form(""),
        password: str = Form(""),
        roles: list[str] = Form(default_factory=list),  # noqa: B008
    ) -> Response:
        service = service_of(request)
        try:
            chosen = frozenset(Role(r) for r in roles)
            await run_in_threadpool(
                lambda: login.add_user(
                    service.app.users,
                    name,
                    password,
                    chosen,
                    actor=visitor.actor,
                    now=service.clock.now(),
                )
            )
        except (InputError, ValueError) as exc:
            return await run_in_threadpool(page, request, visitor, str(exc), 400)
        return RedirectResponse("/users", status_code=303)

    @router.post("/users/{name}")
    async def user_change(
        request: Request,
        name: str,
        visitor: Visitor = Depends(ADMIN),  # noqa: B008
        roles: list[str] = Form(default_factory=list),  # noqa: B008
        action: str = Form("roles"),
    ) -> Response:
        service = service_of(request)
        now = service.clock.now()
        users = service.app.users
        try:
            if name == visitor.name and (action == "disable" or Role.ADMIN.value not in roles):
                raise InputError("you cannot disable yourself or take away your own admin role")
            if action == "disable":
                await run_in_threadpool(
                    lambda: users.change(name, actor=visitor.actor, now=now, disabled=True)
                )
            elif action == "enable":
                await run_in_threadpool(
                    lambda: users.change(name, actor=visitor.actor, now=now, disabled=False)
                )
            else:
                chosen = frozenset(Role(r) for r in roles)
                if not chosen:
                    raise InputError("a user needs at least one role (or disable them)")
                await run_in_threadpool(
                    lambda: users.change(name, actor=visitor.actor, now=now, roles=chosen)
                )
        except (InputError, ValueError) as exc:
            return await run_in_threadpool(page, request, visitor, str(exc), 400)
        return RedirectResponse("/users", status_code=303)

    return router
