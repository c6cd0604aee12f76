"""The people's pages in a real browser: the real app on a loopback port, Chromium driving it.

:func:`served` starts the application exactly as ``dispatcher serve`` builds it
(``create_app(Service(app))``) under uvicorn in a thread, on a free port, against a real
SQLite file. :func:`seed` fills that file the way production does: accounts imported from
CSV, planned and sent through the file sinks, so letters are real PDFs compiled by Typst.
The browser is the OS Chromium (``/usr/bin/chromium``, installed by ./dev), never one
downloaded at run time. Screenshots go to tests/artefacts/web/.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from playwright.sync_api import Page
from sqlalchemy import select
from sqlalchemy.engine import RowMapping

from dispatcher.bootstrap import App, bootstrap
from dispatcher.clock import RunningClock
from dispatcher.daemon import Service
from dispatcher.domain.access import Role
from dispatcher.service import login
from dispatcher.service.importer import import_accounts
from dispatcher.settings import Settings, WebSettings
from dispatcher.store.sql import AUDIT
from dispatcher.web.app import create_app
from tests.conftest import settings_for, write_csv
from tests.e2e.test_serve import free_port
from tests.integration.test_pipeline import row

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(__file__).resolve().parents[1] / "artefacts" / "web"
NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)  # Wednesday 11:00 in New York
PASSWORD = "a long test password 7f3a"
# Who logs in, and as what. Each test logs in as the person its story is about.
PEOPLE: dict[str, tuple[Role, ...]] = {
    "colin": (Role.COLLECTOR,),
    "cora": (Role.COMPLIANCE,),
    "carl": (Role.COMPLIANCE,),
    "olive": (Role.OPS,),
    "audrey": (Role.AUDITOR,),
    "adam": (Role.ADMIN,),
}
XSS_NAME = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
ACCOUNTS = [
    # Late stage (DPD 92 at NOW): a letter and an email go out.
    row("L-100", "2026-03-10", full_name="Laura Letter", phone="+16175550142"),
    # Early stage: an SMS.
    row("E-200", "2026-06-01", full_name="Evan Early", email="evan.early@example.com"),
    # Disputed: everything is held, with the rule id.
    row("D-300", "2026-03-10", full_name="Dora Dispute", dispute="true"),
    # A hostile name: shown as text wherever it appears.
    row("X-400", "2026-06-01", full_name=XSS_NAME),
]


def web_settings(tmp_path: Path, **web: object) -> Settings:
    base = settings_for(tmp_path)
    return base.model_copy(update={"web": WebSettings(**web)})  # type: ignore[arg-type]


def seed(app: App, directory: Path) -> None:
    """Accounts, users, and what a plan and a send at NOW made of them."""
    app.store.create_schema()
    app.catalog.bootstrap(NOW)
    import_accounts(
        app.store,
        write_csv(directory / "accounts.csv", ACCOUNTS),
        now=NOW,
        default_timezone="America/New_York",
        default_region="US",
    )
    app.planner(NOW).plan(NOW)
    # In a thread of its own: Playwright's sync API may already run a loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, app.sender().send(NOW)).result()
    for name, roles in PEOPLE.items():
        login.add_user(app.users, name, PASSWORD, frozenset(roles), actor="test:seed", now=NOW)


@dataclass
class Served:
    app: App
    service: Service
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def served(app: App) -> Iterator[Served]:
    """The real application under uvicorn in a thread, until the block ends."""
    service = Service(app, clock=RunningClock(NOW), instance="e2e-web")
    port = free_port()
    config = uvicorn.Config(
        create_app(service),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="e2e-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web server did not start")
        time.sleep(0.02)
    try:
        yield Served(app, service, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def seeded(directory: Path, **web: object) -> App:
    app = bootstrap(web_settings(directory, **web))
    seed(app, directory)
    return app


def submit(page: Page, selector: str) -> None:
    """Click a form's button and wait for the page the server answers with (also when it
    redirects back to the same address)."""
    with page.expect_navigation():
        page.click(selector)


def log_in(page: Page, server: Served, name: str, password: str = PASSWORD) -> None:
    """Fill in the login form as a person would, and wait for the page after it."""
    page.goto(server.url("/login"))
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    submit(page, "button[type=submit]")


def audit_events(app: App, event: str) -> list[RowMapping]:
    """The audit records of one event, oldest first."""
    with app.store.engine.connect() as conn:
        return list(
            conn.execute(
                select(AUDIT).where(AUDIT.c.event == event).order_by(AUDIT.c.id)
            ).mappings()
        )


def screenshot(page: Page, name: str) -> Path:
    """Keep what the page looked like as a test artefact (tests/artefacts/web/NAME.png)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
