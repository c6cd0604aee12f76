"""Auditor pages (roles auditor, admin): messages and audit records of a date range as
CSV or JSON lines, streamed (docs/WEB.md, "Auditor").

The files are the ones ``dispatcher export messages|audit`` writes: the export field
contract of DESIGN.md, CSV cells neutralised against formulas (``CSV.no_formula``).
Every download is itself an audit record: who took which records (house rule HR-41).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from dispatcher.domain.access import Role
from dispatcher.error import InputError
from dispatcher.service import ops
from dispatcher.service.export import audit_lines, message_lines
from dispatcher.store.sql import AuditEntry
from dispatcher.web.auth import require, service_of
from dispatcher.web.page import render
from dispatcher.web.session import Visitor

STAFF = require(Role.AUDITOR, Role.ADMIN)
EXPORTED_EVENT = "records_exported"
MEDIA = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


def auditor_router() -> APIRouter:
    router = APIRouter()
    staff = Depends(STAFF)

    def page(
        request: Request, visitor: Visitor, error: str | None = None, **chosen: str
    ) -> HTMLResponse:
        service = service_of(request)
        default_zone = service.app.settings.default_timezone
        today = service.clock.now().astimezone(ops.zone_of(default_zone))
        values = {
            "start": (today.date() - timedelta(days=7)).isoformat(),
            "end": today.date().isoformat(),
            "kind": "messages",
            "format": "csv",
            "tz": default_zone,
            **chosen,
        }
        return render(
            request,
            "auditor/export.html",
            visitor,
            {"error": error, "chosen": values},
            status_code=400 if error else 200,
        )

    @router.get("/auditor", response_class=HTMLResponse)
    def export_form(request: Request, visitor: Visitor = staff) -> HTMLResponse:
        return page(request, visitor)

    @router.post("/auditor/export", response_model=None)
    def export(
        request: Request,
        start: Annotated[str, Form()],
        end: Annotated[str, Form()],
        kind: Annotated[str, Form()] = "messages",
        format: Annotated[str, Form()] = "csv",
        tz: Annotated[str, Form()] = "",
        visitor: Visitor = staff,
    ) -> HTMLResponse | StreamingResponse:
        """The records of the local days ``start`` to ``end`` (both included), streamed."""
        service = service_of(request)
        app = service.app
        chosen = {"start": start, "end": end, "kind": kind, "format": format, "tz": tz}
        try:
            zone = ops.zone_of(tz or app.settings.default_timezone)
            first, last = date.fromisoformat(start), date.fromisoformat(end)
        except (InputError, ValueError) as exc:
            return page(request, visitor, f"{exc}", **chosen)
        if last < first:
            return page(request, visitor, "the range ends before it starts", **chosen)
        if kind not in ("messages", "audit") or format not in MEDIA:
            return page(request, visitor, "choose messages or audit, CSV or JSON lines", **chosen)
        since = datetime.combine(first, time(0), tzinfo=zone)
        until = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
        fmt: Literal["jsonl", "csv"] = "csv" if format == "csv" else "jsonl"
        app.store.audit(
            [
                AuditEntry(
                    EXPORTED_EVENT,
                    visitor.actor,
                    service.clock.now(),
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
            lines = message_lines(app.store.iter_messages(since, until), fmt)
        else:
            lines = audit_lines(app.store.iter_audit(since, until), fmt)
        filename = f"dispatcher-{kind}-{first.isoformat()}-{last.isoformat()}.{fmt}"
        return StreamingResponse(
            lines,
            media_type=MEDIA[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return router
