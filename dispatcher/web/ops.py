"""Ops pages (roles ops, admin): a local day's run, the outbox, failures with a retry
button, and sends per hour over the last seven days (docs/WEB.md, "Ops").

The numbers come from :mod:`dispatcher.service.ops`, which reads what ``/metrics``
reads; a retry is :func:`dispatcher.service.ops.retry_failed` (house rule HR-40): by the
logged-in person, with a note, audited, and only for a message that failed.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dispatcher.domain.access import Role
from dispatcher.error import InputError
from dispatcher.service import ops
from dispatcher.web.auth import require, service_of
from dispatcher.web.chart import sends_chart
from dispatcher.web.page import render
from dispatcher.web.session import Visitor

STAFF = require(Role.OPS, Role.ADMIN)


def ops_router() -> APIRouter:
    router = APIRouter()
    staff = Depends(STAFF)

    @router.get("/ops", response_class=HTMLResponse)
    def today(
        request: Request, visitor: Visitor = staff, day: str = "", tz: str = ""
    ) -> HTMLResponse:
        """The run of a local day (default: today in the service's default time zone)."""
        service = service_of(request)
        app = service.app
        try:
            zone = ops.zone_of(tz or app.settings.default_timezone)
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        now = service.clock.now()
        try:
            chosen = date.fromisoformat(day) if day else now.astimezone(zone).date()
        except ValueError:
            raise HTTPException(400, f"day {day!r}: give YYYY-MM-DD") from None
        run = ops.day_run(app.store, app.ops, chosen, zone, now)
        hours = ops.sends_per_hour(app.ops, now)
        return render(
            request,
            "ops/today.html",
            visitor,
            {
                "run": run,
                "zone": zone,
                "chart": sends_chart(hours, zone),
                "week_total": sum(h.total for h in hours),
                "statuses": ops.STATUSES,
                "done": request.query_params.get("done"),
                "error": request.query_params.get("error"),
            },
        )

    @router.post("/ops/messages/{message_id}/retry")
    def retry(
        request: Request,
        message_id: str,
        note: Annotated[str, Form()] = "",
        day: Annotated[str, Form()] = "",
        tz: Annotated[str, Form()] = "",
        visitor: Visitor = staff,
    ) -> Response:
        """Queue a failed message again: one more attempt, audited with who and why."""
        service = service_of(request)
        back = {k: v for k, v in (("day", day), ("tz", tz)) if v}
        try:
            ops.retry_failed(
                service.app.ops,
                message_id,
                actor=visitor.actor,
                note=note or "retried from the ops page",
                now=service.clock.now(),
            )
        except InputError as exc:
            back["error"] = str(exc)
        else:
            back["done"] = f"message {message_id} queued again"
        return RedirectResponse(f"/ops?{urlencode(back)}", status_code=303)

    return router
