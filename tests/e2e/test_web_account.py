"""The collector's pages in a real browser: search, the account's history, letters (and what
became of a letter whose PDF is gone), holds; every look audited (HR-30), every customer
value inert (HR-35), typed SQL harmless."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page
from sqlalchemy.engine import RowMapping
from structlog.testing import capture_logs

from dispatcher.bootstrap import App
from dispatcher.domain.retention import RecordKind
from dispatcher.service import retention
from dispatcher.service.importer import import_accounts
from tests.conftest import write_csv
from tests.e2e.web import (
    ACCOUNTS,
    NOW,
    XSS_NAME,
    Served,
    audit_events,
    log_in,
    screenshot,
    seeded,
    served,
    submit,
)


def search(page: Page, web: Served, query: str) -> None:
    """Search as the form does without JavaScript (GET /accounts?q=...); the live search
    by htmx has its own test."""
    page.goto(web.url("/accounts?" + urlencode({"q": query})))


def test_a_collector_finds_an_account_reads_its_history_and_opens_the_letter(
    web: Served, page: Page
) -> None:
    log_in(page, web, "colin")
    search(page, web, "laura")
    screenshot(page, "accounts-search")
    assert page.locator("table.results tbody tr").count() == 1
    submit(page, "text=L-100")
    assert page.url == web.url("/accounts/L-100")
    assert page.locator("#stage").inner_text() == "late"
    assert page.locator("#dpd").inner_text() == "92"
    timeline = page.locator("ol.timeline li.message")
    assert timeline.count() == 2  # the late stage's letter and email
    assert "email" in page.locator("#timeline").inner_text()
    screenshot(page, "account")
    link = page.locator("a.letter")
    assert link.count() == 1
    href = link.get_attribute("href")
    assert href is not None
    pdf = page.request.get(web.url(href))  # the browser's own session
    assert pdf.status == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.body().startswith(b"%PDF-")
    # Who looked at whose data, and when (HR-30).
    searched = [a for a in audit_events(web.app, "accounts_searched") if a["actor"] == "web:colin"]
    assert any(json.loads(a["detail"])["accounts"] == ["L-100"] for a in searched)
    viewed = audit_events(web.app, "account_viewed")
    assert ("web:colin", "L-100") in {(a["actor"], a["account_id"]) for a in viewed}
    letters = audit_events(web.app, "letter_viewed")
    assert [(a["actor"], a["account_id"]) for a in letters][-1] == ("web:colin", "L-100")
    assert href.endswith(f"{letters[-1]['message_id']}.pdf")


def test_typing_in_the_search_box_shows_results_without_a_page_load(
    web: Served, page: Page
) -> None:
    log_in(page, web, "colin")
    page.goto(web.url("/accounts"))
    page.evaluate("window.__same_page = true")
    page.type("input[name=q]", "evan", delay=30)
    page.wait_for_selector("table.results")
    assert "Evan Early" in page.locator("#results").inner_text()
    assert page.evaluate("window.__same_page") is True  # htmx swapped the results in


def test_a_held_message_shows_why_with_the_rule_id_and_its_source(web: Served, page: Page) -> None:
    log_in(page, web, "colin")
    page.goto(web.url("/accounts/D-300"))
    held = page.locator("p.held").first
    assert "dispute" in held.inner_text()
    assert "hold.dispute" in held.inner_text()
    assert "FDCPA §809(b)" in held.inner_text()
    screenshot(page, "account-held")


def test_a_customer_name_with_a_script_renders_as_text_everywhere(web: Served, page: Page) -> None:
    """HR-35: nothing a customer's data holds runs, on the results or the account page."""
    log_in(page, web, "colin")
    search(page, web, "X-400")
    assert page.locator("td.name").first.inner_text() == XSS_NAME
    assert page.evaluate("window.__pwned") is None
    page.goto(web.url("/accounts/X-400"))
    assert page.locator("h1 .name").inner_text() == XSS_NAME
    assert page.locator("script:not([src])").count() == 0  # no inline script got in
    page.wait_for_timeout(200)  # an onerror would have fired by now
    assert page.evaluate("window.__pwned") is None
    screenshot(page, "account-hostile-name")


def test_sql_typed_into_the_search_box_finds_nothing_and_breaks_nothing(
    web: Served, page: Page
) -> None:
    log_in(page, web, "colin")
    for typed in ("' OR 1=1 --", "'; DROP TABLE account; --", "%%%", "___", '" OR ""="'):
        search(page, web, typed)
        assert page.locator("table.results").count() == 0, typed
        assert "No account matches" in page.locator("#results").inner_text()
    search(page, web, "%")
    assert "at least 3 characters" in page.locator("#results").inner_text()
    assert web.app.store.count_accounts() == 4
    search(page, web, "dora")
    assert page.locator("table.results tbody tr").count() == 1


def test_a_collector_places_a_promise_to_pay_and_lifts_it_audited(web: Served, page: Page) -> None:
    log_in(page, web, "colin")
    page.goto(web.url("/accounts/E-200"))
    page.click("text=Place a hold")
    page.select_option("select[name=reason]", "promise_to_pay")
    page.fill("input[name=until]", "2026-06-20")
    page.fill("textarea[name=note]", "called 10 June, will pay <b>$50</b> by the 20th")
    submit(page, "text=Place hold")
    holds = page.locator("#holds tbody tr")
    assert holds.count() == 1
    assert "promise_to_pay" in holds.inner_text()
    assert "<b>$50</b>" in holds.inner_text()  # the note as text
    assert "2026-06-21 04:00 UTC" in holds.inner_text()  # through the 20th in New York
    assert "promise_to_pay" in page.locator("ol.timeline li.hold").first.inner_text()
    screenshot(page, "account-hold-placed")
    added = audit_events(web.app, "hold_added")[-1]
    assert (added["actor"], added["account_id"]) == ("web:colin", "E-200")
    page.fill("#holds input[name=note]", "paid in full")
    submit(page, "#holds button:text-is('Lift')")
    assert "No hold in force" in page.locator("#holds").inner_text()
    lifted = audit_events(web.app, "hold_lifted")[-1]
    assert (lifted["actor"], json.loads(lifted["detail"])["note"]) == ("web:colin", "paid in full")


def test_a_promise_to_pay_without_a_date_is_refused_with_the_reason(
    web: Served, page: Page
) -> None:
    log_in(page, web, "colin")
    page.goto(web.url("/accounts/E-200"))
    page.click("text=Place a hold")
    page.select_option("select[name=reason]", "promise_to_pay")
    page.fill("textarea[name=note]", "said they would pay")
    submit(page, "text=Place hold")
    assert "a promise to pay needs until" in page.locator(".error").inner_text()
    assert "No hold in force" in page.locator("#holds").inner_text()


def test_other_roles_get_403_on_account_pages_and_see_nothing(web: Served, page: Page) -> None:
    log_in(page, web, "cora")  # compliance
    before = len(audit_events(web.app, "account_viewed"))
    for path in ("/accounts", "/accounts/L-100", "/accounts/L-100/letters/x.pdf"):
        answer = page.goto(web.url(path))
        assert answer is not None and answer.status == 403, path
        assert "Laura" not in page.content()
    assert len(audit_events(web.app, "account_viewed")) == before


def test_an_unknown_account_or_letter_is_404(web: Served, page: Page) -> None:
    log_in(page, web, "colin")
    for path in ("/accounts/NOPE-1", "/accounts/E-200/letters/deadbeef.pdf"):
        answer = page.goto(web.url(path))
        assert answer is not None and answer.status == 404, path


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Served]:
    """A seeded server of the test's own: these stories remove letter files."""
    app = seeded(tmp_path)
    with served(app) as server:
        yield server
    app.store.engine.dispose()


def the_letter(app: App) -> RowMapping:
    [letter] = [m for m in app.store.messages_of("L-100") if m["channel"] == "letter"]
    assert letter["status"] == "sent" and letter["artifact_path"]
    return letter


def test_a_letter_whose_pdf_left_the_disk_says_so_with_410_naming_the_file(
    own: Served, page: Page
) -> None:
    letter = the_letter(own.app)
    recorded = Path(str(letter["artifact_path"]))
    recorded.unlink()  # the letter folder was cleaned by someone
    log_in(page, own, "colin")
    page.goto(own.url("/accounts/L-100"))
    assert page.locator("a.letter").count() == 0
    gone = page.locator("a.letter-gone")
    assert (gone.get_attribute("data-state"), gone.inner_text()) == (
        "missing",
        "letter PDF no longer on disk",
    )
    viewed = len(audit_events(own.app, "letter_viewed"))

    with capture_logs() as logs:
        answer = page.goto(own.url(f"/accounts/L-100/letters/{letter['message_id']}.pdf"))
    assert answer is not None and answer.status == 410
    screenshot(page, "letter-gone")
    why = page.locator("[data-testid=why]")
    assert why.get_attribute("data-state") == "missing"
    assert "no longer on disk" in why.inner_text()
    assert "retention did not remove it" in why.inner_text()
    assert page.locator("[data-testid=message]").inner_text() == letter["message_id"]
    assert page.locator("[data-testid=file]").inner_text() == recorded.name
    assert "was produced and went out (sent, 2026-06-10 15:00 UTC)" in page.inner_text("main")
    assert str(recorded.parent) not in page.content()  # the name, never the server's folders
    # Nothing was shown, so nothing is recorded as viewed; ops read why in the log.
    assert len(audit_events(own.app, "letter_viewed")) == viewed
    [logged] = [entry for entry in logs if entry["event"] == "letter_file_gone"]
    assert logged == {
        "event": "letter_file_gone",
        "log_level": "warning",
        "message_id": letter["message_id"],
        "state": "missing",
        "file_name": recorded.name,
    }
    # A letter that is not there at all is still a plain 404.
    answer = page.goto(own.url("/accounts/L-100/letters/deadbeef.pdf"))
    assert answer is not None and answer.status == 404


def test_a_letter_purged_under_retention_says_when_with_410(
    own: Served, page: Page, tmp_path: Path
) -> None:
    letter = the_letter(own.app)
    recorded = Path(str(letter["artifact_path"]))
    # Paid; three years and a day of no activity later the retention purge runs.
    closed = [{**r, "status": "paid"} for r in ACCOUNTS if r["account_id"] == "L-100"]
    import_accounts(
        own.app.store,
        write_csv(tmp_path / "paid.csv", closed),
        now=NOW,
        default_timezone="America/New_York",
        default_region="US",
    )
    at = NOW + timedelta(days=1096 + 30)
    report = retention.purge(own.app.retention, own.app.audit_chain, own.app.retention_policy, at)
    assert report.kinds[RecordKind.MESSAGE_CONTENT].accounts == 1 and report.files_removed >= 1
    assert not recorded.exists()

    log_in(page, own, "colin")
    page.goto(own.url("/accounts/L-100"))
    gone = page.locator("a.letter-gone")
    assert (gone.get_attribute("data-state"), gone.inner_text()) == (
        "purged",
        "letter PDF purged under retention",
    )
    answer = page.goto(own.url(f"/accounts/L-100/letters/{letter['message_id']}.pdf"))
    assert answer is not None and answer.status == 410
    why = page.locator("[data-testid=why]")
    assert why.get_attribute("data-state") == "purged"
    assert f"purged under retention on {at:%Y-%m-%d} (rule RETENTION.purge)" in why.inner_text()
    assert page.locator("[data-testid=file]").count() == 0  # the purge cleared the path too
