"""Compliance, ops and auditor pages in a real browser (docs/WEB.md): edit a template and
get it approved by a second person, retry a failure, download exports; roles and CSRF.

The server is this module's own (the seeded application of tests/e2e/web.py, with the
package's in-memory channels so one SMS fails at the "provider" with code 30007): the
stories here change templates and messages, which the collector tests must not see.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy import select, update

from dispatcher.bootstrap import bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import PermanentDelivery
from dispatcher.service import ops
from dispatcher.service.delivery import StatusReport, record_status
from dispatcher.service.export import AUDIT_EXPORT_FIELDS, EXPORT_FIELDS
from dispatcher.service.importer import import_accounts
from dispatcher.store.sql import MESSAGE
from tests.conftest import write_csv
from tests.e2e.web import (
    NOW,
    Served,
    audit_events,
    log_in,
    screenshot,
    seed,
    served,
    submit,
    web_settings,
)
from tests.integration.test_pipeline import row

EDITOR = "/compliance/templates/sms/early_day1/en-US"


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("desk")
    channels = {
        ChannelKind.SMS: MemoryChannel([PermanentDelivery("carrier blocked", code="30007")]),
        ChannelKind.EMAIL: MemoryChannel(),
        ChannelKind.LETTER: MemoryChannel(),
    }
    app = bootstrap(web_settings(directory), channels=channels)
    seed(app, directory)
    with served(app) as server:
        yield server
    app.store.engine.dispose()


def second_person(browser: Browser, server: Served, name: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    log_in(page, server, name)
    return page


def test_compliance_edits_previews_fixes_and_a_second_person_approves_for_the_next_plan(
    desk: Served, page: Page, browser: Browser, tmp_path: Path
) -> None:
    log_in(page, desk, "cora")
    submit(page, "text=Templates")
    assert page.url == desk.url("/compliance/templates")
    assert page.locator("tr[data-template='sms/early_day1/en-US'] .state").inner_text() == (
        "approved"
    )
    screenshot(page, "compliance-templates")
    submit(page, f"a[href='{EDITOR}']")
    original = page.input_value("textarea[name=text]")
    assert "{{ opt_out }}" in original

    # An edit that drops the opt-out line: the preview shows it and the lint error.
    page.fill(
        "textarea[name=text]", original.replace("Hi {{", "Hello {{").replace("{{ opt_out }}", "")
    )
    submit(page, "button[value=preview]")
    assert "Hello" in page.locator("[data-testid=rendered]").inner_text()
    assert "lint.disclosure.opt_out" in page.locator("[data-testid=lint]").inner_text()
    assert "segment" in page.locator("[data-testid=segments]").inner_text()
    screenshot(page, "compliance-preview-lint-error")

    # Fixed: clean, with the diff against the approved wording; saved as cora's draft.
    page.fill("textarea[name=text]", original.replace("Hi {{", "Hello {{"))
    submit(page, "button[value=preview]")
    assert page.locator("[data-testid=lint-clean]").is_visible()
    assert desk.app.creditor.opt_out_sms in page.locator("[data-testid=rendered]").inner_text()
    assert "+" in page.locator("[data-testid=diff] .add").first.inner_text()
    screenshot(page, "compliance-preview-clean")
    submit(page, "button[value=save]")
    assert "draft" in page.locator("[data-testid=state]").inner_text()
    version_url = page.url
    sha = version_url.rsplit("/", 1)[1]
    screenshot(page, "compliance-draft")

    # Four eyes: cora cannot approve her own draft.
    submit(page, "[data-testid=approve-form] button")
    assert "template.four_eyes" in page.locator("[data-testid=error]").inner_text()
    assert "draft" in page.locator("[data-testid=state]").inner_text()
    screenshot(page, "compliance-own-approval-refused")

    carl = second_person(browser, desk, "carl")
    carl.goto(version_url)
    carl.fill("[data-testid=approve-form] input[name=note]", "reads well")
    submit(carl, "[data-testid=approve-form] button")
    assert "approved" in carl.locator("[data-testid=done]").inner_text()
    assert "approved" in carl.locator("[data-testid=state]").inner_text()
    screenshot(carl, "compliance-approved-by-second-person")
    carl.context.close()

    drafted = audit_events(desk.app, "template_version_drafted")[-1]
    approved = audit_events(desk.app, "template_version_approved")[-1]
    assert (drafted["actor"], approved["actor"]) == ("cora", "carl")
    full_sha = json.loads(approved["detail"])["sha256"]
    assert full_sha.startswith(sha)

    # The next plan sends the new wording: a customer one day past due now.
    import_accounts(
        desk.app.store,
        write_csv(tmp_path / "new.csv", [row("N-500", "2026-06-09", full_name="Nina New")]),
        now=NOW,
        default_timezone="America/New_York",
        default_region="US",
    )
    desk.app.planner(NOW).plan(NOW)
    with desk.app.store.engine.connect() as conn:
        [(version, body)] = conn.execute(
            select(MESSAGE.c.template_version, MESSAGE.c.body).where(
                MESSAGE.c.account_id == "N-500", MESSAGE.c.channel == "sms"
            )
        ).all()
    assert version == full_sha
    assert body.startswith(f"{desk.app.creditor.name}: Hello Nina")


def test_the_policy_book_is_shown_read_only_with_rule_ids_and_sources(
    desk: Served, page: Page
) -> None:
    log_in(page, desk, "carl")
    page.goto(desk.url("/compliance/policies"))
    fdcpa = page.locator("tr[data-rule='US.window.fdcpa']")
    assert "FDCPA §805(a)(1)" in fdcpa.inner_text()
    assert "HR-12" in page.locator("tr[data-rule='template.four_eyes']").inner_text()
    assert page.locator("form").count() == 1  # only the logout form: nothing to change here
    screenshot(page, "compliance-policies")
    page.goto(desk.url("/compliance/templates?channel=email&stage=mid"))
    shown = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.template)")
    assert shown == ["email/mid_day1/en-US", "email/mid_day1/zh-CN"]


def test_a_collector_or_ops_gets_403_on_the_editor_and_its_forms(desk: Served, page: Page) -> None:
    log_in(page, desk, "colin")
    answer = page.goto(desk.url(EDITOR))
    assert answer is not None and answer.status == 403
    assert "textarea" not in page.content()
    screenshot(page, "compliance-editor-forbidden")
    posted = page.request.post(desk.url(EDITOR), form={"text": "x", "action": "save"})
    assert posted.status == 403
    log_in(page, desk, "olive")
    assert page.goto(desk.url("/compliance/templates")).status == 403  # type: ignore[union-attr]
    assert page.goto(desk.url("/auditor")).status == 403  # type: ignore[union-attr]
    log_in(page, desk, "audrey")
    assert page.goto(desk.url("/ops")).status == 403  # type: ignore[union-attr]


def test_a_compliance_form_without_its_csrf_token_is_refused(desk: Served, page: Page) -> None:
    log_in(page, desk, "cora")
    before = len(desk.app.catalog.versions.versions(ChannelKind.SMS, "early_day7", "en-US"))
    refused = page.request.post(
        desk.url("/compliance/templates/sms/early_day7/en-US"),
        form={"text": "+++\n+++\nforged", "action": "save"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert len(desk.app.catalog.versions.versions(ChannelKind.SMS, "early_day7", "en-US")) == before


def test_ops_sees_the_run_counts_and_a_retry_sends_the_failed_message_again(
    desk: Served, page: Page
) -> None:
    # One SMS that went out is reported undelivered by the provider (as the status webhook
    # records it): the page lists it beside the failure, marked, without a Retry button.
    # The in-memory channels number their ids per channel (an email may also be "mem-1"):
    # give the SMS a SID of its own, as Twilio would have.
    undelivered = next(
        m
        for m in desk.app.store.iter_messages()
        if m["channel"] == "sms" and m["status"] == "sent" and m["delivery_status"] is None
    )
    sid = "SM" + "0" * 30 + "e2"
    with desk.app.store.engine.begin() as conn:
        conn.execute(
            update(MESSAGE)
            .where(MESSAGE.c.message_id == undelivered["message_id"])
            .values(provider_message_id=sid)
        )
    record_status(
        desk.app.store,
        desk.app.timing,
        StatusReport(sid, "undelivered", "30003"),
        NOW + timedelta(minutes=10),
        max_attempts=5,
    )
    log_in(page, desk, "olive")
    submit(page, "text=Today's run")
    zone = ops.zone_of(desk.app.settings.default_timezone)
    run = ops.day_run(desk.app.store, desk.app.ops, NOW.astimezone(zone).date(), zone, NOW)
    total = page.locator("[data-testid=run] tfoot")
    for status, n in run.totals.items():
        assert total.locator(f"[data-status={status}]").inner_text() == str(n)
    assert run.totals["failed"] == 1 and run.totals["sent"] >= 1 and run.totals["held"] >= 1
    rows = page.locator("[data-testid=failures] tr[data-message]")
    assert [rows.nth(i).get_attribute("data-kind") for i in range(rows.count())] == [
        "undelivered",  # reported at 11:10, after the failure at 11:00: newest first
        "failed",
    ]
    reported = page.locator("[data-testid=failures] tr[data-kind=undelivered]")
    assert reported.get_attribute("data-message") == undelivered["message_id"]
    assert reported.locator("[data-testid=kind]").inner_text() == (
        "undelivered (reported by the provider)"
    )
    assert reported.locator("[data-testid=code]").inner_text() == "30003"
    assert reported.locator("button").count() == 0
    failure = page.locator("[data-testid=failures] tr[data-kind=failed]")
    assert failure.count() == 1
    assert failure.locator("[data-testid=code]").inner_text() == "30007"
    assert "carrier blocked" in failure.inner_text()
    assert page.locator("[data-testid=sends-chart] g.bar").count() >= 1
    assert "dispute" in page.locator("[data-testid=reasons]").inner_text()
    screenshot(page, "ops-today")

    message_id = failure.get_attribute("data-message")
    failure.locator("input[name=note]").fill("carrier unblocked us")
    with page.expect_navigation():
        failure.locator("button").click()
    assert "queued again" in page.locator("[data-testid=done]").inner_text()
    assert page.locator("[data-testid=failures] tr[data-kind=failed]").count() == 0
    assert page.locator("[data-testid=failures] tr[data-kind=undelivered]").count() == 1
    screenshot(page, "ops-retried")
    with desk.app.store.engine.connect() as conn:
        status = conn.execute(
            select(MESSAGE.c.status).where(MESSAGE.c.message_id == message_id)
        ).scalar_one()
    assert status == "queued"
    [requeued] = audit_events(desk.app, "message_requeued")
    assert requeued["actor"] == "web:olive" and requeued["message_id"] == message_id
    assert json.loads(requeued["detail"])["note"] == "carrier unblocked us"


def test_the_auditor_downloads_messages_as_csv_and_audit_records_as_jsonl(
    desk: Served, page: Page
) -> None:
    log_in(page, desk, "audrey")
    submit(page, "text=Export")
    page.fill("input[name=start]", "2026-06-10")
    page.fill("input[name=end]", "2026-06-10")
    page.check("input[name=kind][value=messages]")
    page.check("input[name=format][value=csv]")
    screenshot(page, "auditor-export")
    with page.expect_download() as download:
        page.click("[data-testid=export] button")
    assert download.value.suggested_filename == "dispatcher-messages-2026-06-10-2026-06-10.csv"
    table = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    assert table[0] == list(EXPORT_FIELDS)
    zone = ops.zone_of(desk.app.settings.default_timezone)
    start, end = ops.day_bounds(NOW.astimezone(zone).date(), zone)
    expected = {m["message_id"] for m in desk.app.store.iter_messages(start, end)}
    assert {r[0] for r in table[1:]} == expected and len(table) - 1 == len(expected) > 0
    # No cell of it runs as a formula (the hostile customer name is in the recipient data).
    assert not any(cell.startswith(("=", "+", "@")) for r in table for cell in r)

    page.check("input[name=kind][value=audit]")
    page.check("input[name=format][value=jsonl]")
    with page.expect_download() as download:
        page.click("[data-testid=export] button")
    records = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert records and all(set(r) == set(AUDIT_EXPORT_FIELDS) for r in records)
    assert {"message_queued", "message_sent"} <= {r["event"] for r in records}
    # Each download is itself recorded: who took which records.
    exported = audit_events(desk.app, "records_exported")
    assert [json.loads(e["detail"])["kind"] for e in exported[-2:]] == ["messages", "audit"]
    assert {e["actor"] for e in exported} == {"web:audrey"}
    assert "records_exported" in {r["event"] for r in records}


def test_a_preview_for_a_hostile_customer_name_renders_inert_and_is_audited(
    desk: Served, page: Page
) -> None:
    log_in(page, desk, "cora")
    page.goto(desk.url("/compliance/templates/email/mid_day1/en-US"))
    page.check("input[name=data][value=account]")
    page.fill("input[name=account_id]", "X-400")
    submit(page, "button[value=preview]")
    rendered = page.locator("[data-testid=rendered]").inner_text()
    assert "<script>window.__pwned = 1</script>" in rendered  # shown as the text it is
    assert page.evaluate("window.__pwned") is None
    assert page.frame_locator("iframe.html-part").locator("script").count() == 0
    screenshot(page, "compliance-preview-account")
    viewed = audit_events(desk.app, "account_viewed")[-1]
    assert (viewed["actor"], viewed["account_id"]) == ("web:cora", "X-400")
    # An unknown account is said so, and nothing is audited for it.
    page.fill("input[name=account_id]", "NOPE-1")
    submit(page, "button[value=preview]")
    assert "no account 'NOPE-1'" in page.locator("[data-testid=error]").inner_text()
    assert audit_events(desk.app, "account_viewed")[-1]["id"] == viewed["id"]


def test_a_letter_is_previewed_as_its_pdf(desk: Served, page: Page) -> None:
    log_in(page, desk, "carl")
    url = "/compliance/templates/letter/mid_day15/en-US"
    page.goto(desk.url(url))
    token = page.input_value("[data-testid=editor] input[name=csrf_token]")
    text = page.input_value("textarea[name=text]")
    answer = page.request.post(
        desk.url(url), form={"text": text, "action": "pdf", "csrf_token": token}
    )
    assert answer.status == 200 and answer.headers["content-type"] == "application/pdf"
    assert answer.body().startswith(b"%PDF-")


def test_an_export_range_that_ends_before_it_starts_is_refused(desk: Served, page: Page) -> None:
    log_in(page, desk, "audrey")
    page.goto(desk.url("/auditor"))
    before = len(audit_events(desk.app, "records_exported"))
    page.fill("input[name=start]", "2026-06-10")
    page.fill("input[name=end]", "2026-06-01")
    submit(page, "[data-testid=export] button")
    assert "ends before it starts" in page.locator("[data-testid=error]").inner_text()
    assert len(audit_events(desk.app, "records_exported")) == before
