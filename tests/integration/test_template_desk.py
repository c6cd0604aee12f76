"""Compliance's browser work on a real database (SQLite and PostgreSQL), through the
services the pages call: a draft from edited text, its preview and lint, four-eyes
approval, and the next plan sending the new version."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatcher.bootstrap import App
from dispatcher.domain.account import Account
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.template_version import VersionState
from dispatcher.error import InputError, TemplateError
from dispatcher.service.template_catalog import ApprovalRefused
from dispatcher.service.template_desk import (
    Preview,
    policy_overview,
    preview,
    template_rows,
    texts_of,
)
from dispatcher.store.sql import AUDIT
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

SMS = (ChannelKind.SMS, "early_day1", "en-US")
EMAIL = (ChannelKind.EMAIL, "mid_day1", "en-US")


def approved_text(app: App, key: tuple[ChannelKind, str, str]) -> list[str]:
    [version] = [v for v in app.catalog.versions.versions(*key) if v.state is VersionState.APPROVED]
    return texts_of(version)


def show(
    app: App,
    key: tuple[ChannelKind, str, str],
    texts: list[str],
    account: Account | None = None,
    now: datetime | None = None,
) -> Preview:
    return preview(app.catalog, app.strategy, app.policies, key, texts, account=account, now=now)


def test_edited_wording_is_previewed_linted_drafted_approved_by_a_second_person_and_sent(
    app: App, tmp_path: Path
) -> None:
    [text] = approved_text(app, SMS)
    broken = text.replace("{{ opt_out }}", "").replace("Hi {{", "Hello {{")
    seen = show(app, SMS, [broken])
    assert seen.message is not None and "Hello" in seen.message.body
    assert [f.rule for f in seen.errors] == ["lint.disclosure.opt_out"]
    assert seen.sms is not None and seen.sms.segments >= 1 and seen.sms_limit
    # Saved anyway (a draft may be wrong), it cannot be approved, by anyone.
    draft, new = app.catalog.draft(SMS, [broken], author="ann", now=NOW)
    assert new and draft.state is VersionState.DRAFT and draft.author == "ann"
    with pytest.raises(ApprovalRefused, match=r"template\.lint_clean"):
        app.catalog.approve(SMS, draft.sha256, approver="bob", now=NOW)
    app.catalog.reject(SMS, draft.sha256, who="bob", note="opt-out line missing", now=NOW)

    fixed = text.replace("Hi {{", "Hello {{")
    seen = show(app, SMS, [fixed])
    assert seen.errors == [] and seen.message is not None
    assert app.creditor.opt_out_sms in seen.message.body
    draft, new = app.catalog.draft(SMS, [fixed], author="ann", now=NOW)
    assert new and draft.sha256 == seen.sha256
    # The same wording again is the same version, not a second draft.
    assert app.catalog.draft(SMS, [fixed], author="ann", now=NOW) == (draft, False)
    diff = app.catalog.diff(SMS, draft.sha256)
    assert any(line.startswith("+") and "Hello" in line for line in diff.lines)
    with pytest.raises(ApprovalRefused, match=r"template\.four_eyes"):
        app.catalog.approve(SMS, draft.sha256, approver="ANN ", now=NOW)
    app.catalog.approve(SMS, draft.sha256, approver="bob", now=NOW, note="ok")

    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.planner(NOW).plan(NOW)
    [sms] = messages(app, channel="sms")
    assert sms["template_version"] == draft.sha256
    assert str(sms["body"]).count("Hello") == 1
    with app.store.engine.connect() as conn:
        drafted = conn.execute(
            select(AUDIT.c.actor, AUDIT.c.detail).where(AUDIT.c.event == "template_version_drafted")
        ).all()
    assert [(a, json.loads(d)["sha256"]) for a, d in drafted][-1] == ("ann", draft.sha256)


def test_wording_that_does_not_load_is_shown_and_never_stored(app: App) -> None:
    [text] = approved_text(app, SMS)
    bad = text.replace("{{ first_name }}", "{{ first_name ")
    seen = show(app, SMS, [bad])
    assert seen.message is None and seen.error
    assert [f.rule for f in seen.findings] == ["lint.load"]
    unknown = show(app, SMS, [text.replace("{{ first_name }}", "{{ ssn }}")])
    assert [f.rule for f in unknown.findings] == ["lint.unknown_variable"]
    before = len(app.catalog.versions.versions(*SMS))
    with pytest.raises(TemplateError):
        app.catalog.draft(SMS, [bad], author="ann", now=NOW)
    # Front matter that names another template is refused too.
    with pytest.raises(TemplateError):
        app.catalog.draft(
            SMS, [text.replace('id = "early_day1"', 'id = "other"')], author="ann", now=NOW
        )
    with pytest.raises(InputError, match="2 part"):
        app.catalog.draft(EMAIL, ["only text"], author="ann", now=NOW)
    with pytest.raises(InputError):
        app.catalog.draft(SMS, [text], author="system:web", now=NOW)
    assert len(app.catalog.versions.versions(*SMS)) == before


def test_preview_for_a_real_account_and_an_email_with_both_parts(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-9", days_ago(40), full_name="Zoë <script>x</script> Li")])
    account = app.store.account("A-9")
    assert account is not None
    seen = show(app, EMAIL, approved_text(app, EMAIL), account=account, now=NOW)
    assert seen.data == "account A-9" and seen.dpd == 40
    assert seen.message is not None and seen.message.subject
    assert "Zoë" in seen.message.body
    html = seen.message.body_html or ""
    assert "<script>" not in html and "&lt;script&gt;" in html  # escaped for its target
    assert seen.sms is None


def test_the_list_filters_by_channel_stage_and_locale_and_the_policy_book_names_sources(
    app: App,
) -> None:
    statuses, problem = app.catalog.status()
    assert problem is None
    rows = template_rows(statuses, app.strategy, channel=ChannelKind.SMS, stage="early")
    assert {r.key[1] for r in rows} == {"early_day1", "early_day7", "early_day15"}
    assert all(r.state == "approved" and r.stages == ("early",) for r in rows)
    zh = template_rows(statuses, app.strategy, locale="zh-CN")
    assert zh and all(r.key[2] == "zh-CN" for r in zh)
    [text] = approved_text(app, SMS)
    app.catalog.draft(SMS, [text.replace("Hi {{", "Hey {{")], author="ann", now=NOW)
    [early] = [r for r in template_rows(app.catalog.status()[0], app.strategy) if r.key == SMS]
    assert early.state == "approved" and len(early.drafts) == 1

    book = policy_overview(app.policies, app.strategy)
    rules = {r.id: r for r in book.rules}
    assert "FDCPA" in rules["US.window.fdcpa"].source
    assert rules["US.cap.sms_day"].says == "at most 1 per person in any 24 hours"
    assert "HR-12" in rules["template.four_eyes"].source
    assert "11 U.S.C." in rules["hold.bankruptcy"].source
    assert ("US-MA", "US") in {(p, parent) for p, parent, _ in book.packs}
    stages = {s: steps for s, _range, steps in book.stages}
    assert ("day1", 1, "sms", "early_day1") in stages["early"]
