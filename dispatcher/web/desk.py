"""What the compliance, ops and auditor pages share: the application, the clock, and the
foundation's pieces (role check, CSRF field, layout) handed in by whoever builds the app.

The pages never build their own sessions or checks: :func:`dispatcher.web.app.create_app`
hands them the foundation's role dependency, so every page checks the role server-side
the same way (docs/WEB.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from dispatcher.bootstrap import App
from dispatcher.clock import Clock

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Desk:
    """The pages' view of the running service and of the web foundation.

    ``require(*roles)`` is a FastAPI dependency that answers 403 unless the session's
    user has one of ``roles`` (and sends anyone not logged in to the login page), and
    returns the user; ``user_name`` names that user for the audit log and four eyes;
    ``csrf_field(request)`` is the hidden input every form carries.
    """

    app: App
    clock: Clock
    templates: Jinja2Templates
    require: Callable[..., Any]
    user_name: Callable[[Any], str]
    csrf_field: Callable[[Request], Markup]
    # The foundation's CSRF check for POSTs, when it is a dependency (None: middleware).
    verify_csrf: Callable[..., Any] | None = None
    layout: str = "base.html"

    def posted(self) -> list[Any]:
        """Dependencies of every POST route: the CSRF check."""
        return [Depends(self.verify_csrf)] if self.verify_csrf is not None else []

    def page(
        self,
        request: Request,
        name: str,
        user: Any,
        context: Mapping[str, object] | None = None,
        *,
        status_code: int = 200,
    ) -> HTMLResponse:
        """Render one of our pages inside the foundation's layout."""
        values: dict[str, Any] = {
            "request": request,
            "user": user,
            "layout": self.layout,
            "csrf_field": self.csrf_field(request),
            **(context or {}),
        }
        return self.templates.TemplateResponse(request, name, values, status_code=status_code)
