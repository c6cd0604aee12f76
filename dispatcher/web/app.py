"""The FastAPI application served by `dispatcher serve`.

Built by :func:`create_app` from the running service, never at import time. The probe
endpoints answer without authentication and say nothing about customers: they are for
load balancers, systemd watchdogs and Prometheus on the operators' network. The provider
webhooks under ``/webhooks/twilio/`` answer only requests signed by the provider.

Everything else is the people's pages (docs/WEB.md): each page router below declares
the roles of each page with :func:`dispatcher.web.auth.require`; only ``/login`` and
``/static`` are open (tests/unit/test_web_route.py holds every other route to that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from dispatcher.web.account import NotFound, account_router, not_found_page
from dispatcher.web.auditor import auditor_router
from dispatcher.web.auth import (
    Forbidden,
    LoginRequired,
    auth_router,
    forbidden_page,
    login_redirect,
)
from dispatcher.web.compliance import compliance_router
from dispatcher.web.home import home_router
from dispatcher.web.ops import ops_router
from dispatcher.web.page import STATIC, security_headers
from dispatcher.web.user import user_router
from dispatcher.web.webhook import webhook_router

if TYPE_CHECKING:
    from dispatcher.daemon import Service


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="dispatcher", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service  # what the pages' dependencies reach the service through

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive and its event loop answers (restart it if not)."""
        return {"status": "ok", "instance": service.instance}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Database reachable, schedule running, a plan succeeded recently (503 if not)."""
        readiness = service.readiness()
        return JSONResponse(
            {"ready": readiness.ready, "instance": service.instance, "checks": readiness.checks},
            status_code=200 if readiness.ready else 503,
        )

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition: messages, holds, outbox depth and age, latency, errors."""
        payload, content_type = service.metrics.render()
        return Response(payload, media_type=content_type)

    # Provider webhooks (signed by the provider; see dispatcher/web/webhook.py).
    app.include_router(webhook_router(service))

    # The people's pages (docs/WEB.md). A new page module adds its router here.
    app.middleware("http")(security_headers)
    app.add_exception_handler(LoginRequired, login_redirect)
    app.add_exception_handler(Forbidden, forbidden_page)
    app.add_exception_handler(NotFound, not_found_page)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    pages: tuple[APIRouter, ...] = (auth_router(), home_router(), user_router(), account_router())
    # Compliance, ops and auditor pages (docs/WEB.md).
    pages += (compliance_router(), ops_router(), auditor_router())
    for router in pages:
        app.include_router(router)
    return app
