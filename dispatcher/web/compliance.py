"""Compliance pages (roles compliance, admin): templates, the editor, four-eyes approval,
and the policy book read-only (docs/WEB.md, "Compliance").

Every change goes through :class:`~dispatcher.service.template_catalog.TemplateCatalog`,
the same rules as ``dispatcher templates``: an edit saved here is a draft by the logged-in
user, who may not approve it (HR-12, ``template.four_eyes``); a version with lint errors
cannot be approved (``template.lint_clean``). Nothing sent changes until a second person
approves.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

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
from dispatcher.store.sql import AuditEntry
from dispatcher.store.template_version import TemplateKey, VersionRecord
from dispatcher.web.desk import Desk

ROLES = ("compliance", "admin")
PART_NAMES = {
    ChannelKind.SMS: ("text",),
    ChannelKind.EMAIL: ("text", "HTML"),
    ChannelKind.LETTER: ("Typst",),
}


def compliance_router(desk: Desk) -> APIRouter:
    router = APIRouter(prefix="/compliance")
    staff = Depends(desk.require(*ROLES))
    posted = desk.posted()

    def key_of(channel: str, name: str, locale: str) -> TemplateKey:
        """The template, or 404: only templates the catalog or the disk knows."""
        try:
            kind = ChannelKind(channel)
        except ValueError:
            raise HTTPException(404, f"no channel {channel!r}") from None
        key = (kind, name, locale)
        statuses, _problem = desk.app.catalog.status()
        if not any(s.key == key for s in statuses):
            raise HTTPException(404, f"no template {channel} {name} {locale}")
        return key

    def versions(key: TemplateKey) -> list[VersionRecord]:
        return desk.app.catalog.versions.versions(*key)

    @router.get("", include_in_schema=False)
    def home(user: Any = staff) -> Response:
        return RedirectResponse("/compliance/templates", status_code=303)

    @router.get("/templates", response_class=HTMLResponse)
    def template_list(
        request: Request,
        user: Any = staff,
        channel: str = "",
        stage: str = "",
        locale: str = "",
    ) -> HTMLResponse:
        """Every template by channel, stage and locale with its state."""
        statuses, problem = desk.app.catalog.status()
        kind = ChannelKind(channel) if channel in ChannelKind._value2member_map_ else None
        rows = template_rows(
            statuses, desk.app.strategy, channel=kind, stage=stage or None, locale=locale or None
        )
        every = template_rows(statuses, desk.app.strategy)
        return desk.page(
            request,
            "compliance/templates.html",
            user,
            {
                "rows": rows,
                "problem": problem,
                "chosen": {"channel": channel, "stage": stage, "locale": locale},
                "channels": [k.value for k in ChannelKind],
                "stages": [s.id for s in desk.app.strategy.stages],
                "locales": sorted({r.key[2] for r in every}),
            },
        )

    def editor(
        request: Request,
        user: Any,
        key: TemplateKey,
        texts: list[str],
        *,
        shown: Preview | None = None,
        error: str | None = None,
        data: str = "sample",
        account_id: str = "",
        status_code: int = 200,
    ) -> HTMLResponse:
        found = versions(key)
        diff = desk.app.catalog.diff_texts(key, texts) if shown is not None else None
        return desk.page(
            request,
            "compliance/editor.html",
            user,
            {
                "key": key,
                "parts": list(zip(PART_NAMES[key[0]], texts, strict=True)),
                "versions": found,
                "approved": next((v for v in found if v.state is VersionState.APPROVED), None),
                "preview": shown,
                "diff": diff,
                "error": error,
                "data": data,
                "account_id": account_id,
            },
            status_code=status_code,
        )

    @router.get("/templates/{channel}/{name}/{locale}", response_class=HTMLResponse)
    def edit_page(
        request: Request, channel: str, name: str, locale: str, user: Any = staff, start: str = ""
    ) -> HTMLResponse:
        """The editor, holding a chosen version (``start``), else the newest draft, else
        the approved wording, else the file on disk."""
        key = key_of(channel, name, locale)
        found = versions(key)
        chosen = next((v for v in found if start and v.sha256.startswith(start)), None)
        chosen = chosen or next((v for v in reversed(found) if v.state is VersionState.DRAFT), None)
        chosen = chosen or next((v for v in found if v.state is VersionState.APPROVED), None)
        if chosen is not None:
            texts = texts_of(chosen)
        else:
            info = desk.app.templates.info(*key)
            texts = list(info.texts)
        return editor(request, user, key, texts)

    @router.post(
        "/templates/{channel}/{name}/{locale}", response_class=HTMLResponse, dependencies=posted
    )
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
        user: Any = staff,
    ) -> Response:
        """Preview the edited wording (nothing stored), or save it as a draft by you."""
        key = key_of(channel, name, locale)
        texts = [text] if key[0] is not ChannelKind.EMAIL else [text, html or ""]
        author = desk.user_name(user)
        now = desk.clock.now()
        if action == "save":
            try:
                version, _new = desk.app.catalog.draft(key, texts, author=author, now=now)
            except (TemplateError, InputError) as exc:
                return editor(request, user, key, texts, error=str(exc), status_code=400)
            return RedirectResponse(_version_url(key, version.sha256), status_code=303)
        account = None
        if data == "account":
            account = desk.app.store.account(account_id.strip())
            if account is None:
                return editor(
                    request,
                    user,
                    key,
                    texts,
                    error=f"no account {account_id.strip()!r}",
                    data=data,
                    account_id=account_id,
                    status_code=400,
                )
            # Who looked at whose data, when: a preview shows the customer's details.
            desk.app.store.audit(
                [
                    AuditEntry(
                        "account_viewed",
                        author,
                        now,
                        account.account_id,
                        detail={"page": "template preview", "template": " ".join(map(str, key))},
                    )
                ]
            )
        shown = preview(
            desk.app.catalog,
            desk.app.strategy,
            desk.app.policies,
            key,
            texts,
            account=account,
            now=now,
        )
        return editor(request, user, key, texts, shown=shown, data=data, account_id=account_id)

    def version_page(
        request: Request,
        user: Any,
        key: TemplateKey,
        sha: str,
        *,
        error: str | None = None,
        findings: list[Any] | None = None,
        status_code: int = 200,
    ) -> HTMLResponse:
        catalog = desk.app.catalog
        try:
            version = catalog.find(key, sha)
        except InputError:
            raise HTTPException(404, f"no version {sha} of this template") from None
        shown = preview(catalog, desk.app.strategy, desk.app.policies, key, texts_of(version))
        return desk.page(
            request,
            "compliance/version.html",
            user,
            {
                "key": key,
                "version": version,
                "parts": list(zip(PART_NAMES[key[0]], texts_of(version), strict=True)),
                "diff": catalog.diff(key, version.sha256),
                "preview": shown,
                "error": error,
                "refusal_findings": findings or [],
                "own": same_person(version.author, desk.user_name(user)),
                "done": request.query_params.get("done"),
            },
            status_code=status_code,
        )

    @router.get("/templates/{channel}/{name}/{locale}/{sha}", response_class=HTMLResponse)
    def show_version(
        request: Request, channel: str, name: str, locale: str, sha: str, user: Any = staff
    ) -> HTMLResponse:
        """One version: its wording, diff against the approved one, lint, approve/reject."""
        return version_page(request, user, key_of(channel, name, locale), sha)

    @router.post(
        "/templates/{channel}/{name}/{locale}/{sha}/{decision}",
        response_class=HTMLResponse,
        dependencies=posted,
    )
    def decide(
        request: Request,
        channel: str,
        name: str,
        locale: str,
        sha: str,
        decision: str,
        note: Annotated[str, Form()] = "",
        user: Any = staff,
    ) -> Response:
        """Approve (a second person only) or reject (with a comment) a draft."""
        key = key_of(channel, name, locale)
        who = desk.user_name(user)
        catalog = desk.app.catalog
        try:
            if decision == "approve":
                catalog.approve(key, sha, approver=who, now=desk.clock.now(), note=note)
            elif decision == "reject":
                catalog.reject(key, sha, who=who, note=note, now=desk.clock.now())
            else:
                raise HTTPException(404, f"no action {decision!r}")
        except ApprovalRefused as exc:
            return version_page(
                request,
                user,
                key,
                sha,
                error=f"refused by {exc.refusal}",
                findings=list(exc.findings),
                status_code=409,
            )
        except StoreError as exc:  # someone acted on it meanwhile
            return version_page(request, user, key, sha, error=str(exc), status_code=409)
        except InputError as exc:
            return version_page(request, user, key, sha, error=str(exc), status_code=400)
        done = "approved" if decision == "approve" else "rejected"
        return RedirectResponse(f"{_version_url(key, sha)}?done={done}", status_code=303)

    @router.get("/policies", response_class=HTMLResponse)
    def policies(request: Request, user: Any = staff) -> HTMLResponse:
        """The policy packs, holds, approval rules and the strategy, read-only, with sources."""
        overview = policy_overview(desk.app.policies, desk.app.strategy)
        return desk.page(request, "compliance/policies.html", user, {"overview": overview})

    return router


def _version_url(key: TemplateKey, sha: str) -> str:
    return f"/compliance/templates/{key[0].value}/{key[1]}/{key[2]}/{sha[:12]}"
