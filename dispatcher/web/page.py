"""Rendering pages: one Jinja2 environment, autoescaping everything (rule HR-35).

Every value a template prints is HTML-escaped unless a template says ``|safe`` (none
does: customer names, message bodies and notes are data, never markup). The security
headers below forbid inline scripts too, so even a slip in a template cannot run a
customer's ``<script>``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.runtime
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from dispatcher.domain.access import Role
from dispatcher.web.csrf import CSRF_FIELD

if TYPE_CHECKING:
    from dispatcher.web.session import Visitor

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# No inline script or style, nothing from elsewhere, no framing (clickjacking), forms
# post only back here. htmx's own indicator styles are switched off (base.html) for this.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# Pages show personal data: no shared or browser cache keeps a copy.
NO_STORE = {"Cache-Control": "no-store"}


def _when(value: datetime | None) -> str:
    """An instant as people read it here: UTC, to the minute."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


@jinja2.pass_context
def csrf_field(context: jinja2.runtime.Context) -> Markup:
    """The hidden CSRF field every form of a logged-in page carries (HR-34)."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        CSRF_FIELD, context.get("csrf_token", "")
    )


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name (HR-35)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["Role"] = Role
    env.globals["csrf_field"] = csrf_field
    return env


templates = Jinja2Templates(env=environment())


def render(
    request: Request,
    name: str,
    visitor: Visitor | None,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render ``name`` with the visitor (user, roles, CSRF token) and ``context``.

    Forms in templates put ``{{ csrf_field() }}`` inside; htmx requests send the token
    as a header set once in base.html.
    """
    values: dict[str, Any] = {
        "visitor": visitor,
        "csrf_token": visitor.csrf_token if visitor else "",
        **(context or {}),
    }
    response = templates.TemplateResponse(
        request, name, values, status_code=status_code, headers=NO_STORE
    )
    assert isinstance(response, HTMLResponse)
    return response


async def security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Middleware: the headers above on every answer of the people's pages."""
    response = await call_next(request)
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response
