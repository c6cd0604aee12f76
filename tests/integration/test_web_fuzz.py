"""Schemathesis against the web application's own OpenAPI schema, on SQLite and PostgreSQL.

The schema is built in-process (``app.openapi()``; the docs pages are off) from whatever
routes ``create_app`` mounts, so a route added later is fuzzed without touching this file.
For every operation schemathesis generates requests (valid and invalid parameters, form
fields, headers) and sends them without credentials:

- no answer is a server error (5xx);
- nothing changes: accounts, messages, holds, template versions and the audit log read
  the same before and after (audit records of refused or failed sign-ins are allowed);
- an operation that is not public answers 401/403 (or 303/307 to a sign-in page), or
  refuses the request as malformed (400/404/405/413/422): never 2xx.

Public operations are the probes and whatever a sign-in page needs (matched by path
below); a new public route must be named here, deliberately. The Twilio webhooks are
then fuzzed again with every generated form *validly signed*: they may act on it, and
must still never answer 5xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import Table, select

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.clock import FixedClock
from dispatcher.daemon import Service
from dispatcher.domain.strategy import ChannelKind
from dispatcher.settings import TwilioSettings
from dispatcher.store.sql import ACCOUNT, AUDIT, HOLD, MESSAGE
from dispatcher.store.table import TemplateVersionRow
from dispatcher.web.app import create_app
from tests.conftest import settings_for
from tests.fake_twilio import signature
from tests.integration.test_pipeline import NOW, days_ago, load, row

TOKEN = "fuzz-test-token-9e0f"
PUBLIC = "https://dispatcher.example"
# Operations anyone may call: liveness/readiness/metrics for the operators' network.
PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics"}
# What a sign-in flow needs before there is a session (pages added by the web helpers).
SIGN_IN = re.compile(r"^/(login|logout|sign-?in|sign-?out|static)(/|$)")
REFUSED = {303, 307, 400, 401, 403, 404, 405, 413, 415, 422}
TEMPLATE_VERSION: Table = TemplateVersionRow.__table__  # type: ignore[attr-defined]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def web(tmp_path: Path, database_url: str) -> Iterator[tuple[App, Any]]:
    """The service's web application with a Twilio token and public URL configured, on
    a database with a sent SMS, a held letter and an account's holds in it."""
    configured = settings_for(tmp_path, database_url).model_copy(
        update={"twilio": TwilioSettings(auth_token=SecretStr(TOKEN), webhook_base_url=PUBLIC)}
    )
    wired = bootstrap(configured, channels={k: MemoryChannel() for k in ChannelKind})
    wired.store.create_schema()
    wired.catalog.bootstrap(NOW)
    load(
        wired,
        tmp_path,
        [
            row("W-1", days_ago(1), phone="+16175550111"),
            row("W-2", days_ago(40), dispute="true"),
            row("W-3", days_ago(95), address_line1="", city="", postal_code=""),
        ],
    )
    wired.planner(NOW).plan(NOW)
    asyncio.run(wired.sender().send(NOW))
    service = Service(wired, clock=FixedClock(NOW + timedelta(seconds=10)), instance="fuzz")
    try:
        yield wired, create_app(service)
    finally:
        wired.store.engine.dispose()


@pytest.fixture
def web_schema(web: tuple[App, Any]) -> Any:
    _, application = web
    schema = schemathesis.openapi.from_dict(application.openapi())
    schema.app = application  # calls go to the ASGI application in-process
    return schema


def state(app: App) -> str:
    """A digest of everything a request must not change without credentials."""
    digest = hashlib.sha256()
    with app.store.engine.connect() as conn:
        for table in (ACCOUNT, MESSAGE, HOLD, TEMPLATE_VERSION):
            key = list(table.primary_key.columns)
            for values in conn.execute(select(table).order_by(*key)):
                digest.update(repr(tuple(values)).encode())
        for values in conn.execute(select(AUDIT).order_by(AUDIT.c.id)):
            event = str(values._mapping["event"])
            if "refused" in event or "login" in event or "sign_in" in event:
                continue
            digest.update(repr(tuple(values)).encode())
    return digest.hexdigest()


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or bool(SIGN_IN.match(path))


def cases(operations: Any) -> st.SearchStrategy[Any]:
    """Requests for the given operations (a schema, or one operation): valid and invalid."""
    return st.one_of(
        operations.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
        operations.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    )


def test_the_schema_covers_the_webhooks_and_probes(web_schema: Any) -> None:
    """The fuzzing below must not pass by fuzzing nothing."""
    paths = set(web_schema.raw_schema["paths"])
    assert {"/webhooks/twilio/status", "/webhooks/twilio/inbound", "/healthz"} <= paths
    form = web_schema.raw_schema["paths"]["/webhooks/twilio/status"]["post"]["requestBody"]
    assert "application/x-www-form-urlencoded" in form["content"]


def test_no_request_without_credentials_errors_or_changes_anything(
    web: tuple[App, Any], web_schema: Any
) -> None:
    app, _ = web
    seen: set[tuple[str, str]] = set()
    operations = {(m.upper(), p) for p, ops in web_schema.raw_schema["paths"].items() for m in ops}

    def unsigned(case: Any) -> None:
        seen.add((case.method, case.path))
        before = state(app)
        # A signature header, if generated, is a forged one.
        forged = "X-Twilio-Signature" in (case.headers or {})
        # Redirects are not followed: a page's answer to a visitor without a session is
        # the 303 to the sign-in page itself, not the sign-in page it leads to.
        response = case.call(
            headers={"X-Twilio-Signature": "forged"} if forged else None, allow_redirects=False
        )
        where = f"{case.method} {case.formatted_path} -> {response.status_code}"
        # /readyz says "not ready" with 503 by design (no schedule runs here).
        assert response.status_code < 500 or where == "GET /readyz -> 503", where
        if not is_public(case.path):
            assert response.status_code in REFUSED, where
        assert state(app) == before, f"{where} changed state without credentials"

    # Each operation fuzzed on its own, so none is left out however many there are;
    # derandomised, so the run that passed is the run CI makes.
    for result in web_schema.get_all_operations():
        fuzz_one = settings(FUZZ, max_examples=12, derandomize=True)(
            given(case=cases(result.ok()))(lambda case: unsigned(case))
        )
        fuzz_one()
    assert seen == operations  # every operation was called


def test_signed_webhook_forms_never_make_a_server_error(
    web: tuple[App, Any], web_schema: Any
) -> None:
    webhooks = web_schema.include(path_regex="^/webhooks/twilio/")
    called: set[str] = set()

    @FUZZ
    @given(case=cases(webhooks))
    def signed(case: Any) -> None:
        body = case.body if isinstance(case.body, dict) else {}
        form = {str(k): str(v) for k, v in body.items()}
        case.body = form
        url = PUBLIC + case.formatted_path
        response = case.call(headers={"X-Twilio-Signature": signature(url, form, TOKEN)})
        where = f"{case.method} {case.formatted_path} {form!r} -> {response.status_code}"
        assert response.status_code < 500, where
        assert response.status_code != 403, f"{where}: a valid signature was refused"
        called.add(case.path)

    signed()
    assert called == {"/webhooks/twilio/status", "/webhooks/twilio/inbound"}


def test_a_signed_form_with_a_nul_character_is_refused_not_a_server_error(
    web: tuple[App, Any],
) -> None:
    """Found by the fuzzing above: PostgreSQL cannot store NUL in text, so a signed form
    carrying one answered 500. Twilio never sends it: 400, nothing changes."""
    app, application = web
    before = state(app)
    with TestClient(application) as client:
        for path, form in (
            ("/webhooks/twilio/status", {"MessageSid": "SM\x00", "MessageStatus": "delivered"}),
            ("/webhooks/twilio/inbound", {"From": "+16175550111", "Body": "STOP\x00"}),
        ):
            sig = signature(PUBLIC + path, form, TOKEN)
            response = client.post(path, data=form, headers={"X-Twilio-Signature": sig})
            assert response.status_code == 400, (path, response.text)
    assert state(app) == before
