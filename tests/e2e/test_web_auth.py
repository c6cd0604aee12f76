"""Login, roles, sessions and CSRF in a real browser (rules HR-31..HR-35, docs/WEB.md)."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page

from dispatcher.service.login import token_digest
from tests.e2e.web import PASSWORD, Served, audit_events, log_in, screenshot, seeded, served, submit


def session_cookie(page: Page) -> str:
    cookies = {c["name"]: c for c in page.context.cookies()}
    return cookies["dispatcher_session"]["value"]


def test_a_person_not_logged_in_is_sent_to_the_login_page_and_back(web: Served, page: Page) -> None:
    page.goto(web.url("/"))
    assert page.url.startswith(web.url("/login"))
    screenshot(page, "login")
    log_in(page, web, "colin")
    assert page.url == web.url("/")
    assert page.locator("h1").inner_text() == "Hello, colin"
    screenshot(page, "home-collector")


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(
    web: Served, page: Page
) -> None:
    log_in(page, web, "colin", "not the password at all")
    assert page.url.startswith(web.url("/login"))
    assert page.locator(".error").inner_text() == "wrong name or password"
    log_in(page, web, "nobody-by-this-name", "not the password at all")
    assert page.locator(".error").inner_text() == "wrong name or password"


def test_the_session_cookie_is_http_only_same_site_and_its_token_is_not_stored(
    web: Served, page: Page
) -> None:
    log_in(page, web, "colin")
    cookie = next(c for c in page.context.cookies() if c["name"] == "dispatcher_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # plain http on loopback; "auto" sets it over TLS
    # The page's scripts cannot read it.
    assert "dispatcher_session" not in page.evaluate("document.cookie")
    # The database holds only its digest.
    assert web.app.users.session(token_digest(cookie["value"])) is not None
    assert web.app.users.session(cookie["value"]) is None


def test_logging_in_makes_a_new_session_id_no_session_fixation(web: Served, page: Page) -> None:
    """A session id planted before login (or kept from an earlier login) is never the one
    the person ends up logged in with, and stops working (HR-32)."""
    log_in(page, web, "colin")
    first = session_cookie(page)
    log_in(page, web, "colin")
    second = session_cookie(page)
    assert second != first
    assert web.app.users.session(token_digest(first)) is None
    # A planted, made-up session id is not adopted either.
    page.context.clear_cookies()
    page.context.add_cookies(
        [{"name": "dispatcher_session", "value": "planted-by-attacker", "url": web.url()}]
    )
    page.goto(web.url("/"))
    assert page.url.startswith(web.url("/login"))
    log_in(page, web, "colin")
    assert session_cookie(page) != "planted-by-attacker"


def test_logout_ends_the_session_and_the_old_cookie_opens_nothing(web: Served, page: Page) -> None:
    log_in(page, web, "colin")
    token = session_cookie(page)
    submit(page, "text=Log out")
    assert page.url.startswith(web.url("/login"))
    # Replaying the old cookie (as a thief who copied it would) gets the login page.
    answer = httpx.get(web.url("/"), cookies={"dispatcher_session": token})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login")
    assert web.app.users.session(token_digest(token)) is None


def test_a_form_posted_without_its_csrf_token_is_refused_403(web: Served, page: Page) -> None:
    log_in(page, web, "colin")
    token = session_cookie(page)
    # The browser's own request with the session cookie, but no token (what a forged
    # cross-site form would send): refused, and the session still stands.
    refused = page.request.post(web.url("/logout"), form={"x": "1"}, max_redirects=0)
    assert refused.status == 403
    assert web.app.users.session(token_digest(token)) is not None
    wrong = page.request.post(web.url("/logout"), form={"csrf_token": "guessed"}, max_redirects=0)
    assert wrong.status == 403
    # The page's own form carries it and works.
    submit(page, "text=Log out")
    assert web.app.users.session(token_digest(token)) is None


def test_the_login_form_itself_needs_its_token(web: Served) -> None:
    answer = httpx.post(web.url("/login"), data={"name": "colin", "password": PASSWORD})
    assert answer.status_code == 403
    assert "dispatcher_session" not in answer.cookies


def test_login_attempts_are_rate_limited_per_name(browser: Browser, tmp_path: Path) -> None:
    """HR-33: after the allowed failures even the right password is refused for a while,
    and a flood of wrong passwords for many names from one address is stopped too."""
    app = seeded(tmp_path, login_max_failures=3, login_max_failures_per_client=6)
    with served(app) as server:
        context = browser.new_context()
        page = context.new_page()
        for _ in range(3):
            log_in(page, server, "colin", "wrong password, again")
            assert page.locator(".error").inner_text() == "wrong name or password"
        log_in(page, server, "colin")
        assert page.locator(".error").inner_text().startswith("too many failed attempts")
        assert page.url.startswith(server.url("/login"))
        screenshot(page, "login-throttled")
        # Another name from the same address: three more failures, then the address is
        # stopped (six in the window), whatever name it tries next.
        for _ in range(3):
            log_in(page, server, "cora", "wrong password, again")
        log_in(page, server, "olive")
        assert page.locator(".error").inner_text().startswith("too many failed attempts")
        context.close()
    app.store.engine.dispose()


def test_a_collector_typing_the_url_of_another_roles_page_gets_403(web: Served, page: Page) -> None:
    """HR-31: the role is checked on the server, whatever the menu shows."""
    log_in(page, web, "colin")
    answer = page.goto(web.url("/users"))
    assert answer is not None and answer.status == 403
    assert page.locator("h1").inner_text() == "Not allowed"
    assert "Users" not in page.locator("body").inner_text()  # nothing of the page leaks
    screenshot(page, "forbidden")
    # A form post to it is refused the same way, with or without a token.
    posted = page.request.post(web.url("/users"), form={"name": "mallory"}, max_redirects=0)
    assert posted.status == 403
    assert web.app.users.user("mallory") is None


def test_an_admin_adds_a_user_who_can_then_log_in_and_is_audited(
    web: Served, page: Page, browser: Browser
) -> None:
    log_in(page, web, "adam")
    page.click("text=Users")
    page.fill("form.login input[name=name]", "nina")
    page.fill("form.login input[name=password]", "nina's first password")
    page.check("form.login input[value=collector]")
    submit(page, "text=Add user")
    assert page.locator("td", has_text="nina").count() == 1
    screenshot(page, "users")
    added = [a for a in audit_events(web.app, "user_added") if "nina" in a["detail"]]
    assert [a["actor"] for a in added] == ["web:adam"]
    other = browser.new_context().new_page()
    log_in(other, web, "nina", "nina's first password")
    assert other.locator("h1").inner_text() == "Hello, nina"
    other.context.close()
    # Disabled: her session ends at once and she cannot log in again.
    submit(page, "tr:has-text('nina') button:text-is('Disable')")
    assert web.app.users.user("nina").disabled  # type: ignore[union-attr]
