"""Auditor pages (roles auditor, admin): messages and audit records of a date range as
CSV or JSON lines, streamed (docs/WEB.md, "Auditor").

The files are the ones ``dispatcher export messages|audit`` writes: the export field
contract of DESIGN.md, CSV cells neutralised against formulas (``CSV.no_formula``).
Every download is itself an audit record: who took which records (house rule HR-41).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from dispatcher.error import InputError
from dispatcher.service import ops
from dispatcher.service.export import audit_lines, message_lines
from dispatcher.store.sql import AuditEntry
from dispatcher.web.desk import Desk

ROLES = ("auditor", "admin")
EXPORTED_EVENT = "records_exported"
MEDIA = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


def auditor_router(desk: Desk) -> APIRouter:
    router = APIRouter(prefix="/auditor")
    staff = Depends(desk.require(*ROLES))

    def page(request: Request, user: Any, error: str | None = None, **chosen: str) -> HTMLResponse:
        today = desk.clock.now().astimezone(ops.zone_of(desk.app.settings.default_timezone))
        values = {
            "start": (today.date() - timedelta(days=7)).isoformat(),
            "end": today.date().isoformat(),
            "kind": "messages",
            "format": "csv",
            "tz": desk.app.settings.default_timezone,
            **chosen,
        }
        return desk.page(
            request,
            "auditor/export.html",
            user,
            {"error": error, "chosen": values},
            status_code=400 if error else 200,
        )

    @router.get("", response_class=HTMLResponse)
    def export_form(request: Request, user: Any = staff) -> HTMLResponse:
        return page(request, user)

    @router.post("/export", dependencies=desk.posted(), response_model=None)
    def export(
        request: Request,
        start: Annotated[str, Form()],
        end: Annotated[str, Form()],
        kind: Annotated[str, Form()] = "messages",
        format: Annotated[str, Form()] = "csv",
        tz: Annotated[str, Form()] = "",
        user: Any = staff,
    ) -> HTMLResponse | StreamingResponse:
        """The records of the local days ``start`` to ``end`` (both included), streamed."""
        chosen = {"start": start, "end": end, "kind": kind, "format": format, "tz": tz}
        try:
            zone = ops.zone_of(tz or desk.app.settings.default_timezone)
            first, last = date.fromisoformat(start), date.fromisoformat(end)
        except (InputError, ValueError) as exc:
            return page(request, user, f"{exc}", **chosen)
        if last < first:
            return page(request, user, "the range ends before it starts", **chosen)
        if kind not in ("messages", "audit") or format not in MEDIA:
            return page(request, user, "choose messages or audit, CSV or JSON lines", **chosen)
        since = datetime.combine(first, time(0), tzinfo=zone)
        until = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
        fmt: Literal["jsonl", "csv"] = "csv" if format == "csv" else "jsonl"
        who = desk.user_name(user)
        desk.app.store.audit(
            [
                AuditEntry(
                    EXPORTED_EVENT,
                    who,
                    desk.clock.now(),
                    detail={
                        "kind": kind,
                        "format": fmt,
                        "since": since.isoformat(),
                        "until": until.isoformat(),
                    },
                )
            ]
        )
        if kind == "messages":
            lines = message_lines(desk.app.store.iter_messages(since, until), fmt)
        else:
            lines = audit_lines(desk.app.store.iter_audit(since, until), fmt)
        filename = f"dispatcher-{kind}-{first.isoformat()}-{last.isoformat()}.{fmt}"
        return StreamingResponse(
            lines,
            media_type=MEDIA[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return router
