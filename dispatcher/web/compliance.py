"""Compliance pages (roles compliance, admin): templates, the editor, four-eyes approval,
and the policy book read-only (docs/WEB.md, "Compliance").

Every change goes through :class:`~dispatcher.service.template_catalog.TemplateCatalog`,
the same rules as ``dispatcher templates``: an edit saved here is a draft by the logged-in
user, who may not approve it (HR-12, ``template.four_eyes``); a version with lint errors
cannot be approved (``template.lint_clean``). Nothing sent changes until a second person
approves.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dispatcher.bootstrap import App
from dispatcher.domain.access import Role
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.template_version import VersionState, same_person
from dispatcher.error import InputError, StoreError, TemplateError
from dispatcher.service.template_catalog import ApprovalRefused
from dispatcher.service.template_desk import (
    Preview,
    policy_overview,
    preview,
    template_rows,
    texts_of,
)
from dispatcher.service.template_lint import Finding
from dispatcher.store.sql import AuditEntry
from dispatcher.store.template_version import TemplateKey, VersionRecord
from dispatcher.template import compile_pdf
from dispatcher.web.auth import require, service_of
from dispatcher.web.page import render
from dispatcher.web.session import Visitor

STAFF = require(Role.COMPLIANCE, Role.ADMIN)
PART_NAMES = {
    ChannelKind.SMS: ("text",),
    ChannelKind.EMAIL: ("text", "HTML"),
    ChannelKind.LETTER: ("Typst",),
}


def compliance_router() -> APIRouter:
    router = APIRouter()
    staff = Depends(STAFF)

    @router.get("/compliance", include_in_schema=False)
    def home(visitor: Visitor = staff) -> Response:
        return RedirectResponse("/compliance/templates", status_code=303)

    @router.get("/compliance/templates", response_class=HTMLResponse)
    def template_list(
        request: Request,
        visitor: Visitor = staff,
        channel: str = "",
        stage: str = "",
        locale: str = "",
    ) -> HTMLResponse:
        """Every template by channel, stage and locale with its state."""
        app = app_of(request)
        statuses, problem = app.catalog.status()
        kind = ChannelKind(channel) if channel in ChannelKind._value2member_map_ else None
        every = template_rows(statuses, app.strategy)
        rows = template_rows(
            statuses, app.strategy, channel=kind, stage=stage or None, locale=locale or None
        )
        return render(
            request,
            "compliance/templates.html",
            visitor,
            {
                "rows": rows,
                "problem": problem,
                "chosen": {"channel": channel, "stage": stage, "locale": locale},
                "channels": [k.value for k in ChannelKind],
                "stages": [s.id for s in app.strategy.stages],
                "locales": sorted({r.key[2] for r in every}),
            },
        )

    @router.get("/compliance/templates/{channel}/{name}/{locale}", response_class=HTMLResponse)
    def edit_page(
        request: Request,
        channel: str,
        name: str,
        locale: str,
        visitor: Visitor = staff,
        start: str = "",
    ) -> HTMLResponse:
        """The editor, holding a chosen version (``start``), else the newest draft, else
        the approved wording, else the file on disk."""
        app = app_of(request)
        key = key_of(app, channel, name, locale)
        found = app.catalog.versions.versions(*key)
        chosen = next((v for v in found if start and v.sha256.startswith(start)), None)
        chosen = chosen or next((v for v in reversed(found) if v.state is VersionState.DRAFT), None)
        chosen = chosen or next((v for v in found if v.state is VersionState.APPROVED), None)
        texts = texts_of(chosen) if chosen is not None else list(app.templates.info(*key).texts)
        return editor(request, visitor, key, texts)

    @router.post("/compliance/templates/{channel}/{name}/{locale}", response_class=HTMLResponse)
    def edit_action(
        request: Request,
        channel: str,
        name: str,
        locale: str,
        text: Annotated[str, Form()],
        action: Annotated[str, Form()] = "preview",
        html: Annotated[str | None, Form()] = None,
        data: Annotated[str, Form()] = "sample",
        account_id: Annotated[str, Form()] = "",
        visitor: Visitor = staff,
    ) -> Response:
        """Preview the edited wording (nothing stored), or save it as a draft by you."""
        service = service_of(request)
        app = service.app
        key = key_of(app, channel, name, locale)
        texts = [text] if key[0] is not ChannelKind.EMAIL else [text, html or ""]
        now = service.clock.now()
        if action == "save":
            try:
                # The author is the logged-in person, never a name typed in (HR-42).
                version, _new = app.catalog.draft(key, texts, author=visitor.name, now=now)
            except (TemplateError, InputError) as exc:
                return editor(request, visitor, key, texts, error=str(exc), status_code=400)
            return RedirectResponse(_version_url(key, version.sha256), status_code=303)
        account = None
        if data == "account":
            account = app.store.account(account_id.strip())
            if account is None:
                return editor(
                    request,
                    visitor,
                    key,
                    texts,
                    error=f"no account {account_id.strip()!r}",
                    data=data,
                    account_id=account_id,
                    status_code=400,
                )
            # Who looked at whose data, when: a preview shows the customer's details.
            app.store.audit(
                [
                    AuditEntry(
                        "account_viewed",
                        visitor.actor,
                        now,
                        account.account_id,
                        detail={"page": "template preview", "template": " ".join(map(str, key))},
                    )
                ]
            )
        shown = preview(
            app.catalog, app.strategy, app.policies, key, texts, account=account, now=now
        )
        if action == "pdf" and key[0] is ChannelKind.LETTER and shown.message is not None:
            # The letter as the print house gets it (Typst compiled to PDF/A).
            pdf = compile_pdf(shown.message.body)
            return Response(
                pdf,
                media_type="application/pdf",
                headers={"Content-Disposition": f'inline; filename="{key[1]}.{key[2]}.pdf"'},
            )
        return editor(request, visitor, key, texts, shown=shown, data=data, account_id=account_id)

    @router.get(
        "/compliance/templates/{channel}/{name}/{locale}/{sha}", response_class=HTMLResponse
    )
    def show_version(
        request: Request, channel: str, name: str, locale: str, sha: str, visitor: Visitor = staff
    ) -> HTMLResponse:
        """One version: its wording, diff against the approved one, lint, approve/reject."""
        key = key_of(app_of(request), channel, name, locale)
        return version_page(request, visitor, key, sha)

    @router.post(
        "/compliance/templates/{channel}/{name}/{locale}/{sha}/{decision}",
        response_class=HTMLResponse,
    )
    def decide(
        request: Request,
        channel: str,
        name: str,
        locale: str,
        sha: str,
        decision: str,
        note: Annotated[str, Form()] = "",
        visitor: Visitor = staff,
    ) -> Response:
        """Approve (a second person only) or reject (with a comment) a draft."""
        service = service_of(request)
        catalog = service.app.catalog
        key = key_of(service.app, channel, name, locale)
        now = service.clock.now()
        try:
            if decision == "approve":
                catalog.approve(key, sha, approver=visitor.name, now=now, note=note)
            elif decision == "reject":
                catalog.reject(key, sha, who=visitor.name, note=note, now=now)
            else:
                raise HTTPException(404, f"no action {decision!r}")
        except ApprovalRefused as exc:
            return version_page(
                request,
                visitor,
                key,
                sha,
                error=f"refused by {exc.refusal}",
                findings=list(exc.findings),
                status_code=409,
            )
        except StoreError as exc:  # someone acted on it meanwhile
            return version_page(request, visitor, key, sha, error=str(exc), status_code=409)
        except InputError as exc:
            return version_page(request, visitor, key, sha, error=str(exc), status_code=400)
        done = "approved" if decision == "approve" else "rejected"
        return RedirectResponse(f"{_version_url(key, sha)}?done={done}", status_code=303)

    @router.get("/compliance/policies", response_class=HTMLResponse)
    def policies(request: Request, visitor: Visitor = staff) -> HTMLResponse:
        """The policy packs, holds, approval rules and the strategy, read-only, with sources."""
        app = app_of(request)
        overview = policy_overview(app.policies, app.strategy)
        return render(request, "compliance/policies.html", visitor, {"overview": overview})

    return router


def app_of(request: Request) -> App:
    return service_of(request).app


def key_of(app: App, channel: str, name: str, locale: str) -> TemplateKey:
    """The template, or 404: only templates the catalog or the disk knows."""
    try:
        kind = ChannelKind(channel)
    except ValueError:
        raise HTTPException(404, f"no channel {channel!r}") from None
    key = (kind, name, locale)
    statuses, _problem = app.catalog.status()
    if not any(s.key == key for s in statuses):
        raise HTTPException(404, f"no template {channel} {name} {locale}")
    return key


def editor(
    request: Request,
    visitor: Visitor,
    key: TemplateKey,
    texts: list[str],
    *,
    shown: Preview | None = None,
    error: str | None = None,
    data: str = "sample",
    account_id: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    app = app_of(request)
    found = app.catalog.versions.versions(*key)
    return render(
        request,
        "compliance/editor.html",
        visitor,
        {
            "key": key,
            "parts": list(zip(PART_NAMES[key[0]], texts, strict=True)),
            "versions": found,
            "approved": next((v for v in found if v.state is VersionState.APPROVED), None),
            "preview": shown,
            "diff": app.catalog.diff_texts(key, texts) if shown is not None else None,
            "error": error,
            "data": data,
            "account_id": account_id,
        },
        status_code=status_code,
    )


def version_page(
    request: Request,
    visitor: Visitor,
    key: TemplateKey,
    sha: str,
    *,
    error: str | None = None,
    findings: list[Finding] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    app = app_of(request)
    try:
        version: VersionRecord = app.catalog.find(key, sha)
    except InputError:
        raise HTTPException(404, f"no version {sha} of this template") from None
    texts = texts_of(version)
    return render(
        request,
        "compliance/version.html",
        visitor,
        {
            "key": key,
            "version": version,
            "parts": list(zip(PART_NAMES[key[0]], texts, strict=True)),
            "diff": app.catalog.diff(key, version.sha256),
            "preview": preview(app.catalog, app.strategy, app.policies, key, texts),
            "error": error,
            "refusal_findings": findings or [],
            "own": same_person(version.author, visitor.name),
            "done": request.query_params.get("done"),
        },
        status_code=status_code,
    )


def _version_url(key: TemplateKey, sha: str) -> str:
    return f"/compliance/templates/{key[0].value}/{key[1]}/{key[2]}/{sha[:12]}"
