"""Fixtures of the browser tests (tests/e2e/web.py): one seeded server for the session,
one Chromium per test module, a fresh browser context (no cookies) for every test.

Chromium is per module, not per session: Playwright's sync API keeps an asyncio loop
running in the main thread while it is started, and the tests after the browser tests
call ``asyncio.run`` there.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.web import CHROMIUM, Served, seeded, served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: ./dev installs the Debian package chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The seeded application, served for every browser test of the session."""
    app = seeded(tmp_path_factory.mktemp("web"))
    with served(app) as server:
        yield server
    app.store.engine.dispose()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    yield opened
    context.close()
