"""The collector's pages: find an account, read its whole history, place and lift holds.

Every look at personal data is audited before it is shown (rule HR-30): a search with
the accounts it listed (``accounts_searched``), an account page (``account_viewed``), a
letter's PDF (``letter_viewed``), each with who, when and from where. Holds go through
the same checks and store as ``dispatcher hold add`` (dispatcher/service/hold.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import RowMapping
from starlette.concurrency import run_in_threadpool

from dispatcher.bootstrap import App
from dispatcher.domain.access import Role
from dispatcher.domain.money import from_minor
from dispatcher.domain.policy import PLACEABLE
from dispatcher.domain.retention import RecordKind
from dispatcher.domain.search import search_terms
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError
from dispatcher.service import explainer
from dispatcher.service.history import History, account_history
from dispatcher.service.hold import place_hold
from dispatcher.service.letter_file import LetterFile, LetterFileState, letter_file
from dispatcher.store.sql import AuditEntry
from dispatcher.web.auth import require, service_of
from dispatcher.web.page import render
from dispatcher.web.session import Visitor, client_of

log = structlog.get_logger("dispatcher.web")

COLLECTOR = require(Role.COLLECTOR)
PDF = "application/pdf"


class NotFound(Exception):
    """No such account or letter: a 404 page."""


@dataclass(frozen=True)
class Moment:
    """One line of an account's timeline: a message or a hold, newest first."""

    at: datetime
    kind: str  # "message" | "hold"
    row: RowMapping
    trail: list[RowMapping]


def _letter_roots(app: App) -> list[Path]:
    """The folders our letter sinks write to: the only places a letter is served from."""
    settings = app.settings
    return [
        settings.sinks.directory,
        settings.print_drop.directory,
        settings.print_drop.work_directory,
    ]


def _letters(app: App, account_id: str, rows: Iterable[RowMapping]) -> dict[str, LetterFile]:
    """The PDF of each letter message in ``rows``, or what became of it."""
    letters = [r for r in rows if r["channel"] == ChannelKind.LETTER.value]
    if not letters:
        return {}
    # Only a letter without a recorded path can have been purged: ask only then.
    unrecorded = any(not r["artifact_path"] for r in letters)
    purges = app.retention.purges_of(account_id, RecordKind.MESSAGE_CONTENT) if unrecorded else []
    roots = _letter_roots(app)
    return {str(r["message_id"]): letter_file(r, roots, purges) for r in letters}


def _timeline(story: History) -> list[Moment]:
    moments = [
        Moment(m["created_at"], "message", m, story.by_message.get(m["message_id"], []))
        for m in story.messages
    ]
    moments += [Moment(h["created_at"], "hold", h, []) for h in story.holds]
    return sorted(moments, key=lambda m: m.at, reverse=True)


def _until(value: str, timezone: str) -> datetime | None:
    """A promised date means through that day where the customer lives."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InputError(f"until {value!r}: not a date (YYYY-MM-DD)") from None
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZoneInfo(timezone))


def account_router() -> APIRouter:
    router = APIRouter()

    def audit(app: App, entry: AuditEntry) -> None:
        app.store.audit([entry])

    def summary(row: RowMapping, now: datetime) -> dict[str, Any]:
        return {
            "row": row,
            "balance": from_minor(row["balance_minor"], row["currency"]),
            "dpd": days_past_due(row["due_date"], row["timezone"], now),
        }

    def search(request: Request, visitor: Visitor, q: str) -> dict[str, Any]:
        service = service_of(request)
        app, now = service.app, service.clock.now()
        terms = search_terms(q, app.settings.default_region)
        limit = app.settings.web.search_limit
        rows = app.search.find(terms, limit + 1) if not terms.empty else []
        if rows:
            shown = [r["account_id"] for r in rows[:limit]]
            detail = {"query": q, "accounts": shown, "client": client_of(request)}
            audit(app, AuditEntry("accounts_searched", visitor.actor, now, detail=detail))
        return {
            "q": q,
            "terms": terms,
            "results": [summary(r, now) for r in rows[:limit]],
            "more": len(rows) > limit,
        }

    @router.get("/accounts", response_class=HTMLResponse)
    def accounts_page(
        request: Request,
        q: str = Query("", max_length=200),
        visitor: Visitor = Depends(COLLECTOR),  # noqa: B008
    ) -> Response:
        context = search(request, visitor, q)
        if request.headers.get("HX-Request"):  # typing in the box: the results only
            return render(request, "account_results.html", visitor, context)
        return render(request, "accounts.html", visitor, context)

    def account_page(
        request: Request, visitor: Visitor, account_id: str, error: str = "", status: int = 200
    ) -> Response:
        service = service_of(request)
        app, now = service.app, service.clock.now()
        try:
            story = account_history(app.store, app.strategy, account_id)
        except InputError:
            raise NotFound(account_id) from None
        audit(
            app,
            AuditEntry(
                "account_viewed",
                visitor.actor,
                now,
                account_id,
                detail={"page": "account", "client": client_of(request)},
            ),
        )
        account = story.account
        dpd = days_past_due(account.due_date, account.timezone, now)
        stage = app.strategy.stage_for(dpd) if account.collectible else None
        why = explainer.explain(app.store, app.strategy, app.timing, account_id, now)
        letters = _letters(app, account_id, story.messages)
        context = {
            "story": story,
            "account": account,
            "dpd": dpd,
            "stage": stage.id if stage else None,
            "why": why,
            "timeline": _timeline(story),
            "letters": letters,
            "active_holds": [h for h in story.holds if h["lifted_at"] is None],
            "reasons": [r.value for r in PLACEABLE],
            "channels": [c.value for c in ChannelKind],
            "now": now,
            "error": error,
            "detail": story.detail,
            "source": lambda rule_id: explainer.rule_source(app.timing, rule_id),
        }
        return render(request, "account.html", visitor, context, status_code=status)

    @router.get("/accounts/{account_id}", response_class=HTMLResponse)
    def account_view(
        request: Request,
        account_id: str,
        visitor: Visitor = Depends(COLLECTOR),  # noqa: B008
    ) -> Response:
        return account_page(request, visitor, account_id)

    @router.get("/accounts/{account_id}/letters/{message_id}.pdf")
    def letter_pdf(
        request: Request,
        account_id: str,
        message_id: str,
        visitor: Visitor = Depends(COLLECTOR),  # noqa: B008
    ) -> Response:
        service = service_of(request)
        app = service.app
        row = next(
            (m for m in app.store.messages_of(account_id) if m["message_id"] == message_id),
            None,
        )
        letter = _letters(app, account_id, [row]).get(message_id) if row is not None else None
        if letter is None or letter.state is LetterFileState.NONE:
            raise NotFound(
                f"letter {message_id} of account {account_id}"
                + (f": {letter.explanation}" if letter is not None else "")
            )
        if letter.gone:
            # No personal data: the message id names the letter, the state says what is wrong.
            log.warning(
                "letter_file_gone",
                message_id=message_id,
                state=letter.state.value,
                file_name=letter.file_name,
            )
            return render(request, "letter_gone.html", visitor, {"letter": letter}, status_code=410)
        path = letter.path
        assert path is not None  # on disk
        audit(
            app,
            AuditEntry(
                "letter_viewed",
                visitor.actor,
                service.clock.now(),
                account_id,
                message_id,
                detail={"client": client_of(request)},
            ),
        )
        return FileResponse(
            path,
            media_type=PDF,
            filename=f"letter-{account_id}-{message_id}.pdf",
            content_disposition_type="inline",
            headers={"Cache-Control": "no-store"},
        )

    @router.post("/accounts/{account_id}/holds")
    async def hold_add(
        request: Request,
        account_id: str,
        visitor: Visitor = Depends(COLLECTOR),  # noqa: B008
        reason: str = Form(""),
        note: str = Form(""),
        channel: str = Form(""),
        until: str = Form(""),
        person: bool = Form(False),
    ) -> Response:
        service = service_of(request)
        app, now = service.app, service.clock.now()

        def place() -> None:
            account = app.store.account(account_id)
            if account is None:
                raise NotFound(account_id)
            place_hold(
                app.store,
                account_id,
                reason,
                note=note,
                channel=channel or None,
                ends_at=_until(until, account.timezone),
                person=person,
                actor=visitor.actor,
                now=now,
            )

        try:
            await run_in_threadpool(place)
        except InputError as exc:
            message = str(exc).replace("--", "")
            return await run_in_threadpool(account_page, request, visitor, account_id, message, 400)
        return RedirectResponse(f"/accounts/{account_id}#holds", status_code=303)

    @router.post("/accounts/{account_id}/holds/{hold_id}/lift")
    async def hold_lift(
        request: Request,
        account_id: str,
        hold_id: int,
        visitor: Visitor = Depends(COLLECTOR),  # noqa: B008
        note: str = Form(""),
    ) -> Response:
        service = service_of(request)
        app, now = service.app, service.clock.now()

        def lift() -> None:
            if not note.strip():
                raise InputError("say why the hold is lifted (the note is kept with it)")
            held = {h["id"]: h for h in app.store.holds_of(account_id)}
            if hold_id not in held:
                raise NotFound(f"{account_id}/hold/{hold_id}")
            app.store.lift_hold(hold_id, note=note, actor=visitor.actor, now=now)

        try:
            await run_in_threadpool(lift)
        except InputError as exc:
            return await run_in_threadpool(
                account_page, request, visitor, account_id, str(exc), 400
            )
        return RedirectResponse(f"/accounts/{account_id}#holds", status_code=303)

    return router


def not_found_page(request: Request, exc: Exception) -> Response:
    return render(request, "not_found.html", None, {"what": str(exc)}, status_code=404)
