"""The start page: what the logged-in person can open here, by role."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from dispatcher.domain.access import Role
from dispatcher.web.auth import require
from dispatcher.web.page import render
from dispatcher.web.session import Visitor


def home_router() -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def home(
        request: Request,
        visitor: Visitor = Depends(require(*Role)),  # noqa: B008  (any logged-in person)
    ) -> HTMLResponse:
        return render(request, "home.html", visitor)

    return router
